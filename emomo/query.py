"""Read side: search the index and count what is in it (used by the scrapy commands)."""

from __future__ import annotations

from typing import Any

from emomo import clients
from emomo.config import EmomoConfig
from emomo.repositories import MemeRepository
from emomo.repositories.qdrant import QdrantRepository

HIT_KEYS = ("meme_id", "md5", "score", "category", "tags", "description", "storage_url",
            "source_type", "source_id", "format", "is_animated")


async def _open(config: EmomoConfig) -> tuple[MemeRepository, QdrantRepository]:
    index = clients.build_index(config)
    await index.open()
    repo = clients.build_repository(config)
    try:
        await repo.open()
    except BaseException:
        await index.close()
        raise
    return repo, index


async def search(config: EmomoConfig, query: str, embedding_name: str | None = None,
                 top: int = 10) -> list[dict[str, Any]]:
    """Memes whose descriptions are nearest to ``query``, best first."""
    embedding = config.embedding(embedding_name)
    embedder = clients.build_embedder(embedding)
    repo, index = await _open(config)
    try:
        if embedding.collection not in await index.collections():
            return []
        vector = await embedder.embed_query(query)
        hits = await index.search(embedding.collection, vector, top)
        memes = await repo.get_memes([str(h.payload.get("meme_id")) for h in hits])
    finally:
        await embedder.close()
        await repo.close()
        await index.close()
    results = []
    for hit in hits:
        p = hit.payload
        meme = memes.get(str(p.get("meme_id")))
        results.append({
            "meme_id": p.get("meme_id"),
            "md5": meme.md5_hash if meme else p.get("md5"),
            "score": round(hit.score, 6),
            "category": p.get("category", ""),
            "tags": list(p.get("tags") or []),
            "description": p.get("vlm_description", ""),
            "storage_url": p.get("storage_url", ""),
            "source_type": p.get("source_type", ""),
            "source_id": meme.source_id if meme else None,
            "format": meme.format if meme else None,
            "is_animated": bool(p.get("is_animated", False)),
        })
    return results


async def stats(config: EmomoConfig) -> dict[str, Any]:
    """``{"memes": {status: N}, "collections": {name: {"points": N, "vectors": N}}}``."""
    repo, index = await _open(config)
    try:
        memes = await repo.count_memes()
        vectors = await repo.count_vectors()
        existing = set(await index.collections())
        configured = {e.collection for e in config.embeddings}
        collections = {}
        for name in sorted((configured & existing) | set(vectors)):
            points = await index.count(name) if name in existing else 0
            collections[name] = {"points": points, "vectors": vectors.get(name, 0)}
    finally:
        await repo.close()
        await index.close()
    return {"memes": memes, "collections": collections}
