"""Pipelines of a user's own, put between ours by tests: Scrapy projects are extended so."""

from __future__ import annotations

import asyncio
from typing import Any

from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem


class DropMarked(DropItem):
    pass


class DropMarkedPipeline:
    """Drops the items whose file name holds 丢弃, a moment after they arrive (so that the items
    read after them are in the pipelines meanwhile)."""

    async def process_item(self, item: Any) -> Any:
        if "丢弃" in str(ItemAdapter(item).get("path") or ""):
            await asyncio.sleep(1.0)
            raise DropMarked("the user's pipeline does not want it")
        return item


class DelayCopiesPipeline:
    """Lets the items whose file name holds 副本 in a moment later than the others (so that an
    original is in the pipelines before its copy)."""

    async def process_item(self, item: Any) -> Any:
        if "副本" in str(ItemAdapter(item).get("path") or ""):
            await asyncio.sleep(0.3)
        return item
