"""Micro-batching across items in flight: embeddings, Qdrant upserts, SQL writes.

Each item submits its own piece and awaits its own result; the batcher sends
what has gathered when ``max_size`` pieces are waiting or ``max_wait`` has
passed since the first. When a whole batch fails with an error that ``isolate``
blames on a piece, each piece is sent alone so one bad item never fails its
neighbours: every item keeps its own outcome and undoes only its own writes.
Any other error (a service that is down) fails every piece at once: splitting it
would only multiply the calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)


class MicroBatcher(Generic[T, R]):
    def __init__(self, call: Callable[[list[T]], Awaitable[list[R]]], max_size: int, max_wait: float,
                 name: str, isolate: Callable[[Exception], bool] = lambda exc: True,
                 on_batch: Callable[[str, int], None] | None = None) -> None:
        self.call = call
        self.max_size = max(1, max_size)
        self.max_wait = max_wait
        self.name = name
        self.isolate = isolate
        self.on_batch = on_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, piece: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((piece, future))
        if len(self._pending) >= self.max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        if self.on_batch is not None:
            self.on_batch(self.name, len(batch))
        try:
            results = await self.call([piece for piece, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} inputs")
        except Exception as exc:
            if len(batch) == 1 or not self.isolate(exc):
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            logger.debug("%s: a batch of %d failed (%s); sending each alone", self.name, len(batch), exc)
            await asyncio.gather(*(self._send([entry]) for entry in batch))
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def drain(self) -> None:
        """Send what is waiting and wait for every batch in flight."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def counted(stats: Any) -> Callable[[str, int], None]:
    """An ``on_batch`` that counts batches and their items in Scrapy stats."""
    def on_batch(name: str, size: int) -> None:
        stats.inc_value(f"emomo/batch/{name}/batches")
        stats.inc_value(f"emomo/batch/{name}/items", size)
        stats.max_value(f"emomo/batch/{name}/max_size", size)
    return on_batch
