"""Instead of ingesting: write each item into a staging folder in the seed's manifest format.

Switched on by a spider's ``-a output=staging`` (it replaces ITEM_PIPELINES with this one);
``scrapy crawl staging -a source=ID`` ingests the folder later.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter

from emomo.errors import InvalidImage
from emomo.imaging import ImageError, read_image
from emomo.ingest.runtime import config_from_settings
from emomo.ingest.stage import item_source
from emomo.sources.staging import StagingWriter

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self

logger = logging.getLogger("emomo.staging")


class StagingWriterPipeline:
    """Reads ``EMOMO_STAGING_SOURCE`` (the folder's name under sources.staging.path)."""

    def __init__(self, crawler: Crawler, writer: StagingWriter, max_bytes: int, max_pixels: int) -> None:
        self.crawler = crawler
        self.writer = writer
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        assert crawler.stats is not None
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = config_from_settings(crawler.settings)
        source = crawler.settings.get("EMOMO_STAGING_SOURCE")
        folder = os.path.join(config.sources.staging.path, source)
        return cls(crawler, StagingWriter(folder), config.ingest.max_image_bytes, config.ingest.max_pixels)

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        source = item_source(adapter)
        try:
            body, info = await asyncio.to_thread(
                read_image, adapter.get("body"), adapter.get("path"), self.max_bytes, self.max_pixels)
        except ImageError as exc:
            self.stats.inc_value("emomo/staging_writer/invalid")
            self.stats.inc_value("emomo/ingest/invalid")
            logger.warning("Invalid image %s: %s", source, exc, extra={"spider": self.crawler.spider})
            raise InvalidImage(f"{source}: {exc}") from None
        item_id = str(adapter["source_id"])
        written = await asyncio.to_thread(
            self.writer.write, item_id, body, info.format, adapter.get("category") or "",
            list(adapter.get("tags") or []), adapter.get("url"), info.is_animated)
        self.stats.inc_value(f"emomo/staging_writer/{'written' if written else 'known'}")
        adapter["body"] = None
        return item
