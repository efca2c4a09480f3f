"""The vector index on a Qdrant server or cluster (``qdrant.url`` / ``qdrant.host``) through qdrant-client.

It also reads a folder written by qdrant-client's local mode, the embedded index of
earlier Emomo versions, as the source of ``scrapy index copy --from local:PATH``.
The synchronous client runs on one dedicated thread, off the reactor (local mode is
not thread-safe either).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from emomo.blocking import DedicatedThread
from emomo.config import QdrantConfig
from emomo.errors import BackendUnavailable
from emomo.repositories.text_index import TEXT_VECTOR, document_terms, query_terms
from emomo.repositories.vector_index import (
    FILTER_FIELDS,
    RRF_K,
    BuildReport,
    Hit,
    PagedIndex,
    PointData,
    SearchFilter,
    candidates,
)

T = TypeVar("T")


class QdrantClientIndex(PagedIndex):
    def __init__(self, config: QdrantConfig, local_path: str | None = None) -> None:
        self.config = config
        self.local_path = local_path
        # A server takes writes side by side: a few threads; local mode is not thread-safe: one.
        self._thread = DedicatedThread("emomo-qdrant", workers=1 if local_path else 4)
        self._client: Any = None
        #: collection -> whether it keeps BM25 terms (read once from its configuration)
        self._text: dict[str, bool] = {}
        c = config
        self.where = f"local-mode folder {local_path}" if local_path else (c.url or f"{c.host}:{c.port}")

    async def _run(self, fn: Callable[[Any], T]) -> T:
        return await self._thread.run(lambda: fn(self._client))

    def _connect(self) -> None:
        from qdrant_client import QdrantClient

        c = self.config
        if self.local_path:
            try:
                self._client = QdrantClient(path=self.local_path)
            except RuntimeError as exc:
                if "already accessed" in str(exc):
                    raise BackendUnavailable(
                        f"the local-mode folder {self.local_path} is in use by another process") from None
                raise
            return
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

    async def dimensions(self, collection: str) -> int | None:
        def dims(client: Any) -> int | None:
            if not client.collection_exists(collection):
                return None
            vectors = client.get_collection(collection).config.params.vectors
            return int(vectors.size) if hasattr(vectors, "size") else None
        return await self._run(dims)

    async def ensure_collection(self, collection: str, dimensions: int, embedding_name: str) -> None:
        if await self.existing_size(collection, dimensions, embedding_name) is not None:
            return

        def create(client: Any) -> None:
            from qdrant_client import models

            client.create_collection(
                collection, vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
                sparse_vectors_config={TEXT_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)})
            if self.local_path:
                return  # local mode has no payload indexes
            schemas = {"keyword": models.PayloadSchemaType.KEYWORD, "bool": models.PayloadSchemaType.BOOL}
            for name, kind in FILTER_FIELDS.items():
                client.create_payload_index(collection, name, field_schema=schemas[kind])
        await self._run(create)

    def _has_text(self, client: Any, collection: str) -> bool:
        if collection not in self._text:
            sparse = client.get_collection(collection).config.params.sparse_vectors or {}
            self._text[collection] = TEXT_VECTOR in sparse
        return self._text[collection]

    async def text_search(self, collection: str) -> bool:
        return await self._run(lambda client: client.collection_exists(collection)
                               and self._has_text(client, collection))

    async def add_text(self, collection: str) -> int:
        """A server collection made before this version: Qdrant cannot add a vector to an existing
        collection, so it is copied (scrapy index copy) into a new one; nothing done here."""
        return 0

    async def upsert(self, collection: str, points: list[PointData]) -> None:
        def up(client: Any) -> None:
            from qdrant_client import models

            def vector_of(vector: list[float], payload: dict[str, Any]) -> Any:
                if not self._has_text(client, collection):
                    return vector
                indices, values = document_terms(payload)
                return {"": vector, TEXT_VECTOR: models.SparseVector(indices=indices, values=values)}

            client.upsert(collection, wait=True, points=[
                models.PointStruct(id=pid, vector=vector_of(vector, payload), payload=payload)
                for pid, vector, payload in points])
        await self._run(up)

    async def delete(self, collection: str, pid: str) -> None:
        def rm(client: Any) -> None:
            from qdrant_client import models

            client.delete(collection, points_selector=models.PointIdsList(points=[pid]), wait=True)
        await self._run(rm)

    async def set_payload(self, collection: str, pid: str, payload: dict[str, Any]) -> None:
        await self._run(lambda client: client.set_payload(collection, payload=payload, points=[pid], wait=True))

    async def search(self, collection: str, vector: list[float], top: int,
                     where: SearchFilter | None = None, text: str = "", words_only: bool = False) -> list[Hit]:
        def q(client: Any) -> list[Hit]:
            from qdrant_client import models

            conditions = where.conditions() if where else {}
            query_filter = models.Filter(must=[
                models.FieldCondition(key=k, match=models.MatchAny(any=list(v)) if isinstance(v, tuple)
                                      else models.MatchValue(value=v)) for k, v in conditions.items()
            ]) if conditions else None
            hybrid = bool(text) and self._has_text(client, collection)
            if words_only and not hybrid:
                return []
            if words_only:
                indices, values = query_terms(text)
                res = client.query_points(collection, query=models.SparseVector(indices=indices, values=values),
                                          using=TEXT_VECTOR, limit=top, with_payload=True, query_filter=query_filter)
            elif hybrid:
                indices, values = query_terms(text)
                words = models.SparseVector(indices=indices, values=values)
                res = client.query_points(collection, limit=top, with_payload=True, prefetch=[
                    models.Prefetch(query=vector, limit=candidates(top), filter=query_filter),
                    models.Prefetch(query=words, using=TEXT_VECTOR, limit=candidates(top), filter=query_filter),
                ], query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)))
            else:
                res = client.query_points(collection, query=vector, limit=top, with_payload=True,
                                          query_filter=query_filter)
            return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in res.points]
        return await self._run(q)

    async def collections(self) -> list[str]:
        return await self._run(lambda client: sorted(c.name for c in client.get_collections().collections))

    async def count(self, collection: str) -> int:
        return await self._run(lambda client: int(client.count(collection, exact=True).count))

    async def _page(self, collection: str, offset: Any, limit: int, with_payload: Any,
                    with_vectors: bool) -> tuple[list[Any], Any]:
        return await self._run(lambda client: client.scroll(
            collection, limit=limit, offset=offset, with_payload=with_payload, with_vectors=with_vectors))

    async def payloads(self, collection: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        records = await self._run(lambda client: client.retrieve(
            collection, ids=ids, with_payload=True, with_vectors=False))
        return {str(r.id): dict(r.payload or {}) for r in records}

    async def existing(self, collection: str, ids: list[str]) -> set[str]:
        records = await self._run(lambda client: client.retrieve(
            collection, ids=ids, with_payload=False, with_vectors=False))
        return {str(r.id) for r in records}

    async def build(self, collection: str) -> BuildReport:
        # A server builds its HNSW index in the background as points arrive.
        started = time.monotonic()
        return BuildReport(collection, False, await self.count(collection), 0, time.monotonic() - started)
