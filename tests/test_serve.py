"""``scrapy serve`` (issue 16): the JSON API and the search page over a crawled sample, a real
server process, a real headless browser."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, scrapy, scrapy_env
from crawling import run_crawl
from servers import TCPProxy, free_port, postgres_database, stop, wait_for_port

from emomo.query import HIT_KEYS

SAMPLE = REPO / "samples" / "ChineseBQB"


@dataclass
class Served:
    url: str
    workdir: Path
    proc: subprocess.Popen[str]
    log: Path
    #: what the commands print on the same data (run before the server: the embedded index
    #: is one process's at a time)
    cli: dict[str, Any] | None = None

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                body = response.read()
                status = response.status
                ctype = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            body, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        return status, json.loads(body) if "json" in ctype else body

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def raw(self, path: str) -> int:
        return self.exchange("GET", path)[0]

    def exchange(self, method: str, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
        """A request with the path sent exactly as written (no client-side normalising)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        answer = response.status, response.headers, response.read()
        conn.close()
        return answer


def start_server(workdir: Path, env: dict[str, str] | None = None, *args: str) -> Served:
    port = free_port()
    log = workdir / f"serve-{port}.log"
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, "-m", "scrapy", "serve", "--port", str(port), *args], cwd=workdir,
                                env=scrapy_env(env), stdout=out, stderr=subprocess.STDOUT, text=True)
    wait_for_port(port, proc, timeout=120)
    return Served(f"http://127.0.0.1:{port}", workdir, proc, log)


def stop_server(served: Served) -> None:
    stop(served.proc, timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("serve")
    run_crawl(workdir, "chinesebqb", repo_path=str(SAMPLE))
    cli = {"search": json.loads(scrapy(workdir, "search", "我太难了", "--top", "5", "--json").stdout),
           "stats": json.loads(scrapy(workdir, "stats", "--json").stdout)}
    # Connections idle for 2 s are closed, and at most 60 held at once (the fifty searches fit).
    (workdir / "serve.yaml").write_text("server:\n  idle_timeout: 2\n  max_connections: 60\n", encoding="utf-8")
    server = start_server(workdir, None, "-s", "EMOMO_CONFIG=serve.yaml")
    server.cli = cli
    try:
        yield server
    finally:
        stop_server(server)


def q(text: str, **params: str) -> str:
    return "/api/v1/search?" + urllib.parse.urlencode({"q": text, **params})


def test_search_answers_the_hits_of_scrapy_search_with_images_a_browser_can_load(served: Served) -> None:
    status, hits = served.get(q("我太难了", top="5"))
    assert status == 200
    assert [set(h) for h in hits] == [set(HIT_KEYS) | {"image_url", "thumb_url"}] * 5
    assert served.cli is not None
    assert [{k: v for k, v in h.items() if k not in ("image_url", "thumb_url")} for h in hits] == served.cli["search"]
    assert "我太难了" in hits[0]["description"]
    for hit in hits:
        status, body = served.get(hit["image_url"])
        assert status == 200 and hashlib.md5(body).hexdigest() == hit["md5"]


def test_the_grid_loads_small_thumbnails_made_once(served: Served) -> None:
    from PIL import Image

    _, hits = served.get(q("表情", top="30"))
    full = thumbs = 0
    for hit in hits:
        status, headers, body = served.exchange("GET", hit["thumb_url"])
        assert status == 200 and headers["Content-Type"] == "image/webp"
        with Image.open(io.BytesIO(body)) as im:
            assert im.format == "WEBP" and max(im.size) <= 320 and not getattr(im, "is_animated", False)
        thumbs += len(body)
        full += len(served.exchange("GET", hit["image_url"])[2])
    kept = served.workdir / "data" / "thumbs" / f"{hits[0]['thumb_url'].split('/thumbs/', 1)[1].rsplit('.', 1)[0]}.webp"
    assert kept.is_file()
    assert thumbs < full / 2, (thumbs, full)
    assert served.raw("/thumbs/00/" + "0" * 32 + ".gif") == 404 and served.raw("/thumbs/../x") == 404


def test_filters_and_top(served: Served) -> None:
    _, every = served.get(q("表情", top="100"))
    assert len(every) == 30  # the whole sample: top is capped at 100, not refused
    _, capped = served.get(q("表情", top="1000"))
    assert len(capped) == 30
    category = every[0]["category"]
    _, only = served.get(q("表情", category=category, top="100"))
    assert only and {h["category"] for h in only} == {category}
    assert len(only) == sum(1 for h in every if h["category"] == category)
    _, animated = served.get(q("表情", animated="yes", top="100"))
    _, still = served.get(q("表情", animated="no", top="100"))
    assert animated and {h["is_animated"] for h in animated} == {True}
    assert {h["is_animated"] for h in still} == {False}
    assert len(animated) + len(still) == 30
    _, mine = served.get(q("表情", source="chinesebqb", top="100"))
    _, other = served.get(q("表情", source="fabiaoqing", top="100"))
    assert (len(mine), other) == (30, [])


@pytest.mark.parametrize(("path", "message"), [
    (q(""), "q: give a query"),
    (q("我" * 201), "q: at most 200 characters (got 201)"),
    (q("开心", top="0"), "top=0: expected a whole number from 1 to 100"),
    (q("开心", top="many"), "top=many: expected a whole number from 1 to 100"),
    (q("开心", animated="maybe"), "animated=maybe: expected yes or no"),
    (q("开心", embedding="nope"), "embedding=nope: "),
])
def test_bad_input_is_a_400_naming_the_parameter(served: Served, path: str, message: str) -> None:
    status, body = served.get(path)
    assert status == 400 and body["error"].startswith(message), body


@pytest.mark.parametrize("path", [
    "/images/../../../etc/passwd", "/images/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/images//etc/passwd",
    "/images/..%2f..%2fdata%2femomo.db", "/images/ab/not-a-key.png", "/images/00/" + "0" * 32 + ".png",
])
def test_nothing_outside_the_store_is_served(served: Served, path: str) -> None:
    assert served.raw(path) == 404


@pytest.mark.parametrize("ext", ["html", "svg", "txt", "json"])
def test_a_file_named_like_a_key_that_is_no_image_is_not_served(served: Served, ext: str) -> None:
    planted = served.workdir / "data" / "objects" / "aa" / f"{'a' * 32}.{ext}"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text("<script>alert(document.cookie)</script>", encoding="utf-8")
    status, headers, body = served.exchange("GET", f"/images/aa/{planted.name}")
    assert status == 404 and json.loads(body) == {"error": "no such image"}


def test_every_response_carries_the_browser_guards_and_every_error_is_json(served: Served) -> None:
    _, hits = served.get(q("我太难了", top="1"))
    status, headers, _ = served.exchange("GET", hits[0]["image_url"])
    assert status == 200 and headers["Content-Type"] == f"image/{hits[0]['format'].replace('jpg', 'jpeg')}"
    for path in ("/", hits[0]["image_url"], q("开心"), "/no/such/page"):
        _, headers, _ = served.exchange("GET", path)
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert "script-src 'self'" in headers["Content-Security-Policy"], path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
    status, headers, body = served.exchange("GET", "/no/such/page")
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"error": "Not Found: /no/such/page"}
    status, headers, body = served.exchange("DELETE", "/api/v1/search")
    assert status == 405 and headers["Allow"] == "GET,HEAD"
    assert json.loads(body) == {"error": "Method Not Allowed: DELETE /api/v1/search (allowed: GET, HEAD)"}


def test_idle_connections_are_closed_and_a_flood_of_them_never_silences_the_api(served: Served) -> None:
    import socket
    import time

    silent = [socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(90)]
    try:
        time.sleep(0.5)

        def closed(sock: socket.socket, flags: int = socket.MSG_DONTWAIT) -> bool:
            try:
                while chunk := sock.recv(1024, flags):
                    assert chunk.startswith(b"HTTP/1.1 503 ")  # a refusal over the cap
                return True
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True

        # over the cap, a connection is refused at once; the rest closed once idle for the timeout
        assert sum(map(closed, silent)) >= 30
        started = time.monotonic()
        assert all(closed(sock, 0) for sock in silent)
        assert time.monotonic() - started < 5
    finally:
        for sock in silent:
            sock.close()
    status, hits = served.get(q("开心", top="3"))
    assert status == 200 and len(hits) == 3


def test_a_picture_posted_finds_the_meme_it_is(served: Served) -> None:
    import uuid

    from PIL import Image

    _, hits = served.get(q("我太难了", top="1"))
    with Image.open(io.BytesIO(served.get(hits[0]["image_url"])[1])) as im:
        out = io.BytesIO()
        im.convert("RGB").crop((4, 4, im.width - 4, im.height - 4)).save(out, "JPEG", quality=75)

    def post(data: bytes, field: str = "image") -> tuple[int, Any]:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"x.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(served.url + "/api/v1/search/image?top=5", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, found = post(out.getvalue())
    assert status == 200 and (found[0]["md5"], found[0]["match"]) == (hits[0]["md5"], "picture")
    assert found[0]["thumb_url"] and len(found) == 5 and found[0]["meme_id"] not in [h["meme_id"] for h in found[1:]]
    status, body = post(b"GIF89a, and then nothing")
    assert status == 400 and body["error"].startswith("image: the picture cannot be searched by: broken ")
    status, body = post(out.getvalue(), field="file")
    assert status == 400 and body == {"error": "image: no picture in the field 'image'"}


def test_stats_and_categories(served: Served) -> None:
    status, stats = served.get("/api/v1/stats")
    assert status == 200
    assert served.cli is not None and stats == served.cli["stats"]
    status, categories = served.get("/api/v1/categories")
    assert status == 200 and sum(c["memes"] for c in categories) == 30
    assert all(set(c) == {"category", "name", "memes"} for c in categories)
    names = {c["category"]: c["name"] for c in categories}
    assert names["001Funny_滑稽大佬😏BQB"] == "滑稽大佬" and names["011Dog_狗🐶BQB"] == "狗"
    # the filter takes the name a person says, or the folder's
    _, by_name = served.get(q("表情", category="狗", top="100"))
    _, by_folder = served.get(q("表情", category="011Dog_狗🐶BQB", top="100"))
    assert by_name == by_folder and by_name and {h["category_name"] for h in by_name} == {"狗"}
    status, body = served.get(q("表情", category="恐龙"))
    assert status == 400 and body["error"].startswith("category=恐龙: no category '恐龙' in the index (categories: ")
    assert "滑稽大佬" in body["error"]


def test_fifty_concurrent_searches_are_all_answered(served: Served) -> None:
    queries = ["我太难了", "开心", "无语", "生气", "累了"] * 10
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda text: served.get(q(text, top="10")), queries))
    assert [status for status, _ in answers] == [200] * 50
    assert all(len(hits) == 10 for _, hits in answers)


def test_the_page_in_a_real_browser_types_a_query_and_shows_the_memes(served: Served) -> None:
    from browser import browser
    from PIL import Image

    _, hits = served.get(q("摸鱼快乐", top="1"))
    target = hits[0]["md5"]
    copy = served.workdir / "saved-copy.jpg"  # a copy as a user saves one: re-encoded, smaller
    with Image.open(io.BytesIO(served.get(hits[0]["image_url"])[1])) as im:
        im.convert("RGB").resize((180, 180)).save(copy, "JPEG", quality=70)

    async def drive() -> tuple[int, str, bytes]:
        async with browser() as page:
            await page.goto(served.url + "/")
            await page.until("document.querySelectorAll('#category option').length > 1")
            await page.type("#q", "我太难了")
            await page.press_enter()
            loaded = await page.until(
                "(() => { const n = [...document.querySelectorAll('#grid img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length; return n >= 5 ? n : 0 })()")
            url = await page.evaluate("location.href")
            caption = await page.evaluate("document.querySelector('#grid figcaption').textContent")
            assert "我太难了" in caption
            assert await page.evaluate("document.querySelector('#grid figure').className") == "text"
            # the grid loads thumbnails: what it transferred, as the browser counts it
            assert await page.evaluate("[...document.querySelectorAll('#grid img')]"
                                       ".every(i => i.src.includes('/thumbs/'))")
            grid_bytes = await page.evaluate(
                "performance.getEntriesByType('resource').filter(e => e.initiatorType === 'img')"
                ".reduce((n, e) => n + e.transferSize, 0)")
            assert 0 < grid_bytes <= 1_500_000, grid_bytes
            assert await page.evaluate("document.querySelector('#status').textContent") == \
                "1 个表情包写着“我太难了”，其后是意思相近的"
            # Reloading the URL shows the same search: it can be shared and bookmarked.
            await page.goto(url)
            assert await page.evaluate("document.querySelector('#q').value") == "我太难了"
            await page.until("document.querySelectorAll('#grid img').length >= 5")
            shot = await page.screenshot()
            # Nonsense: the memes shown are said to be near in meaning only, not "found".
            await page.goto(served.url + "/?q=xyzzy")
            status = await page.until("(() => { const s = document.querySelector('#status').textContent;"
                                      " return s.includes('没有') ? s : '' })()")
            assert status == "没有文字完全匹配的表情包，以下是意思相近的"
            assert await page.evaluate("document.querySelectorAll('#grid figure.text').length") == 0
            # The category filter shows the names a person says, and filters by them.
            await page.goto(served.url + "/?q=" + urllib.parse.quote("表情"))
            await page.until("document.querySelectorAll('#category option').length > 1")
            await page.evaluate("(() => { const s = document.querySelector('#category');"
                                " s.value = [...s.options].find(o => o.text.startsWith('狗（')).value;"
                                " s.dispatchEvent(new Event('change')); })()")
            await page.until("location.search.includes('category=')")
            # The grid shown before the filter's answer came stays until it does (the URL changes
            # first): wait for a grid of the filtered memes only; a filter that let others through
            # never gives one.
            metas = await page.until("(() => { const m = [...document.querySelectorAll('#grid .meta')]"
                                     ".map(e => e.textContent);"
                                     " return m.length && m.every(t => t.startsWith('狗')) ? m : null })()")
            assert metas and all(m.startswith("狗") for m in metas), metas
            # A picture chosen on the page (as a drop does): the meme it is comes first.
            root = (await page.send("DOM.getDocument"))["root"]["nodeId"]
            node = (await page.send("DOM.querySelector", nodeId=root, selector="#picture"))["nodeId"]
            await page.send("DOM.setFileInputFiles", nodeId=node, files=[str(copy)])
            await page.until("document.querySelector('#status').textContent.startsWith('就是这张表情包')")
            first = await page.evaluate("(() => { const f = document.querySelector('#grid figure');"
                                        " return [f.className, f.querySelector('img').src] })()")
            assert first[0] == "picture" and target in first[1]
            return loaded, url, shot

    loaded, url, shot = asyncio.run(drive())
    assert loaded >= 5
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(url).query) == {"q": ["我太难了"]}
    assert shot.startswith(b"\x89PNG")
    (served.workdir / "page.png").write_bytes(shot)


def test_a_search_answered_after_a_later_one_began_is_not_shown_over_it(served: Served) -> None:
    """The page's own first search is still out when the user picks a category (a slow server):
    its answer, coming last, must not replace (or join) the filtered memes."""
    from browser import browser

    async def drive() -> list[str]:
        async with browser() as page:
            # Every search's answer is held at the browser until the test lets it through.
            await page.send("Fetch.enable", patterns=[{"urlPattern": "*/api/v1/search?*", "requestStage": "Response"}])
            await page.send("Page.navigate", url=served.url + "/?q=" + urllib.parse.quote("表情"))
            first = await page.event("Fetch.requestPaused")  # the page's first search: held
            assert "category=" not in first["request"]["url"]
            await page.until("document.querySelectorAll('#category option').length > 1")
            await page.evaluate("(() => { const s = document.querySelector('#category');"
                                " s.value = [...s.options].find(o => o.text.startsWith('狗（')).value;"
                                " s.dispatchEvent(new Event('change')); })()")
            filtered = await page.event("Fetch.requestPaused")
            assert "category=" in filtered["request"]["url"]
            await page.send("Fetch.continueRequest", requestId=filtered["requestId"])
            metas = await page.until("(() => { const m = [...document.querySelectorAll('#grid .meta')]"
                                     ".map(e => e.textContent); return m.length ? m : null })()")
            assert all(m.startswith("狗") for m in metas), metas
            await page.send("Fetch.continueRequest", requestId=first["requestId"])  # the late answer
            await page.until("performance.getEntriesByType('resource').filter(e => e.name.includes("
                             "'/api/v1/search?') && e.responseEnd > 0).length >= 2")
            await asyncio.sleep(0.5)
            return list(await page.evaluate("[...document.querySelectorAll('#grid .meta')].map(e => e.textContent)"))

    metas = asyncio.run(drive())
    assert metas and all(m.startswith("狗") for m in metas), metas


def test_a_backend_down_is_a_503_and_the_server_answers_again_once_it_is_back(tmp_path: Path) -> None:
    secret = "sk-serve-never-shown-4242"
    (tmp_path / "pg.yaml").write_text("database:\n  driver: postgres\n", encoding="utf-8")
    (tmp_path / "serve.yaml").write_text("database:\n  driver: postgres\nvlm:\n  provider: openai\n",
                                         encoding="utf-8")
    with postgres_database() as dsn:
        run_crawl(tmp_path, "chinesebqb", repo_path=str(SAMPLE), settings={"EMOMO_CONFIG": "pg.yaml"},
                  env={"DATABASE_URL": dsn})
        proxy = TCPProxy(5432)
        proxy.up()
        via_proxy = dsn.replace(":5432/", f":{proxy.port}/")
        server = start_server(tmp_path, {"DATABASE_URL": via_proxy, "OPENAI_API_KEY": secret,
                                         "VLM_MODEL": "test/vlm"}, "-s", "EMOMO_CONFIG=serve.yaml")
        bodies = []
        try:
            status, hits = server.get(q("我太难了", top="3"))
            assert status == 200 and len(hits) == 3
            proxy.down()
            status, body = server.get(q("我太难了", top="3"))
            bodies.append(json.dumps(body, ensure_ascii=False))
            assert status == 503 and body["error"].startswith("a backend is unavailable:"), body
            proxy.up()

            def answers() -> bool:
                status, body = server.get(q("我太难了", top="3"))
                bodies.append(json.dumps(body, ensure_ascii=False))
                return status == 200

            from conftest import wait_for

            assert wait_for(answers, timeout=30, interval=0.5)
            status, stats = server.get("/api/v1/stats")
            assert status == 200 and stats["memes"]["active"] == 30
            bodies.append(json.dumps(stats))
        finally:
            stop_server(server)
            proxy.down()
    log = server.log.read_text(encoding="utf-8")
    assert secret not in log and all(secret not in body for body in bodies)


def test_with_a_private_bucket_the_images_are_presigned_urls_that_load(tmp_path: Path) -> None:
    from servers import moto_s3

    secret = "s3-serve-SECRET-9911"
    (tmp_path / "s3.yaml").write_text(
        "storage:\n  type: s3\n  bucket: memes\n  create_bucket: true\n  use_ssl: false\n", encoding="utf-8")
    with moto_s3() as s3_url:
        env = {"STORAGE_ENDPOINT": s3_url.split("://", 1)[1], "STORAGE_ACCESS_KEY": "testing",
               "STORAGE_SECRET_KEY": secret}
        run_crawl(tmp_path, "chinesebqb", repo_path=str(SAMPLE), settings={"EMOMO_CONFIG": "s3.yaml"}, env=env)
        server = start_server(tmp_path, env, "-s", "EMOMO_CONFIG=s3.yaml")
        try:
            status, hits = server.get(q("我太难了", top="3"))
            assert status == 200 and len(hits) == 3
            for hit in hits:
                url = hit["image_url"]
                assert url.startswith(f"{s3_url}/memes/{hit['md5'][:2]}/{hit['md5']}.") and "Signature=" in url
                assert secret not in url
                with urllib.request.urlopen(url, timeout=30) as response:
                    assert hashlib.md5(response.read()).hexdigest() == hit["md5"]
        finally:
            stop_server(server)


def test_a_bug_is_a_500_with_its_traceback_in_the_log_not_a_backend_outage(tmp_path: Path) -> None:
    run_crawl(tmp_path, "chinesebqb", repo_path=str(SAMPLE), limit="3")
    (tmp_path / "buggy.yaml").write_text(
        "embeddings:\n  - {name: local, provider: flaky_providers.BuggyQueryEmbedder, model: multilingual-e5-small,\n"
        "     dimensions: 384, collection: emomo-e5-small, is_default: true}\n", encoding="utf-8")
    server = start_server(tmp_path, None, "-s", "EMOMO_CONFIG=buggy.yaml")
    try:
        assert server.get(q("我太难了"))[0] == 200
        status, body = server.get(q("触发缺陷"))
        assert status == 500 and body == {"error": "internal error (the server's log has the details)"}
        assert server.get(q("我太难了"))[0] == 200  # and it goes on
    finally:
        stop_server(server)
    log = server.log.read_text(encoding="utf-8")
    assert "Traceback" in log and "RuntimeError: a bug in the embedder" in log
