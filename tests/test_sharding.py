"""``-a shard=K/N`` (issue 14, first part): N workers split a file-based source, each item once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from conftest import scrapy, start_crawl, wait_for
from crawling import run_crawl
from memegen import CAPTIONS, CATEGORIES, build_tree
from scrapy.exceptions import UsageError
from servers import postgres_database
from workers import active_memes, shared_backends, wait_all, worker_config

from emomo.sharding import Shard


def test_shards_cover_every_source_id_exactly_once() -> None:
    ids = [f"{CATEGORIES[i % len(CATEGORIES)]}/表情{i}.jpg" for i in range(3000)]
    shards = [Shard(k, 3) for k in (1, 2, 3)]
    owners = [[s for s in shards if s.holds(i)] for i in ids]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(1 for o in owners if o[0] == s) for s in shards]
    assert all(900 <= n <= 1100 for n in sizes), sizes  # a fair split
    assert Shard.parse("2/3") == Shard(2, 3) and Shard.parse(None) is None


@pytest.mark.parametrize("value", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2"])
def test_a_bad_shard_says_what_it_expects(value: str) -> None:
    with pytest.raises(UsageError, match=rf"-a shard={value}: expected K/N with 1 <= K <= N"):
        Shard.parse(value)


def test_sharding_on_sqlite_is_refused_in_one_line(tmp_path: Path) -> None:
    got = scrapy(tmp_path, "crawl", "chinesebqb", "-a", "shard=1/2", "-a", f"repo_path={tmp_path}")
    assert got.returncode == 2
    assert got.stderr.rstrip().splitlines()[-1].endswith(
        "Cannot start the crawl: -a shard=1/2: the workers of a shared crawl need one database, and "
        "database.driver is sqlite (a file of one machine): set database.driver: postgres and DATABASE_URL")


def test_three_shards_of_chinesebqb_ingest_every_meme_once(tmp_path: Path, cjk_font: str) -> None:
    root = tmp_path / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[40:64], CATEGORIES, seed=14)
    (tmp_path / "pg.yaml").write_text("database:\n  driver: postgres\n", encoding="utf-8")
    with postgres_database() as dsn:
        env = {"DATABASE_URL": dsn}
        crawls = [run_crawl(tmp_path, "chinesebqb", repo_path=str(root), shard=f"{k}/3",
                            settings={"EMOMO_CONFIG": "pg.yaml"}, env=env) for k in (1, 2, 3)]
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT md5_hash, status FROM memes").fetchall()
    taken = [c.stats.get("emomo/ingest/processed", 0) for c in crawls]
    assert all(n > 0 for n in taken), taken                      # every worker did some of the work
    assert sum(taken) == len(planted)                            # and none twice
    assert [c.stat("emomo/chinesebqb/other_shard") for c in crawls] == [len(planted) - n for n in taken]
    assert sorted(r[0] for r in rows) == sorted(p.md5 for p in planted)
    assert {r[1] for r in rows} == {"active"}


@pytest.mark.slow
def test_two_workers_on_one_source_pay_for_each_image_once(tmp_path: Path, cjk_font: str) -> None:
    root = tmp_path / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[64:94], CATEGORIES, seed=15)
    with shared_backends(delay=0.3) as (api, dsn, env):
        procs = [start_crawl(tmp_path, "chinesebqb", "-a", f"repo_path={root}",
                             "-s", f"EMOMO_CONFIG={worker_config(tmp_path, name)}",
                             # a few items at a time each, so that neither claims the whole source at once
                             "-s", "EMOMO_MAX_ITEMS_IN_FLIGHT=4",
                             "-s", f"EMOMO_STATS_FILE={tmp_path / name}.json", env=env, log=tmp_path / f"{name}.log")
                 for name in ("a", "b")]
        codes = wait_all(procs)
        assert codes == [0, 0], [(tmp_path / f"{n}.log").read_text()[-2000:] for n in ("a", "b")]
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT md5_hash, status FROM memes").fetchall()
            claims = conn.execute("SELECT COUNT(*) FROM meme_claims").fetchone()
    stats = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("a", "b")]
    processed = [s.get("emomo/ingest/processed", 0) for s in stats]
    assert sorted(r[0] for r in rows) == sorted(p.md5 for p in planted) and {r[1] for r in rows} == {"active"}
    assert set(api.seen.values()) == {1} and len(api.seen) == len(planted)  # each image described once
    assert sum(processed) == len(planted) and all(n > 0 for n in processed), processed
    assert sum(s.get("emomo/dedupe/claimed_elsewhere", 0) for s in stats) > 0
    assert claims == (0,)  # every claim released


@pytest.mark.slow
def test_a_killed_workers_claims_are_taken_over_after_the_timeout(tmp_path: Path, cjk_font: str) -> None:
    root = tmp_path / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[94:118], CATEGORIES, seed=16)
    with shared_backends(delay=1.0) as (_, dsn, env):

        doomed = start_crawl(tmp_path, "chinesebqb", "-a", f"repo_path={root}",
                             "-s", f"EMOMO_CONFIG={worker_config(tmp_path, 'a', claim_timeout=3)}", env=env)
        assert wait_for(lambda: active_memes(dsn) >= 2, timeout=120)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
        with psycopg.connect(dsn) as conn:
            left = conn.execute("SELECT COUNT(*) FROM meme_claims").fetchone()[0]
        assert left > 0  # what it was doing when it died
        time.sleep(3.5)
        survivor = run_crawl(tmp_path, "chinesebqb", repo_path=str(root),
                             settings={"EMOMO_CONFIG": worker_config(tmp_path, "b", claim_timeout=3)}, env=env)
        assert "emomo/dedupe/claimed_elsewhere" not in survivor.stats  # the stale claims were taken over
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT md5_hash, status FROM memes").fetchall()
    assert sorted(r[0] for r in rows) == sorted(p.md5 for p in planted) and {r[1] for r in rows} == {"active"}


@pytest.mark.slow
def test_three_shard_workers_at_once_one_killed_its_shard_run_again_completes_the_source(
        tmp_path: Path, cjk_font: str) -> None:
    root = tmp_path / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[118:154], CATEGORIES, seed=18)
    names = {1: "a", 2: "b", 3: "c"}
    with shared_backends(delay=0.5) as (api, dsn, env):

        def worker(k: int, name: str) -> subprocess.Popen[str]:
            return start_crawl(tmp_path, "chinesebqb", "-a", f"repo_path={root}", "-a", f"shard={k}/3",
                               "-s", f"EMOMO_CONFIG={worker_config(tmp_path, name, claim_timeout=3)}",
                               "-s", "EMOMO_MAX_ITEMS_IN_FLIGHT=4",
                               "-s", f"EMOMO_STATS_FILE={tmp_path / name}.json", env=env,
                               log=tmp_path / f"{name}.log")

        procs = {k: worker(k, name) for k, name in names.items()}
        assert wait_for(lambda: active_memes(dsn) >= 6, timeout=180)
        os.killpg(procs[2].pid, signal.SIGKILL)  # mid-crawl, with items in flight
        codes = dict(zip(procs, wait_all(procs.values()), strict=True))
        assert codes == {1: 0, 2: -signal.SIGKILL, 3: 0}, [(tmp_path / f"{n}.log").read_text()[-2000:]
                                                            for n in ("a", "c")]
        time.sleep(3.5)  # the killed worker's claims lapse
        again = worker(2, "b2")  # the operator schedules its shard again
        assert again.wait(timeout=300) == 0, (tmp_path / "b2.log").read_text()[-2000:]
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT md5_hash, status FROM memes").fetchall()
            claims = conn.execute("SELECT COUNT(*) FROM meme_claims").fetchone()
    stats = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "c", "b2")}
    assert sorted(r[0] for r in rows) == sorted(p.md5 for p in planted) and {r[1] for r in rows} == {"active"}
    assert all(s.get("emomo/ingest/processed", 0) > 0 for s in stats.values()), stats
    assert "emomo/dedupe/claimed_elsewhere" not in stats["b2"]  # the dead worker's claims were taken over
    assert claims == (0,)
    # Only what the killed worker was describing when it died may have been paid for twice.
    assert len(api.seen) == len(planted) and sum(api.seen.values()) - len(planted) <= 4, api.seen
