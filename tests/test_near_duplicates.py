"""Near-duplicates (issue 15): one meme, many files; a template with another caption stays apart."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import sqlite3
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import assert_consistent, read_state, scrapy
from crawling import Crawl, run_crawl
from memegen import (
    CAPTIONS,
    CATEGORIES,
    COPY_KINDS,
    TEMPLATES,
    copy_of,
    draw_template,
    meme_bytes,
    reencoded,
    resized,
    series_captions,
    template_bytes,
)
from PIL import Image

from emomo.config import DatabaseConfig, DedupeConfig, EmomoConfig
from emomo.imaging import probe
from emomo.ingest.near_dupes import (
    FIT_WITHIN,
    NearIndex,
    NearInFlight,
    Verdict,
    find_near_duplicate,
    judge,
    one_scale_distance,
    signature,
)
from emomo.ingest.state import ItemState
from emomo.near import (
    NearCheck,
    Picture,
    first_frame_grey,
    grey_frame,
    hamming,
    measure,
    nearest,
    perceptual_hash,
    quick_distances,
    rescaled,
    same_text,
    zscored,
)
from emomo.repositories import MemeRecord, VectorRecord
from emomo.repositories.sqlite import SQLiteMemeRepository

COLLECTION = "emomo-e5-small"


def variant(data: bytes, kind: str, rnd: random.Random) -> tuple[bytes, str]:
    return copy_of(data, kind, rnd)


KINDS = ("jpeg", "resize", "convert", "crop")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_copy_hashes_within_the_default_distance(kind: str, cjk_font: str) -> None:
    rnd = random.Random(kind)
    for i in range(30):
        original = meme_bytes(CAPTIONS[i], 900 + i, "jpg")
        copy, _ = variant(original, kind, rnd)
        assert hamming(perceptual_hash(original), perceptual_hash(copy)) <= DedupeConfig().near_distance, (kind, i)


def test_the_fine_check_tells_a_copy_from_the_same_face_with_another_caption(cjk_font: str) -> None:
    """Every kind of copy on every template is the same meme (or, for a few, left to the text);
    another caption on the same face, even one character apart, never is."""
    config = DedupeConfig()
    rnd = random.Random(20)
    captions = series_captions(20, offset=40)
    verdicts: Counter[Verdict] = Counter()
    for template in range(len(TEMPLATES)):
        for n, caption in enumerate(captions[:8]):
            data = template_bytes(template, caption, "gif" if n % 4 == 0 else "png")
            reference = measure(data).thumb
            for kind in COPY_KINDS:
                copy = measure(copy_of(data, kind, rnd)[0])
                [(verdict, distance)] = judge(copy, [reference], [False], config).verdicts
                verdicts[verdict] += 1
                assert verdict is not Verdict.DIFFERENT, (template, caption, kind, distance)
            for other in (captions[n + 8], caption + "吗", caption[:-1] + ("好" if caption[-1] != "好" else "坏")):
                other_picture = measure(template_bytes(template, other, "png"))
                [(verdict, distance)] = judge(other_picture, [reference], [False], config).verdicts
                assert verdict is not Verdict.SAME, (template, caption, other, distance)
    assert verdicts[Verdict.SAME] >= 0.97 * sum(verdicts.values()), verdicts  # the text is rarely needed


def test_another_caption_near_the_face_pays_no_frame_fit_a_resized_copy_does(cjk_font: str) -> None:
    """The fit to a candidate's frame (about a millisecond) evens out a resize's resampling; a
    caption one character apart on the same face may come as near by the quick distance, but its
    differences sit where the caption is, and a fit cannot make it a copy. In a dense series many
    captions came that near, and each paid the fit (36 of 300 files at 10,000 members)."""
    config = DedupeConfig()
    rnd = random.Random(21)
    captions = series_captions(12, offset=60)
    near_others = fitted_resizes = 0
    for template in range(len(TEMPLATES)):
        for caption in captions:
            data = template_bytes(template, caption, "png")
            reference = measure(data).thumb
            for other in (caption + "吗", caption[:-1] + ("好" if caption[-1] != "好" else "坏")):
                picture = measure(template_bytes(template, other, "png"))
                [quick], _ = quick_distances(picture.zscores, zscored(reference[None]))
                judgement = judge(picture, [reference], [False], config)
                if quick <= FIT_WITHIN * config.near_same:
                    near_others += 1
                    assert not judgement.framed, (template, caption, other, quick)
                assert judgement.verdicts[0][0] is not Verdict.SAME
            for _ in range(3):
                copy = measure(copy_of(data, "resize", rnd)[0])
                [quick], _ = quick_distances(copy.zscores, zscored(reference[None]))
                judgement = judge(copy, [reference], [False], config)
                if quick > config.near_same:
                    fitted_resizes += judgement.framed
                    assert judgement.framed and judgement.verdicts[0][0] is not Verdict.DIFFERENT, (caption, quick)
    assert near_others and fitted_resizes, (near_others, fitted_resizes)  # both cases were met


def test_a_crop_looks_for_its_series_frame_and_most_other_captions_need_not(cjk_font: str) -> None:
    """Looking for a picture's frame in its series' needs its profiles under 143 frames (about
    half a millisecond): a crop needs it (judged against other captions of its series, as when
    its original is not recorded yet), another caption whose differences sit where its caption
    is, in the series' frame already, does not."""
    config = DedupeConfig()
    rnd = random.Random(22)
    captions = series_captions(8, offset=80)
    crops_out = others_located = others = 0
    for template in range(len(TEMPLATES)):
        data = [template_bytes(template, caption, "png") for caption in captions]
        references = [measure(d).thumb for d in data]
        for i in range(len(data)):
            members = [r for j, r in enumerate(references) if j != i]
            crop = judge(measure(copy_of(data[i], "crop", rnd)[0]), members, [False] * len(members), config)
            crops_out += crop.located and crop.reframed is not None
            other = judge(measure(data[i]), members, [False] * len(members), config)
            assert all(verdict is Verdict.DIFFERENT for verdict, _ in other.verdicts), (template, i)
            others += 1
            others_located += other.located
    assert crops_out >= 0.85 * others, crops_out  # 90% of crops are out of the frame (docs/near-duplicates.md)
    assert others_located <= 0.7 * others, others_located


def test_another_caption_of_a_series_is_not_taken_for_out_of_its_frame(cjk_font: str) -> None:
    """A member of a series judged against its nearest members is in their frame: a caption's
    rows can draw the rough frame search a step off, and a member recorded out of the frame
    (``shifted``, ranked in the series' frame) was no longer among the nearest of its own
    re-encoded copy: the copy became a meme of its own (seen in bench/ingest.py)."""
    config = DedupeConfig()
    captions = series_captions(40, offset=200)
    pictures = [measure(template_bytes(t, caption, "png")) for t in range(len(TEMPLATES)) for caption in captions]
    checks = [NearCheck.of(p) for p in pictures]
    vectors = np.stack([c.vector for c in checks])
    reframed, located = [], 0
    for i, picture in enumerate(pictures):
        within = [j for j, c in enumerate(checks)
                  if j != i and hamming(c.phash, picture.phash) <= config.near_distance]
        order = [within[k] for k in nearest(vectors[within], checks[i].vector, config.near_candidates)]
        judgement = judge(picture, [checks[j].thumb for j in order], [False] * len(order), config)
        assert all(verdict is Verdict.DIFFERENT for verdict, _ in judgement.verdicts), i
        located += judgement.located
        if judgement.reframed is not None:
            reframed.append(i)
    assert located >= 20, located  # the frame was looked for often enough to be taken amiss
    assert reframed == [], reframed


def test_the_first_frame_the_read_stage_decodes_measures_as_the_file_does(cjk_font: str) -> None:
    """The check measures the first frame the read stage's probe decoded: the same picture as
    decoding the file again, for every format and mode memes come in (transparency included)."""
    frame = draw_template(2, "就这样吧", 0)
    rgba = frame.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(frame.size))
    files = {fmt: template_bytes(2, "就这样吧", fmt) for fmt in ("png", "jpg", "webp", "gif")}
    for name, im, fmt in (("rgba png", rgba, "PNG"), ("grey png", frame.convert("L"), "PNG"),
                          ("transparent gif", rgba, "GIF"), ("rgba webp", rgba, "WEBP")):
        buf = io.BytesIO()
        im.save(buf, fmt)
        files[name] = buf.getvalue()
    for name, data in files.items():
        info = probe(data, 10_000_000, first_frame=grey_frame)
        shared, own = measure(data, info.first_frame), measure(data)
        assert (shared.phash, shared.pixels.tobytes(), shared.thumb.tobytes()) == \
            (own.phash, own.pixels.tobytes(), own.thumb.tobytes()), name
    assert probe(files["png"], 10_000_000).first_frame is None  # not asked: nothing kept


def test_the_index_ranks_a_copy_first_among_its_series(cjk_font: str) -> None:
    """Candidates are the nearest few whatever the size of the series; a copy's original is first."""
    index = NearIndex()
    captions = series_captions(150)
    checks = {}
    for i, caption in enumerate(captions):
        check = NearCheck.of(measure(template_bytes(1, caption, "png")))
        index.add(f"m{i}", check.phash, check.blocks)
        checks[i] = check
    rnd = random.Random(21)
    for i in range(0, 150, 15):
        copy = NearCheck.of(measure(copy_of(template_bytes(1, captions[i], "png"), "jpeg", rnd)[0]))
        found = index.candidates(copy.phash, copy.vector, DedupeConfig().near_distance, 8)
        assert len(found) == 8 and found[0] == f"m{i}"


def plant(root: Path, category: str, name: str, data: bytes) -> None:
    path = root / category / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def plant_pairs(root: Path, captions: range, seed: int, rnd: random.Random) -> None:
    """For each caption an original (原图N.png) and a copy of another kind each (副本N.jpg)."""
    for i, n in enumerate(captions):
        data = meme_bytes(CAPTIONS[n], seed + i, "png")
        plant(root, CATEGORIES[0], f"原图{i}.png", data)
        plant(root, CATEGORIES[1], f"副本{i}.jpg", variant(data, KINDS[i], rnd)[0])


def sources(workdir: Path) -> dict[str, str]:
    conn = sqlite3.connect(workdir / "data" / "emomo.db")
    try:
        return dict(conn.execute("SELECT source_id, meme_id FROM meme_sources").fetchall())
    finally:
        conn.close()


def test_near_duplicates_become_sources_of_one_meme_and_other_captions_stay_apart(
        tmp_path: Path, cjk_font: str) -> None:
    root = tmp_path / "ChineseBQB"
    rnd = random.Random(15)
    originals: dict[str, str] = {}  # source id -> caption
    copies: dict[str, str] = {}  # source id -> the original's source id
    others: list[str] = []
    for i in range(8):
        caption = CAPTIONS[150 + i]
        data = meme_bytes(caption, 700 + i, "png")
        name = f"{CATEGORIES[0]}/原图{i:03d}.png"
        plant(root, CATEGORIES[0], f"原图{i:03d}.png", data)
        originals[name] = caption
        kind = KINDS[i % len(KINDS)]
        copy, ext = variant(data, kind, rnd)
        # In another folder, read after the originals (the walk goes folder by folder).
        plant(root, CATEGORIES[1], f"副本{i:03d}.{ext}", copy)
        copies[f"{CATEGORIES[1]}/副本{i:03d}.{ext}"] = name
        if i < 3:  # the same template with another caption: another meme
            plant(root, CATEGORIES[2], f"换字{i:03d}.png", meme_bytes(CAPTIONS[160 + i], 700 + i, "png"))
            others.append(f"{CATEGORIES[2]}/换字{i:03d}.png")
    # One item at a time: a copy is read once its original is recorded.
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings={"EMOMO_MAX_ITEMS_IN_FLIGHT": 1})
    assert run.stat("emomo/dedupe/near_duplicate") == len(copies)
    assert run.stat("emomo/ingest/processed") == len(originals) + len(others)
    assert run.stat("emomo/ingest/duplicate") == len(copies)
    state = read_state(tmp_path)
    assert len(state.memes) == len(originals) + len(others)
    assert len(state.points[COLLECTION]) == len(state.memes)  # one search hit per meme
    linked = sources(tmp_path)
    for copy, original in copies.items():
        assert linked[copy] == linked[original], copy  # the copy is another source of the original's meme
    assert len({linked[o] for o in others} | {linked[o] for o in originals}) == len(originals) + len(others)

    # A re-run sees every source as done: no OCR, no new meme, nothing merged again.
    again = run_crawl(tmp_path, "chinesebqb", repo_path=str(root))
    assert again.stat("emomo/ingest/duplicate") == len(originals) + len(copies) + len(others)
    assert "emomo/dedupe/near_duplicate" not in again.stats
    assert read_state(tmp_path).comparable() == state.comparable()

    # A near-duplicate arriving in a later crawl joins the meme it copies.
    late, _ = variant(meme_bytes(CAPTIONS[151], 701, "png"), "jpeg", random.Random(1))
    plant(root, CATEGORIES[3], "后来的.jpg", late)
    later = run_crawl(tmp_path, "chinesebqb", repo_path=str(root))
    assert later.stat("emomo/dedupe/near_duplicate") == 1
    assert sources(tmp_path)[f"{CATEGORIES[3]}/后来的.jpg"] == linked[f"{CATEGORIES[0]}/原图001.png"]
    assert len(read_state(tmp_path).memes) == len(state.memes)
    counted = scrapy(tmp_path, "stats", "--json")
    assert json.loads(counted.stdout)["sources"] == {"total": len(originals) + len(copies) + len(others) + 1,
                                                     "near_duplicate": len(copies) + 1}


def test_near_false_keeps_every_file_its_own_meme(tmp_path: Path, cjk_font: str) -> None:
    root = tmp_path / "ChineseBQB"
    data = meme_bytes(CAPTIONS[164], 710, "png")
    plant(root, CATEGORIES[0], "原图.png", data)
    plant(root, CATEGORIES[1], "副本.jpg", variant(data, "jpeg", random.Random(2))[0])
    (tmp_path / "off.yaml").write_text("dedupe:\n  near: false\n", encoding="utf-8")
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root),
                    settings={"EMOMO_CONFIG": "off.yaml", "EMOMO_MAX_ITEMS_IN_FLIGHT": 1})
    assert run.stat("emomo/ingest/processed") == 2
    assert "emomo/dedupe/near_duplicate" not in run.stats
    assert len(read_state(tmp_path).memes) == 2


def test_on_the_vlm_path_a_copy_costs_neither_a_call_nor_an_ocr_read(tmp_path: Path, cjk_font: str) -> None:
    from servers import FakeAPI, fake_api

    root = tmp_path / "ChineseBQB"
    plant_pairs(root, range(140, 144), 800, random.Random(16))
    plant(root, CATEGORIES[2], "换字.png", meme_bytes(CAPTIONS[145], 800, "png"))  # template of 原图0
    (tmp_path / "vlm.yaml").write_text("vlm:\n  provider: openai\n", encoding="utf-8")
    api = FakeAPI(api_key="sk-near")
    with fake_api(api) as url:
        run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root),
                        settings={"EMOMO_CONFIG": "vlm.yaml", "EMOMO_MAX_ITEMS_IN_FLIGHT": 1},
                        env={"OPENAI_API_KEY": "sk-near", "OPENAI_BASE_URL": url, "VLM_MODEL": "test/vlm"})
    state = read_state(tmp_path)
    assert run.stat("emomo/dedupe/near_duplicate") == 4
    assert len(state.memes) == 5
    assert api.calls["chat"] == len(state.memes)  # the copies were never sent to the VLM
    assert "emomo/near/ocr_reads" not in run.stats  # the thumbnails decided: nothing was read


def test_a_series_crawled_together_pays_once_a_meme_and_reads_no_text(tmp_path: Path, cjk_font: str) -> None:
    """200 captions on one face, side by side in the pipelines, on the VLM path: 200 memes, 200
    calls, no OCR; copies of one member read at the same moment still make one meme."""
    from servers import FakeAPI, fake_api

    root = tmp_path / "ChineseBQB"
    captions = series_captions(200)
    for i, caption in enumerate(captions):
        plant(root, CATEGORIES[0], f"熊猫头{i:04d}.{'gif' if i % 10 == 0 else 'png'}",
              template_bytes(0, caption, "gif" if i % 10 == 0 else "png"))
    rnd = random.Random(22)
    original = template_bytes(0, captions[7], "png")
    for k, kind in enumerate(("jpeg", "resize", "crop")):  # read right after their original
        copy, ext = copy_of(original, kind, rnd)
        plant(root, CATEGORIES[0], f"熊猫头0007{k}.{ext}", copy)
    (tmp_path / "vlm.yaml").write_text("vlm:\n  provider: openai\n", encoding="utf-8")
    api = FakeAPI(api_key="sk-series")
    api.ocr = lambda image: hashlib.md5(image).hexdigest()[:12]  # type: ignore[method-assign]  # a VLM's answer, fast
    # Jina's wire format with vectors drawn from the text: the check is what is measured here, and
    # e5 on 200 descriptions was most of the test's CPU.
    api.embed = lambda texts, query: [  # type: ignore[method-assign]
        [b / 255 for b in hashlib.sha512(text.encode()).digest()] * 16 for text in texts]
    api.embedding_dimensions = 1024  # the preset's
    with fake_api(api) as url:
        run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), embedding="jina",
                        settings={"EMOMO_CONFIG": "vlm.yaml"},
                        env={"OPENAI_API_KEY": "sk-series", "OPENAI_BASE_URL": url, "VLM_MODEL": "test/vlm",
                             "JINA_API_KEY": "sk-series", "JINA_BASE_URL": url})
    state = read_state(tmp_path)
    assert len(state.memes) == 200
    assert api.calls["chat"] == 200
    assert run.stat("emomo/embed/ok") == 200
    assert run.stat("emomo/dedupe/near_duplicate") == 3
    assert "emomo/near/ocr_reads" not in run.stats
    linked = sources(tmp_path)
    copies = {linked[f"{CATEGORIES[0]}/熊猫头0007{k}.{ext}"] for k, ext in enumerate(("jpg", "png", "jpg"))}
    assert copies == {linked[f"{CATEGORIES[0]}/熊猫头0007.png"]}


def test_near_duplicates_on_postgresql(tmp_path: Path, cjk_font: str) -> None:
    import psycopg
    from servers import postgres_database

    root = tmp_path / "ChineseBQB"
    plant_pairs(root, range(130, 133), 600, random.Random(17))
    (tmp_path / "pg.yaml").write_text("database:\n  driver: postgres\n", encoding="utf-8")
    with postgres_database() as dsn:
        run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root),
                        settings={"EMOMO_CONFIG": "pg.yaml", "EMOMO_MAX_ITEMS_IN_FLIGHT": 1}, env={"DATABASE_URL": dsn})
        with psycopg.connect(dsn) as conn:
            memes = conn.execute("SELECT COUNT(*) FROM memes").fetchone()
            linked = conn.execute("SELECT COUNT(DISTINCT meme_id), COUNT(*) FROM meme_sources").fetchone()
    assert run.stat("emomo/dedupe/near_duplicate") == 3
    assert memes == (3,) and linked == (3, 6)


def test_a_caption_one_character_longer_is_another_meme() -> None:
    from emomo.config import DedupeConfig

    assert not same_text("今天也要开心", "今天也要开心吗", DedupeConfig().near_text_similarity)
    assert same_text("今天也要开心吗？", "今天 也要开心吗", DedupeConfig().near_text_similarity)


#: a long caption drawn small (14 px), and the same with its last character another: at 0.75 of
#: its size the second comes at 0.33 of the first's thumbnail, below dedupe.near_same (0.4)
LONG_CAPTION = "好运来锦鲤附我太难了摸鱼快真香告辞"
ONE_CHARACTER_APART = "好运来锦鲤附我太难了摸鱼快真香告好"


def test_a_reduced_file_of_a_long_caption_one_character_apart_is_another_meme(tmp_path: Path,
                                                                                cjk_font: str) -> None:
    """Reduced, the stroke that tells two small characters apart is gone from the thumbnail: a
    file at another scale than its candidate is the same picture only when nearer than
    ``near_same_rescaled``; between that and ``near_same`` the text decides. A reduced copy of
    the caption itself still joins its meme."""
    original = template_bytes(0, LONG_CAPTION, "png")
    other = resized(template_bytes(0, ONE_CHARACTER_APART, "png"), 0.75, Image.Resampling.BICUBIC)
    run = crawl_caption_other_and_copy(tmp_path, original, ("换字缩小.png", other),
                                       ("缩小副本.png", resized(original, 0.7, Image.Resampling.BILINEAR)))
    assert run.stat("emomo/near/ocr_reads") >= 1  # the text decided the reduced other caption


def test_a_resized_copy_is_compared_at_one_scale_before_any_text_is_read(tmp_path: Path, cjk_font: str) -> None:
    """Halved by a bilinear filter, a copy of a long caption is too far from its original's
    thumbnail for the bar of two scales: the two files are compared at one (the larger resized
    to the smaller's size), where the copy is the same picture and no text is read. The other
    caption, one character apart and reduced, is another meme there too, and the text decides it."""
    original = template_bytes(0, LONG_CAPTION, "png")
    copy = resized(original, 0.55, Image.Resampling.BILINEAR)
    [(at_two_scales, _)] = judge(measure(copy), [measure(original).thumb], [False], DedupeConfig(),
                                 sizes=[measure(original).source]).verdicts
    assert at_two_scales is Verdict.MAYBE
    root = tmp_path / "ChineseBQB"
    plant(root, CATEGORIES[0], "原图.png", original)
    plant(root, CATEGORIES[2], "缩小副本.png", copy)
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings={"EMOMO_MAX_ITEMS_IN_FLIGHT": 1})
    assert sources(tmp_path)[f"{CATEGORIES[2]}/缩小副本.png"] == sources(tmp_path)[f"{CATEGORIES[0]}/原图.png"]
    assert (run.stat("emomo/near/one_scale"), run.stat("emomo/near/one_scale_same")) == (1, 1)
    assert "emomo/near/ocr_reads" not in run.stats
    # the other caption at one scale is not the same: left to the text, which tells them apart
    other = resized(template_bytes(0, ONE_CHARACTER_APART, "png"), 0.75, Image.Resampling.BICUBIC)
    verdict, distance = one_scale_distance(DedupeConfig(), first_frame_grey(other), original)
    assert verdict is not Verdict.SAME and distance > DedupeConfig().near_same_same_size


def crawl_caption_other_and_copy(tmp_path: Path, original: bytes, other: tuple[str, bytes],
                                 copy: tuple[str, bytes]) -> Crawl:
    """A caption, another caption (name, bytes) and a copy of the first, crawled one at a time:
    two memes, the copy a source of the first."""
    root = tmp_path / "ChineseBQB"
    plant(root, CATEGORIES[0], "原图.png", original)
    plant(root, CATEGORIES[1], other[0], other[1])
    plant(root, CATEGORIES[2], copy[0], copy[1])
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings={"EMOMO_MAX_ITEMS_IN_FLIGHT": 1})
    linked = sources(tmp_path)
    assert linked[f"{CATEGORIES[1]}/{other[0]}"] != linked[f"{CATEGORIES[0]}/原图.png"]
    assert linked[f"{CATEGORIES[2]}/{copy[0]}"] == linked[f"{CATEGORIES[0]}/原图.png"]
    assert run.stat("emomo/dedupe/near_duplicate") == 1
    assert len(read_state(tmp_path).memes) == 2
    return run


#: fourteen small characters on the panda, the sixth another: both fully on the picture, and at
#: their own size only 0.32 apart (the one bar, 0.4, took them for one meme)
CAPTION_14 = "都可以给大佬递茶仰天长啸我不"
CAPTION_14_APART = "都可以给大美递茶仰天长啸我不"


def test_a_long_caption_one_character_apart_at_the_same_size_is_another_meme(tmp_path: Path,
                                                                              cjk_font: str) -> None:
    """Two files of one size were not resampled: a copy differs from its original only by its
    encoding (a JPEG at quality 30: 0.21 at most), so ``near_same_same_size`` is the bar, and
    between it and ``near_same`` the text decides. A heavily re-encoded copy still joins its
    meme."""
    original = template_bytes(0, CAPTION_14, "png")
    run = crawl_caption_other_and_copy(tmp_path, original, ("换一个字.png", template_bytes(0, CAPTION_14_APART, "png")),
                                       ("压缩副本.jpg", reencoded(original, 30)))
    assert run.stat("emomo/near/ocr_reads") >= 1  # the text decided the other caption


def test_at_one_size_a_copy_is_nearer_than_at_two_scales_or_a_crop() -> None:
    config = DedupeConfig()
    reference = measure(template_bytes(0, CAPTION_14, "png"))
    other = measure(template_bytes(0, CAPTION_14_APART, "png"))
    [(unsized, distance)] = judge(other, [reference.thumb], [False], config).verdicts
    assert config.near_same_same_size < distance <= config.near_same
    assert unsized is Verdict.SAME  # no size known: the one bar
    [(sized, _)] = judge(other, [reference.thumb], [False], config, sizes=[reference.source]).verdicts
    assert sized is Verdict.MAYBE
    copy = measure(reencoded(template_bytes(0, CAPTION_14, "png"), 30))
    [(verdict, near)] = judge(copy, [reference.thumb], [False], config, sizes=[reference.source]).verdicts
    assert verdict is Verdict.SAME and near <= config.near_same_same_size


def test_the_bars_must_be_ordered() -> None:
    with pytest.raises(ValueError, match=r"dedupe.near_same_same_size \(0.5\) must not be above dedupe.near_same"):
        DedupeConfig(near_same_same_size=0.5)


def test_two_sizes_are_two_scales_beyond_what_a_crop_of_a_few_pixels_leaves() -> None:
    assert rescaled((240, 240), (180, 180)) and rescaled((180, 180), (240, 240))
    assert rescaled((240, 240), (240, 300))  # one side is enough
    assert not rescaled((240, 240), (228, 230))  # 6 and 5 pixels cropped on each side
    assert not rescaled((240, 240), (0, 0))  # a size not known says nothing


def test_a_picture_at_another_scale_needs_a_nearer_thumbnail_to_be_the_same() -> None:
    """``judge`` with the candidates' sizes: the same distance is a copy at one scale, and left
    to the text at another."""
    config = DedupeConfig()
    reference = measure(template_bytes(0, LONG_CAPTION, "png"))
    reduced = measure(resized(template_bytes(0, ONE_CHARACTER_APART, "png"), 0.75, Image.Resampling.BICUBIC))
    [(unsized, distance)] = judge(reduced, [reference.thumb], [False], config).verdicts
    assert config.near_same_rescaled < distance <= config.near_same
    assert unsized is Verdict.SAME  # no size known: the one bar
    [(sized, _)] = judge(reduced, [reference.thumb], [False], config, sizes=[reference.source]).verdicts
    assert sized is Verdict.MAYBE
    assert reduced.source == (180, 180) and reference.source == (240, 240)


def test_a_better_copy_becomes_the_memes_file_and_everything_follows(tmp_path: Path, cjk_font: str) -> None:
    big = meme_bytes(CAPTIONS[120], 820, "png")
    im = Image.open(io.BytesIO(big))
    buf = io.BytesIO()
    im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=70)
    small = buf.getvalue()
    root = tmp_path / "ChineseBQB"
    plant(root, CATEGORIES[0], "小图.jpg", small)
    run_crawl(tmp_path, "chinesebqb", repo_path=str(root))
    before = read_state(tmp_path)
    assert len(before.memes) == 1 and before.memes[0]["width"] == im.width // 2

    plant(root, CATEGORIES[1], "大图.png", big)
    later = run_crawl(tmp_path, "chinesebqb", repo_path=str(root))
    assert later.stat("emomo/dedupe/better_file") == 1 and later.stat("emomo/dedupe/near_duplicate") == 1
    after = read_state(tmp_path)
    md5 = hashlib.md5(big).hexdigest()
    meme = after.memes[0]
    assert len(after.memes) == 1 and meme["id"] == before.memes[0]["id"]
    assert (meme["md5_hash"], meme["width"], meme["format"]) == (md5, im.width, "png")
    assert after.objects == [f"{md5[:2]}/{md5}.png"]  # the worse object is gone
    [point] = after.points[COLLECTION].values()
    assert point["md5"] == md5 and point["storage_url"].endswith(f"{md5[:2]}/{md5}.png")
    assert [v["md5_hash"] for v in after.vectors] == [md5]
    assert_consistent(after, COLLECTION)
    report = json.loads(scrapy(tmp_path, "verify", "--json").stdout)
    assert report["problems"] == 0, report
    hits = json.loads(scrapy(tmp_path, "search", CAPTIONS[120], "--json").stdout)
    assert [h["md5"] for h in hits] == [md5]

    # Both sources are done; a smaller copy later changes nothing.
    other = io.BytesIO()
    im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(other, "JPEG", quality=55)
    plant(root, CATEGORIES[2], "又一个小图.jpg", other.getvalue())
    again = run_crawl(tmp_path, "chinesebqb", repo_path=str(root))
    assert again.stat("emomo/dedupe/near_duplicate") == 1 and "emomo/dedupe/better_file" not in again.stats
    assert read_state(tmp_path).memes[0]["md5_hash"] == md5


def test_copies_read_at_the_same_moment_still_make_one_meme(tmp_path: Path, cjk_font: str) -> None:
    root = tmp_path / "ChineseBQB"
    rnd = random.Random(18)
    for i in range(6):
        data = meme_bytes(CAPTIONS[100 + i], 840 + i, "png")
        # Side by side in one folder: original and copy are in the pipelines together.
        plant(root, CATEGORIES[0], f"{i:03d}a.png", data)
        plant(root, CATEGORIES[0], f"{i:03d}b.jpg", variant(data, "jpeg", rnd)[0])
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings={"EMOMO_MAX_ITEMS_IN_FLIGHT": 12})
    assert run.stat("emomo/dedupe/near_duplicate") == 6
    assert len(read_state(tmp_path).memes) == 6


def test_flat_pictures_of_different_colours_are_not_merged(tmp_path: Path) -> None:
    root = tmp_path / "ChineseBQB"
    for i, colour in enumerate(((220, 40, 40), (40, 40, 220), (40, 200, 40))):
        buf = io.BytesIO()
        im = Image.new("RGB", (120, 120), colour)
        im.putpixel((i, i), (0, 0, 0))
        im.save(buf, "PNG")
        plant(root, CATEGORIES[i], f"纯色{i}.png", buf.getvalue())
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings={"EMOMO_MAX_ITEMS_IN_FLIGHT": 1})
    assert run.stat("emomo/ingest/processed") == 3  # no text, the same (empty) hash: still three memes
    assert "emomo/dedupe/near_duplicate" not in run.stats


def test_a_meme_recorded_before_thumbnails_gets_one_when_a_copy_arrives(tmp_path: Path, cjk_font: str) -> None:
    """Memes recorded by an earlier version have a hash and no thumbnail: a copy still merges,
    and the meme's thumbnail is measured from its object once and kept."""
    root = tmp_path / "ChineseBQB"
    data = template_bytes(2, CAPTIONS[30], "png")
    plant(root, CATEGORIES[0], "原图.png", data)
    run_crawl(tmp_path, "chinesebqb", repo_path=str(root))
    conn = sqlite3.connect(tmp_path / "data" / "emomo.db")
    with conn:
        conn.execute("UPDATE meme_phashes SET thumb = NULL, blocks = NULL")
    conn.close()
    plant(root, CATEGORIES[1], "副本.jpg", copy_of(data, "jpeg", random.Random(23))[0])
    later = run_crawl(tmp_path, "chinesebqb", repo_path=str(root))
    assert later.stat("emomo/dedupe/near_duplicate") == 1
    assert len(read_state(tmp_path).memes) == 1
    conn = sqlite3.connect(tmp_path / "data" / "emomo.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM meme_phashes WHERE thumb IS NOT NULL AND blocks IS NOT NULL"
                            ).fetchone() == (1,)
    finally:
        conn.close()


class _Stats(Counter[str]):
    def inc_value(self, key: str, count: int = 1) -> None:
        self[key] += count


def _check_runtime(repo: object) -> SimpleNamespace:
    """What ``find_near_duplicate`` needs of the crawl's runtime, on a real repository."""
    return SimpleNamespace(config=EmomoConfig(), repo=repo, store=None, describer=None, stats=_Stats(),
                           collection=COLLECTION, near_in_flight=NearInFlight(), near_index=NearIndex(),
                           should_stop=lambda: False)


def _item(data: bytes, n: int) -> tuple[ItemState, Picture]:
    """An item as the dedupe stage holds it: its md5, and its picture measured."""
    picture = measure(data)
    state = ItemState(md5=hashlib.md5(data).hexdigest(), source=f"file {n}")
    state.near = NearCheck.of(picture)
    return state, picture


async def _recorded(runtime: SimpleNamespace, state: ItemState, size: int) -> str:
    """The item recorded and indexed as the record and index stages would: its meme's id."""
    assert state.near is not None
    width, height = state.near.source  # the file's own size: the check's bar depends on it
    meme = MemeRecord(id=str(uuid.uuid4()), source_type="test", source_id=state.source, md5_hash=state.md5,
                      storage_key=f"{state.md5[:2]}/{state.md5}.png", format="png", width=width, height=height,
                      is_animated=False, file_size=size, status="active")
    await runtime.repo.insert_meme(meme, None, signature(state.near))
    await runtime.repo.record_vectors([VectorRecord(str(uuid.uuid4()), meme.id, state.md5, COLLECTION, "e5",
                                                    str(uuid.uuid4()))])
    runtime.near_index.add(meme.id, state.near.phash, state.near.blocks)
    return meme.id


def test_a_crop_in_flight_waits_for_its_original_that_took_it_for_another_caption(tmp_path: Path,
                                                                                    cjk_font: str) -> None:
    """A crop and its original side by side: the original's check ran while the crop's had not yet
    marked it out of its series' frame, compared the two in the series' frame and went on; the
    crop, checked next, found nothing recorded and became a meme of its own (on the VLM path 7-9
    of 16 crops beside their original were missed so). Now the crop waits for the original, which
    passed its check after the crop came, and is then merged into it."""
    captions = series_captions(12, offset=60)
    rnd = random.Random(5)
    original_data = template_bytes(2, captions[0], "png")
    crop_data, _ = copy_of(original_data, "crop", rnd)
    members = [template_bytes(2, caption, "png") for caption in captions[1:]]

    async def go() -> tuple[bool, int]:
        repo = SQLiteMemeRepository(DatabaseConfig(path=str(tmp_path / "emomo.db")))
        await repo.open()
        runtime = _check_runtime(repo)
        try:
            # Other captions of the series in flight, then the crop, then its original; none of
            # the first two has been checked yet (the crop is not marked out of frame).
            others = [_item(data, n)[0] for n, data in enumerate(members, 1)]
            for other in others:
                runtime.near_in_flight.enter(other.md5, other.near)
            crop, crop_picture = _item(crop_data, 0)
            runtime.near_in_flight.enter(crop.md5, crop.near)  # its check enters it again: no change
            original, original_picture = _item(original_data, 99)
            # The original's check takes the crop for another caption, and passes.
            assert await asyncio.wait_for(find_near_duplicate(runtime, original, original_data, original_picture),
                                          5) is None
            checking = asyncio.ensure_future(find_near_duplicate(runtime, crop, crop_data, crop_picture))
            await asyncio.sleep(0.3)
            for other in others:  # the other captions leave the pipelines (the crop may wait for them)
                runtime.near_in_flight.leave(other.md5, other.near)
            await asyncio.sleep(0.7)
            waited = not checking.done()
            # The original is recorded and indexed, and leaves the pipelines.
            meme_id = await _recorded(runtime, original, len(original_data))
            runtime.near_in_flight.leave(original.md5, original.near)
            match = await asyncio.wait_for(checking, 10)
            return waited, 1 if match is not None and match.meme.meme_id == meme_id else 0
        finally:
            await repo.close()

    waited, merged = asyncio.run(go())
    assert waited and merged == 1


def test_an_item_that_waited_for_a_copy_in_flight_looks_at_its_meme_whatever_the_index_ranks(
        tmp_path: Path, cjk_font: str) -> None:
    """An original waits for its crop in flight, which is recorded out of the series' frame and
    ranked in it: for the original's own ranking it can sit behind many other captions (37th of
    146 in bench/ingest.py), and the original became a meme of its own. The meme of an item
    waited for is looked at first."""
    captions = series_captions(41, offset=60)
    original_data = template_bytes(2, captions[0], "png")
    crop_data, _ = copy_of(original_data, "crop", random.Random(0))
    members = [template_bytes(2, caption, "png") for caption in captions[1:]]

    async def go() -> tuple[object, str, list[str]]:
        repo = SQLiteMemeRepository(DatabaseConfig(path=str(tmp_path / "emomo.db")))
        await repo.open()
        runtime = _check_runtime(repo)
        try:
            for n, data in enumerate(members, 1):
                await _recorded(runtime, _item(data, n)[0], len(data))
            crop, crop_picture = _item(crop_data, 0)
            assert await asyncio.wait_for(find_near_duplicate(runtime, crop, crop_data, crop_picture), 5) is None
            assert crop.near is not None and crop.near.shifted  # out of the recorded members' frame
            original, original_picture = _item(original_data, 99)
            checking = asyncio.ensure_future(find_near_duplicate(runtime, original, original_data, original_picture))
            await asyncio.sleep(0.5)
            assert not checking.done()  # it waits for the crop
            meme_id = await _recorded(runtime, crop, len(crop_data))
            runtime.near_in_flight.leave(crop.md5, crop.near)
            assert original.near is not None
            ranked = runtime.near_index.candidates(original_picture.phash, original.near.vector,
                                                   runtime.config.dedupe.near_distance,
                                                   runtime.config.dedupe.near_candidates)
            return await asyncio.wait_for(checking, 10), meme_id, ranked
        finally:
            await repo.close()

    match, meme_id, ranked = asyncio.run(go())
    assert meme_id not in ranked  # the index alone would not look at the crop
    assert match is not None and match.meme.meme_id == meme_id


def test_an_original_whose_crop_is_marked_out_of_frame_after_it_was_compared_waits_for_it(
        tmp_path: Path, cjk_font: str) -> None:
    """The other order of the race: the original compared the crop beside it (not yet marked out
    of frame) as another caption; then, while the original's check looked among the recorded,
    the crop's marked itself out of frame, found no original that had passed and went on. The
    original, before it passes, judges the crop again in its frame, waits for it and merges into
    it (both became memes before: crops were missed so on the VLM path)."""
    captions = series_captions(12, offset=60)
    original_data = template_bytes(2, captions[0], "png")
    crop_data, _ = copy_of(original_data, "crop", random.Random(5))
    members = [template_bytes(2, caption, "png") for caption in captions[1:]]

    class HeldRepository(SQLiteMemeRepository):
        """The first look for candidates (the original's) held until released."""

        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            self.asked, self.release = asyncio.Event(), asyncio.Event()

        async def near_candidates(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            if not self.asked.is_set():
                self.asked.set()
                await self.release.wait()
            return await super().near_candidates(*args, **kwargs)  # type: ignore[arg-type]

    async def go() -> tuple[object, str, Counter[str], bool]:
        repo = HeldRepository(DatabaseConfig(path=str(tmp_path / "emomo.db")))
        await repo.open()
        runtime = _check_runtime(repo)
        try:
            # Other captions recorded (candidates to look at) and in flight (the crop's check
            # finds itself out of their frame); then the crop, then its original.
            others = [_item(data, n) for n, data in enumerate(members, 1)]
            for n, (other, _) in enumerate(others[:6]):
                await _recorded(runtime, other, len(members[n]))
            for other, _ in others[6:]:
                runtime.near_in_flight.enter(other.md5, other.near)
            crop, crop_picture = _item(crop_data, 0)
            runtime.near_in_flight.enter(crop.md5, crop.near)
            original, original_picture = _item(original_data, 99)
            # The original's check compares the crop (not out of frame yet), then is held while
            # it looks among the recorded.
            checking = asyncio.ensure_future(find_near_duplicate(runtime, original, original_data, original_picture))
            await asyncio.wait_for(repo.asked.wait(), 5)
            assert crop.near is not None and not crop.near.shifted
            # The crop's check: out of the series' frame, no original passed after it: it goes on.
            assert await asyncio.wait_for(find_near_duplicate(runtime, crop, crop_data, crop_picture), 5) is None
            assert crop.near.shifted
            repo.release.set()
            await asyncio.sleep(0.5)
            assert not checking.done()  # the original waits for the crop
            meme_id = await _recorded(runtime, crop, len(crop_data))
            runtime.near_in_flight.leave(crop.md5, crop.near)
            match = await asyncio.wait_for(checking, 10)
            assert original.near is not None
            # Judged against the crop alone, the original is out of the crop's frame, not of the
            # series': it stays ranked, and would be recorded (as the meme's better file), as it is.
            return match, meme_id, runtime.stats, original.near.shifted
        finally:
            await repo.close()

    match, meme_id, stats, shifted = asyncio.run(go())
    assert match is not None and match.meme.meme_id == meme_id
    assert stats["emomo/near/waited_earlier"] == 1
    assert not shifted
