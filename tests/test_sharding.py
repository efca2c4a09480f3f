"""``-a shard=K/N`` (issue 14, first part): N workers split a file-based source, each item once."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from conftest import scrapy
from crawling import run_crawl
from memegen import CAPTIONS, CATEGORIES, build_tree
from scrapy.exceptions import UsageError
from servers import postgres_database

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
