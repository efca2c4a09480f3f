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
    """Plant one valid image per caption, round-robin over the categories, in every naming style."""
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
        data = meme_bytes(caption, seed * 1000 + i, fmt)
        path.write_bytes(data)
        planted.append(Planted(path.relative_to(root).as_posix(), caption, hashlib.md5(data).hexdigest(), fmt))
    return planted
