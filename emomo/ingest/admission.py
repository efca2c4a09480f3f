"""Backpressure on a spider's ``start()``: an item waits there until the pipelines hold
fewer than the limit.

Scrapy pulls items from ``start()`` without limit; without this a file-based spider would
read every image of a source into memory at once. The count is Scrapy's own (the
scraper's items in process), so an item that a pipeline replaces with another object,
or that comes from a response, is counted all the same and never leaks a place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: while full, how often the count is looked at again (Scrapy lowers it just after the
#: item signals that wake us, so a wake-up alone may find it unchanged)
POLL = 0.05


class Admission:
    def __init__(self, limit: Callable[[], int], in_flight: Callable[[], int]) -> None:
        #: read at each admission: the describer's need changes as its API limit is found
        self.limit = limit
        self.in_flight = in_flight
        self._room = asyncio.Event()

    async def _until(self, ready: Callable[[], bool], stopping: Callable[[], bool]) -> bool:
        while not stopping() and not ready():
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), POLL)
            except TimeoutError:
                pass
        return not stopping()

    async def wait(self, stopping: Callable[[], bool]) -> bool:
        """Wait for room; False when the crawl stops meanwhile (admit nothing more)."""
        return await self._until(lambda: self.in_flight() < self.limit(), stopping)

    async def drained(self, stopping: Callable[[], bool]) -> bool:
        """Wait until no item is in the pipelines; False when the crawl stops meanwhile."""
        return await self._until(lambda: self.in_flight() == 0, stopping)

    def item_done(self) -> None:
        self._room.set()
