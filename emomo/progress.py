"""A progress line while a crawl runs, every LOGSTATS_INTERVAL (Scrapy's own per-minute line
says pages and items, not how far along the source the ingest is).

    Progress: 1,234 of 4,400 (28%), 21.3 items/s, about 2 min 28 s left; 3 pending, 1 failed so far

File spiders know their total (``emomo/<spider>/found``); a site's crawl says what it has done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured

from emomo.summary import OUTCOMES

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger("emomo.ingest")


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


def progress_line(stats: dict[str, Any], spider: str, now: float) -> str | None:
    """The line for the stats as they are; None before the first item ends."""
    done = sum(int(stats.get(f"emomo/ingest/{o}", 0)) for o in OUTCOMES)
    started = stats.get("emomo/ingest/first_start")
    if not done or not started:
        return None
    rate = done / max(now - float(started), 1e-9)
    found = stats.get(f"emomo/{spider}/found")
    pending, failed = int(stats.get("emomo/ingest/pending", 0)), int(stats.get("emomo/ingest/failed", 0))
    tail = f"; {pending:,} pending, {failed:,} failed so far"
    if found:
        left = max(int(found) - done, 0)
        return (f"Progress: {done:,} of {int(found):,} ({done / int(found):.0%}), {rate:.1f} items/s, "
                f"about {duration(left / rate)} left{tail}")
    return f"Progress: {done:,} done, {rate:.1f} items/s{tail}"


class IngestProgress:
    def __init__(self, crawler: Crawler, stats: StatsCollector, interval: float) -> None:
        self.crawler = crawler
        self.stats = stats
        self.interval = interval
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        interval = crawler.settings.getfloat("LOGSTATS_INTERVAL")
        if interval <= 0:
            raise NotConfigured
        assert crawler.stats is not None
        progress = cls(crawler, crawler.stats, interval)
        crawler.signals.connect(progress.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(progress.spider_closed, signal=signals.spider_closed)
        return progress

    def spider_opened(self) -> None:
        self.task = asyncio.ensure_future(self._every_interval())

    def spider_closed(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _every_interval(self) -> None:
        spider = getattr(self.crawler.spider, "name", "")
        while True:
            await asyncio.sleep(self.interval)
            line = progress_line(self.stats.get_stats(), spider, time.time())
            if line:
                logger.info(line, extra={"spider": self.crawler.spider})
