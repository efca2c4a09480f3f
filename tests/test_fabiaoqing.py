"""``scrapy crawl fabiaoqing`` against a mirror of the site on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_consistent, read_state, scrapy
from crawling import Crawl, run_crawl
from fabiaoqing_site import Mirror, build_mirror, serve_mirror

COLLECTION = "emomo-e5-small"
FAST = {"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": False, "DOWNLOAD_MAXSIZE": 100000}


@pytest.fixture
def mirror(cjk_font: str) -> Iterator[Mirror]:
    with serve_mirror(build_mirror()) as m:
        yield m


def fabiaoqing(workdir: Path, mirror: Mirror, settings: dict[str, object] | None = None, **arguments: str) -> Crawl:
    return run_crawl(workdir, "fabiaoqing", base_url=mirror.site_url, settings={**FAST, **(settings or {})},
                     **arguments)


def image_requests(mirror: Mirror) -> list[str]:
    return [path for path, _ in mirror.image_log if path != "/robots.txt"]


def test_crawl_ingests_every_distinct_valid_image_with_its_title(tmp_path: Path, mirror: Mirror) -> None:
    run = fabiaoqing(tmp_path, mirror)
    state = read_state(tmp_path)
    valid = mirror.valid()
    assert len(valid) == 14
    assert state.active_md5s() == {mirror.md5(e.name) for e in valid.values()}
    assert_consistent(state, COLLECTION)
    by_source = {m["source_id"]: m for m in state.memes}
    from emomo.sources.fabiaoqing import source_id

    for url, entry in valid.items():
        meme = by_source[source_id(url)]
        assert meme["source_type"] == "fabiaoqing"
        assert meme["source_url"] == url
        assert entry.caption in json.loads(meme["tags"]) or entry.caption in meme["vlm_description"]
        assert entry.title.split("_")[1] in json.loads(meme["tags"])

    # Only list pages and the images on them; never the placeholder, a detail page or a search page.
    pages = [p for p in mirror.site_log if p != "/robots.txt"]
    assert "/robots.txt" in mirror.site_log
    assert all(p.startswith("/biaoqing/lists/page/") for p in pages), pages
    assert pages.count("/biaoqing/lists/page/2.html") == 2  # a 500, then the retry
    assert "/biaoqing/lists/page/4.html" in pages  # the empty page ends the list...
    assert "/biaoqing/lists/page/5.html" not in pages  # ...and nothing after it is asked for
    # Every image request carried the site's Referer; none was refused for hotlinking.
    assert all(ref == mirror.site_url + "/" for path, ref in mirror.image_log if path != "/robots.txt")
    assert len(image_requests(mirror)) == 17  # 18 listed, one listed twice

    assert run.stat("emomo/fabiaoqing/skipped/http_404") == 1
    assert run.stat("emomo/fabiaoqing/skipped/too_large") == 1
    assert run.stat("emomo/read/invalid") == 1  # the HTML body
    assert run.stat("emomo/ingest/processed") == 14
    broken = {e.kind: f"{mirror.image_url}/bmiddle/{e.name}" for entries in mirror.pages.values()
              for e in entries if e.kind != "ok"}
    warnings = run.lines("", "WARNING")
    assert any(broken["missing"] in w and "HTTP 404" in w for w in warnings)
    assert any(broken["huge"] in w and "larger than download max size" in w for w in warnings)
    assert any(broken["html"] in w and "not an image" in w for w in warnings)

    # A second crawl downloads no ingested image again.
    mirror.image_log.clear()
    mirror.site_log.clear()
    again = fabiaoqing(tmp_path, mirror)
    assert not set(image_requests(mirror)) & {u.split(mirror.image_url, 1)[1] for u in valid}
    assert again.stat("emomo/fabiaoqing/known") == 15  # 14 ingested, one of them listed twice
    assert "emomo/ingest/processed" not in again.stats
    assert "/biaoqing/lists/page/5.html" not in mirror.site_log
    assert read_state(tmp_path).comparable() == state.comparable()


def test_staging_route_ends_in_the_same_memes(tmp_path: Path, mirror: Mirror) -> None:
    direct, staged = tmp_path / "direct", tmp_path / "staged"
    direct.mkdir()
    staged.mkdir()
    fabiaoqing(direct, mirror)
    run = fabiaoqing(staged, mirror, output="staging")
    folder = staged / "data" / "staging" / "fabiaoqing"
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 14
    assert {tuple(sorted(line)) for line in lines} == {
        ("category", "crawled_at", "filename", "format", "id", "is_animated", "source_url", "tags")}
    for line in lines:
        assert (folder / "images" / line["filename"]).is_file()
        assert line["filename"] == f"{line['id']}.{line['format']}"
    assert run.stat("emomo/staging_writer/written") == 14
    assert not (staged / "data" / "emomo.db").exists()  # nothing was ingested

    # Appending: a second staging crawl downloads nothing already staged and adds no line.
    mirror.image_log.clear()
    fabiaoqing(staged, mirror, output="staging")
    assert len((folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()) == 14
    assert not set(image_requests(mirror)) & {u.split(mirror.image_url, 1)[1] for u in mirror.valid()}

    run_crawl(staged, "staging", source="fabiaoqing")
    a, b = read_state(direct), read_state(staged)
    assert a.active_md5s() == b.active_md5s() and len(b.memes) == 14
    assert sorted(m["storage_key"] for m in a.memes) == sorted(m["storage_key"] for m in b.memes)
    assert {m["source_id"] for m in b.memes} == {f"fabiaoqing_{m['source_id']}" for m in a.memes}
    assert {m["source_type"] for m in b.memes} == {"staging:fabiaoqing"}


def test_resume_continues_after_the_last_page_done(tmp_path: Path, mirror: Mirror) -> None:
    first = fabiaoqing(tmp_path, mirror, max_pages="2")
    assert first.stat("emomo/fabiaoqing/cursor") == 2
    pages = [p for p in mirror.site_log if p.startswith("/biaoqing")]
    assert "/biaoqing/lists/page/3.html" not in pages
    partial = read_state(tmp_path).active_md5s()

    mirror.site_log.clear()
    resumed = fabiaoqing(tmp_path, mirror, resume="1")
    pages = [p for p in mirror.site_log if p.startswith("/biaoqing")]
    assert pages == ["/biaoqing/lists/page/3.html", "/biaoqing/lists/page/4.html"]
    assert "Resuming after list page 2" in resumed.log
    final = read_state(tmp_path)
    assert partial < final.active_md5s()
    assert final.active_md5s() == {mirror.md5(e.name) for e in mirror.valid().values()}
    assert resumed.stat("emomo/fabiaoqing/cursor") == 4


def test_a_meme_a_killed_crawl_left_pending_is_fetched_again_and_completed(tmp_path: Path, mirror: Mirror) -> None:
    import sqlite3

    fabiaoqing(tmp_path, mirror, max_pages="1")
    # What kill -9 between the record and the index stages leaves: a pending row, no vector.
    conn = sqlite3.connect(tmp_path / "data" / "emomo.db")
    with conn:
        meme_id, url = conn.execute("SELECT id, source_url FROM memes LIMIT 1").fetchone()
        conn.execute("UPDATE memes SET status = 'pending' WHERE id = ?", (meme_id,))
        conn.execute("DELETE FROM meme_vectors WHERE meme_id = ?", (meme_id,))
    conn.close()
    mirror.image_log.clear()
    again = fabiaoqing(tmp_path, mirror, max_pages="1")
    missing = {f"/bmiddle/{e.name}" for e in mirror.pages[1] if e.kind == "missing"}  # a 404 is asked again
    assert set(image_requests(mirror)) - missing == {url.split(mirror.image_url, 1)[1]}
    assert again.stat("emomo/ingest/processed") == 1
    state = read_state(tmp_path)
    assert {m["status"] for m in state.memes} == {"active"}
    assert_consistent(state, COLLECTION)


def test_jobdir_resumes_an_interrupted_crawl(tmp_path: Path, mirror: Mirror) -> None:
    mirror.delay = 0.3
    # Stopped after three items, one download at a time: requests wait in JOBDIR's queue.
    first = fabiaoqing(tmp_path, mirror, {"JOBDIR": "job", "CLOSESPIDER_ITEMCOUNT": 3, "CONCURRENT_REQUESTS": 1})
    assert first.finish_reason == "closespider_itemcount"
    assert first.stats.get("emomo/ingest/processed", 0) < 14
    done = set(image_requests(mirror))
    mirror.image_log.clear()
    resumed = fabiaoqing(tmp_path, mirror, {"JOBDIR": "job"})
    again = image_requests(mirror)
    assert again and not set(again) & done  # nothing downloaded twice
    assert read_state(tmp_path).active_md5s() == {mirror.md5(e.name) for e in mirror.valid().values()}
    # The page bookkeeping came back with the queue: the cursor reaches the end of the list.
    assert "Traceback" not in resumed.log and "KeyError" not in resumed.log
    assert resumed.stat("emomo/fabiaoqing/cursor") == 4


def test_a_refused_key_stops_the_walk(tmp_path: Path, mirror: Mirror) -> None:
    from servers import FakeAPI, fake_api

    (tmp_path / "vlm.yaml").write_text("vlm:\n  provider: openai\n", encoding="utf-8")
    # A site a second slow a list page: on a loaded machine the first image's refusal once came
    # after the polite defaults had walked all four pages.
    mirror.page_delay = 1.0
    with fake_api(FakeAPI(api_key="sk-the-right-one")) as url:
        # The polite defaults: the first image's refused key arrives before the list is walked.
        run = scrapy(tmp_path, "crawl", "fabiaoqing", "-a", f"base_url={mirror.site_url}",
                     "-s", "EMOMO_CONFIG=vlm.yaml",
                     env={"OPENAI_API_KEY": "sk-a-wrong-one", "OPENAI_BASE_URL": url, "VLM_MODEL": "test/vlm"})
    assert run.returncode == 1, run.stderr[-2000:]
    assert "the API key was refused (HTTP 401); check OPENAI_API_KEY" in run.log
    pages = {p for p in mirror.site_log if p.startswith("/biaoqing/lists/page/")}
    assert "/biaoqing/lists/page/4.html" not in pages, pages  # the walk stopped short of the list's end
    assert len(image_requests(mirror)) < 17
    assert "; refused_key)" in run.summary()


def test_a_site_out_of_reach_is_no_success(tmp_path: Path) -> None:
    """No route to the site: exit 1 with its own finish reason, one line saying so, the failure
    counted; no traceback for an expected network failure."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once it is closed
    run = scrapy(tmp_path, "crawl", "fabiaoqing", "-a", "max_pages=1", "-a", f"base_url=http://127.0.0.1:{port}",
                 "-s", "RETRY_TIMES=0")
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.stat("finish_reason") == "source_unreachable"
    assert run.stat("emomo/fabiaoqing/skipped/download_error") == 1
    assert f"Cannot reach http://127.0.0.1:{port}: its first list page did not come" in run.stderr
    assert "Traceback" not in run.stderr
    assert "(0 items; source_unreachable); skipped by the spider: 1 download_error" in run.summary()


def test_an_image_listed_twice_on_a_page_counts_once_against_the_limit(tmp_path: Path, cjk_font: str) -> None:
    site = build_mirror()
    site.pages[1][1] = site.pages[1][0]  # the first image again, second on the page
    with serve_mirror(site) as mirror:
        fabiaoqing(tmp_path, mirror, limit="3")
        # The first page lists images 0, 0 again, 2 (missing on the host), 3: three images asked for.
        assert sorted(image_requests(mirror)) == sorted(f"/bmiddle/{site.pages[1][i].name}" for i in (0, 2, 3))
