"""What an operator runs into (issue 10): a file changed in place, a write outage mid-crawl, an API
that asks to wait an hour, an embedder that refuses one item. Paid work is never paid twice and
stats agree with rows."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_consistent, assert_no_orphans, read_state
from crawling import run_crawl
from memegen import CAPTIONS, CATEGORIES, build_tree, meme_bytes
from servers import FakeAPI, Faults, fake_api

COLLECTION = "emomo-e5-small"
KEY = "sk-test-OPERATOR-31"


@pytest.fixture
def vlm(tmp_path: Path) -> Iterator[tuple[FakeAPI, dict[str, str], dict[str, str]]]:
    """A paid describer on loopback, and the crawl settings and environment that use it."""
    api = FakeAPI(api_key=KEY)
    (tmp_path / "vlm.yaml").write_text(
        "vlm:\n  provider: openai\n  max_in_flight: 4\n  retries: 1\n"
        "ingest:\n  max_write_failures: 4\n", encoding="utf-8")
    with fake_api(api) as url:
        yield api, {"EMOMO_CONFIG": "vlm.yaml"}, {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url,
                                                 "VLM_MODEL": "test/vlm"}


def search_top(workdir: Path, text: str, env: dict[str, str]) -> dict:
    import asyncio
    import os

    from emomo.config import load_config
    from emomo.query import search

    config = load_config(workdir / "vlm.yaml", env={**os.environ, **env}, base_dir=workdir)
    return asyncio.run(search(config, text, top=1))[0]


def test_a_file_changed_in_place_is_ingested_once_before_any_paid_call(
        tmp_path: Path, cjk_font: str, vlm: tuple[FakeAPI, dict[str, str], dict[str, str]]) -> None:
    api, args, env = vlm
    root = tmp_path / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[150:156], CATEGORIES, seed=31)
    # A second source holding planted[1]'s image: that meme must outlive the change of the first.
    copy = f"{CATEGORIES[3]}/副本00001-{planted[1].caption}.{planted[1].format}"
    shutil.copyfile(root / planted[1].rel_path, root / copy)
    first = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings=args, env=env)
    assert first.stat("emomo/ingest/processed") == 6 and api.calls["chat"] == 6

    new0, new1 = meme_bytes("换了新图", 901, "png"), meme_bytes("又换一张", 902, "png")
    (root / planted[0].rel_path).write_bytes(new0)
    (root / planted[1].rel_path).write_bytes(new1)
    second = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings=args, env=env)
    assert api.calls["chat"] == 8  # the two new contents, once each
    assert second.stat("emomo/dedupe/changed") == 2
    assert second.stat("emomo/ingest/processed") == 2 and "emomo/ingest/failed" not in second.stats
    state = read_state(tmp_path)
    import hashlib

    by_md5 = {m["md5_hash"]: m for m in state.memes}
    for data in (new0, new1):
        assert by_md5[hashlib.md5(data).hexdigest()]["status"] == "active"
    assert by_md5[planted[0].md5]["status"] == "retired"  # no other source held it
    assert by_md5[planted[1].md5]["status"] == "active"  # the copy still holds it
    assert planted[0].md5 not in {p.get("md5") for p in state.points[COLLECTION].values()}
    assert_no_orphans(state, COLLECTION)
    assert search_top(tmp_path, "换了新图", env)["md5"] == hashlib.md5(new0).hexdigest()

    third = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings=args, env=env)
    assert api.calls["chat"] == 8
    assert "emomo/ingest/processed" not in third.stats and "emomo/dedupe/changed" not in third.stats


def block_store(workdir: Path) -> None:
    """The object store stops taking writes: a file where each folder of keys would go."""
    objects = workdir / "data" / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    for i in range(256):
        (objects / f"{i:02x}").touch()


def block_database(workdir: Path) -> None:
    """The database stops taking writes of memes and descriptions (a full disk, say)."""
    conn = sqlite3.connect(workdir / "data" / "emomo.db")
    for table in ("memes", "meme_descriptions"):
        conn.execute(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                     "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    conn.commit()
    conn.close()


def unblock(workdir: Path, outage: str) -> None:
    if outage == "store":
        for i in range(256):
            (workdir / "data" / "objects" / f"{i:02x}").unlink()
        return
    conn = sqlite3.connect(workdir / "data" / "emomo.db")
    for table in ("memes", "meme_descriptions"):
        conn.execute(f"DROP TRIGGER refuse_{table}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(("outage", "backend"), [("store", "storage (local)"), ("database", "database (sqlite)")])
def test_a_write_outage_stops_the_crawl_and_no_description_is_paid_twice(
        tmp_path: Path, cjk_font: str, vlm: tuple[FakeAPI, dict[str, str], dict[str, str]], outage: str,
        backend: str) -> None:
    api, args, env = vlm
    # A VLM takes its time (the seed's: 2 s): an instant one would be paid for items that pass it
    # while the first failing writes are still on their way.
    api.vlm_faults = Faults(delay=0.3)
    root = tmp_path / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[100:120], CATEGORIES, seed=33)
    migrate(tmp_path)
    block_store(tmp_path) if outage == "store" else block_database(tmp_path)
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings=args, env=env)
    assert run.finish_reason == "write_failures"  # scrapy crawl exits 1 for it
    stopped = run.lines("Stopping the crawl:")
    assert len(stopped) == 1 and backend in stopped[0] and "4 writes in a row failed" in stopped[0], stopped
    paid = api.calls["chat"]
    assert 4 <= paid <= 4 + 4 + 4  # the failures, the calls in flight, and no more
    assert "; write_failures)" in run.summary()

    unblock(tmp_path, outage)
    again = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings=args, env=env)
    assert api.calls["chat"] == len(planted)  # what was paid for before the outage was kept
    assert again.stat("emomo/describe/cached") == paid
    state = read_state(tmp_path)
    assert state.active_md5s() == {p.md5 for p in planted}
    assert_consistent(state, COLLECTION)


def test_a_retry_after_beyond_the_cap_parks_the_item_at_once(tmp_path: Path, cjk_font: str,
                                                              vlm: tuple[FakeAPI, dict[str, str], dict[str, str]],
                                                              ) -> None:
    api, args, env = vlm
    api.vlm_faults = Faults(throttle_first=True, retry_after="3600")
    root = tmp_path / "ChineseBQB"
    build_tree(root, CAPTIONS[156:159], CATEGORIES, seed=35)
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings=args, env=env)
    assert api.calls["chat"] == 3  # no retry an hour later, no retry at all
    assert run.stat("emomo/ingest/pending") == 3 and run.stat("emomo/describe/failed") == 3
    assert "Retry-After of 3600 s is over vlm.retry_max_delay=30" in run.log
    state = read_state(tmp_path)
    assert {m["status"] for m in state.memes} == {"pending"}
    assert_no_orphans(state, COLLECTION)


def migrate(workdir: Path) -> None:
    from test_failures_and_restart import migrate as create

    create(workdir)


def test_an_embedder_refusing_one_item_marks_that_row_failed(tmp_path: Path, cjk_font: str) -> None:
    api = FakeAPI(api_key=KEY, embed_fail=lambda text: 400 if "这个锅我不背" in text else None)
    root = tmp_path / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[40:46], CATEGORIES, seed=37)
    assert any(p.caption == "这个锅我不背" for p in planted)
    with fake_api(api) as url:
        (tmp_path / "jina.yaml").write_text(
            "embeddings:\n"
            f"  - {{name: jina, provider: jina, model: m, base_url: {url}, dimensions: 384,"
            " collection: emomo-jina, is_default: true, retries: 0}\n", encoding="utf-8")
        run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings={"EMOMO_CONFIG": "jina.yaml"},
                        env={"JINA_API_KEY": KEY})
    state = read_state(tmp_path)
    statuses = {m["md5_hash"]: m["status"] for m in state.memes}
    refused = next(p.md5 for p in planted if p.caption == "这个锅我不背")
    assert statuses.pop(refused) == "failed"
    assert set(statuses.values()) == {"active"}
    assert run.stat("emomo/ingest/failed") == 1 and "emomo/ingest/pending" not in run.stats
    assert run.stat("emomo/ingest/processed") == 5
    assert_no_orphans(state, "emomo-jina")
