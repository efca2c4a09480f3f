"""A spider whose start() breaks half-way, the way a source that vanishes mid-read does: the crawl
must not exit 0 (loaded with ``-s SPIDER_MODULES=spiders,hostile_spiders``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from scrapy import Spider


class BrokenStartSpider(Spider):
    name = "broken_start"

    async def start(self) -> AsyncIterator[Any]:
        raise OSError(5, "Input/output error", "/mnt/bqb/manifest.jsonl")
        yield  # pragma: no cover - makes this an async generator
