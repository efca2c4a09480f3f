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


class DedicatedThread:
    def __init__(self, name: str, workers: int = 1) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
