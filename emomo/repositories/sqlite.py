"""SQLite metadata store: the embedded default.

sqlite3 blocks, so every call runs on one dedicated thread, over one
connection. A lock keeps one transaction at a time on that connection:
SQLite serialises writers anyway, and a transaction must not see another
coroutine's statements interleaved.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from emomo.blocking import DedicatedThread
from emomo.config import DatabaseConfig
from emomo.repositories.sql import SQLMemeRepository


class _SQLiteSession:
    def __init__(self, conn: sqlite3.Connection, thread: DedicatedThread) -> None:
        self._conn = conn
        self._thread = thread

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._thread.run(self._conn.execute, sql, tuple(params))
        return int(cursor.rowcount)

    def _fetch(self, sql: str, params: Sequence[Any], one: bool) -> Any:
        cursor = self._conn.execute(sql, tuple(params))
        if one:
            row = cursor.fetchone()
            return dict(row) if row is not None else None
        return [dict(r) for r in cursor.fetchall()]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._thread.run(self._fetch, sql, params, True)
        return result

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._thread.run(self._fetch, sql, params, False)
        return result


class SQLiteMemeRepository(SQLMemeRepository):
    dialect = "sqlite"
    blob_type = "BLOB"
    serial_type = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, config: DatabaseConfig) -> None:
        self.path = Path(config.path)
        self._thread = DedicatedThread("emomo-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        # Switching to WAL needs a moment alone with the file, and the busy timeout does
        # not cover it: a second process starting at the same instant waits its turn here.
        for attempt in range(300):
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 299:
                    raise
                time.sleep(0.1)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def open(self) -> None:
        self._conn = await self._thread.run(self._connect)
        await self.migrate()

    async def migrate(self) -> None:
        # A migration that rebuilds a table drops the old one: with foreign keys on, that would
        # cascade into meme_vectors. The pragma cannot change inside a transaction.
        assert self._conn is not None
        await self._thread.run(self._conn.execute, "PRAGMA foreign_keys=OFF")
        try:
            await super().migrate()
        finally:
            await self._thread.run(self._conn.execute, "PRAGMA foreign_keys=ON")

    async def close(self) -> None:
        if self._conn is not None:
            await self._thread.run(self._conn.close)
            self._conn = None
        self._thread.shutdown()

    def reading(self) -> AbstractAsyncContextManager[_SQLiteSession]:
        """A read: a deferred transaction, one snapshot, no write lock (WAL lets it run beside
        another process's writes: `scrapy serve` answers while a crawl writes)."""
        return self._transaction("BEGIN DEFERRED")

    def session(self) -> AbstractAsyncContextManager[_SQLiteSession]:
        # IMMEDIATE takes the write lock up front: another process's transaction cannot slip in
        # between our read and our write (and two processes starting together migrate once).
        return self._transaction("BEGIN IMMEDIATE")

    @asynccontextmanager
    async def _transaction(self, begin: str) -> AsyncIterator[_SQLiteSession]:
        assert self._conn is not None, "SQLiteMemeRepository.open() was not awaited"
        async with self._lock:
            session = _SQLiteSession(self._conn, self._thread)
            await session.execute(begin)
            try:
                yield session
            except BaseException:
                await session.execute("ROLLBACK")
                raise
            await session.execute("COMMIT")
