"""Makes meme-like images with a Chinese caption drawn on them, and ChineseBQB-shaped trees.

Used by the tests and by make_sample.py (which wrote samples/ChineseBQB). Needs a
CJK font: Debian's fonts-wqy-microhei (installed by .ci/run) or fonts-noto-cjk.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)

# Real category folder names from ChineseBQB (emoji and all).
CATEGORIES = (
    "001Funny_滑稽大佬😏BQB",
    "004SmirkBoy_假笑男孩👦BQB",
    "010Cat_是喵星人啦🐱BQB",
    "011Dog_狗🐶BQB",
    "015Golden_Curator_Panda金馆长熊猫🐼BQB",
    "020TATAN🤷‍♂️BQB",
    "022SuDaqiang_苏大强👴BQB",
    "024Programmer_程序员👨‍💻‍BQB",
    "031Penguin_沙雕企鹅🐧BQB",
    "061KeNan_柯南🕵️‍♂️BQB",
    "078BeiFang_北方栖姬_BQB",
    "斗图之王BQB",
)

# Distinct captions in the style of real memes.
CAPTIONS = (
    "我太难了", "你礼貌吗", "摸鱼快乐", "打工人加油", "我裂开了", "绝绝子", "真香", "我不听我不听",
    "告辞", "溜了溜了", "不要慌问题不大", "你在教我做事", "我就静静地看着你", "别问问就是不知道",
    "今天也要开心", "谢谢老板", "好的收到", "我酸了", "笑死我了", "这是什么神仙操作", "心态崩了",
    "我想静静", "给你一个大拇指", "宝宝心里苦", "你是魔鬼吗", "我能怎么办", "社会我二哥", "老铁没毛病",
    "请开始你的表演", "我好方啊", "吃瓜群众", "睡觉了晚安", "早上好", "在吗", "不想上班",
    "周末愉快", "加班到天亮", "头发掉光了", "代码又报错了", "需求又改了", "这个锅我不背", "测试没问题啊",
    "重启试试", "在我电脑上是好的", "祝你发财", "红包拿来", "我要减肥", "明天再说", "先吃饭吧",
    "奶茶续命", "我太南了", "你说的都对", "哈哈哈哈哈", "委屈巴巴", "气到爆炸", "惊呆了老铁",
    "这就很尴尬了", "我选择死亡", "躺平了", "内卷不起", "emo了", "冲鸭", "我可以", "稳住别浪",
    "一起摇摆", "快乐星球", "我是谁我在哪", "小朋友你是否有很多问号", "就这", "针不戳", "爷青回",
    "芜湖起飞", "蚌埠住了", "破防了", "你品你细品", "我佛了", "皮一下很开心", "真的栓Q",
    "雨女无瓜", "你个老六", "格局打开", "拿捏了", "狠狠爱住", "泰裤辣", "遥遥领先",
    "听我说谢谢你", "退退退", "命运的齿轮开始转动", "我独自美丽", "请停止内耗", "谁懂啊家人们",
    "大冤种", "显眼包", "人间清醒", "尊嘟假嘟", "我直接好家伙", "夺笋啊", "有被冒犯到",
    "想你了", "抱抱", "么么哒", "比心", "再见", "晚安好梦", "出去玩吧", "下雨了",
    "饿了", "好困啊", "生日快乐", "新年快乐", "恭喜发财", "好好学习", "天天向上", "努力搬砖",
    "钱包空了", "月底吃土", "求放过", "我错了", "原谅我吧", "哼不理你了", "走开", "滚",
    "你过来呀", "来打我呀", "看我眼色行事", "别说话吻我", "我的心碎了", "瑟瑟发抖", "冷漠脸",
    "黑人问号", "微笑中透着疲惫", "假装很忙", "默默流泪", "仰天长啸", "战术后仰", "叉会腰",
    "我是一颗柠檬精", "小丑竟是我自己", "一整个爱住", "拒绝焦虑", "保持微笑", "元气满满", "无语子",
    "鸡你太美", "你干嘛哎哟", "真是服了", "心累", "随便吧", "行吧", "都可以", "那我走",
    "快来夸我", "厉害了我的哥", "给大佬递茶", "求带飞", "菜就多练", "这波不亏", "血赚",
    "上分了", "好运来", "锦鲤附体", "水逆退散", "暴富", "离谱", "不愧是你", "好耶",
)

BACKGROUNDS = ((250, 230, 200), (220, 240, 255), (235, 255, 220), (255, 225, 235), (240, 240, 240),
               (255, 250, 205), (230, 220, 255), (210, 250, 250))
FACES = ((255, 210, 0), (255, 170, 90), (180, 140, 100), (250, 250, 250), (120, 200, 120), (255, 140, 160))


def font_path() -> str:
    for candidate in FONT_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise RuntimeError("no CJK font found: apt-get install fonts-wqy-microhei (see .ci/run)")


def _fit_font(draw: ImageDraw.ImageDraw, text: str, width: int) -> ImageFont.FreeTypeFont:
    size = 30
    while True:
        font = ImageFont.truetype(font_path(), size)
        if draw.textlength(text, font=font) <= width - 16 or size <= 14:
            return font
        size -= 2


def draw_frame(caption: str, seed: int, wobble: int = 0, size: int = 240) -> Image.Image:
    rnd = random.Random(seed)
    im = Image.new("RGB", (size, size), BACKGROUNDS[rnd.randrange(len(BACKGROUNDS))])
    d = ImageDraw.Draw(im)
    cx, cy, r = size // 2 + rnd.randint(-20, 20), size // 3 + 10 + wobble, rnd.randint(40, 60)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=FACES[rnd.randrange(len(FACES))], outline=(60, 40, 20), width=3)
    eye = r // 3
    for dx in (-eye, eye):
        d.ellipse((cx + dx - 6, cy - eye - 6 + wobble // 2, cx + dx + 6, cy - eye + 6 + wobble // 2), fill=(30, 30, 30))
    mouth = rnd.choice(("smile", "flat", "open"))
    if mouth == "smile":
        d.arc((cx - eye * 2, cy - eye, cx + eye * 2, cy + eye * 2), 20, 160, fill=(80, 20, 20), width=4)
    elif mouth == "flat":
        d.line((cx - eye, cy + eye, cx + eye, cy + eye), fill=(80, 20, 20), width=4)
    else:
        d.ellipse((cx - eye // 2, cy + eye // 2, cx + eye // 2, cy + eye * 3 // 2), fill=(120, 30, 30))
    font = _fit_font(d, caption, size)
    w = d.textlength(caption, font=font)
    d.text(((size - w) / 2, size - 62), caption, font=font, fill=(0, 0, 0),
           stroke_width=2, stroke_fill=(255, 255, 255))
    return im


def meme_bytes(caption: str, seed: int, fmt: str) -> bytes:
    """An image with ``caption`` drawn on it, as jpg, png, webp or (two-frame) gif."""
    buf = io.BytesIO()
    if fmt == "gif":
        frames = [draw_frame(caption, seed, wobble) for wobble in (0, 6)]
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=300, loop=0)
    elif fmt == "jpg":
        draw_frame(caption, seed).save(buf, format="JPEG", quality=80)
    elif fmt == "webp":
        draw_frame(caption, seed).save(buf, format="WEBP", quality=80)
    else:
        draw_frame(caption, seed).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@dataclass(frozen=True)
class Planted:
    """One valid image planted in a tree: where it is and what it says."""

    rel_path: str
    caption: str
    md5: str
    format: str


def _series(category: str) -> str:
    from emomo.sources.chinesebqb import category_names

    names = category_names(category)
    return names[0] if names else "表情"


def _name(style: int, category: str, number: int, caption: str, fmt: str, rnd: random.Random) -> str:
    ext = "jpeg" if fmt == "jpg" and number % 7 == 0 else fmt
    if style == 0:
        return f"{_series(category)}{number:05d}-{caption}.{ext}"
    if style == 1:
        return f"{_series(category)}{number:05d}.{ext}"
    if style == 2:
        return f"{number:09d}.{ext.upper() if number % 2 else ext}"
    if style == 3:
        return f"{rnd.getrandbits(128):032x}.{ext}"
    if style == 4:
        parts = (rnd.getrandbits(32), rnd.getrandbits(16), rnd.getrandbits(16), rnd.getrandbits(16),
                 rnd.getrandbits(48))
        return f"{{{parts[0]:08X}-{parts[1]:04X}-{parts[2]:04X}-{parts[3]:04X}-{parts[4]:012X}}}.{ext}"
    if style == 5:
        return f"{_series(category)}{number:05d}-{caption}"  # no extension at all
    return f"{_series(category)}{number:05d}-{caption}.jpg"  # wrong extension for png/gif/webp


def build_tree(root: Path, captions: Iterable[str], categories: Iterable[str] = CATEGORIES,
               seed: int = 7) -> list[Planted]:
    """Plant one valid image per caption, round-robin over the categories, in every naming style.
    Memes are templates: each category's memes are one series (a figure of ``TEMPLATES``, chosen
    by the seed), each with its own caption."""
    import hashlib

    rnd = random.Random(seed)
    cats = list(categories)
    planted = []
    for i, caption in enumerate(captions):
        category = cats[i % len(cats)]
        fmt = ("png", "jpg", "gif", "webp", "png", "jpg")[i % 6]
        name = _name(i % 7, category, i + 1, caption, fmt, rnd)
        path = root / category / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = template_bytes((seed + cats.index(category)) % (2 * len(TEMPLATES)), caption, fmt)
        path.write_bytes(data)
        planted.append(Planted(path.relative_to(root).as_posix(), caption, hashlib.md5(data).hexdigest(), fmt))
    return planted


# --- template series: one figure, many captions (what most real memes are) -------------------

#: the figures a series is drawn on: a panda head (熊猫头), a cat, a photo-like face, a dog and a
#: penguin; each with its own background and caption place
TEMPLATES = ("panda", "cat", "photo", "dog", "penguin")


def _photo_background(size: int, seed: int) -> Image.Image:
    """A photo-like background: a smooth gradient with grain (what JPEG photos look like)."""
    rnd = random.Random(seed)
    base = Image.linear_gradient("L").resize((size, size)).rotate(rnd.randint(0, 359))
    tint = Image.new("RGB", (size, size), (rnd.randint(90, 200), rnd.randint(90, 200), rnd.randint(90, 200)))
    im = Image.composite(tint, Image.new("RGB", (size, size), (40, 50, 60)), base)
    noise = np.random.default_rng(seed).normal(128, 40, (size, size)).clip(0, 255).astype(np.uint8)
    return Image.blend(im, Image.fromarray(noise, "L").convert("RGB"), 0.15)


def draw_template(template: int, caption: str, frame: int = 0, size: int = 240) -> Image.Image:
    """The figure of series ``template`` with ``caption``; ``frame`` moves the figure a little (GIFs)."""
    kind = TEMPLATES[template % len(TEMPLATES)]
    variant = template // len(TEMPLATES)  # more series than figures: another colour and place
    rnd = random.Random(template)
    w = (frame % 3) * 3 - 3  # the figure's wobble between frames
    if kind == "photo":
        im = _photo_background(size, template)
    else:
        im = Image.new("RGB", (size, size), BACKGROUNDS[(template * 3 + variant) % len(BACKGROUNDS)])
    d = ImageDraw.Draw(im)
    top_caption = kind in ("dog", "photo")
    cx = size // 2 + rnd.randint(-12, 12) + w
    cy = (size * 3 // 5 if top_caption else size * 2 // 5) + rnd.randint(-6, 6)
    r = size // 4 + rnd.randint(-6, 6)
    ink = (25, 25, 25)
    if kind == "panda":
        for ex in (-1, 1):
            d.ellipse((cx + ex * r * 0.8 - r * 0.35, cy - r * 1.05, cx + ex * r * 0.8 + r * 0.35, cy - r * 0.35),
                      fill=ink)
        d.ellipse((cx - r, cy - r * 0.9, cx + r, cy + r * 0.9), fill=(245, 245, 245), outline=ink, width=3)
        for ex in (-1, 1):
            d.ellipse((cx + ex * r * 0.42 - r * 0.26, cy - r * 0.4, cx + ex * r * 0.42 + r * 0.26, cy + r * 0.1),
                      fill=ink)
            d.ellipse((cx + ex * r * 0.42 - 5, cy - r * 0.2 - 5, cx + ex * r * 0.42 + 5, cy - r * 0.2 + 5),
                      fill=(255, 255, 255))
        d.ellipse((cx - 7, cy + r * 0.2, cx + 7, cy + r * 0.2 + 10), fill=ink)
        d.arc((cx - r * 0.35, cy + r * 0.2, cx + r * 0.35, cy + r * 0.6), 20, 160, fill=ink, width=3)
    elif kind == "cat":
        fur = (240, 160, 70)
        for ex in (-1, 1):
            d.polygon([(cx + ex * r * 0.9, cy - r * 0.2), (cx + ex * r * 0.75, cy - r * 1.25),
                       (cx + ex * r * 0.2, cy - r * 0.75)], fill=fur, outline=ink)
        d.ellipse((cx - r, cy - r * 0.85, cx + r, cy + r * 0.85), fill=fur, outline=ink, width=2)
        for ex in (-1, 1):
            d.ellipse((cx + ex * r * 0.4 - 9, cy - r * 0.3 - 12, cx + ex * r * 0.4 + 9, cy - r * 0.3 + 12),
                      fill=(90, 200, 90), outline=ink)
            d.line((cx + ex * r * 0.4, cy - r * 0.3 - 10, cx + ex * r * 0.4, cy - r * 0.3 + 10), fill=ink, width=3)
            for k in (-1, 0, 1):
                d.line((cx + ex * r * 0.25, cy + r * 0.2 + k * 6, cx + ex * r * 1.1, cy + r * 0.15 + k * 12),
                       fill=ink, width=1)
        d.polygon([(cx - 6, cy + r * 0.05), (cx + 6, cy + r * 0.05), (cx, cy + r * 0.15)], fill=(230, 90, 110))
    elif kind == "photo":
        skin = (rnd.randint(200, 240), rnd.randint(160, 200), rnd.randint(130, 170))
        d.ellipse((cx - r * 0.95, cy - r * 1.2, cx + r * 0.95, cy + r * 0.3), fill=(50, 35, 25))
        d.ellipse((cx - r * 0.8, cy - r * 0.95, cx + r * 0.8, cy + r * 0.95), fill=skin)
        for ex in (-1, 1):
            d.ellipse((cx + ex * r * 0.35 - 8, cy - r * 0.25 - 5, cx + ex * r * 0.35 + 8, cy - r * 0.25 + 5),
                      fill=(250, 250, 250), outline=ink)
            d.ellipse((cx + ex * r * 0.35 - 3, cy - r * 0.25 - 3, cx + ex * r * 0.35 + 3, cy - r * 0.25 + 3),
                      fill=ink)
        d.arc((cx - r * 0.4, cy + r * 0.15, cx + r * 0.4, cy + r * 0.6), 10, 170, fill=(150, 40, 40), width=4)
    elif kind == "dog":
        coat = (190, 140, 90)
        for ex in (-1, 1):
            d.ellipse((cx + ex * r * 0.95 - r * 0.3, cy - r * 0.8, cx + ex * r * 0.95 + r * 0.3, cy + r * 0.3),
                      fill=(120, 80, 50))
        d.ellipse((cx - r * 0.85, cy - r * 0.9, cx + r * 0.85, cy + r * 0.8), fill=coat, outline=ink, width=2)
        d.ellipse((cx - r * 0.45, cy + r * 0.05, cx + r * 0.45, cy + r * 0.7), fill=(240, 225, 200))
        d.ellipse((cx - 10, cy + r * 0.1, cx + 10, cy + r * 0.1 + 14), fill=ink)
        for ex in (-1, 1):
            d.ellipse((cx + ex * r * 0.35 - 7, cy - r * 0.35 - 7, cx + ex * r * 0.35 + 7, cy - r * 0.35 + 7), fill=ink)
    else:  # penguin
        d.ellipse((cx - r * 0.8, cy - r * 1.0, cx + r * 0.8, cy + r * 1.1), fill=ink)
        d.ellipse((cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 1.0), fill=(250, 250, 250))
        for ex in (-1, 1):
            d.ellipse((cx + ex * r * 0.25 - 6, cy - r * 0.55 - 6, cx + ex * r * 0.25 + 6, cy - r * 0.55 + 6),
                      fill=(255, 255, 255))
        d.polygon([(cx - 10, cy - r * 0.35), (cx + 10, cy - r * 0.35), (cx, cy - r * 0.15)], fill=(250, 170, 30))
    font = _fit_font(d, caption, size)
    tw = d.textlength(caption, font=font)
    ty = 14 if top_caption else size - 52
    d.text(((size - tw) / 2, ty), caption, font=font, fill=(0, 0, 0) if kind != "photo" else (255, 255, 255),
           stroke_width=2, stroke_fill=(255, 255, 255) if kind != "photo" else (0, 0, 0))
    return im


def template_bytes(template: int, caption: str, fmt: str, size: int = 240) -> bytes:
    """A meme of series ``template`` with ``caption``, as jpg, png, webp or (three-frame) gif."""
    buf = io.BytesIO()
    if fmt == "gif":
        frames = [draw_template(template, caption, frame, size) for frame in range(3)]
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    else:
        draw_template(template, caption, 0, size).save(
            buf, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt], **({"quality": 85} if fmt != "png" else {}))
    return buf.getvalue()


#: the ways one meme circulates as other files (copy_of)
COPY_KINDS = ("jpeg", "resize", "convert", "crop", "first_frame")


def copy_of(data: bytes, kind: str, rnd: random.Random) -> tuple[bytes, str]:
    """Another file of the same meme, as memes circulate: (bytes, extension). ``first_frame``
    is an animation's first frame saved as a still (of a still: the same picture as a PNG)."""
    with Image.open(io.BytesIO(data)) as src:
        src.seek(0)
        im = src.convert("RGB")
    buf = io.BytesIO()
    if kind == "jpeg":  # re-encoded
        im.save(buf, "JPEG", quality=rnd.randint(50, 80))
        return buf.getvalue(), "jpg"
    if kind == "resize":
        return resized(data, rnd.uniform(0.5, 1.5), Image.Resampling.LANCZOS), "png"
    if kind == "convert":  # another format
        im.save(buf, "WEBP", quality=90)
        return buf.getvalue(), "webp"
    if kind == "first_frame":  # an animation's first frame as a still
        im.save(buf, "PNG")
        return buf.getvalue(), "png"
    if kind != "crop":
        raise ValueError(kind)
    box = (rnd.randint(2, 6), rnd.randint(2, 6), im.width - rnd.randint(2, 6), im.height - rnd.randint(2, 6))
    im.crop(box).save(buf, "JPEG", quality=85)
    return buf.getvalue(), "jpg"


def reencoded(data: bytes, quality: int) -> bytes:
    """The picture's first frame as a JPEG at ``quality``, at its own size: how chat apps pass
    memes on (30: the heaviest seen)."""
    with Image.open(io.BytesIO(data)) as src:
        src.seek(0)
        im = src.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def resized(data: bytes, factor: float, resample: Image.Resampling) -> bytes:
    """The picture's first frame resized by ``factor`` with ``resample``, as a PNG: how apps and
    thumbnailers pass memes on (bilinear halving is common, and lands between near_same and
    near_different for many memes)."""
    with Image.open(io.BytesIO(data)) as src:
        src.seek(0)
        im = src.convert("RGB")
    buf = io.BytesIO()
    im.resize((round(im.width * factor), round(im.height * factor)), resample).save(buf, "PNG")
    return buf.getvalue()


def series_captions(n: int, offset: int = 0) -> list[str]:
    """``n`` distinct captions: the list, then pairs of its captions (a long series needs many)."""
    out = []
    for i in range(offset, offset + n):
        if i < len(CAPTIONS):
            out.append(CAPTIONS[i])
        else:
            j = i - len(CAPTIONS)
            out.append(CAPTIONS[j % len(CAPTIONS)] + CAPTIONS[(j // len(CAPTIONS) + 1 + j) % len(CAPTIONS)][:3])
    return out


@dataclass(frozen=True)
class SeriesFile:
    """A file planted by ``series_tree``: what it is and which meme it should make."""

    rel_path: str
    #: original (a meme of its own) or the kind of copy (COPY_KINDS)
    kind: str
    #: the meme it belongs to: (template, caption)
    meme: tuple[int, str]


def series_tree(root: Path, n: int, templates: int = 5, copies: float = 0.10, gifs: float = 0.2,
                seed: int = 11) -> list[SeriesFile]:
    """``n`` memes on ``templates`` figures, each with its own caption (a share ``gifs`` of them
    animated), in ChineseBQB's category folders, plus ``copies`` x n copies of some of them: half
    beside their original (read while it is in flight), half in a folder read later."""
    rnd = random.Random(seed)
    captions = series_captions(n)
    cats = list(CATEGORIES)
    planted: list[SeriesFile] = []
    originals: list[tuple[int, str, bytes, str]] = []

    def put(folder: str, name: str, data: bytes, kind: str, meme: tuple[int, str]) -> None:
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        planted.append(SeriesFile(f"{folder}/{name}", kind, meme))

    for i, caption in enumerate(captions):
        template = i % templates
        fmt = "gif" if rnd.random() < gifs else rnd.choice(("png", "jpg", "png", "webp"))
        data = template_bytes(template, caption, fmt)
        folder = cats[template % (len(cats) - 1)]
        put(folder, f"{i:05d}-{caption}.{fmt}", data, "original", (template, caption))
        originals.append((template, caption, data, folder))
    for j, index in enumerate(rnd.sample(range(n), round(n * copies))):
        template, caption, data, folder = originals[index]
        kind = COPY_KINDS[j % len(COPY_KINDS)]
        copy, ext = copy_of(data, kind, rnd)
        if j % 2:
            put(folder, f"{index:05d}-{caption}-副本{j}.{ext}", copy, kind, (template, caption))
        else:
            put(cats[-1], f"副本{j:04d}.{ext}", copy, kind, (template, caption))
    return planted
