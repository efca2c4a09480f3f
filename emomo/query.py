"""Read side: search the index and count what is in it (scrapy search, scrapy stats, scrapy serve).

A ``Searcher`` opens the index, the database and the query embedder once and answers many
searches; ``search`` is the one-shot form the command uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from emomo import clients
from emomo.categories import display_name, resolve
from emomo.config import EmbeddingConfig, EmomoConfig
from emomo.errors import ConfigError
from emomo.ingest.near_dupes import NearIndex
from emomo.picture_search import same_meme
from emomo.providers import Embedder
from emomo.providers.ocr_describer import TextReader
from emomo.repositories import MemeRepository
from emomo.repositories.text_index import matches_text
from emomo.repositories.vector_index import Hit, SearchFilter, VectorIndex, candidates, point_id

HIT_KEYS = ("meme_id", "md5", "score", "match", "category", "category_name", "tags", "description", "storage_url",
            "source_type", "source_id", "format", "is_animated")
#: why a hit is there: its text holds every word of the query, or only its meaning is near
TEXT, MEANING = "text", "meaning"
#: a search by picture: the meme the picture is (the same file, or a copy of it)
PICTURE = "picture"


class UnknownCategory(ConfigError):
    """A category filter that names no category of the index."""


async def _open(config: EmomoConfig) -> tuple[MemeRepository, VectorIndex]:
    index = clients.build_index(config)
    await index.open()
    repo = clients.build_repository(config)
    try:
        await repo.open()
    except BaseException:
        await index.close()
        raise
    return repo, index


class Searcher:
    """Searches one embedding configuration. Given an open ``repo`` and ``index`` (a server
    shares them between its searchers) it uses them and leaves them open; else it opens its own."""

    def __init__(self, config: EmomoConfig, embedding_name: str | None = None,
                 repo: MemeRepository | None = None, index: VectorIndex | None = None) -> None:
        self.config = config
        self.embedding: EmbeddingConfig = config.embedding(embedding_name)
        self.embedder: Embedder = clients.build_embedder(self.embedding)
        self.repo, self.index = repo, index
        self._owns = repo is None
        #: every recorded meme's near-duplicate signature, read on (search by picture)
        self.near_index = NearIndex()
        self._reader: TextReader | None = None

    async def open(self) -> Searcher:
        if self._owns:
            self.repo, self.index = await _open(self.config)
        return self

    async def close(self) -> None:
        await self.embedder.close()
        if not self._owns:
            return
        if self.repo is not None:
            await self.repo.close()
        if self.index is not None:
            await self.index.close()

    async def search(self, query: str, top: int = 10, where: SearchFilter | None = None,
                     storage_key: bool = False) -> list[dict[str, Any]]:
        """Memes for ``query`` among those that match ``where`` (keys: HIT_KEYS, and with
        ``storage_key`` the object's key): the meaning and the words ranked together by the
        index (emomo.repositories.text_index); those whose text holds the query first
        (``"match": "text"``), then the rest (``"meaning"``), each in the fused order."""
        assert self.repo is not None and self.index is not None, "Searcher.open() was not awaited"
        collection = self.embedding.collection
        if collection not in await self.index.collections():
            return []
        where = await self.with_categories(where)
        vector = await self.embedder.embed_query(query)
        # More than asked for: a text match ranked low by the fusion still comes first.
        found = await self.index.search(collection, vector, candidates(top), where, text=query)
        # The text matches in the order of their words' BM25 score (a meme whose text is the
        # query before one that holds it among much else), then the rest in the fused order;
        # the score shown is the fused one.
        words = await self.index.search(collection, vector, candidates(top), where, text=query, words_only=True)
        fused = {h.point_id: h.score for h in found}
        lowest = min(fused.values(), default=0.0)
        written = [h for h in [*words, *found] if matches_text(query, h.payload)]
        text_hits = list({h.point_id: Hit(h.point_id, fused.get(h.point_id, lowest), h.payload)
                          for h in written}.values())
        shown = {h.point_id for h in text_hits}
        ordered = [(h, TEXT) for h in text_hits] + [(h, MEANING) for h in found if h.point_id not in shown]
        return await self._hits(ordered[:top], storage_key)

    async def _hits(self, ordered: list[tuple[Hit, str]], storage_key: bool) -> list[dict[str, Any]]:
        """The hits as the commands and the API give them (HIT_KEYS), with the rows' own fields."""
        assert self.repo is not None
        memes = await self.repo.get_memes([str(h.payload.get("meme_id")) for h, _ in ordered])
        results = []
        for hit, match in ordered:
            p = hit.payload
            meme = memes.get(str(p.get("meme_id")))
            results.append({
                "meme_id": p.get("meme_id"),
                "md5": meme.md5_hash if meme else p.get("md5"),
                "score": round(hit.score, 6),
                "match": match,
                "category": p.get("category", ""),
                "category_name": display_name(str(p.get("category", ""))),
                "tags": list(p.get("tags") or []),
                "description": p.get("vlm_description", ""),
                "storage_url": p.get("storage_url", ""),
                "source_type": p.get("source_type", ""),
                "source_id": meme.source_id if meme else None,
                "format": meme.format if meme else None,
                "is_animated": bool(p.get("is_animated", False)),
            })
            if storage_key:
                results[-1]["storage_key"] = meme.storage_key if meme else None
        return results

    async def search_picture(self, data: bytes, top: int = 10, where: SearchFilter | None = None,
                             storage_key: bool = False) -> list[dict[str, Any]]:
        """Memes for a picture (emomo.picture_search): the meme it is (``"match": "picture"``,
        with ``"sources"``: every source that holds it), then those whose text holds the text
        read on it, then the nearest in meaning."""
        assert self.repo is not None and self.index is not None, "Searcher.open() was not awaited"
        collection = self.embedding.collection
        if collection not in await self.index.collections():
            return []
        where = await self.with_categories(where)
        read: dict[str, str] = {}

        async def read_text(picture: bytes) -> str:
            if "text" not in read:
                read["text"] = await self.reader().read(picture)
            return read["text"]
        match = await same_meme(self.config, self.repo, self.near_index, collection, data, read_text)
        # The text on it: kept with the meme it is, else read now.
        text = match.image_text if match is not None and match.image_text is not None else await read_text(data)
        found = await self.search(text, top, where, storage_key) if text.strip() else []
        if match is None:
            return found
        same = match.meme_id
        meme = (await self.repo.get_memes([same])).get(same)
        pid = point_id(collection, meme.md5_hash) if meme else ""
        payload = (await self.index.payloads(collection, [pid])).get(pid) if pid else None
        if payload is None:
            return found
        first = await self._hits([(Hit(pid, 1.0, payload), PICTURE)], storage_key)
        # where else it is: every source that holds it (the copies merged into it among them)
        first[0]["sources"] = [f"{s.source_type}:{s.source_id}" for s in await self.repo.sources(same)]
        return (first + [h for h in found if h["meme_id"] != same])[:top]

    def reader(self) -> TextReader:
        if self._reader is None:
            self._reader = TextReader(self.config.ingest)
        return self._reader

    async def with_categories(self, where: SearchFilter | None) -> SearchFilter | None:
        """The filter with its category as stored: a display name (狗) becomes the folder(s) it
        names (011Dog_狗🐶BQB); one that names none is refused, with the categories there are."""
        if where is None or not isinstance(where.category, str):
            return where
        assert self.repo is not None
        known = await self.repo.categories()
        found = resolve(where.category, known)
        if not found:
            names = list(dict.fromkeys(display_name(c) for c in known))
            shown = "、".join(names[:20]) + ("…" if len(names) > 20 else "")
            raise UnknownCategory(f"no category {where.category!r} in the index (categories: {shown or 'none yet'})")
        return replace(where, category=found[0] if len(found) == 1 else tuple(found))


async def once(config: EmomoConfig, embedding_name: str | None,
               ask: Callable[[Searcher], Awaitable[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """One search (what a command runs): open a searcher, ``ask`` it, close it."""
    searcher = Searcher(config, embedding_name)
    try:
        await searcher.open()
        return await ask(searcher)
    finally:
        await searcher.close()


async def search(config: EmomoConfig, query: str, embedding_name: str | None = None,
                 top: int = 10, where: SearchFilter | None = None) -> list[dict[str, Any]]:
    return await once(config, embedding_name, lambda searcher: searcher.search(query, top, where))


async def search_picture(config: EmomoConfig, data: bytes, embedding_name: str | None = None,
                         top: int = 10, where: SearchFilter | None = None) -> list[dict[str, Any]]:
    return await once(config, embedding_name, lambda searcher: searcher.search_picture(data, top, where))


async def stats(config: EmomoConfig) -> dict[str, Any]:
    """``{"memes": {status: N}, "sources": {"total": N, "near_duplicate": N},
    "collections": {name: {"points": N, "vectors": N}}}``."""
    repo, index = await _open(config)
    try:
        return await counts(config, repo, index)
    finally:
        await repo.close()
        await index.close()


async def counts(config: EmomoConfig, repo: MemeRepository, index: VectorIndex) -> dict[str, Any]:
    """What ``stats`` reports, from an open repository and index."""
    memes = await repo.count_memes()
    sources = await repo.count_sources()
    vectors = await repo.count_vectors()
    existing = set(await index.collections())
    configured = {e.collection for e in config.embeddings}
    collections = {}
    for name in sorted((configured & existing) | set(vectors)):
        points = await index.count(name) if name in existing else 0
        collections[name] = {"points": points, "vectors": vectors.get(name, 0)}
    return {"memes": memes, "sources": sources, "collections": collections}
