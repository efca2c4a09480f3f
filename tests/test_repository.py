"""The SQL repository against the real PostgreSQL (and SQLite): migrations and races."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import psycopg
from servers import postgres_database

from emomo.config import DatabaseConfig
from emomo.repositories import MemeRecord, SourceRecord
from emomo.repositories.postgres import PostgresMemeRepository
from emomo.repositories.schema import MIGRATIONS
from emomo.repositories.sql import SQLMemeRepository
from emomo.repositories.sqlite import SQLiteMemeRepository


def meme(md5: str, source_id: str) -> MemeRecord:
    return MemeRecord(id=str(uuid.uuid4()), source_type="test", source_id=source_id, md5_hash=md5,
                      storage_key=f"{md5[:2]}/{md5}.png", format="png", width=1, height=1, is_animated=False,
                      file_size=10, tags=["标签"], vlm_description="描述", vlm_model="m")


async def race(repos: list[SQLMemeRepository]) -> None:
    # Two processes start together: each migration is applied once.
    await asyncio.gather(*(r.open() for r in repos))
    try:
        # ...and record the same image at once: one meme, which both get back.
        a, b = meme("ab" * 16, "one"), meme("ab" * 16, "two")
        got = await asyncio.gather(repos[0].insert_meme(a), repos[1].insert_meme(b))
        assert got[0].id == got[1].id and got[0].id in (a.id, b.id)
        assert {m.md5_hash for m in await repos[0].all_memes()} == {"ab" * 16}
        assert (await repos[1].count_memes())["pending"] == 1
        # New bytes under a source already recorded: a new meme; the source moves to it only
        # when asked (once the new meme is complete), and the old meme is then retired.
        newer = meme("cd" * 16, got[0].source_id)
        assert (await repos[0].insert_meme(newer)).id == newer.id
        source = await repos[1].get_source("test", got[0].source_id)
        assert source is not None and source.meme_id == got[0].id and source.md5_hash == "ab" * 16
        link = SourceRecord("test", got[0].source_id, newer.id, newer.md5_hash)
        assert await repos[1].link_source(link, "/x.png", replace=False) is None
        assert (await repos[0].get_source("test", got[0].source_id)).meme_id == got[0].id  # type: ignore[union-attr]
        assert await repos[1].link_source(link, "/x.png", replace=True) == got[0].id
        assert await repos[0].retire_if_orphan(newer.id) is None  # a source holds it
        assert await repos[0].retire_if_orphan(got[0].id) == []
        assert (await repos[1].count_memes()) == {"pending": 1, "active": 0, "failed": 0, "retired": 1}
        assert await repos[0].source_ids("test") == set()  # its meme is pending: a crawl fetches it again
        await repos[0].set_status(newer.id, "active")
        assert await repos[0].source_ids("test") == {got[0].source_id}
        await repos[0].set_cursor("fabiaoqing", "3")
        await repos[1].set_cursor("fabiaoqing", "4")
        assert await repos[0].get_cursor("fabiaoqing") == "4"
    finally:
        await asyncio.gather(*(r.close() for r in repos))


def test_postgres_migrates_once_and_keeps_one_meme_per_md5() -> None:
    with postgres_database() as dsn:
        config = DatabaseConfig(driver="postgres", url=dsn)
        asyncio.run(race([PostgresMemeRepository(config), PostgresMemeRepository(config)]))
        with psycopg.connect(dsn) as conn:
            versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()]
            assert versions == [v for v, _ in MIGRATIONS]


def test_sqlite_migrates_once_and_keeps_one_meme_per_md5(tmp_path: Path) -> None:
    config = DatabaseConfig(path=str(tmp_path / "emomo.db"))
    asyncio.run(race([SQLiteMemeRepository(config), SQLiteMemeRepository(config)]))


V2_ROWS = [
    "INSERT INTO memes (id, source_type, source_id, md5_hash, storage_key, format, width, height, is_animated, "
    "file_size, category, tags, status) VALUES ('m1', 'chinesebqb', 'a/b.png', '{md5}', 'ab/x.png', 'png', 1, 1, "
    "FALSE, 3, 'a', '[]', 'active')",
    "INSERT INTO meme_vectors (id, meme_id, md5_hash, collection, embedding_model, qdrant_point_id) "
    "VALUES ('v1', 'm1', '{md5}', 'c', 'e5', 'p1')",
    "INSERT INTO meme_descriptions (md5_hash, model, description) VALUES ('{md5}', 'vlm', 'text')",
    "INSERT INTO schema_migrations (version) VALUES (1), (2)",
]


async def check_migrated(repo: SQLMemeRepository) -> None:
    await repo.open()
    try:
        assert (await repo.count_memes())["active"] == 1
        assert await repo.count_vectors() == {"c": 1}  # the table rebuild kept the vector rows
        assert await repo.get_description("ab" * 16, "vlm") == "text"
        source = await repo.get_source("chinesebqb", "a/b.png")
        assert source is not None and source.meme_id == "m1"
    finally:
        await repo.close()


def v2_statements(serial: str, dialect: str) -> list[str]:
    out = ["CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)"]
    for _, statements in MIGRATIONS[:2]:
        out += [str(st).replace("{serial}", serial) for st in statements]
    return out + [r.format(md5="ab" * 16) for r in V2_ROWS]


def test_a_version_2_sqlite_database_migrates_without_losing_rows(tmp_path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "emomo.db")
    conn.execute("PRAGMA foreign_keys=ON")
    for stmt in v2_statements(SQLiteMemeRepository.serial_type, "sqlite"):
        conn.execute(stmt)
    conn.commit()
    conn.close()
    asyncio.run(check_migrated(SQLiteMemeRepository(DatabaseConfig(path=str(tmp_path / "emomo.db")))))


def test_a_version_2_postgres_database_migrates_without_losing_rows() -> None:
    with postgres_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for stmt in v2_statements(PostgresMemeRepository.serial_type, "postgres"):
                conn.execute(stmt)
        asyncio.run(check_migrated(PostgresMemeRepository(DatabaseConfig(driver="postgres", url=dsn))))


def test_sqlite_reads_do_not_wait_for_another_process_writing(tmp_path: Path) -> None:
    """`scrapy serve` (reads) beside a crawl (writes) on one SQLite file: a read takes no write
    lock, so it answers while the other holds its write transaction open."""
    import time

    async def scenario() -> float:
        writer = SQLiteMemeRepository(DatabaseConfig(path=str(tmp_path / "emomo.db")))
        reader = SQLiteMemeRepository(DatabaseConfig(path=str(tmp_path / "emomo.db")))
        await writer.open()
        await reader.open()
        try:
            holding = asyncio.Event()
            release = asyncio.Event()

            async def write() -> None:
                async with writer.session() as s:
                    await s.execute("INSERT INTO crawl_cursors (source, cursor) VALUES ('x', '1')")
                    holding.set()
                    await release.wait()

            task = asyncio.ensure_future(write())
            await holding.wait()
            started = time.monotonic()
            counts = await asyncio.wait_for(reader.count_memes(), 10)
            took = time.monotonic() - started
            assert counts["active"] == 0
            assert await reader.get_cursor("x") is None  # the other's write is not committed yet
            release.set()
            await task
            assert await reader.get_cursor("x") == "1"
            return took
        finally:
            await reader.close()
            await writer.close()

    assert asyncio.run(scenario()) < 1.0


def test_a_meme_is_not_retired_while_another_worker_links_a_source_to_it() -> None:
    """Retiring checked for sources, then acted: under PostgreSQL's READ COMMITTED a source being
    linked at that moment by another worker was left pointing at a retired meme."""
    with postgres_database() as dsn:
        async def go() -> None:
            repo = PostgresMemeRepository(DatabaseConfig(driver="postgres", url=dsn))
            await repo.open()
            try:
                kept = await repo.insert_meme(meme("ef" * 16, "first"))
                newer = await repo.insert_meme(meme("12" * 16, "newer"))
                # its only source moves to other bytes: the meme is an orphan, to be retired...
                await repo.link_source(SourceRecord("test", "first", newer.id, newer.md5_hash), None, replace=True)
                # ...while another worker links a copy's source to it, not yet committed
                other = await psycopg.AsyncConnection.connect(dsn)
                try:
                    await other.execute("INSERT INTO meme_sources (source_type, source_id, meme_id, md5_hash) "
                                        "VALUES ('test', 'copy', %s, %s)", (kept.id, kept.md5_hash))
                    retiring = asyncio.ensure_future(repo.retire_if_orphan(kept.id))
                    await asyncio.sleep(0.5)
                    assert not retiring.done()  # it waits for the link to end
                    await other.commit()
                finally:
                    await other.close()
                assert await retiring is None
                assert (await repo.get_memes([kept.id]))[kept.id].status != "retired"
            finally:
                await repo.close()
        asyncio.run(go())


def test_a_worker_ending_clears_claims_a_dead_worker_left_lapsed(tmp_path: Path) -> None:
    """A worker killed after its meme was complete but before its claim was released left the
    claim for good: the next worker finds the meme active, never claims it, so never takes it over
    (seen as one claim left after a three-shard crawl). A lapsed claim means nothing: the end of
    any worker's crawl removes it; live claims, its own or another's, are kept until released."""
    async def go() -> None:
        repo = SQLiteMemeRepository(DatabaseConfig(path=str(tmp_path / "emomo.db")))
        await repo.open()
        try:
            assert await repo.claim("aa" * 16, "c", "dead", stale_after=60) is None
            assert await repo.claim("bb" * 16, "c", "alive", stale_after=60) is None
            assert await repo.claim("cc" * 16, "c", "me", stale_after=60) is None
            async with repo.session() as s:  # the dead worker's claim was made long ago
                await s.execute("UPDATE meme_claims SET claimed_at = claimed_at - 120 WHERE worker = 'dead'")
            await repo.release_all("c", "me", stale_after=60)
            async with repo.session() as s:
                left = await s.fetchall("SELECT worker FROM meme_claims ORDER BY worker")
            assert [r["worker"] for r in left] == ["alive"]
        finally:
            await repo.close()
    asyncio.run(go())


def test_the_near_duplicate_candidates_query_reads_the_asked_rows_whatever_the_table_holds(tmp_path: Path) -> None:
    """The check fetches its nearest few candidates in one query for each new file. SQLite chose
    to walk every active meme by the status index and look each one up (no statistics say that
    status is not selective): 1.9 ms at 10,000 memes of a series and growing with them. The work
    SQLite does for eight candidates (its virtual machine's steps, which do not depend on the
    machine's speed) must not grow with the table."""
    from emomo.repositories import MemeSignature

    async def steps_for_eight(repo: SQLiteMemeRepository, ids: list[str]) -> int:
        counted = [0]

        def step() -> int:
            counted[0] += 1
            return 0

        conn = repo._conn  # the repository's own connection: the query as the check runs it
        assert conn is not None
        conn.set_progress_handler(step, 100)
        try:
            found = await repo.near_candidates(ids[:8], "c")
        finally:
            conn.set_progress_handler(None, 0)
        assert sorted(c.meme_id for c in found) == sorted(ids[:8])
        return counted[0]

    async def go() -> tuple[int, int]:
        repo = SQLiteMemeRepository(DatabaseConfig(path=str(tmp_path / "emomo.db")))
        await repo.open()
        try:
            ids: list[str] = []
            steps = []
            for size in (20, 2000):
                for i in range(len(ids), size):
                    record = meme(uuid.uuid4().hex, str(i))
                    await repo.insert_meme(record, None, MemeSignature(i, b"t", bytes(64), False, None))
                    ids.append(record.id)
                async with repo.session() as s:
                    await s.execute("UPDATE memes SET status = 'active'")
                steps.append(await steps_for_eight(repo, ids))
            return steps[0], steps[1]
        finally:
            await repo.close()

    small, large = asyncio.run(go())
    assert large <= small * 1.5 + 5, f"{small} steps (x100) at 20 memes, {large} at 2,000"


def test_the_near_duplicate_candidates_query_on_postgresql_reads_the_asked_rows_before_any_analyze() -> None:
    """A first crawl's tables grow faster than autovacuum analyses them. With no statistics,
    PostgreSQL read every active meme through the status index and hashed a whole scan of
    meme_vectors to answer "is it indexed" for eight candidates. The rows it reads (its own
    counters, pg_stat_user_tables) must be about the rows asked, not the tables."""
    import time

    tables = ("memes", "meme_phashes", "meme_vectors")

    def rows_read(conn: psycopg.Connection[Any]) -> tuple[int, int]:
        """(tuples read from the three tables, index scans of meme_phashes)."""
        conn.execute("SELECT pg_stat_clear_snapshot()")
        got = conn.execute("SELECT relname, COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0), "
                           "COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = ANY(%s)",
                           (list(tables),)).fetchall()
        return sum(r[1] for r in got), sum(r[2] for r in got if r[0] == "meme_phashes")

    with postgres_database() as dsn:
        config = DatabaseConfig(driver="postgres", url=dsn)

        async def migrate() -> None:
            repo = PostgresMemeRepository(config)
            await repo.open()
            await repo.close()

        asyncio.run(migrate())
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE memes SET (autovacuum_enabled = false)")
            conn.execute("ALTER TABLE meme_vectors SET (autovacuum_enabled = false)")
            conn.execute("ALTER TABLE meme_phashes SET (autovacuum_enabled = false)")
            conn.execute("INSERT INTO memes (id, source_type, source_id, md5_hash, storage_key, format, width, height, "
                         "file_size, status) SELECT 'm' || g, 't', g::text, md5(g::text), 'k' || g, 'png', 1, 1, 1, "
                         "'active' FROM generate_series(1, 5000) g")
            conn.execute("INSERT INTO meme_phashes (meme_id, phash, thumb, blocks) SELECT 'm' || g, g, '\\x00', "
                         "'\\x00' FROM generate_series(1, 5000) g")
            conn.execute("INSERT INTO meme_vectors (id, meme_id, md5_hash, collection, embedding_model, "
                         "qdrant_point_id) SELECT 'v' || g, 'm' || g, md5(g::text), 'c', 'e', 'p' || g "
                         "FROM generate_series(1, 5000) g")
        with psycopg.connect(dsn, autocommit=True) as conn:
            before = rows_read(conn)
            for _ in range(50):  # the counters of the connections that wrote the rows settle
                time.sleep(0.2)
                now = rows_read(conn)
                if now == before:
                    break
                before = now

            async def ask() -> list[str]:
                repo = PostgresMemeRepository(config)
                await repo.open()
                try:
                    return [c.meme_id for c in await repo.near_candidates([f"m{i}" for i in range(1, 5000, 625)],
                                                                          "c")]
                finally:
                    await repo.close()

            found = asyncio.run(ask())
            assert sorted(found) == sorted(f"m{i}" for i in range(1, 5000, 625))
            after = rows_read(conn)
            for _ in range(100):  # the repository's connection reports its counters as it ends
                if after[1] > before[1]:
                    break
                time.sleep(0.1)
                after = rows_read(conn)
            assert after[1] > before[1], "PostgreSQL never reported the query's index scan"
            assert after[0] - before[0] < 100, f"{after[0] - before[0]} rows read for 8 candidates"
