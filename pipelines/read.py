"""Stage 1: read the bytes, MD5 them, and probe them with Pillow."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from itemadapter import ItemAdapter

from emomo.errors import InvalidImage
from emomo.imaging import ImageError, read_image
from emomo.ingest.stage import Stage, item_source


class ReadPipeline(Stage):
    name = "read"

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        source = item_source(adapter)
        limits = self.runtime.config.ingest
        try:
            body, info = await asyncio.to_thread(
                read_image, adapter.get("body"), adapter.get("path"), limits.max_image_bytes, limits.max_pixels)
        except ImageError as exc:
            self.conclude("invalid")
            self.log(logging.WARNING, "Invalid image %s: %s", source, exc)
            raise InvalidImage(f"{source}: {exc}") from None
        adapter.update({
            "body": body, "md5": info.md5, "format": info.format, "width": info.width,
            "height": info.height, "is_animated": info.is_animated, "file_size": info.file_size,
        })
        self.runtime.start(item, info.md5, source)
        self.count("ok")
