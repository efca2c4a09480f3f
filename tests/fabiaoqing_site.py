"""A fabiaoqing.com mirror on loopback: list pages in the real markup and an image host that,
like the real CDN, refuses requests without the site's Referer. Both log every request."""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from memegen import CAPTIONS, meme_bytes

KEYWORDS = ("小子", "熊猫头", "猫猫", "狗头", "沙雕")


@dataclass
class Listed:
    name: str  # file name on the image host
    title: str
    caption: str
    detail_id: int
    kind: str = "ok"  # ok, missing (404), html (not an image), huge (over DOWNLOAD_MAXSIZE)


@dataclass
class Mirror:
    pages: dict[int, list[Listed]]
    images: dict[str, bytes]
    site_log: list[str] = field(default_factory=list)
    image_log: list[tuple[str, str | None]] = field(default_factory=list)
    fail_once: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    site_url: str = ""
    image_url: str = ""
    #: seconds the image host takes per image
    delay: float = 0.0
    #: seconds the site takes per list page after the first
    page_delay: float = 0.0

    def valid(self) -> dict[str, Listed]:
        """Image URL -> entry, for the distinct images that should be ingested (those listed
        before the first empty page)."""
        found: dict[str, Listed] = {}
        for page in sorted(self.pages):
            if not self.pages[page]:
                break
            found.update({f"{self.image_url}/bmiddle/{e.name}": e for e in self.pages[page] if e.kind == "ok"})
        return found

    def md5(self, name: str) -> str:
        return hashlib.md5(self.images[name]).hexdigest()


def build_mirror(pages: int = 3, per_page: int = 6) -> Mirror:
    listed: dict[int, list[Listed]] = {}
    images: dict[str, bytes] = {}
    n = 0
    for page in range(1, pages + 1):
        entries = []
        for _ in range(per_page):
            caption = CAPTIONS[100 + n]
            fmt = ("jpg", "gif", "png")[n % 3]
            name = f"{hashlib.md5(caption.encode()).hexdigest()[:20]}.{fmt}"
            entry = Listed(name, f"{caption}_{KEYWORDS[n % len(KEYWORDS)]}表情", caption, 9000 + n)
            images[name] = meme_bytes(caption, 500 + n, fmt)
            entries.append(entry)
            n += 1
        listed[page] = entries
    # The oddities of a real crawl.
    listed[1][2].kind = "missing"
    listed[2][1].kind = "html"
    listed[3][4].kind = "huge"
    images[listed[3][4].name] = os.urandom(300_000)
    listed[2][5] = listed[1][0]  # the same image listed again on a later page
    # Past the end: one empty page, then a page that must never be asked for.
    listed[pages + 1] = []
    tail = Listed("never.png", "不该抓到_表情", "不该抓到", 1)
    images["never.png"] = meme_bytes("不该抓到", 1, "png")
    listed[pages + 2] = [tail]
    return Mirror(listed, images, fail_once={"/biaoqing/lists/page/2.html"})


def render_page(mirror: Mirror, page: int) -> str:
    items = "".join(
        f'<div class="tagbqppdiv"><a href="/biaoqing/detail/id/{e.detail_id}.html" title="{e.title}">'
        f'<img class="ui image lazy" data-original="{mirror.image_url}/bmiddle/{e.name}" '
        f'src="/Public/lazyload/img/transparent.gif" title="{e.title}" alt="{e.title}"></a></div>'
        for e in mirror.pages.get(page, []))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>表情包 - 发表情</title></head><body>"
        "<div class='ui menu'><a href='/search/bqb/keyword/x/type/bq/page/1.html'>搜索</a>"
        "<a href='/bqb/lists/type/hot/page/1.html'>表情包</a></div>"
        f"<div id='bqb' class='ui segment'><div class='ui segment imghover'>{items}</div></div>"
        f"<div class='ui pagination menu'><a href='/biaoqing/lists/page/{page + 1}.html'>下一页</a></div>"
        "</body></html>"
    )


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        return None

    def send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _site_handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Site(_Handler):
        def do_GET(self) -> None:
            with mirror.lock:
                mirror.site_log.append(self.path)
                fail = self.path in mirror.fail_once
                mirror.fail_once.discard(self.path)
            if self.path == "/robots.txt":
                self.send(200, b"User-agent: *\nDisallow: /search/\n", "text/plain")
                return
            if fail:
                self.send(500, b"<h1>502 Bad Gateway</h1>", "text/html")
                return
            m = re.fullmatch(r"/biaoqing/lists/page/(\d+)\.html", self.path)
            if m and int(m.group(1)) in mirror.pages:
                if int(m.group(1)) > 1:
                    time.sleep(mirror.page_delay)
                self.send(200, render_page(mirror, int(m.group(1))).encode(), "text/html; charset=utf-8")
                return
            self.send(404, b"<h1>404</h1>", "text/html")

    return Site


def _image_handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    kinds = {e.name: e.kind for entries in mirror.pages.values() for e in entries}

    class Images(_Handler):
        def do_GET(self) -> None:
            referer = self.headers.get("Referer")
            with mirror.lock:
                mirror.image_log.append((self.path, referer))
            if self.path == "/robots.txt":
                self.send(404, b"", "text/plain")
                return
            if referer != mirror.site_url + "/":
                self.send(403, b"<h1>403 Forbidden: hotlinking</h1>", "text/html")
                return
            name = self.path.rsplit("/", 1)[-1]
            kind = kinds.get(name)
            time.sleep(mirror.delay)
            if kind is None or kind == "missing":
                self.send(404, b"<h1>404</h1>", "text/html")
            elif kind == "html":
                self.send(200, b"<html><body>image moved</body></html>", "image/jpeg")
            else:
                ext = name.rsplit(".", 1)[-1]
                self.send(200, mirror.images[name], {"jpg": "image/jpeg", "gif": "image/gif"}.get(ext, "image/png"))

    return Images


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-body (the oversized image, by design) is no error here.
        return None


@contextmanager
def serve_mirror(mirror: Mirror) -> Iterator[Mirror]:
    site = _Server(("127.0.0.1", 0), _site_handler(mirror))
    # The image host answers on another address of the loopback, as a CDN is another host.
    images = _Server(("127.0.0.2", 0), _image_handler(mirror))
    mirror.site_url = f"http://127.0.0.1:{site.server_address[1]}"
    mirror.image_url = f"http://127.0.0.2:{images.server_address[1]}"
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (site, images)]
    for t in threads:
        t.start()
    try:
        yield mirror
    finally:
        for s in (site, images):
            s.shutdown()
            s.server_close()
