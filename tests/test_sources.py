"""What the ChineseBQB walker and the image probe make of real names and real oddities."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from PIL import Image

from emomo.imaging import ImageError, probe, sniff_format
from emomo.sources.chinesebqb import category_names, file_tags, walk

INDEX = SHARED_DATA / "chinesebqb_github.json"


@pytest.mark.parametrize(("folder", "names"), [
    ("001Funny_滑稽大佬😏BQB", ["滑稽大佬"]),
    ("015Golden_Curator_Panda金馆长熊猫🐼BQB", ["金馆长熊猫"]),
    ("104JensenHuang_黄仁勋🧩_BQB", ["黄仁勋"]),
    ("020TATAN🤷‍♂️BQB", ["TATAN"]),
    ("070JOJO的奇妙冒险BQB", ["JOJO的奇妙冒险"]),
    ("058_2020Coronavirus_冠状病毒BQB", ["冠状病毒"]),
    ("斗图之王BQB", ["斗图之王"]),
    ("039YaoMing表情包三巨头_姚明BQB", ["表情包三巨头", "姚明"]),
])
def test_category_chinese_names(folder: str, names: list[str]) -> None:
    assert category_names(folder) == names


@pytest.mark.parametrize(("name", "tags"), [
    ("滑稽大佬00001-360度鄙视你.gif", ["滑稽大佬", "360度鄙视你"]),
    ("滑稽大佬00003-抱住-抱墙.gif", ["滑稽大佬", "抱住", "抱墙"]),
    ("Funny00012.gif", ["Funny", "滑稽大佬"]),
    ("000000001.gif", ["滑稽大佬"]),
    ("2c7889dbe9efbf7145d3ef669b11d22d.gif", ["滑稽大佬"]),
    ("{8A3C2E11-1B2C-4D5E-9F00-112233445566}.gif", ["滑稽大佬"]),
    ("QQ图片20180101123456.jpg", ["滑稽大佬"]),
    ("鸽", ["鸽", "滑稽大佬"]),
])
def test_file_name_tags(name: str, tags: list[str]) -> None:
    assert file_tags("001Funny_滑稽大佬😏BQB", name) == tags


@pytest.mark.skipif(not INDEX.exists(), reason="needs ../shared/data (the real ChineseBQB index)")
def test_every_real_index_entry_gets_a_category_tag() -> None:
    data = json.loads(INDEX.read_text(encoding="utf-8"))["data"]
    assert len(data) > 4000
    for entry in data:
        tags = file_tags(entry["category"], entry["name"])
        assert tags, entry
        assert all(t.strip() == t and t for t in tags), entry
        assert category_names(entry["category"])[0] in tags


def _image(fmt: str, size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


def test_probe_reads_the_format_from_the_bytes() -> None:
    for fmt, ours in (("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("WEBP", "webp")):
        data = _image(fmt, (12, 7))
        info = probe(data, max_pixels=10_000)
        assert (info.format, info.width, info.height, info.is_animated, info.file_size) == (ours, 12, 7, False,
                                                                                         len(data))
        assert sniff_format(data[:16]) == ours


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty file (0 bytes)"),
    (b"hello, not an image", "not an image"),
    (_image("PNG", (90, 90))[:2000], "broken or truncated image"),
    (_image("BMP"), "unsupported image format BMP (accepted: jpg, png, gif, webp)"),
    (_image("PNG", (200, 200)), "200x200 pixels is over ingest.max_pixels=10000"),
])
def test_probe_rejects_bad_images_with_a_clear_reason(data: bytes, message: str) -> None:
    with pytest.raises(ImageError) as err:
        probe(data, max_pixels=10_000)
    assert message in str(err.value)


def test_walk_is_deterministic_and_skips_what_is_no_meme(tmp_path: Path) -> None:
    cat = tmp_path / "001Funny_滑稽大佬😏BQB"
    cat.mkdir()
    (cat / "b.png").write_bytes(_image("PNG"))
    (cat / "a-没有扩展名").write_bytes(_image("JPEG"))
    (cat / "index.md").write_text("# x")
    (cat / "notes").write_text("plain text, no extension")
    (cat / "c.gif.bdc-downloading").write_bytes(_image("GIF"))
    (tmp_path / "cdn").mkdir()
    (tmp_path / "cdn" / "x.png").write_bytes(_image("PNG"))
    (tmp_path / "001Funny.zip").write_bytes(b"PK\x03\x04")
    found = [f.rel_path for f in walk(tmp_path)]
    assert found == ["001Funny_滑稽大佬😏BQB/a-没有扩展名", "001Funny_滑稽大佬😏BQB/b.png"]


def test_page_tracker_advances_over_done_pages_and_survives_a_resume() -> None:
    from emomo.sources.fabiaoqing import PageTracker

    cursors: list[int] = []
    saved: dict = {}
    tracker = PageTracker(1, cursors.append)
    tracker.on_change = saved.update
    tracker.page_parsed(1, 2)
    tracker.page_parsed(2, 1)
    tracker.image_done(2)
    assert cursors == []  # page 1 still has two images out
    tracker.image_done(1)
    # A resumed run (JOBDIR) picks the bookkeeping up where it was left.
    resumed = PageTracker.from_dict(saved, cursors.append)
    resumed.image_done(1)
    assert cursors == [2] and resumed.next_page == 3
    resumed.image_done(7)  # a page it never heard of: ignored, the cursor stays
    resumed.page_parsed(3, 0)
    assert cursors == [2, 3]
