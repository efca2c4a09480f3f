"""``scrapy crawl staging -a source=ID``: a crawl output folder in the seed's manifest format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_consistent, read_state
from crawling import run_crawl
from memegen import meme_bytes
from scrapy.exceptions import UsageError

COLLECTION = "emomo-e5-small"


def test_staging_folder_ingests_good_lines_and_reports_bad_ones_by_line(tmp_path: Path, cjk_font: str) -> None:
    folder = tmp_path / "staging" / "fabiaoqing"
    images = folder / "images"
    images.mkdir(parents=True)
    good = {}
    lines = []
    for i, (caption, fmt) in enumerate([("好小子", "jpg"), ("我看不懂但我大受震撼", "gif"),
                                         ("你是懂表情包的", "png"), ("我先溜了", "webp")]):
        item_id = f"{i:016x}"
        data = meme_bytes(caption, 100 + i, fmt)
        (images / f"{item_id}.{fmt}").write_bytes(data)
        good[item_id] = caption
        lines.append(json.dumps({
            "id": item_id, "filename": f"{item_id}.{fmt}", "category": "表情", "tags": [caption, "小子表情"],
            "source_url": f"https://img.example/bmiddle/{item_id}.{fmt}", "is_animated": fmt == "gif",
            "format": fmt, "crawled_at": "2026-11-01T00:00:00Z"}, ensure_ascii=False))
    (tmp_path / "secret.png").write_bytes(meme_bytes("不该读到", 9, "png"))
    lines[1:1] = ['{"id": "broken", "filename": ']  # line 2: not JSON
    lines.append(json.dumps({"id": "gone", "filename": "gone.jpg", "tags": []}))  # line 6: no such file
    lines.append(json.dumps({"id": "escape", "filename": "../../secret.png", "tags": []}))  # line 7
    lines.append(json.dumps({"id": "notags", "filename": "0000000000000000.jpg", "tags": "x"}))  # line 8
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    run = run_crawl(tmp_path, "staging", source="fabiaoqing", staging_path=str(tmp_path / "staging"))
    state = read_state(tmp_path)
    assert len(state.memes) == 4
    assert_consistent(state, COLLECTION)
    by_source = {m["source_id"]: m for m in state.memes}
    assert set(by_source) == {f"fabiaoqing_{i}" for i in good}
    for item_id, caption in good.items():
        meme = by_source[f"fabiaoqing_{item_id}"]
        assert meme["source_type"] == "staging:fabiaoqing"
        assert meme["source_url"].endswith(item_id + "." + meme["format"])
        assert caption in meme["vlm_description"]
        assert json.loads(meme["tags"]) == [caption, "小子表情"]
    manifest = str(folder / "manifest.jsonl")
    warnings = [line for line in run.lines(manifest, "WARNING")]
    assert any("line 2: invalid JSON" in w for w in warnings)
    assert any("line 6: file" in w and "gone.jpg does not exist" in w for w in warnings)
    assert any("line 7: filename '../../secret.png' escapes" in w for w in warnings)
    assert any("line 8: field 'tags' must be a list" in w for w in warnings)
    assert run.stat("emomo/staging/skipped/invalid_line") == 2
    assert run.stat("emomo/staging/skipped/missing_file") == 1
    assert run.stat("emomo/staging/skipped/unsafe_filename") == 1
    assert run.stat("emomo/ingest/processed") == 4

    import asyncio

    from emomo.config import load_config
    from emomo.query import search

    hits = asyncio.run(search(load_config(env={}, base_dir=tmp_path), "我看不懂但我大受震撼", top=1))
    assert hits[0]["source_id"] == "fabiaoqing_" + next(k for k, v in good.items() if v == "我看不懂但我大受震撼")
    assert hits[0]["is_animated"] is True and hits[0]["format"] == "gif"


def test_staging_needs_a_source_with_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="pass -a source=ID"):
        run_crawl(tmp_path, "staging")
    with pytest.raises(UsageError) as err:
        run_crawl(tmp_path, "staging", source="nothing", staging_path=str(tmp_path))
    assert f"no manifest.jsonl in {tmp_path / 'nothing'}" in str(err.value)


def test_a_manifest_of_nothing_but_bad_lines_is_no_success(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "staging" / "bad"
    (folder / "images").mkdir(parents=True)
    (folder / "manifest.jsonl").write_text('{"id": 1}\nnot json\n{"id": "x", "file": "../../etc/passwd"}\n',
                                           encoding="utf-8")
    run = run_crawl(tmp_path, "staging", source="bad")
    assert run.finish_reason == "nothing_usable"
    assert run.lines("Nothing to ingest: all 3 entries of the source were skipped", "ERROR")
    from emomo.commands.crawl import EXIT_CODES

    assert EXIT_CODES["nothing_usable"] == 1


def test_ids_that_share_a_file_are_each_a_source_of_its_meme(tmp_path: Path, cjk_font: str) -> None:
    import sqlite3
    import threading

    folder = tmp_path / "staging" / "shop"
    images = folder / "images"
    images.mkdir(parents=True)
    (images / "one.gif").write_bytes(meme_bytes("摸鱼快乐", 1, "gif"))
    (images / "two.png").write_bytes(meme_bytes("溜了溜了", 2, "png"))
    (images / "link.gif").symlink_to("one.gif")
    lines = [{"id": "a", "filename": "one.gif"}, {"id": "b", "filename": "one.gif"},
             {"id": "c", "filename": "link.gif"}, {"id": "d", "filename": "two.png"}]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    # Once, the third id of one file waited for the first's in-flight entry, which the second
    # had taken over: a crawl that never ended.
    box = {}
    worker = threading.Thread(target=lambda: box.update(run=run_crawl(
        tmp_path, "staging", source="shop", staging_path=str(tmp_path / "staging"))), daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "the crawl did not end"
    run = box["run"]
    assert run.finish_reason == "finished"
    assert run.stat("emomo/ingest/processed") == 2 and run.stat("emomo/ingest/duplicate") == 2
    with sqlite3.connect(tmp_path / "data" / "emomo.db") as db:
        sources = dict(db.execute("SELECT source_id, meme_id FROM meme_sources").fetchall())
        memes = dict(db.execute("SELECT id, md5_hash FROM memes").fetchall())
    assert sorted(sources) == ["shop_a", "shop_b", "shop_c", "shop_d"]
    assert sources["shop_a"] == sources["shop_b"] == sources["shop_c"] != sources["shop_d"]
    assert len(memes) == 2
