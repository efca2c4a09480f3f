"""The SQL of the metadata store, written once for every driver.

A driver supplies transactions (``session``) and its dialect; the queries
here are written with ``?`` placeholders, which a driver rewrites if its
paramstyle differs.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from emomo.repositories import (
    STATUSES,
    MemeFile,
    MemeRecord,
    MemeSignature,
    NearCandidate,
    NearSignature,
    SourceRecord,
    VectorRecord,
)
from emomo.repositories.schema import MIGRATIONS

_MEME_COLUMNS = (
    "id, source_type, source_id, md5_hash, storage_key, format, width, height, is_animated, "
    "file_size, category, tags, source_url, vlm_description, vlm_model, status"
)


class Session(Protocol):
    """One transaction: committed when its ``async with`` block ends without error."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...


def _meme(row: dict[str, Any]) -> MemeRecord:
    return MemeRecord(
        id=str(row["id"]), source_type=row["source_type"], source_id=row["source_id"],
        md5_hash=row["md5_hash"], storage_key=row["storage_key"], format=row["format"],
        width=row["width"], height=row["height"], is_animated=bool(row["is_animated"]),
        file_size=row["file_size"], category=row["category"] or "",
        tags=json.loads(row["tags"] or "[]"), source_url=row["source_url"],
        vlm_description=row["vlm_description"], vlm_model=row["vlm_model"], status=row["status"],
    )


#: a failure's reason kept with its meme (the first lines of an upstream error body are enough)
MAX_ERROR_CHARS = 500

_INSERT_SOURCE = "INSERT INTO meme_sources (source_type, source_id, meme_id, md5_hash, locator) VALUES (?, ?, ?, ?, ?)"

_UPSERT_DESCRIPTION = (
    "INSERT INTO meme_descriptions (md5_hash, model, description) VALUES (?, ?, ?) "
    "ON CONFLICT (md5_hash, model) DO UPDATE SET description = excluded.description"
)


class SQLMemeRepository(ABC):
    #: the type of an auto-incrementing integer key in this dialect
    serial_type: str
    #: the type of a column of bytes
    blob_type: str
    #: which variant of a dialect-specific migration statement applies
    dialect: str

    @abstractmethod
    def session(self) -> AbstractAsyncContextManager[Session]: ...

    def reading(self) -> AbstractAsyncContextManager[Session]:
        """For one read-only statement: a driver may skip the transaction around it (a round
        trip each for BEGIN and COMMIT, on every item)."""
        return self.session()

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def _lock_migrations(self, s: Session) -> None:  # noqa: B027 - optional: SQLite's BEGIN IMMEDIATE locks
        """Hold a lock for the rest of the transaction so concurrent starts migrate once."""

    async def migrate(self) -> None:
        async with self.session() as s:
            await self._lock_migrations(s)
            await s.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = {r["version"] for r in await s.fetchall("SELECT version FROM schema_migrations")}
            for version, statements in MIGRATIONS:
                if version in done:
                    continue
                for stmt in statements:
                    for sql in (stmt[self.dialect] if isinstance(stmt, dict) else [stmt]):
                        await s.execute(sql.replace("{serial}", self.serial_type).replace("{blob}", self.blob_type))
                await s.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))

    async def find_vector(self, md5: str, collection: str) -> str | None:
        """The meme whose vector for ``md5`` is in ``collection``, if any."""
        async with self.reading() as s:
            row = await s.fetchone(
                "SELECT meme_id FROM meme_vectors WHERE md5_hash = ? AND collection = ?", (md5, collection))
        return str(row["meme_id"]) if row else None

    async def get_source(self, source_type: str, source_id: str) -> SourceRecord | None:
        async with self.reading() as s:
            row = await s.fetchone(
                "SELECT meme_id, md5_hash FROM meme_sources WHERE source_type = ? AND source_id = ?",
                (source_type, source_id))
        return SourceRecord(source_type, source_id, str(row["meme_id"]), row["md5_hash"]) if row else None

    async def link_source(self, source: SourceRecord, locator: str | None, *, replace: bool) -> str | None:
        """Record that ``source`` holds ``source.meme_id``. An existing link to another meme is
        moved only with ``replace`` (the source's content changed); the meme it pointed to
        before, when it moved."""
        async with self.session() as s:
            row = await s.fetchone("SELECT meme_id FROM meme_sources WHERE source_type = ? AND source_id = ?",
                                   (source.source_type, source.source_id))
            if row is None:
                await s.execute(_INSERT_SOURCE, (source.source_type, source.source_id, source.meme_id,
                                                 source.md5_hash, locator))
                return None
            previous = str(row["meme_id"])
            if previous == source.meme_id or not replace:
                return None
            await s.execute(
                "UPDATE meme_sources SET meme_id = ?, md5_hash = ?, locator = ?, updated_at = CURRENT_TIMESTAMP "
                "WHERE source_type = ? AND source_id = ?",
                (source.meme_id, source.md5_hash, locator, source.source_type, source.source_id))
            return previous

    async def retire_if_orphan(self, meme_id: str) -> list[tuple[str, str]] | None:
        """Retire a meme no source holds any more: status ``retired``, its vector rows gone (its
        row, object and paid description stay). The (collection, point id) of each vector it
        had, for the index to delete; None when a source still holds it."""
        async with self.session() as s:
            # The meme's row locked first: a source being linked to it meanwhile (its foreign key
            # holds the row) is waited for and then seen, never left pointing at a retired meme.
            # SQLite has one writer at a time: its session is the lock.
            lock = " FOR UPDATE" if self.dialect == "postgres" else ""
            await s.fetchone(f"SELECT id FROM memes WHERE id = ?{lock}", (meme_id,))
            if await s.fetchone("SELECT 1 AS x FROM meme_sources WHERE meme_id = ?", (meme_id,)):
                return None
            rows = await s.fetchall("SELECT collection, qdrant_point_id FROM meme_vectors WHERE meme_id = ?",
                                    (meme_id,))
            await s.execute("DELETE FROM meme_vectors WHERE meme_id = ?", (meme_id,))
            await s.execute("UPDATE memes SET status = 'retired', updated_at = CURRENT_TIMESTAMP WHERE id = ?",
                            (meme_id,))
        return [(r["collection"], r["qdrant_point_id"]) for r in rows]

    async def meme_indexed(self, meme_id: str, collection: str) -> bool:
        """Whether the meme has its vector in ``collection``."""
        async with self.reading() as s:
            row = await s.fetchone("SELECT 1 AS x FROM meme_vectors WHERE meme_id = ? AND collection = ?",
                                   (meme_id, collection))
        return row is not None

    @property
    def _next_seq(self) -> str:
        """The next near-duplicate signature's sequence number: what the index reads on from."""
        if self.dialect == "postgres":
            return "nextval(pg_get_serial_sequence('meme_phashes', 'seq'))"
        return "(SELECT COALESCE(MAX(seq), 0) + 1 FROM meme_phashes)"  # one writer at a time

    async def set_image_text(self, meme_id: str, image_text: str) -> None:
        async with self.session() as s:
            await s.execute("UPDATE meme_phashes SET image_text = ? WHERE meme_id = ?", (image_text, meme_id))

    async def set_near_signature(self, meme_id: str, thumb: bytes, blocks: bytes) -> None:
        """A meme recorded before thumbnails were kept gets its own, once it is first a candidate."""
        async with self.session() as s:
            await s.execute(f"UPDATE meme_phashes SET thumb = ?, blocks = ?, seq = {self._next_seq} WHERE meme_id = ?",
                            (thumb, blocks, meme_id))

    async def near_signatures(self, after: int, limit: int) -> list[NearSignature]:
        """Signatures written after sequence number ``after``, in order: the near-duplicate
        index loads them all once, then reads on."""
        async with self.reading() as s:
            rows = await s.fetchall(
                "SELECT p.seq, p.meme_id, p.phash, p.blocks FROM meme_phashes p JOIN memes m ON m.id = p.meme_id "
                "WHERE p.seq > ? AND m.status <> 'retired' ORDER BY p.seq LIMIT ?", (after, limit))
        return [NearSignature(int(r["seq"]), str(r["meme_id"]), int(r["phash"]),
                              bytes(r["blocks"]) if r["blocks"] is not None else None) for r in rows]

    async def near_candidates(self, meme_ids: list[str], collection: str) -> list[NearCandidate]:
        """The active memes among ``meme_ids`` with what deciding a near-duplicate takes, in one
        query: hash, thumbnail, text, file, and whether ``collection`` holds their vector."""
        if not meme_ids:
            return []
        async with self.reading() as s:
            # Planned to look up the few rows asked whatever the statistics (a first crawl's tables
            # grow faster than they are analysed): the status is tested here, not in the query
            # (SQLite walked every active meme by the status index), and the vector rows are
            # counted by a scalar subquery (PostgreSQL hashed a whole scan of meme_vectors for
            # EXISTS).
            rows = await s.fetchall(
                "SELECT p.meme_id, p.phash, p.thumb, p.shifted, p.image_text, m.status, m.md5_hash, m.storage_key, "
                "m.format, m.width, m.height, m.file_size, m.is_animated, (SELECT COUNT(*) FROM meme_vectors v "
                "WHERE v.meme_id = p.meme_id AND v.collection = ?) > 0 AS indexed "
                "FROM meme_phashes p JOIN memes m ON m.id = p.meme_id "
                f"WHERE p.meme_id IN ({', '.join('?' * len(meme_ids))})",
                [collection, *meme_ids])
        return [NearCandidate(str(r["meme_id"]), int(r["phash"]), bytes(r["thumb"]) if r["thumb"] is not None else None,
                              r["image_text"], bool(r["indexed"]), MemeFile(
                                  r["md5_hash"], r["storage_key"], r["format"], int(r["width"]), int(r["height"]),
                                  int(r["file_size"]), bool(r["is_animated"])), bool(r["shifted"]))
                for r in rows if r["status"] == "active"]

    async def switch_file(self, meme_id: str, old_md5: str, new: MemeFile, phash: int, thumb: bytes,
                          blocks: bytes, shifted: bool) -> list[tuple[str, str]] | None:
        """Make ``new`` the meme's file (row, vector rows, signature) if it still has ``old_md5``:
        the (collection, point id) of its vectors, whose payload then follows; None when another
        worker changed the meme meanwhile."""
        async with self.session() as s:
            changed = await s.execute(
                "UPDATE memes SET md5_hash = ?, storage_key = ?, format = ?, width = ?, height = ?, "
                "file_size = ?, is_animated = ?, updated_at = CURRENT_TIMESTAMP WHERE id = ? AND md5_hash = ?",
                (new.md5_hash, new.storage_key, new.format, new.width, new.height, new.file_size,
                 new.is_animated, meme_id, old_md5))
            if not changed:
                return None
            await s.execute("UPDATE meme_vectors SET md5_hash = ? WHERE meme_id = ?", (new.md5_hash, meme_id))
            await s.execute(f"UPDATE meme_phashes SET phash = ?, thumb = ?, blocks = ?, shifted = ?, "
                            f"seq = {self._next_seq} WHERE meme_id = ?", (phash, thumb, blocks, shifted, meme_id))
            rows = await s.fetchall("SELECT collection, qdrant_point_id FROM meme_vectors WHERE meme_id = ?",
                                    (meme_id,))
        return [(r["collection"], r["qdrant_point_id"]) for r in rows]

    async def get_meme_by_md5(self, md5: str) -> MemeRecord | None:
        async with self.reading() as s:
            row = await s.fetchone(f"SELECT {_MEME_COLUMNS} FROM memes WHERE md5_hash = ?", (md5,))
        return _meme(row) if row else None

    async def get_memes(self, ids: list[str]) -> dict[str, MemeRecord]:
        if not ids:
            return {}
        async with self.reading() as s:
            rows = await s.fetchall(
                f"SELECT {_MEME_COLUMNS} FROM memes WHERE id IN ({','.join('?' * len(ids))})", ids)
        return {str(r["id"]): _meme(r) for r in rows}

    async def all_memes(self) -> list[MemeRecord]:
        async with self.reading() as s:
            return [_meme(r) for r in await s.fetchall(f"SELECT {_MEME_COLUMNS} FROM memes ORDER BY md5_hash")]

    async def list_memes(self, status: str, limit: int | None = None) -> list[MemeRecord]:
        """Memes with ``status``, oldest first (what ``scrapy crawl pending`` retries)."""
        sql = f"SELECT {_MEME_COLUMNS} FROM memes WHERE status = ? ORDER BY created_at, md5_hash"
        params: list[Any] = [status]
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        async with self.reading() as s:
            return [_meme(r) for r in await s.fetchall(sql, params)]

    async def get_description(self, md5: str, model: str) -> str | None:
        async with self.reading() as s:
            row = await s.fetchone(
                "SELECT description FROM meme_descriptions WHERE md5_hash = ? AND model = ?", (md5, model))
        return row["description"] if row else None

    async def insert_meme(self, meme: MemeRecord, locator: str | None = None,
                          signature: MemeSignature | None = None) -> MemeRecord:
        """Insert the meme, its source (unless that source already names another meme: its
        content changed, and the link moves when the new meme is complete), its description
        and its near-duplicate signature, in one transaction; when another process recorded the
        same md5 first, insert nothing and return that meme (the unique constraint decides)."""
        async with self.session() as s:
            inserted = await s.execute(
                f"INSERT INTO memes ({_MEME_COLUMNS}) VALUES ({','.join('?' * 16)}) "
                "ON CONFLICT (md5_hash) DO NOTHING",
                (meme.id, meme.source_type, meme.source_id, meme.md5_hash, meme.storage_key,
                 meme.format, meme.width, meme.height, meme.is_animated, meme.file_size,
                 meme.category, json.dumps(meme.tags, ensure_ascii=False), meme.source_url,
                 meme.vlm_description, meme.vlm_model, meme.status),
            )
            if not inserted:
                row = await s.fetchone(f"SELECT {_MEME_COLUMNS} FROM memes WHERE md5_hash = ?", (meme.md5_hash,))
                assert row is not None
                return _meme(row)
            await s.execute(_INSERT_SOURCE + " ON CONFLICT (source_type, source_id) DO NOTHING",
                            (meme.source_type, meme.source_id, meme.id, meme.md5_hash, locator))
            if meme.vlm_description and meme.vlm_model:
                await s.execute(_UPSERT_DESCRIPTION, (meme.md5_hash, meme.vlm_model, meme.vlm_description))
            if signature is not None:
                await s.execute(
                    "INSERT INTO meme_phashes (meme_id, phash, thumb, blocks, shifted, image_text, seq) "
                    f"VALUES (?, ?, ?, ?, ?, ?, {self._next_seq}) ON CONFLICT (meme_id) DO NOTHING",
                    (meme.id, signature.phash, signature.thumb, signature.blocks, signature.shifted,
                     signature.image_text))
        return meme

    async def claim(self, md5: str, collection: str, worker: str, stale_after: float) -> str | None:
        """Claim ``md5`` for ``collection`` for ``worker``: None when it is ours now (free, ours
        already, or held by a claim older than ``stale_after`` seconds), else the worker holding it."""
        now = time.time()
        async with self.session() as s:
            row = await s.fetchone(
                "INSERT INTO meme_claims (md5_hash, collection, worker, claimed_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (md5_hash, collection) DO UPDATE SET worker = excluded.worker, "
                "claimed_at = excluded.claimed_at "
                "WHERE meme_claims.worker = excluded.worker OR meme_claims.claimed_at < ? RETURNING worker",
                (md5, collection, worker, now, now - stale_after))
            if row is not None:
                return None
            held = await s.fetchone("SELECT worker FROM meme_claims WHERE md5_hash = ? AND collection = ?",
                                    (md5, collection))
        return str(held["worker"]) if held else None

    async def release_all(self, collection: str, worker: str, stale_after: float) -> None:
        """Every claim ``worker`` holds for ``collection`` (its items' end never came), and every
        claim lapsed ``stale_after`` ago: a worker killed after its meme was complete leaves one
        that no later item ever takes over, since the meme it names is found done first."""
        async with self.session() as s:
            await s.execute("DELETE FROM meme_claims WHERE collection = ? AND (worker = ? OR claimed_at < ?)",
                            (collection, worker, time.time() - stale_after))

    async def release(self, md5: str, collection: str, worker: str) -> None:
        async with self.session() as s:
            await s.execute("DELETE FROM meme_claims WHERE md5_hash = ? AND collection = ? AND worker = ?",
                            (md5, collection, worker))

    async def save_description(self, md5: str, model: str, description: str) -> None:
        """Keep a description the moment it exists: it was paid for, whatever happens to its item."""
        await self.save_descriptions([(md5, model, description)])

    async def save_descriptions(self, descriptions: list[tuple[str, str, str]]) -> list[None]:
        """Keep many (md5, model, description) in one statement (the last of a repeated pair wins)."""
        rows = {(md5, model): text for md5, model, text in descriptions}
        if rows:
            async with self.session() as s:
                await s.execute(
                    "INSERT INTO meme_descriptions (md5_hash, model, description) VALUES "
                    f"{', '.join(['(?, ?, ?)'] * len(rows))} "
                    "ON CONFLICT (md5_hash, model) DO UPDATE SET description = excluded.description",
                    [v for (md5, model), text in rows.items() for v in (md5, model, text)])
        return [None] * len(descriptions)

    async def set_description(self, meme: MemeRecord, description: str, model: str) -> None:
        async with self.session() as s:
            await s.execute(
                "UPDATE memes SET vlm_description = ?, vlm_model = ?, updated_at = CURRENT_TIMESTAMP "
                "WHERE id = ?", (description, model, meme.id))
            await s.execute(_UPSERT_DESCRIPTION, (meme.md5_hash, model, description))

    async def set_status(self, meme_id: str, status: str) -> None:
        async with self.session() as s:
            await s.execute("UPDATE memes SET status = ?, updated_at = CURRENT_TIMESTAMP WHERE id = ?",
                            (status, meme_id))

    async def park(self, meme_id: str, status: str, error: str, max_attempts: int) -> str:
        async with self.session() as s:
            await s.execute(
                "UPDATE memes SET attempts = attempts + 1, last_error = ?, updated_at = CURRENT_TIMESTAMP, "
                "status = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE ? END WHERE id = ?",
                (error[:MAX_ERROR_CHARS], max_attempts, status, meme_id))
            row = await s.fetchone("SELECT status FROM memes WHERE id = ?", (meme_id,))
        return str(row["status"]) if row else status

    async def delete_meme(self, meme_id: str) -> None:
        """Undo a meme: its row, vector rows and source links. Its descriptions stay: they were
        paid for, and the next run over the same image takes them instead of paying again."""
        async with self.session() as s:
            await s.execute("DELETE FROM meme_vectors WHERE meme_id = ?", (meme_id,))
            await s.execute("DELETE FROM meme_sources WHERE meme_id = ?", (meme_id,))
            await s.execute("DELETE FROM memes WHERE id = ?", (meme_id,))

    async def record_vectors(self, vectors: list[VectorRecord]) -> list[bool]:
        """Insert or replace each (md5, collection) vector row and mark its meme active, all in
        one transaction; for each, True when its row is new."""
        new: list[bool] = []
        async with self.session() as s:
            for vector in vectors:
                existed = await s.fetchone(
                    "SELECT 1 AS x FROM meme_vectors WHERE md5_hash = ? AND collection = ?",
                    (vector.md5_hash, vector.collection)) is not None
                await s.execute(
                    "INSERT INTO meme_vectors (id, meme_id, md5_hash, collection, embedding_model, "
                    "qdrant_point_id, status) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (md5_hash, collection) DO UPDATE SET embedding_model = excluded.embedding_model, "
                    "qdrant_point_id = excluded.qdrant_point_id, status = excluded.status",
                    (vector.id, vector.meme_id, vector.md5_hash, vector.collection, vector.embedding_model,
                     vector.qdrant_point_id, vector.status),
                )
                await s.execute(
                    "UPDATE memes SET status = 'active', updated_at = CURRENT_TIMESTAMP WHERE id = ?",
                    (vector.meme_id,))
                new.append(not existed)
        return new

    async def count_sources(self) -> dict[str, int]:
        """Sources by kind: every place a meme came from, and those whose file is a near-duplicate
        of the meme's (another md5 than the meme's own file)."""
        async with self.reading() as s:
            row = await s.fetchone(
                "SELECT COUNT(*) AS total, COALESCE(SUM(CASE WHEN s.md5_hash <> m.md5_hash THEN 1 ELSE 0 END), 0) "
                "AS near FROM meme_sources s JOIN memes m ON m.id = s.meme_id")
        assert row is not None
        return {"total": int(row["total"]), "near_duplicate": int(row["near"])}

    async def list_vectors(self, collection: str) -> list[VectorRecord]:
        async with self.reading() as s:
            rows = await s.fetchall(
                "SELECT id, meme_id, md5_hash, collection, embedding_model, qdrant_point_id, status "
                "FROM meme_vectors WHERE collection = ?", (collection,))
        return [VectorRecord(id=str(r["id"]), meme_id=str(r["meme_id"]), md5_hash=r["md5_hash"],
                             collection=r["collection"], embedding_model=r["embedding_model"],
                             qdrant_point_id=r["qdrant_point_id"], status=r["status"]) for r in rows]

    async def memes_with_vectors(self) -> set[str]:
        """Ids of the memes that have a vector in any collection."""
        async with self.reading() as s:
            rows = await s.fetchall("SELECT DISTINCT meme_id FROM meme_vectors")
        return {str(r["meme_id"]) for r in rows}

    async def sources(self, meme_id: str) -> list[SourceRecord]:
        """Every source that holds ``meme_id`` (its file and the copies merged into it), oldest first."""
        async with self.reading() as s:
            rows = await s.fetchall("SELECT source_type, source_id, meme_id, md5_hash FROM meme_sources "
                                    "WHERE meme_id = ? ORDER BY created_at, source_type, source_id", (meme_id,))
        return [SourceRecord(r["source_type"], r["source_id"], str(r["meme_id"]), r["md5_hash"]) for r in rows]

    async def locators(self, meme_id: str) -> list[str]:
        """Where the sources of ``meme_id`` were read (paths or URLs, escaped), newest first."""
        async with self.reading() as s:
            rows = await s.fetchall(
                "SELECT locator FROM meme_sources WHERE meme_id = ? AND locator IS NOT NULL ORDER BY updated_at DESC",
                (meme_id,))
        return [r["locator"] for r in rows]

    async def count_memes(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        async with self.reading() as s:
            for r in await s.fetchall("SELECT status, COUNT(*) AS n FROM memes GROUP BY status"):
                counts[r["status"]] = int(r["n"])
        return counts

    async def categories(self) -> dict[str, int]:
        """Active memes by category, most first."""
        async with self.reading() as s:
            rows = await s.fetchall(
                "SELECT category, COUNT(*) AS n FROM memes WHERE status = 'active' AND category <> '' "
                "GROUP BY category ORDER BY n DESC, category")
        return {r["category"]: int(r["n"]) for r in rows}

    async def count_vectors(self) -> dict[str, int]:
        async with self.reading() as s:
            rows = await s.fetchall(
                "SELECT collection, COUNT(*) AS n FROM meme_vectors GROUP BY collection ORDER BY collection")
        return {r["collection"]: int(r["n"]) for r in rows}

    async def source_ids(self, source_type: str) -> set[str]:
        """The source ids of ``source_type`` with nothing left to do (a spider skips them before
        downloading): all but those whose meme is pending, which a crawl killed mid-item leaves
        and the next crawl completes (reusing the object and description it paid for). A failed
        meme stays skipped: `scrapy crawl pending -a failed=1` is its retry."""
        async with self.reading() as s:
            rows = await s.fetchall(
                "SELECT s.source_id FROM meme_sources s JOIN memes m ON m.id = s.meme_id "
                "WHERE s.source_type = ? AND m.status <> 'pending'", (source_type,))
        return {r["source_id"] for r in rows}

    async def get_cursor(self, source: str) -> str | None:
        async with self.reading() as s:
            row = await s.fetchone("SELECT cursor FROM crawl_cursors WHERE source = ?", (source,))
        return row["cursor"] if row else None

    async def set_cursor(self, source: str, cursor: str) -> None:
        async with self.session() as s:
            await s.execute(
                "INSERT INTO crawl_cursors (source, cursor) VALUES (?, ?) ON CONFLICT (source) DO UPDATE "
                "SET cursor = excluded.cursor, updated_at = CURRENT_TIMESTAMP", (source, cursor))
