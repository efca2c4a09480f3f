"""The SQL repository against the real PostgreSQL (and SQLite): migrations and races."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import psycopg
import pytest
from servers import postgres_database

from emomo.config import DatabaseConfig
from emomo.repositories import MemeRecord
from emomo.repositories.postgres import PostgresMemeRepository
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
        # A different image under a source id already taken is refused, not merged.
        with pytest.raises(Exception, match="(?i)unique"):
            await repos[0].insert_meme(meme("cd" * 16, got[0].source_id))
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
            assert conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall() == [(1,), (2,)]


def test_sqlite_migrates_once_and_keeps_one_meme_per_md5(tmp_path: Path) -> None:
    config = DatabaseConfig(path=str(tmp_path / "emomo.db"))
    asyncio.run(race([SQLiteMemeRepository(config), SQLiteMemeRepository(config)]))
