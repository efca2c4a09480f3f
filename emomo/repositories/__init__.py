"""Metadata rows (memes, meme_vectors, meme_descriptions) and the vector index.

The SQL side is a Protocol with one implementation per driver (see
emomo.registry.DATABASES); every method is a coroutine so that a driver with
an async client awaits it directly and a blocking one runs in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

#: a retired meme's source now holds other content: no point, no vector; its row, object and
#: description stay (the content may come back)
STATUSES = ("pending", "active", "failed", "retired")


@dataclass
class MemeRecord:
    id: str
    source_type: str
    source_id: str
    md5_hash: str
    storage_key: str
    format: str
    width: int
    height: int
    is_animated: bool
    file_size: int
    category: str = ""
    tags: list[str] = field(default_factory=list)
    source_url: str | None = None
    vlm_description: str | None = None
    vlm_model: str | None = None
    status: str = "pending"


@dataclass(frozen=True)
class SourceRecord:
    """A place a meme's file came from (a path in a clone, a manifest line, a page's image)."""

    source_type: str
    source_id: str
    meme_id: str
    #: the md5 of the file as it was last read there
    md5_hash: str


@dataclass(frozen=True)
class MemeFile:
    """The file a meme shows: what changes when a better copy replaces it."""

    md5_hash: str
    storage_key: str
    format: str
    width: int
    height: int
    file_size: int
    is_animated: bool


@dataclass(frozen=True)
class NearSignature:
    """What the near-duplicate index keeps of a recorded meme (emomo.near): its coarse hash and
    its ranking blocks (None for a meme recorded before they existed)."""

    seq: int
    meme_id: str
    phash: int
    blocks: bytes | None


@dataclass(frozen=True)
class MemeSignature:
    """What the near-duplicate check keeps of a new meme (emomo.near.NearCheck), recorded with
    its row in one transaction."""

    phash: int
    thumb: bytes
    blocks: bytes
    shifted: bool
    image_text: str | None


@dataclass(frozen=True)
class NearCandidate:
    """A recorded meme a new file may be a copy of, with what deciding it takes (emomo.near)."""

    meme_id: str
    phash: int
    #: its thumbnail (emomo.near.Picture.stored_thumb); None for a meme recorded before
    thumb: bytes | None
    #: the text read on its image; None until OCR has read it
    image_text: str | None
    #: whether it has its vector in the collection asked about (only those can be merged into)
    indexed: bool
    file: MemeFile
    #: out of its series' frame (a crop): emomo.near.NearCheck.shifted
    shifted: bool = False


@dataclass
class VectorRecord:
    id: str
    meme_id: str
    md5_hash: str
    collection: str
    embedding_model: str
    qdrant_point_id: str
    status: str = "active"


class MemeRepository(Protocol):
    async def open(self) -> None:
        """Connect and apply the schema migrations."""

    async def close(self) -> None: ...

    async def find_vector(self, md5: str, collection: str) -> str | None: ...

    async def meme_indexed(self, meme_id: str, collection: str) -> bool: ...

    async def set_image_text(self, meme_id: str, image_text: str) -> None: ...

    async def set_near_signature(self, meme_id: str, thumb: bytes, blocks: bytes) -> None: ...

    async def near_signatures(self, after: int, limit: int) -> list[NearSignature]: ...

    async def near_candidates(self, meme_ids: list[str], collection: str) -> list[NearCandidate]: ...

    async def switch_file(self, meme_id: str, old_md5: str, new: MemeFile, phash: int, thumb: bytes,
                          blocks: bytes, shifted: bool) -> list[tuple[str, str]] | None: ...

    async def count_sources(self) -> dict[str, int]: ...

    async def categories(self) -> dict[str, int]: ...

    async def get_source(self, source_type: str, source_id: str) -> SourceRecord | None: ...

    async def link_source(self, source: SourceRecord, locator: str | None, *, replace: bool) -> str | None: ...

    async def retire_if_orphan(self, meme_id: str) -> list[tuple[str, str]] | None: ...

    async def claim(self, md5: str, collection: str, worker: str, stale_after: float) -> str | None:
        """Claim an image for a worker across processes; the worker holding it, if another."""

    async def release(self, md5: str, collection: str, worker: str) -> None: ...

    async def release_all(self, collection: str, worker: str, stale_after: float) -> None: ...

    async def save_description(self, md5: str, model: str, description: str) -> None: ...

    async def save_descriptions(self, descriptions: list[tuple[str, str, str]]) -> list[None]: ...

    async def get_meme_by_md5(self, md5: str) -> MemeRecord | None: ...

    async def get_memes(self, ids: list[str]) -> dict[str, MemeRecord]: ...

    async def get_description(self, md5: str, model: str) -> str | None: ...

    async def insert_meme(self, meme: MemeRecord, locator: str | None = None,
                          signature: MemeSignature | None = None) -> MemeRecord:
        """Insert the meme row and its description (when it has one) in one transaction;
        the meme already recorded for its md5 (by another process) when there is one."""

    async def delete_meme(self, meme_id: str) -> None:
        """Delete the meme row with its vectors and source links (not its paid descriptions)."""

    async def record_vectors(self, vectors: list[VectorRecord]) -> list[bool]:
        """Insert or replace each (md5, collection) vector row and mark its meme active,
        in one transaction; for each, True when its row is new."""

    async def count_memes(self) -> dict[str, int]:
        """Memes by status; every status present, zero when none."""

    async def count_vectors(self) -> dict[str, int]:
        """meme_vectors rows by collection."""

    async def all_memes(self) -> list[MemeRecord]: ...

    async def list_vectors(self, collection: str) -> list[VectorRecord]: ...

    async def memes_with_vectors(self) -> set[str]: ...

    async def locators(self, meme_id: str) -> list[str]: ...

    async def sources(self, meme_id: str) -> list[SourceRecord]: ...

    async def list_memes(self, status: str, limit: int | None = None) -> list[MemeRecord]: ...

    async def set_description(self, meme: MemeRecord, description: str, model: str) -> None: ...

    async def set_status(self, meme_id: str, status: str) -> None: ...

    async def park(self, meme_id: str, status: str, error: str, max_attempts: int) -> str:
        """One more failed attempt at the meme, ``error`` its reason: ``status`` (pending or
        failed), or failed once ``max_attempts`` attempts have failed; the status set."""

    async def source_ids(self, source_type: str) -> set[str]: ...

    async def get_cursor(self, source: str) -> str | None: ...

    async def set_cursor(self, source: str, cursor: str) -> None: ...
