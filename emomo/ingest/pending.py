"""Memes left pending (or failed) by earlier crawls, read back from the database and the store:
what the pending spider reads (the ingest's own records, not a source's files)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from emomo.repositories import MemeRecord, MemeRepository
from emomo.storage import ObjectStore


@dataclass(frozen=True)
class PendingMeme:
    meme: MemeRecord
    body: bytes | None
    error: str | None = None


async def pending_memes(repo: MemeRepository, store: ObjectStore, statuses: tuple[str, ...], limit: int | None,
                        take: Callable[[MemeRecord], bool] | None = None) -> AsyncIterator[PendingMeme]:
    """Each meme with one of ``statuses`` that ``take`` accepts (this worker's shard), oldest first,
    with its object's bytes (or why not)."""
    memes: list[MemeRecord] = []
    for status in statuses:
        found = await repo.list_memes(status, limit if take is None else None)
        memes += found if take is None else [meme for meme in found if take(meme)]
    for meme in memes[:limit]:
        try:
            body = await store.get(meme.storage_key)
        except Exception as exc:
            yield PendingMeme(meme, None, f"cannot read object {meme.storage_key}: {type(exc).__name__}: {exc}")
            continue
        yield PendingMeme(meme, body)
