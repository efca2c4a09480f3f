"""Stage 1: read the bytes, MD5 them, and probe them with Pillow."""

from __future__ import annotations

from typing import Any

from itemadapter import ItemAdapter

from emomo.ingest.stage import Stage, item_source, read_item
from emomo.near import grey_frame


class ReadPipeline(Stage):
    name = "read"
    interruptible = True

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        config = self.runtime.config
        # The near-duplicate check (the dedupe stage) measures the first frame decoded here.
        body, info = await read_item(adapter, config.ingest, self.stats, self.crawler.spider,
                                     grey_frame if config.dedupe.near else None)
        adapter.update({
            "body": body, "md5": info.md5, "format": info.format, "width": info.width,
            "height": info.height, "is_animated": info.is_animated, "file_size": info.file_size,
        })
        self.runtime.start(item, info.md5, item_source(adapter)).first_frame = info.first_frame
        self.count("ok")
