"""``-a frontier=redis://…`` (issue 14): several fabiaoqing workers share one crawl through Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from conftest import read_points, scrapy, start_crawl, wait_for
from fabiaoqing_site import Mirror, build_mirror, serve_mirror
from workers import shared_backends, wait_all, worker_config

from emomo.frontier import Frontier, frontier_key

REDIS = "redis://127.0.0.1:6379/0"
FAST = ("-s", "DOWNLOAD_DELAY=0", "-s", "AUTOTHROTTLE_ENABLED=0", "-s", "DOWNLOAD_MAXSIZE=100000")


@pytest.fixture
def crawl_name() -> Iterator[str]:
    """A crawl name of this test's own; whatever it leaves in Redis is deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    Frontier.from_url(REDIS, frontier_key("fabiaoqing", name)).clear()


def keys_of(name: str) -> list[str]:
    return sorted(redis.Redis.from_url(REDIS, decode_responses=True).keys(f"{frontier_key('fabiaoqing', name)}:*"))


def test_the_crawl_is_over_only_when_the_queue_is_empty_and_no_worker_is_busy(crawl_name: str) -> None:
    key = frontier_key("fabiaoqing", crawl_name)
    a, b = (Frontier.from_url(REDIS, key, worker, busy_ttl=2) for worker in ("a", "b"))
    assert a.done()  # nothing queued, nobody busy
    a.server.zadd(a.queue_key, {b"request": 0})
    assert not a.done() and not b.done()
    a.mark_busy()
    a.server.zpopmin(a.queue_key)  # a took the last request
    assert not b.done()  # ...and may still add more
    a.mark_idle()
    assert b.done()
    b.mark_busy()
    time.sleep(3.1)  # b died without going idle: its mark lapses by the Redis clock
    assert a.done()


def test_held_requests_go_back_to_the_queue_when_their_worker_dies_or_stops(crawl_name: str) -> None:
    key = frontier_key("fabiaoqing", crawl_name)
    a, b = (Frontier.from_url(REDIS, key, worker, busy_ttl=2) for worker in ("a", "b"))
    for n in range(3):
        a.server.zadd(a.queue_key, {f"request-{n}".encode(): n})
    held = [a.take(), a.take(), b.take()]
    assert [data for _, data in held] == [b"request-0", b"request-1", b"request-2"]  # best score first
    a.release(held[0][0])  # its work is done
    assert not a.done() and b.take_over() == 0  # a's mark is alive: nothing to take over
    time.sleep(2.1)  # a dies without a word; b stops and gives back its own and the dead one's
    assert b.give_back() == 2
    assert b.take_over() == 0  # nothing is held any more
    assert sorted(a.server.zrange(a.queue_key, 0, -1)) == [b"request-1", b"request-2"]
    assert not a.done()
    a.server.delete(a.queue_key)
    assert a.done()


def test_the_shared_page_tracker_counts_every_workers_images(crawl_name: str) -> None:
    key = frontier_key("fabiaoqing", crawl_name)
    moved: list[int] = []
    first = Frontier.from_url(REDIS, key).tracker(3, moved.append)
    other = Frontier.from_url(REDIS, key).tracker(1, moved.append)  # a later worker's start does not count
    assert other.first_page == 3
    first.page_parsed(3, 2)
    other.page_parsed(4, 1)
    other.image_done(3)
    other.image_done(4)
    assert moved == []  # page 3 has an image outstanding
    first.image_done(3)
    assert moved == [4]  # pages 3 and 4 are done: the cursor moves past both at once
    first.image_done(9)  # a page this crawl never parsed
    first.page_parsed(5, 0)
    assert moved == [4, 5]


@pytest.mark.parametrize(("extra", "expected"), [
    ((), "-a frontier=redis://127.0.0.1:6379/0: the workers of a shared crawl need one database, and "
         "database.driver is sqlite (a file of one machine): set database.driver: postgres and DATABASE_URL"),
    (("-a", "output=staging"),
     "-a frontier=redis://127.0.0.1:6379/0: a staging folder is one machine's; share the crawl with output=ingest"),
])
def test_a_frontier_the_workers_cannot_share_is_refused_in_one_line(
        tmp_path: Path, extra: tuple[str, ...], expected: str) -> None:
    got = scrapy(tmp_path, "crawl", "fabiaoqing", "-a", f"frontier={REDIS}", *extra)
    assert got.returncode == 2
    assert got.stderr.rstrip().splitlines()[-1].endswith(f"Cannot start the crawl: {expected}")


def test_an_unreachable_frontier_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "pg.yaml").write_text("database:\n  driver: postgres\n", encoding="utf-8")
    got = scrapy(tmp_path, "crawl", "fabiaoqing", "-a", "frontier=redis://127.0.0.1:1/0", "-s",
                 "EMOMO_CONFIG=pg.yaml", env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres"})
    assert got.returncode == 2
    last = got.stderr.rstrip().splitlines()[-1]
    assert "Cannot start the crawl: -a frontier=redis://127.0.0.1:1/0: cannot reach Redis:" in last, last


def start_worker(tmp_path: Path, mirror: Mirror, name: str, crawl_name: str, env: dict[str, str],
                 claim_timeout: float = 600, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    config = worker_config(tmp_path, name, claim_timeout)
    return start_crawl(tmp_path, "fabiaoqing", "-a", f"base_url={mirror.site_url}", "-a", f"frontier={REDIS}",
                       "-a", f"crawl={crawl_name}", *FAST, *extra, "-s", f"EMOMO_CONFIG={config}",
                       "-s", f"EMOMO_STATS_FILE={tmp_path / name}.json", env=env, log=tmp_path / f"{name}.log")


@pytest.mark.slow
def test_three_workers_share_one_crawl_each_image_fetched_and_paid_for_once(
        tmp_path: Path, cjk_font: str, crawl_name: str) -> None:
    names = ("a", "b", "c")
    with serve_mirror(build_mirror(pages=7, per_page=6)) as mirror, shared_backends(delay=0.2) as (api, dsn, env):
        # Slow enough that no worker can take the whole crawl before the others have started.
        mirror.delay = 0.5
        codes = wait_all(start_worker(tmp_path, mirror, name, crawl_name, env) for name in names)
        logs = {n: (tmp_path / f"{n}.log").read_text(encoding="utf-8") for n in names}
        assert codes == [0, 0, 0], {n: log[-2500:] for n, log in logs.items()}
        with psycopg.connect(dsn) as conn:
            memes = conn.execute("SELECT md5_hash, status FROM memes").fetchall()
            cursor = conn.execute("SELECT cursor FROM crawl_cursors WHERE source = 'fabiaoqing'").fetchone()
            claims = conn.execute("SELECT COUNT(*) FROM meme_claims").fetchone()
    valid = mirror.valid()
    assert len(valid) == 7 * 6 - 4  # the missing, HTML, oversized and twice-listed images of the mirror
    assert sorted(m[0] for m in memes) == sorted({mirror.md5(e.name) for e in valid.values()})
    assert {m[1] for m in memes} == {"active"}
    # Every image was downloaded once, by one of the workers, and described once.
    images = [path for path, _ in mirror.image_log if path != "/robots.txt"]
    assert len(images) == len(set(images)) == 7 * 6 - 1, sorted(images)
    assert set(api.seen.values()) == {1} and len(api.seen) == len(memes)
    # Each list page was fetched once (page 2 twice: a 500, then the retry), up to the empty page.
    pages = [p for p in mirror.site_log if p.startswith("/biaoqing/")]
    assert sorted(pages) == sorted([f"/biaoqing/lists/page/{n}.html" for n in range(1, 9)]
                                   + ["/biaoqing/lists/page/2.html"])
    stats = {n: json.loads((tmp_path / f"{n}.json").read_text(encoding="utf-8")) for n in names}
    processed = {n: s.get("emomo/ingest/processed", 0) for n, s in stats.items()}
    assert sum(processed.values()) == len(memes) and all(processed.values()), processed
    assert {s["finish_reason"] for s in stats.values()} == {"finished"}
    assert all("is drained and no worker is busy" in log for log in logs.values())
    # Each worker wrote its own embedded index here: together they hold every meme once.
    points = [read_points(tmp_path / "data" / f"qdrant-{n}").get("emomo-e5-small", {}) for n in names]
    assert sum(len(p) for p in points) == len(memes)
    assert {pl["md5"] for p in points for pl in p.values()} == {m[0] for m in memes}
    # Every page is done, and the finished crawl left nothing in Redis or in the claims.
    assert cursor == ("8",)
    assert claims == (0,)
    assert keys_of(crawl_name) == []


@pytest.mark.slow
def test_a_killed_workers_requests_are_taken_over_and_the_others_finish_the_crawl(
        tmp_path: Path, cjk_font: str, crawl_name: str) -> None:
    names = ("a", "b", "c")
    with serve_mirror(build_mirror(pages=7, per_page=6)) as mirror, shared_backends(delay=0.2) as (api, dsn, env):
        mirror.delay = 0.5
        # A busy mark lapses after 4 s and a claim after 2 s: the survivors need not wait a
        # minute, and the images the dead worker had claimed are free when they come back (with
        # a busy mark of 3 s, renewed each second, the margin was under a second: one run on a
        # loaded machine lost two images).
        procs = {n: start_worker(tmp_path, mirror, n, crawl_name, env, claim_timeout=2,
                                 extra=("-s", "EMOMO_FRONTIER_BUSY_TTL=4")) for n in names}
        assert wait_for(lambda: sum(1 for p, _ in mirror.image_log if p != "/robots.txt") >= 12, timeout=120)
        os.killpg(procs["b"].pid, signal.SIGKILL)
        codes = dict(zip(procs, wait_all(procs.values()), strict=True))
        assert codes["a"] == codes["c"] == 0 and codes["b"] == -signal.SIGKILL
        logs = {n: (tmp_path / f"{n}.log").read_text(encoding="utf-8") for n in ("a", "c")}
        assert all("is drained and no worker is busy" in log for log in logs.values()), logs
        assert keys_of(crawl_name) == []  # the survivors ended the crawl and cleared it
        with psycopg.connect(dsn) as conn:
            memes = conn.execute("SELECT md5_hash, status FROM memes").fetchall()
            cursor = conn.execute("SELECT cursor FROM crawl_cursors WHERE source = 'fabiaoqing'").fetchone()
    valid = {mirror.md5(e.name) for e in mirror.valid().values()}
    stats = [json.loads((tmp_path / f"{n}.json").read_text(encoding="utf-8")) for n in ("a", "c")]
    # What b held when it died was queued again and finished by the others, in the same crawl.
    assert sorted(m[0] for m in memes) == sorted(valid) and {m[1] for m in memes} == {"active"}, [
        {k: v for k, v in s.items() if k.startswith(("emomo/dedupe", "emomo/frontier", "emomo/ingest/"))}
        for s in stats]
    assert sum(s.get("emomo/frontier/taken_over", 0) for s in stats) > 0
    assert cursor == ("8",)  # every page done
    images = [path for path, _ in mirror.image_log if path != "/robots.txt"]
    assert max(images.count(p) for p in images) <= 2  # only b's were fetched twice
    # Only what b was describing when it died can have been paid for twice.
    assert sum(api.seen.values()) - len(valid) <= 4, api.seen
