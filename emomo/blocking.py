"""Threads of their own for blocking clients, off the reactor.

SQLite's connection, Qdrant's local mode and the embedding engine each keep
state that is not thread-safe: each gets one dedicated thread, which also
serialises their calls without a lock. A blocking network client (boto3)
gets a pool sized for its calls in flight, so that its waiting never takes
the threads that reading and probing images use (asyncio's default pool).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def one_blas_thread() -> None:
    """numpy's BLAS on one thread in this process. The near-duplicate check multiplies small
    matrices (a picture's cell means, profile correlations) on several of asyncio's threads at
    once; OpenBLAS's own threads, one a core, spin after each product: measured, they doubled
    the CPU of measuring a picture, wall time unchanged."""
    import numpy  # noqa: F401  (loaded first: threadpoolctl limits the libraries it finds loaded)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class DedicatedThread:
    def __init__(self, name: str, workers: int = 1) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
