"""The vector index: one Qdrant collection per embedding configuration.

Local mode (``qdrant.path``) and a server go through the same synchronous
client; its calls run on one dedicated thread, which local mode needs anyway
(it is not thread-safe) and which keeps them off the reactor.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from emomo.blocking import DedicatedThread
from emomo.config import QdrantConfig
from emomo.errors import BackendUnavailable, ConfigError

T = TypeVar("T")

#: point ids are derived from (collection, md5): re-running an item overwrites its point
_POINT_NAMESPACE = uuid.UUID("6b0c1f3e-6d1a-4f57-9a55-8f0e2f7c4b21")


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


class QdrantRepository:
    def __init__(self, config: QdrantConfig) -> None:
        self.config = config
        self._thread = DedicatedThread("emomo-qdrant")
        self._client: Any = None

    @property
    def where(self) -> str:
        c = self.config
        return f"local folder {c.path}" if c.path else (c.url or f"{c.host}:{c.port}")

    async def _run(self, fn: Callable[[Any], T]) -> T:
        return await self._thread.run(lambda: fn(self._client))

    def _connect(self) -> None:
        from qdrant_client import QdrantClient

        c = self.config
        if c.path:
            try:
                self._client = QdrantClient(path=c.path)
            except RuntimeError as exc:
                if "already accessed" in str(exc):
                    raise BackendUnavailable(
                        f"qdrant.path: the local-mode folder {c.path} is in use by another process "
                        "(another crawl, or a search); local mode is single-process: wait for it to "
                        "finish, or set qdrant.url to a Qdrant server to run jobs side by side"
                    ) from None
                raise
        else:
            self._client = QdrantClient(
                url=c.url or None, host=None if c.url else c.host, port=c.port, grpc_port=c.grpc_port,
                prefer_grpc=c.prefer_grpc, https=c.https or None, api_key=c.api_key.get_secret_value() or None,
                timeout=30,
            )
            try:
                self._client.get_collections()
            except Exception as exc:
                # The client's messages name the address, never the API key.
                cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise BackendUnavailable(
                    f"qdrant.url / QDRANT_HOST: cannot use the Qdrant server at {self.where}: {cause}"
                ) from None

    async def open(self) -> None:
        await self._thread.run(self._connect)

    async def close(self) -> None:
        if self._client is not None:
            await self._run(lambda client: client.close())
            self._client = None
        self._thread.shutdown()

    async def ensure_collection(self, collection: str, dimensions: int, embedding_name: str) -> None:
        """Create the collection (cosine) or check that its dimension matches the embedding's."""
        def ensure(client: Any) -> None:
            from qdrant_client import models

            if client.collection_exists(collection):
                vectors = client.get_collection(collection).config.params.vectors
                size = vectors.size if hasattr(vectors, "size") else None
                if size is not None and size != dimensions:
                    raise ConfigError(
                        f"embeddings[{embedding_name}].dimensions is {dimensions} but the Qdrant collection "
                        f"{collection!r} holds {size}-dimensional vectors; use the model's real dimension "
                        "or give this embedding another collection"
                    )
                return
            client.create_collection(
                collection, vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE)
            )
            if not self.config.path:
                # Filters on these run on every search; local mode has no payload indexes.
                for name, schema in (("category", models.PayloadSchemaType.KEYWORD),
                                     ("source_type", models.PayloadSchemaType.KEYWORD),
                                     ("is_animated", models.PayloadSchemaType.BOOL)):
                    client.create_payload_index(collection, name, field_schema=schema)
        await self._run(ensure)

    async def upsert(self, collection: str, points: list[tuple[str, list[float], dict[str, Any]]]) -> None:
        """Upsert (point id, vector, payload) triples in one request."""
        def up(client: Any) -> None:
            from qdrant_client import models

            client.upsert(collection, wait=True, points=[
                models.PointStruct(id=pid, vector=vector, payload=payload) for pid, vector, payload in points])
        await self._run(up)

    async def delete(self, collection: str, pid: str) -> None:
        def rm(client: Any) -> None:
            from qdrant_client import models

            client.delete(collection, points_selector=models.PointIdsList(points=[pid]), wait=True)
        await self._run(rm)

    async def search(self, collection: str, vector: list[float], top: int) -> list[Hit]:
        def q(client: Any) -> list[Hit]:
            res = client.query_points(collection, query=vector, limit=top, with_payload=True)
            return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in res.points]
        return await self._run(q)

    async def collections(self) -> list[str]:
        return await self._run(lambda client: sorted(c.name for c in client.get_collections().collections))

    async def count(self, collection: str) -> int:
        return await self._run(lambda client: int(client.count(collection, exact=True).count))

    async def points(self, collection: str) -> dict[str, str | None]:
        """Every point of ``collection``: its id and the md5 in its payload."""
        def scroll(client: Any) -> dict[str, str | None]:
            found: dict[str, str | None] = {}
            offset = None
            while True:
                points, offset = client.scroll(collection, limit=1000, offset=offset,
                                               with_payload=["md5"], with_vectors=False)
                found.update({str(p.id): (p.payload or {}).get("md5") for p in points})
                if offset is None:
                    return found
        return await self._run(scroll)
