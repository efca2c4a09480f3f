"""Stand-ins for an unreliable external provider, named in test configs by dotted path.

They wrap the real local embedder and fail for some inputs, the way a paid
API fails for some calls; the pipelines, undo and stats under test are ours.
"""

from __future__ import annotations

from emomo.config import EmbeddingConfig
from emomo.providers.local_embedder import LocalEmbedder, _encode, _load

#: captions whose embedding requests fail
FAILING = ("这个锅我不背", "重启试试", "在我电脑上是好的")


class FlakyEmbedder(LocalEmbedder):
    def __init__(self, config: EmbeddingConfig) -> None:
        super().__init__(config)

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        for text in texts:
            if any(caption in text for caption in FAILING):
                raise ConnectionError("embedding service unavailable (503)")
        return await super().embed_passages(texts)


class PaddedEmbedder(LocalEmbedder):
    """A stand-in for another model with more dimensions: e5's vectors padded with zeros."""

    async def _run(self, texts: list[str], is_query: bool) -> list[list[float]]:
        vectors = await self._pool.run("e5", _load, _encode, texts, is_query)
        return [v + [0.0] * (self.dimensions - len(v)) for v in vectors]


class BuggyQueryEmbedder(LocalEmbedder):
    """An embedder with a bug (not an outage): a query holding 触发缺陷 raises a plain error."""

    async def embed_query(self, text: str) -> list[float]:
        if "触发缺陷" in text:
            raise RuntimeError("a bug in the embedder")
        return await super().embed_query(text)


class MuteFailingEmbedder(LocalEmbedder):
    """Fails for FAILING captions every time, raising an error without a message (as RapidOCR
    does for a picture too thin to read)."""

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        if any(caption in text for text in texts for caption in FAILING):
            raise RuntimeError()
        return await super().embed_passages(texts)
