"""Writes a crawl's stats as JSON when it closes (``-s EMOMO_STATS_FILE=stats.json``).

Scrapy dumps its stats into the log as a Python repr; a script, a monitor or a test
reads this file instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (datetime, date)) else str(value)


class StatsFile:
    def __init__(self, crawler: Crawler, path: Path) -> None:
        self.crawler = crawler
        self.path = path

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        path = crawler.settings.get("EMOMO_STATS_FILE")
        if not path:
            raise NotConfigured  # not asked for: no "Disabled" warning in every crawl's log
        ext = cls(crawler, Path(path))
        # After the stats collector has recorded the finish reason and time.
        crawler.signals.connect(ext.engine_stopped, signal=signals.engine_stopped)
        return ext

    def engine_stopped(self) -> None:
        assert self.crawler.stats is not None
        text = json.dumps(self.crawler.stats.get_stats(), default=_plain, ensure_ascii=False, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".stats-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.path)
