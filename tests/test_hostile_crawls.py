"""Hostile sources end to end (issue 9): the crawl ends, reads nothing outside its source, says
every file it skipped, keeps every good item, stores clean text on every backend, exits non-zero
when its start failed, and never logs a secret."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import psycopg
import pytest
from conftest import read_state, scrapy
from crawling import run_crawl
from hostile import CATEGORY, hostile_tree, manifest_line
from memegen import meme_bytes
from psycopg.rows import dict_row
from servers import FakeAPI, Faults, fake_api, postgres_database

from emomo.text import escape_name


def test_a_hostile_chinesebqb_tree_is_crawled_to_the_end(tmp_path: Path, cjk_font: str) -> None:
    tree = hostile_tree(tmp_path / "src")
    work = tmp_path / "work"
    work.mkdir()
    run = run_crawl(work, "chinesebqb", repo_path=str(tree.root))
    assert run.finish_reason == "finished"
    state = read_state(work)
    import hashlib

    good_md5s = {hashlib.md5(d).hexdigest() for d in tree.good.values()}
    assert state.active_md5s() == good_md5s
    outside_md5 = hashlib.md5(tree.outside_image).hexdigest()
    assert outside_md5 not in {m["md5_hash"] for m in state.memes}
    assert not [o for o in state.objects if outside_md5 in o]
    ids = {m["source_id"] for m in state.memes}
    assert f"{CATEGORY}/我\\xff.png" in ids and "100Bad_\\xff\\xfeBQB/bad00001.png" in ids
    categories = {m["category"] for m in state.memes}
    assert "100Bad_\\xff\\xfeBQB" in categories

    # Every skipped path said once, with where a refused link points; never the bytes behind it.
    for rel, kind in tree.skipped.items():
        lines = run.lines(escape_name(str(tree.root / rel)), "WARNING")
        assert len(lines) == 1, (rel, lines)
        assert run.stat(f"emomo/chinesebqb/skipped/{kind}") >= 1
    assert run.stat("emomo/chinesebqb/skipped/link_outside") == 4
    assert run.stat("emomo/chinesebqb/skipped/not_regular") == 2
    assert run.stat("emomo/chinesebqb/skipped/unsupported_format") == 4
    assert run.stat("emomo/chinesebqb/skipped/link_loop") == 1
    assert "root:x:0" not in run.log
    assert "-> /etc/passwd" in run.log
    summary = run.summary()
    assert "skipped by the spider: 1 link_loop, 4 link_outside, 2 not_regular, 4 unsupported_format" in summary


def staging_folder(base: Path, *, with_nul: bool = False) -> Path:
    folder = base / "staging" / "shop"
    (folder / "images").mkdir(parents=True)
    captions = ("好小子", "我看不懂但我大受震撼", "你是懂表情包的", "我先溜了")
    for i, caption in enumerate(captions):
        (folder / "images" / f"{i}.png").write_bytes(meme_bytes(caption, 60 + i, "png"))
    huge = "巨" * 300_000
    lines = [
        b"\xef\xbb\xbf" + manifest_line(id="0", filename="0.png", category="表情", tags=[captions[0]]),
        b'{"id": "x", "filename": "1.png", "tags": ["\xff\xfe"]}\n',
        manifest_line(id="1", filename="1.png", category="表情", tags=[captions[1], huge]),
        manifest_line(id="nul", filename="2\u0000.png", tags=[]),
        manifest_line(id="2", filename="2.png", category="表\u0000情" if with_nul else "表情",
                      tags=[captions[2] + ("\u0000" if with_nul else "")]),
        manifest_line(id="0", filename="3.png", tags=[]),
        manifest_line(id="3", filename="3.png", category="表情", tags=[captions[3]]),
    ]
    (folder / "manifest.jsonl").write_bytes(b"".join(lines))
    return folder


def test_a_hostile_manifest_ingests_its_good_lines_and_bounds_text(tmp_path: Path, cjk_font: str) -> None:
    staging_folder(tmp_path)
    run = run_crawl(tmp_path, "staging", source="shop", staging_path=str(tmp_path / "staging"))
    assert run.finish_reason == "finished"
    state = read_state(tmp_path)
    assert {m["source_id"] for m in state.memes} == {"shop_0", "shop_1", "shop_2", "shop_3"}
    assert {m["status"] for m in state.memes} == {"active"}
    by_id = {m["source_id"]: m for m in state.memes}
    tags = json.loads(by_id["shop_1"]["tags"])
    assert tags[0] == "我看不懂但我大受震撼" and tags[1] == "巨" * 64
    assert len(by_id["shop_1"]["vlm_description"]) <= 600
    assert run.stat("emomo/read/truncated") == 1
    assert run.stat("emomo/staging/skipped/invalid_line") == 1
    assert run.stat("emomo/staging/skipped/unsafe_filename") == 1
    assert run.stat("emomo/staging/skipped/duplicate_id") == 1
    manifest = str(tmp_path / "staging" / "shop" / "manifest.jsonl")
    warnings = run.lines(manifest, "WARNING")
    assert any("line 2: not UTF-8" in w for w in warnings)
    assert any("line 6: id '0' was given on line 1" in w for w in warnings)
    assert "skipped by the spider: 1 duplicate_id, 1 invalid_line, 1 unsafe_filename" in run.summary()


def test_nul_and_control_characters_are_cleaned_the_same_on_postgres(tmp_path: Path, cjk_font: str) -> None:
    staging_folder(tmp_path, with_nul=True)
    (tmp_path / "pg.yaml").write_text("database:\n  driver: postgres\n", encoding="utf-8")
    with postgres_database() as dsn:
        run = run_crawl(tmp_path, "staging", source="shop", staging_path=str(tmp_path / "staging"),
                        settings={"EMOMO_CONFIG": "pg.yaml"}, env={"DATABASE_URL": dsn})
        assert run.finish_reason == "finished"
        assert "emomo/ingest/failed" not in run.stats
        with psycopg.connect(dsn, row_factory=dict_row) as conn:
            memes = {m["source_id"]: m for m in conn.execute("SELECT * FROM memes")}
    assert memes["shop_2"]["status"] == "active"
    assert memes["shop_2"]["category"] == "表情"
    assert json.loads(memes["shop_2"]["tags"]) == ["你是懂表情包的"]


def test_a_manifest_that_cannot_be_read_stops_at_start_with_exit_2(tmp_path: Path) -> None:
    folder = tmp_path / "staging" / "shop"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "manifest.jsonl")
    run = scrapy(tmp_path, "crawl", "staging", "-a", "source=shop", "-a", f"staging_path={tmp_path / 'staging'}",
                 timeout=60)
    assert run.returncode == 2
    assert f"{folder / 'manifest.jsonl'} is not a regular file" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_crawl_whose_start_failed_does_not_exit_0(tmp_path: Path) -> None:
    run = scrapy(tmp_path, "crawl", "broken_start", "-s", "SPIDER_MODULES=spiders,hostile_spiders", timeout=60)
    assert "Error while reading start items and requests" in run.stderr
    assert run.returncode == 1


@pytest.mark.parametrize(("args", "config", "message"), [
    (["-s", "CONCURRENT_ITEMS=0"], None, "CONCURRENT_ITEMS must be a positive whole number, got 0"),
    ([], "ingest:\n  ocr_threads: -2\n", "ingest.ocr_threads must be >= 0, got -2"),
    ([], "ingest:\n  ocr_threads: [1\n", "not valid YAML"),
])
def test_bad_numbers_and_yaml_stop_the_crawl_in_one_line(tmp_path: Path, args: list[str], config: str | None,
                                                         message: str) -> None:
    repo = Path(__file__).resolve().parent.parent / "samples" / "ChineseBQB"
    if config is not None:
        (tmp_path / "c.yaml").write_text(config, encoding="utf-8")
        args = [*args, "-s", "EMOMO_CONFIG=c.yaml"]
    run = scrapy(tmp_path, "crawl", "chinesebqb", "-a", f"repo_path={repo}", *args, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    # Scrapy's start-up banner, then the refusal: one line, the last, naming the key.
    errors = [line for line in run.stderr.splitlines() if message in line]
    assert len(errors) == 1, run.stderr[-2000:]
    assert run.stderr.rstrip().splitlines()[-1] == errors[0]
    assert "Cannot start the crawl: " in errors[0]
    assert "Traceback" not in run.stderr and "Usage" not in run.stderr


def test_an_upstream_error_body_is_logged_truncated_with_every_secret_masked(tmp_path: Path,
                                                                             cjk_font: str) -> None:
    key = "sk-test-ECHOED-5e6f7a"
    api = FakeAPI(api_key=key, vlm_faults=Faults(echo=True))
    repo = tmp_path / "bqb" / CATEGORY
    repo.mkdir(parents=True)
    for i, caption in enumerate(("回显", "密钥")):
        (repo / f"x{i:05d}-{caption}.png").write_bytes(meme_bytes(caption, 80 + i, "png"))
    (tmp_path / "vlm.yaml").write_text("vlm:\n  provider: openai\n  retries: 0\n", encoding="utf-8")
    with fake_api(api) as url:
        run = run_crawl(tmp_path, "chinesebqb", repo_path=str(tmp_path / "bqb"), settings={"EMOMO_CONFIG": "vlm.yaml"},
                        env={"OPENAI_API_KEY": key, "OPENAI_BASE_URL": url, "VLM_MODEL": "test/vision"})
    assert run.finish_reason == "finished"
    assert api.calls["chat"] == 2
    failures = run.lines("describe failed for")
    assert len(failures) == 2
    assert key not in run.log
    assert all("Bearer ***" in line for line in failures), failures
    assert all(len(line) < 1200 for line in failures)
    db = sqlite3.connect(tmp_path / "data" / "emomo.db")
    assert {r[0] for r in db.execute("SELECT status FROM memes")} == {"failed"}
    db.close()


def test_a_file_name_cannot_write_its_own_log_line(tmp_path: Path, cjk_font: str) -> None:
    category = tmp_path / "repo" / "001Funny_滑稽BQB"
    category.mkdir(parents=True)
    (category / "好的00001-好的.png").write_bytes(meme_bytes("好的", 1, "png"))
    forged = "2026-11-29 12:00:00 [emomo.ingest] INFO: Ingest summary: 999 processed"
    (category / f"坏\n{forged}\r\x1b[2J.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(tmp_path / "repo"))
    assert run.stat("emomo/ingest/processed") == 1 and run.stat("emomo/ingest/invalid") == 1
    assert not [line for line in run.log.splitlines() if line.startswith(forged[:30])]
    [warning] = run.lines("Invalid image", "WARNING")
    assert "\\n2026-11-29 12:00:00" in warning and "\x1b" not in warning and "\r" not in warning
