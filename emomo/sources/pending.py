"""Memes left pending (or failed) by earlier crawls, read back from the database and the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from emomo.ingest.runtime import IngestRuntime
from emomo.repositories import MemeRecord


@dataclass(frozen=True)
class PendingMeme:
    meme: MemeRecord
    body: bytes | None
    error: str | None = None


async def pending_memes(runtime: IngestRuntime, statuses: tuple[str, ...],
                        limit: int | None) -> AsyncIterator[PendingMeme]:
    """Each meme with one of ``statuses``, oldest first, with its object's bytes (or why not)."""
    memes: list[MemeRecord] = []
    for status in statuses:
        memes += await runtime.repo.list_memes(status, limit)
    for meme in memes[:limit]:
        try:
            body = await runtime.store.get(meme.storage_key)
        except Exception as exc:
            yield PendingMeme(meme, None, f"cannot read object {meme.storage_key}: {type(exc).__name__}: {exc}")
            continue
        yield PendingMeme(meme, body)
