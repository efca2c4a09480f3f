"""The vector index: one collection per embedding configuration, behind one interface.

Two implementations, chosen by the config alone (``emomo.clients.build_index``):

- ``qdrant.path``: Qdrant Edge, the Qdrant engine in this process, one shard per
  collection under ``<qdrant.path>/<collection>/`` (emomo.repositories.qdrant_edge_index);
- ``qdrant.url`` / ``qdrant.host``: a Qdrant server or cluster through qdrant-client
  (emomo.repositories.qdrant_client_index).

Both keep the same point ids, payloads, payload indexes and cosine distance, so that
``scrapy index copy`` moves a collection between them point for point.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

from emomo.errors import ConfigError

#: point ids are derived from (collection, md5): re-running an item overwrites its point
_POINT_NAMESPACE = uuid.UUID("6b0c1f3e-6d1a-4f57-9a55-8f0e2f7c4b21")

#: payload fields that searches filter on: indexed on both implementations
FILTER_FIELDS: dict[str, str] = {"category": "keyword", "source_type": "keyword", "is_animated": "bool"}

#: (point id, vector, payload)
PointData = tuple[str, list[float], dict[str, Any]]
#: reciprocal rank fusion's k: a hit's fused score is the sum of 1 / (k + rank) over the rankings
RRF_K = 60


def candidates(top: int) -> int:
    """How many each ranking (meaning, words) brings to the fusion for ``top`` hits."""
    return max(4 * top, 50)


def point_id(collection: str, md5: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{collection}/{md5}"))


def point_payload(meme: Any, description: str, storage_url: str) -> dict[str, Any]:
    """The seed's payload of a meme's point (plus its md5): what search shows and filters on."""
    return {
        "meme_id": meme.id, "source_type": meme.source_type, "category": meme.category,
        "is_animated": meme.is_animated, "tags": meme.tags, "vlm_description": description,
        "storage_url": storage_url, "md5": meme.md5_hash,
    }


@dataclass(frozen=True)
class Hit:
    point_id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchFilter:
    """Exact matches on the indexed payload fields; None matches anything. A category may be
    several (a display name shared by stored names): any of them matches."""

    category: str | tuple[str, ...] | None = None
    source_type: str | None = None
    is_animated: bool | None = None

    def conditions(self) -> dict[str, str | bool | tuple[str, ...]]:
        return {k: v for k, v in (("category", self.category), ("source_type", self.source_type),
                                  ("is_animated", self.is_animated)) if v is not None}


@dataclass(frozen=True)
class BuildReport:
    """What ``VectorIndex.build`` did to one collection."""

    collection: str
    built: bool
    points: int
    unindexed_before: int
    seconds: float


def dense_vector(vector: Any) -> list[float]:
    """A record's unnamed dense vector (Qdrant Edge returns it by name, qdrant-client as a list)."""
    if isinstance(vector, dict):
        vector = vector.get("", next(iter(vector.values()), []))
    return [float(x) for x in vector]


class PagedIndex(ABC):
    """What both implementations derive from their own page of records and collection sizes."""

    @abstractmethod
    async def dimensions(self, collection: str) -> int | None: ...

    async def existing_size(self, collection: str, dimensions: int, embedding_name: str) -> int | None:
        """The vector size of an existing ``collection``; a size other than ``dimensions`` is refused."""
        size = await self.dimensions(collection)
        if size is not None and size != dimensions:
            raise ConfigError(
                f"embeddings[{embedding_name}].dimensions is {dimensions} but the Qdrant collection "
                f"{collection!r} holds {size}-dimensional vectors; use the model's real dimension "
                "or give this embedding another collection")
        return size

    @abstractmethod
    async def _page(self, collection: str, offset: Any, limit: int, with_payload: Any,
                    with_vector: bool) -> tuple[list[Any], Any]:
        """Records (``.id``, ``.vector``, ``.payload``) from ``offset``, and the next offset."""

    async def points(self, collection: str) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        offset = None
        while True:
            page, offset = await self._page(collection, offset, 1000, ["md5"], False)
            found.update({str(p.id): (p.payload or {}).get("md5") for p in page})
            if offset is None:
                return found

    async def scroll(self, collection: str, offset: Any, limit: int) -> tuple[list[PointData], Any]:
        page, following = await self._page(collection, offset, limit, True, True)
        return [(str(p.id), dense_vector(p.vector), dict(p.payload or {})) for p in page], following


class VectorIndex(Protocol):
    #: where the index lives, for messages (a folder or a server address; never a key)
    where: str

    async def open(self) -> None:
        """Connect, or check the folder; a locked, foreign or unreadable index raises ConfigError."""

    async def close(self) -> None: ...

    async def ensure_collection(self, collection: str, dimensions: int, embedding_name: str) -> None:
        """Create the collection (cosine, payload indexes) or check its dimension."""

    async def dimensions(self, collection: str) -> int | None:
        """The vector size of an existing collection (from its configuration, not its points)."""

    async def upsert(self, collection: str, points: list[PointData]) -> None: ...

    async def delete(self, collection: str, pid: str) -> None: ...

    async def set_payload(self, collection: str, pid: str, payload: dict[str, Any]) -> None:
        """Set these payload keys of one point (its vector and other keys stay)."""

    async def search(self, collection: str, vector: list[float], top: int,
                     where: SearchFilter | None = None, text: str = "", words_only: bool = False) -> list[Hit]:
        """The nearest points to ``vector``; with ``text``, fused with the points whose BM25 terms
        match it best (emomo.repositories.text_index), where the collection keeps them; with
        ``words_only``, those alone, by their BM25 score (none without the terms)."""

    async def text_search(self, collection: str) -> bool:
        """Whether the collection keeps BM25 terms (hybrid search)."""

    async def add_text(self, collection: str) -> int:
        """Give an existing collection its BM25 terms (made from the payloads); the points done."""

    async def collections(self) -> list[str]: ...

    async def count(self, collection: str) -> int: ...

    async def points(self, collection: str) -> dict[str, str | None]:
        """Every point of ``collection``: its id and the md5 in its payload."""

    async def scroll(self, collection: str, offset: Any, limit: int) -> tuple[list[PointData], Any]:
        """A page of whole points (vectors and payloads) and the offset of the next; None at the end."""

    async def existing(self, collection: str, ids: list[str]) -> set[str]:
        """Which of ``ids`` the collection holds."""

    async def payloads(self, collection: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The payloads of those of ``ids`` the collection holds."""

    async def build(self, collection: str) -> BuildReport:
        """Build the search index (HNSW) when ``qdrant.build_after_points`` points are not in it yet
        (a server builds its own as points arrive)."""
