"""SQLite metadata store: the embedded default.

sqlite3 blocks, so every call runs on one dedicated thread. One thread also
serialises the writes, which SQLite would serialise anyway, and lets one
connection serve the whole crawl.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from emomo.blocking import DedicatedThread
from emomo.config import DatabaseConfig
from emomo.repositories import STATUSES, MemeRecord, VectorRecord
from emomo.repositories.schema import MIGRATIONS

T = TypeVar("T")

_MEME_COLUMNS = (
    "id, source_type, source_id, md5_hash, storage_key, format, width, height, is_animated, "
    "file_size, category, tags, source_url, vlm_description, vlm_model, status"
)


def _row_to_meme(row: sqlite3.Row) -> MemeRecord:
    return MemeRecord(
        id=row["id"], source_type=row["source_type"], source_id=row["source_id"],
        md5_hash=row["md5_hash"], storage_key=row["storage_key"], format=row["format"],
        width=row["width"], height=row["height"], is_animated=bool(row["is_animated"]),
        file_size=row["file_size"], category=row["category"] or "",
        tags=json.loads(row["tags"] or "[]"), source_url=row["source_url"],
        vlm_description=row["vlm_description"], vlm_model=row["vlm_model"], status=row["status"],
    )


class SQLiteMemeRepository:
    def __init__(self, config: DatabaseConfig) -> None:
        self.path = Path(config.path)
        self._thread = DedicatedThread("emomo-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._thread.run(self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "SQLiteMemeRepository.open() was not awaited"
        return fn(self._conn)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        self._conn = conn
        self._migrate(conn)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock first: two processes starting
        # together apply each migration once.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in MIGRATIONS:
                if version in done:
                    continue
                for stmt in statements:
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def open(self) -> None:
        await self._thread.run(self._connect)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(lambda c: c.close())
            self._conn = None
        self._thread.shutdown()

    @staticmethod
    def _tx(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def vector_exists(self, md5: str, collection: str) -> bool:
        return await self._run(lambda c: c.execute(
            "SELECT 1 FROM meme_vectors WHERE md5_hash = ? AND collection = ?", (md5, collection)
        ).fetchone() is not None)

    async def get_meme_by_md5(self, md5: str) -> MemeRecord | None:
        def q(c: sqlite3.Connection) -> MemeRecord | None:
            row = c.execute(f"SELECT {_MEME_COLUMNS} FROM memes WHERE md5_hash = ?", (md5,)).fetchone()
            return _row_to_meme(row) if row else None
        return await self._run(q)

    async def get_memes(self, ids: list[str]) -> dict[str, MemeRecord]:
        def q(c: sqlite3.Connection) -> dict[str, MemeRecord]:
            marks = ",".join("?" * len(ids))
            rows = c.execute(f"SELECT {_MEME_COLUMNS} FROM memes WHERE id IN ({marks})", ids)
            return {r["id"]: _row_to_meme(r) for r in rows}
        return await self._run(q) if ids else {}

    async def all_memes(self) -> list[MemeRecord]:
        return await self._run(lambda c: [
            _row_to_meme(r) for r in c.execute(f"SELECT {_MEME_COLUMNS} FROM memes ORDER BY md5_hash")
        ])

    async def get_description(self, md5: str, model: str) -> str | None:
        def q(c: sqlite3.Connection) -> str | None:
            row = c.execute(
                "SELECT description FROM meme_descriptions WHERE md5_hash = ? AND model = ?", (md5, model)
            ).fetchone()
            return row[0] if row else None
        return await self._run(q)

    async def insert_meme(self, meme: MemeRecord) -> None:
        def body(c: sqlite3.Connection) -> None:
            c.execute(
                f"INSERT INTO memes ({_MEME_COLUMNS}) VALUES ({','.join('?' * 16)})",
                (meme.id, meme.source_type, meme.source_id, meme.md5_hash, meme.storage_key,
                 meme.format, meme.width, meme.height, int(meme.is_animated), meme.file_size,
                 meme.category, json.dumps(meme.tags, ensure_ascii=False), meme.source_url,
                 meme.vlm_description, meme.vlm_model, meme.status),
            )
            if meme.vlm_description and meme.vlm_model:
                c.execute(
                    "INSERT INTO meme_descriptions (md5_hash, model, description) VALUES (?, ?, ?) "
                    "ON CONFLICT (md5_hash, model) DO UPDATE SET description = excluded.description",
                    (meme.md5_hash, meme.vlm_model, meme.vlm_description),
                )
        await self._run(lambda c: self._tx(c, body))

    async def delete_meme(self, meme_id: str) -> None:
        def body(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT md5_hash FROM memes WHERE id = ?", (meme_id,)).fetchone()
            if row is None:
                return
            c.execute("DELETE FROM meme_vectors WHERE meme_id = ?", (meme_id,))
            c.execute("DELETE FROM meme_descriptions WHERE md5_hash = ?", (row[0],))
            c.execute("DELETE FROM memes WHERE id = ?", (meme_id,))
        await self._run(lambda c: self._tx(c, body))

    async def record_vector(self, vector: VectorRecord) -> bool:
        def body(c: sqlite3.Connection) -> bool:
            existed = c.execute(
                "SELECT 1 FROM meme_vectors WHERE md5_hash = ? AND collection = ?",
                (vector.md5_hash, vector.collection),
            ).fetchone() is not None
            c.execute(
                "INSERT INTO meme_vectors (id, meme_id, md5_hash, collection, embedding_model, "
                "qdrant_point_id, status) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (md5_hash, collection) DO UPDATE SET embedding_model = excluded.embedding_model, "
                "qdrant_point_id = excluded.qdrant_point_id, status = excluded.status",
                (vector.id, vector.meme_id, vector.md5_hash, vector.collection, vector.embedding_model,
                 vector.qdrant_point_id, vector.status),
            )
            c.execute(
                "UPDATE memes SET status = 'active', updated_at = CURRENT_TIMESTAMP WHERE id = ?",
                (vector.meme_id,),
            )
            return not existed
        return await self._run(lambda c: self._tx(c, body))

    async def delete_vector(self, md5: str, collection: str) -> None:
        await self._run(lambda c: c.execute(
            "DELETE FROM meme_vectors WHERE md5_hash = ? AND collection = ?", (md5, collection)))

    async def count_memes(self) -> dict[str, int]:
        def q(c: sqlite3.Connection) -> dict[str, int]:
            counts = dict.fromkeys(STATUSES, 0)
            for status, n in c.execute("SELECT status, COUNT(*) FROM memes GROUP BY status"):
                counts[status] = n
            return counts
        return await self._run(q)

    async def count_vectors(self) -> dict[str, int]:
        return await self._run(lambda c: {
            coll: n for coll, n in c.execute(
                "SELECT collection, COUNT(*) FROM meme_vectors GROUP BY collection ORDER BY collection")
        })

    async def vector_point_ids(self, collection: str) -> set[str]:
        return await self._run(lambda c: {
            r[0] for r in c.execute(
                "SELECT qdrant_point_id FROM meme_vectors WHERE collection = ?", (collection,))
        })

