"""Logs the ingest summary when a crawl ends, like the seed's IngestStats."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy import signals

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger("emomo.ingest")

OUTCOMES = ("processed", "pending", "duplicate", "invalid", "failed", "interrupted", "dropped")
TIMED_STAGES = ("read", "describe", "store", "record", "embed", "index")


class IngestSummary:
    crawler: Crawler

    def __init__(self, stats: StatsCollector) -> None:
        self.stats = stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        assert crawler.stats is not None
        ext = cls(crawler.stats)
        ext.crawler = crawler
        # After the spider has closed and the stats are dumped: the summary is what a
        # job's log (scrapyd's, say) ends with.
        crawler.signals.connect(ext.engine_stopped, signal=signals.engine_stopped)
        return ext

    def engine_stopped(self) -> None:
        spider = self.crawler.spider
        reason = str(self.stats.get_value("finish_reason", "unknown"))
        counts = {o: int(self.stats.get_value(f"emomo/ingest/{o}", 0)) for o in OUTCOMES}
        total = sum(counts.values())
        timings = []
        for stage in TIMED_STAGES:
            ms = int(self.stats.get_value(f"emomo/{stage}/ms", 0))
            n = int(self.stats.get_value(f"emomo/{stage}/items", 0))
            if n:
                timings.append(f"{stage} {ms / n:.0f} ms")
        # What the spider itself did not take (links out, unreadable files, bad manifest lines).
        prefix = f"emomo/{spider.name}/skipped/" if spider is not None else "emomo//skipped/"
        skipped = sorted((key[len(prefix):], int(value)) for key, value in self.stats.get_stats().items()
                         if key.startswith(prefix))
        # The adaptive limits of API calls: how far each went, and where it ended.
        levels = [f"{label} calls in flight max {self.stats.get_value(f'emomo/{stage}/in_flight_max')}, final "
                  f"{self.stats.get_value(f'emomo/{stage}/in_flight_level')}"
                  for stage, label in (("describe", "VLM"), ("embed", "embedding"))
                  if self.stats.get_value(f"emomo/{stage}/in_flight_level") is not None]
        logger.info(
            "Ingest summary: %d processed, %d pending, %d skipped as duplicate, %d invalid, %d failed%s%s "
            "(%d items; %s)%s%s%s",
            counts["processed"], counts["pending"], counts["duplicate"], counts["invalid"], counts["failed"],
            f", {counts['interrupted']} interrupted" if counts["interrupted"] else "",
            f", {counts['dropped']} dropped by another pipeline" if counts["dropped"] else "",
            total, reason,
            f"; skipped by the spider: {', '.join(f'{n} {kind}' for kind, n in skipped)}" if skipped else "",
            f"; per item: {', '.join(timings)}" if timings else "",
            f"; {'; '.join(levels)}" if levels else "",
            extra={"spider": spider},
        )
        stopped = self.stats.get_value("emomo/ingest/stopped")
        if stopped:
            logger.error("The crawl stopped early: %s", stopped, extra={"spider": spider})
