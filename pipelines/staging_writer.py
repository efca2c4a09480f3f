"""Instead of ingesting: write each item into a staging folder in the seed's manifest format.

Switched on by a spider's ``-a output=staging`` (it replaces ITEM_PIPELINES with this one);
``scrapy crawl staging -a source=ID`` ingests the folder later.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter

from emomo.config import IngestConfig
from emomo.ingest.runtime import config_from_settings
from emomo.ingest.stage import read_item
from emomo.sources.staging import StagingWriter

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

class StagingWriterPipeline:
    """Reads ``EMOMO_STAGING_SOURCE`` (the folder's name under sources.staging.path)."""

    def __init__(self, crawler: Crawler, writer: StagingWriter, limits: IngestConfig) -> None:
        self.crawler = crawler
        self.writer = writer
        self.limits = limits
        assert crawler.stats is not None
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = config_from_settings(crawler.settings)
        source = crawler.settings.get("EMOMO_STAGING_SOURCE")
        folder = os.path.join(config.sources.staging.path, source)
        return cls(crawler, StagingWriter(folder), config.ingest)

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        body, info = await read_item(adapter, self.limits, self.stats, self.crawler.spider)
        item_id = str(adapter["source_id"])
        written = await asyncio.to_thread(
            self.writer.write, item_id, body, info.format, adapter.get("category") or "",
            list(adapter.get("tags") or []), adapter.get("url"), info.is_animated)
        self.stats.inc_value(f"emomo/staging_writer/{'written' if written else 'known'}")
        adapter["body"] = None
        return item
