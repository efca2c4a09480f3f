"""Describers (image -> text) and embedders (text -> vector): Protocols.

Implementations are listed by name in emomo.registry; each takes its config
section in ``__init__`` and keeps its client for the whole crawl.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol


def never() -> bool:
    """A ``should_stop`` for work outside a crawl: it never stops."""
    return False


@dataclass
class DescribeContext:
    """What the source says about the meme, for describers that use it; and whether the crawl
    is stopping: a describer checks ``should_stop`` before it starts paid or slow work (and
    between retries), and raises emomo.errors.Interrupted instead."""

    source: str
    category: str = ""
    tags: list[str] = field(default_factory=list)
    should_stop: Callable[[], bool] = never
    #: the text on the image when something read it already (the near-duplicate check's OCR);
    #: a describer that reads it sets it
    image_text: str | None = None


class Describer(Protocol):
    #: the key of this describer's rows in meme_descriptions
    model: str

    async def describe(self, image: bytes, fmt: str, context: DescribeContext) -> str: ...

    def admission(self, behind: float | None = None) -> int:
        """How many items the crawl should let into the pipelines now to keep this describer
        busy, and no more (EMOMO_MAX_ITEMS_IN_FLIGHT, when set, wins). ``behind``: the seconds
        an item now spends in the other stages (None until the crawl knows)."""

    async def close(self) -> None: ...


class Embedder(Protocol):
    model: str
    dimensions: int

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        """Vectors for memes' descriptions (document side)."""

    async def embed_query(self, text: str) -> list[float]:
        """The vector of a search query (query side)."""

    async def close(self) -> None: ...


class EmbeddingError(RuntimeError):
    """The embedder answered with the wrong number or size of vectors."""


def check_vectors(vectors: list[list[float]], expected: int, dimensions: int, name: str) -> list[list[float]]:
    if len(vectors) != expected:
        raise EmbeddingError(f"embedding {name!r} returned {len(vectors)} vectors for {expected} inputs")
    for v in vectors:
        if len(v) != dimensions:
            raise EmbeddingError(
                f"embedding {name!r} returned {len(v)}-dimensional vectors but "
                f"embeddings[{name}].dimensions is {dimensions}"
            )
    return vectors


async def embed_in_batches(texts: list[str], batch_size: int, dimensions: int, name: str,
                           embed_batch: Callable[[list[str]], Awaitable[list[list[float]]]]) -> list[list[float]]:
    """Send ``texts`` in batches of ``batch_size``; check each answer's count and dimension."""
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        vectors.extend(check_vectors(await embed_batch(chunk), len(chunk), dimensions, name))
    return vectors
