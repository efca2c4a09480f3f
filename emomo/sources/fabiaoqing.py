"""fabiaoqing.com list pages: where they are, what an item looks like, and which pages are done.

Facts this follows (../shared/data/fabiaoqing.md): list pages at
``/biaoqing/lists/page/{N}.html``; each item an ``<a href="/biaoqing/detail/id/{id}.html"
title="{text}">`` around ``<img class="ui image lazy" data-original="{real URL}"
src="{placeholder}" title="{text}" alt="{text}">``; titles like ``好小子!_小子表情``; the image
CDN refuses requests without ``Referer: https://fabiaoqing.com/``. The selectors live here
and nowhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from parsel import Selector

DEFAULT_BASE_URL = "https://fabiaoqing.com"
LIST_PATH = "/biaoqing/lists/page/{page}.html"
SOURCE = "fabiaoqing"
CATEGORY = "fabiaoqing"

#: list item: #bqb > div.ui.segment.imghover > div.tagbqppdiv > a > img
ITEM_SELECTOR = "#bqb div.tagbqppdiv a"
# Fallback for markup variants without the #bqb wrapper (seen on search pages).
ITEM_FALLBACK_SELECTOR = "div.tagbqppdiv a"


def list_url(base_url: str, page: int) -> str:
    return base_url.rstrip("/") + LIST_PATH.format(page=page)


def referer(base_url: str) -> str:
    return base_url.rstrip("/") + "/"


def source_id(image_url: str) -> str:
    """The original crawler's id: the first 16 hex digits of md5(image URL)."""
    return hashlib.md5(image_url.encode("utf-8")).hexdigest()[:16]


def title_tags(title: str) -> tuple[str, list[str]]:
    """``好小子!_小子表情`` -> (``好小子!``, [``好小子!``, ``小子表情``])."""
    parts = [p.strip() for p in title.split("_") if p.strip()]
    if not parts:
        return "", []
    return parts[0], list(dict.fromkeys(parts))


@dataclass(frozen=True)
class ListEntry:
    image_url: str
    text: str
    tags: list[str]
    page_url: str | None
    source_id: str


def parse_list(html: str, page_url: str) -> list[ListEntry]:
    """The items of a list page, in page order; an empty list means the end of the list."""
    sel = Selector(text=html)
    links = sel.css(ITEM_SELECTOR) or sel.css(ITEM_FALLBACK_SELECTOR)
    entries: list[ListEntry] = []
    for link in links:
        img = link.css("img")
        # data-original holds the real image; src is a lazy-load placeholder.
        raw = img.attrib.get("data-original") if img else None
        if not raw:
            continue
        image_url = urljoin(page_url, raw.strip())
        title = (link.attrib.get("title") or img.attrib.get("title") or img.attrib.get("alt") or "").strip()
        text, tags = title_tags(title)
        href = link.attrib.get("href")
        entries.append(ListEntry(image_url=image_url, text=text, tags=tags,
                                 page_url=urljoin(page_url, href) if href else None,
                                 source_id=source_id(image_url)))
    return entries


class PageTracker:
    """Which list pages are done: a page is done when every image it listed has been
    ingested, dropped or failed. The cursor is the last page with all pages before it done.

    ``to_dict``/``from_dict`` carry it across a JOBDIR resume (Scrapy keeps ``spider.state``
    there), where the queued image requests of pages parsed by the first run come back.
    """

    def __init__(self, start_page: int, on_advance: Callable[[int], None]) -> None:
        self.next_page = start_page  # the first page not known done
        self.outstanding: dict[int, int] = {}
        self.parsed: set[int] = set()
        self.on_advance = on_advance
        self.on_change: Callable[[dict[str, Any]], None] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"next_page": self.next_page, "outstanding": dict(self.outstanding), "parsed": sorted(self.parsed)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], on_advance: Callable[[int], None]) -> PageTracker:
        tracker = cls(int(data["next_page"]), on_advance)
        tracker.outstanding = {int(k): int(v) for k, v in data["outstanding"].items()}
        tracker.parsed = {int(p) for p in data["parsed"]}
        return tracker

    def page_parsed(self, page: int, images: int) -> None:
        self.parsed.add(page)
        self.outstanding[page] = self.outstanding.get(page, 0) + images
        self._advance()

    def image_done(self, page: int) -> None:
        if page not in self.outstanding:
            return  # a page this run knows nothing of (its state was lost): the cursor stays put
        self.outstanding[page] -= 1
        self._advance()

    def _advance(self) -> None:
        advanced = False
        while self.next_page in self.parsed and self.outstanding.get(self.next_page, 0) == 0:
            self.outstanding.pop(self.next_page, None)
            self.parsed.discard(self.next_page)
            self.next_page += 1
            advanced = True
        if self.on_change is not None:
            self.on_change(self.to_dict())
        if advanced:
            self.on_advance(self.next_page - 1)
