"""PostgreSQL metadata store through psycopg 3 and its async connection pool.

The DSN comes from ``database.url`` or DATABASE_URL. Migrations run under a
transaction-scoped advisory lock, so processes that start together (two
scrapyd jobs, say) apply each one once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from emomo.config import DatabaseConfig
from emomo.errors import BackendUnavailable, ConfigError
from emomo.logmask import SecretMask, dsn_passwords
from emomo.repositories.sql import Session, SQLMemeRepository

#: arbitrary, fixed: the advisory lock that serialises our migrations
_MIGRATION_LOCK = 0x656D6F6D6F  # "emomo"


def redact(dsn: str) -> str:
    """The DSN without its password, in whichever form it is written (emomo.logmask), for messages."""
    return SecretMask(dsn_passwords(dsn)).mask(dsn)


class _PgSession:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self._conn.execute(sql.replace("?", "%s"), tuple(params))
        return int(cur.rowcount)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        cur = await self._conn.execute(sql.replace("?", "%s"), tuple(params))
        row: dict[str, Any] | None = await cur.fetchone()
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = await self._conn.execute(sql.replace("?", "%s"), tuple(params))
        rows: list[dict[str, Any]] = await cur.fetchall()
        return rows


class PostgresMemeRepository(SQLMemeRepository):
    dialect = "postgres"
    blob_type = "BYTEA"
    serial_type = "BIGSERIAL PRIMARY KEY"

    def __init__(self, config: DatabaseConfig) -> None:
        self.dsn = config.dsn()
        if not self.dsn:
            raise ConfigError("database.url is empty: set DATABASE_URL (postgresql://user:pass@host:5432/emomo)")
        self.min_size = config.pool_min_size
        self.max_size = config.pool_max_size or 10
        self._pool: Any = None

    async def open(self) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        try:
            # One plain connection first: the pool would only say it timed out,
            # psycopg says why (refused, unknown database, bad password).
            probe = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=10)
            await probe.close()
        except psycopg.Error as exc:
            # psycopg's message names host and port, never the password.
            cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendUnavailable(
                f"database.url / DATABASE_URL: cannot connect to PostgreSQL at {redact(self.dsn)}: {cause}"
            ) from None
        self._pool = AsyncConnectionPool(
            self.dsn, min_size=self.min_size, max_size=self.max_size, open=False,
            # Autocommit: a lone read is one round trip; session() opens its transaction explicitly.
            kwargs={"row_factory": dict_row, "autocommit": True}, name="emomo",
        )
        await self._pool.open(wait=True, timeout=30)
        await self.migrate()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _lock_migrations(self, s: Session) -> None:
        await s.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))

    @asynccontextmanager
    async def session(self) -> AsyncIterator[_PgSession]:
        assert self._pool is not None, "PostgresMemeRepository.open() was not awaited"
        async with self._pool.connection() as conn, conn.transaction():
            yield _PgSession(conn)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[_PgSession]:
        assert self._pool is not None, "PostgresMemeRepository.open() was not awaited"
        async with self._pool.connection() as conn:
            yield _PgSession(conn)
