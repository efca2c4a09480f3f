"""How long items take, in bounded memory: throughput and CPU from item timestamps (Scrapy's
elapsed time counts its start-up and rounds to its 5-second idle check), latency percentiles
from a histogram (a list of every latency grew by an entry an item, without end)."""

from __future__ import annotations

import math
import time
from collections import deque

from scrapy.statscollectors import StatsCollector

#: latency buckets: 5% apart from 1 ms, so a percentile is within 5% of the true one
_BASE, _GROWTH = 0.001, 1.05
_BUCKETS = 400  # up to about 5 hours


def _bucket(seconds: float) -> int:
    if seconds <= _BASE:
        return 0
    return min(_BUCKETS - 1, int(math.log(seconds / _BASE, _GROWTH)) + 1)


class ItemTimes:
    def __init__(self) -> None:
        #: (wall clock, process CPU, the event loop thread's CPU) at the first item's start and at
        #: the last processed item's end (both called on the loop: the loop bounds a paid crawl)
        self.first: tuple[float, float, float] | None = None
        self.last: tuple[float, float, float] | None = None
        self._histogram = [0] * _BUCKETS
        self._count = 0
        self._max = 0.0
        #: the latest hundred, for the median the admission reads
        self._recent: deque[float] = deque(maxlen=100)
        self._median: float | None = None
        self._median_at = 0

    def started(self) -> bool:
        """An item started; True for the crawl's first."""
        if self.first is not None:
            return False
        self.first = (time.time(), time.process_time(), time.thread_time())
        return True

    def done(self, seconds: float) -> None:
        """An item was processed in ``seconds`` (read to indexed)."""
        self._histogram[_bucket(seconds)] += 1
        self._count += 1
        self._max = max(self._max, seconds)
        self._recent.append(seconds)
        self.last = (time.time(), time.process_time(), time.thread_time())

    def median(self) -> float | None:
        """The median time of the latest hundred items, recomputed every 25."""
        if self._count >= self._median_at + 25:
            recent = sorted(self._recent)
            self._median = recent[len(recent) // 2]
            self._median_at = self._count
        return self._median

    def percentile(self, q: float) -> float:
        """The ``q`` quantile of every item's latency (the upper edge of its bucket, at most the max)."""
        rank = max(1, math.ceil(q * self._count))
        seen = 0
        for index, n in enumerate(self._histogram):
            seen += n
            if seen >= rank:
                return min(self._max, _BASE * _GROWTH ** index)
        return self._max

    def write_stats(self, stats: StatsCollector) -> None:
        if self.first is not None and self.last is not None:
            (start, cpu_start, loop_start), (end, cpu_end, loop_end) = self.first, self.last
            processed = int(stats.get_value("emomo/ingest/processed", 0))
            stats.set_value("emomo/ingest/first_start", round(start, 3))
            stats.set_value("emomo/ingest/last_end", round(end, 3))
            stats.set_value("emomo/ingest/cpu_seconds", round(cpu_end - cpu_start, 3))
            stats.set_value("emomo/ingest/loop_cpu_seconds", round(loop_end - loop_start, 3))
            if end > start:
                stats.set_value("emomo/ingest/items_per_second", round(processed / (end - start), 2))
        if self._count:
            for name, q in (("p50", 0.50), ("p95", 0.95)):
                stats.set_value(f"emomo/ingest/latency_{name}_ms", round(self.percentile(q) * 1000))
            stats.set_value("emomo/ingest/latency_max_ms", round(self._max * 1000))
