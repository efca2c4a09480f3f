"""``scrapy verify``: the database, the object store and one collection checked against each other.

Each meme must have its object; each vector row its point; each active meme a vector; each point a
vector row of an active meme; each object a meme. ``repair`` mends what can be mended from what is
kept: an object re-uploaded from a source file that still holds its bytes, a missing point (or
vector) re-embedded from the stored description, an orphan point or object removed. What cannot be
mended is said, with the way out.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from emomo import clients
from emomo.config import EmbeddingConfig, EmomoConfig
from emomo.imaging import CONTENT_TYPES, ImageError, read_file
from emomo.providers import Embedder
from emomo.repositories import MemeRecord, MemeRepository, VectorRecord
from emomo.repositories.vector_index import VectorIndex, point_id, point_payload
from emomo.storage import ObjectStore
from emomo.text import unescape_name

#: an object younger than this may belong to an item a crawl is writing right now: left alone
ORPHAN_OBJECT_MIN_AGE = 600.0
EXAMPLES = 20


@dataclass
class Problem:
    kind: str  # missing_object, orphan_object, missing_point, missing_vector, orphan_point
    detail: str
    meme: MemeRecord | None = None
    key: str | None = None
    point: str | None = None
    vector: VectorRecord | None = None


@dataclass
class Report:
    collection: str
    problems: list[Problem] = field(default_factory=list)
    repaired: list[Problem] = field(default_factory=list)
    #: what could not be mended, and why
    left: list[tuple[Problem, str]] = field(default_factory=list)

    def as_json(self, repair: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "collection": self.collection,
            "problems": len(self.problems),
            "by_kind": dict(sorted(Counter(p.kind for p in self.problems).items())),
            "examples": [{"kind": p.kind, "detail": p.detail} for p in self.problems[:EXAMPLES]],
        }
        if repair:
            out["repaired"] = len(self.repaired)
            out["left"] = [{"kind": p.kind, "detail": p.detail, "why": why} for p, why in self.left]
        return out


def _label(meme: MemeRecord) -> str:
    return f"meme {meme.id} ({meme.source_type}:{meme.source_id})"


async def find_problems(repo: MemeRepository, index: VectorIndex, store: ObjectStore,
                        collection: str) -> Report:
    report = Report(collection)
    memes = await repo.all_memes()
    by_id = {m.id: m for m in memes}
    objects = {key: mtime async for key, mtime in store.list_objects()}
    points = await index.points(collection) if collection in await index.collections() else {}
    vectors = await repo.list_vectors(collection)
    with_vectors = await repo.memes_with_vectors()
    add = report.problems.append
    for meme in memes:
        if meme.storage_key not in objects:
            add(Problem("missing_object", f"{_label(meme)}: object {meme.storage_key} is missing", meme=meme,
                        key=meme.storage_key))
        if meme.status == "active" and meme.id not in with_vectors:
            add(Problem("missing_vector", f"{_label(meme)} is active but has no vector in any collection",
                        meme=meme))
    keys = {m.storage_key for m in memes}
    now = time.time()
    for key, mtime in objects.items():
        if key not in keys and now - mtime >= ORPHAN_OBJECT_MIN_AGE:
            add(Problem("orphan_object", f"object {key} belongs to no meme", key=key))
    live = set()
    for vector in vectors:
        owner = by_id.get(vector.meme_id)
        if owner is None or owner.status != "active":
            continue
        live.add(vector.qdrant_point_id)
        if vector.qdrant_point_id not in points:
            add(Problem("missing_point", f"{_label(owner)}: point {vector.qdrant_point_id} is missing from "
                                         f"{collection}", meme=owner, point=vector.qdrant_point_id, vector=vector))
    for pid, md5 in points.items():
        if pid not in live:
            add(Problem("orphan_point", f"point {pid} (md5 {md5}) in {collection} has no active meme", point=pid))
    return report


class Repairer:
    def __init__(self, repo: MemeRepository, index: VectorIndex, store: ObjectStore,
                 embedding: EmbeddingConfig) -> None:
        self.repo, self.index, self.store, self.embedding = repo, index, store, embedding
        self._embedder: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = clients.build_embedder(self.embedding)
        return self._embedder

    async def close(self) -> None:
        if self._embedder is not None:
            await self._embedder.close()

    async def mend(self, problem: Problem) -> str | None:
        """Mend ``problem``; None when mended, else why not."""
        if problem.kind == "orphan_point":
            assert problem.point is not None
            await self.index.delete(self.embedding.collection, problem.point)
            return None
        if problem.kind == "orphan_object":
            assert problem.key is not None
            await self.store.delete(problem.key)
            return None
        assert problem.meme is not None
        if problem.kind == "missing_object":
            return await self.reupload(problem.meme)
        return await self.reembed(problem.meme, problem.vector)

    async def reupload(self, meme: MemeRecord) -> str | None:
        for locator in await self.repo.locators(meme.id):
            path = unescape_name(locator)
            if not os.path.isabs(path):
                continue  # a URL: not fetched here
            try:
                data = await asyncio.to_thread(read_file, path, 1 << 30)
            except ImageError:
                continue
            if hashlib.md5(data).hexdigest() == meme.md5_hash:
                await self.store.put(meme.storage_key, data, CONTENT_TYPES.get(meme.format, "application/octet-stream"))
                return None
        return (f"no source file holds md5 {meme.md5_hash} any more; run the crawl of "
                f"{meme.source_type} with -a force=1 if its source still has it")

    async def reembed(self, meme: MemeRecord, vector: VectorRecord | None) -> str | None:
        description = meme.vlm_description or await self.repo.get_description(meme.md5_hash, meme.vlm_model or "")
        if not description:
            return "no stored description to embed; run scrapy crawl pending after marking it pending"
        collection = self.embedding.collection
        pid = vector.qdrant_point_id if vector else point_id(collection, meme.md5_hash)
        [embedded] = await self.embedder.embed_passages([description])
        await self.index.upsert(collection, [(pid, embedded, point_payload(
            meme, description, self.store.url(meme.storage_key)))])
        if vector is None:
            await self.repo.record_vectors([VectorRecord(
                id=str(uuid.uuid4()), meme_id=meme.id, md5_hash=meme.md5_hash, collection=collection,
                embedding_model=self.embedder.model, qdrant_point_id=pid)])
        return None


async def verify(config: EmomoConfig, embedding_name: str | None, repair: bool) -> Report:
    embedding = config.embedding(embedding_name)
    repo = clients.build_repository(config)
    index = clients.build_index(config)
    store = clients.build_store(config)
    await index.open()
    try:
        await repo.open()
        await store.open()
        report = await find_problems(repo, index, store, embedding.collection)
        if repair and report.problems:
            repairer = Repairer(repo, index, store, embedding)
            try:
                if embedding.collection not in await index.collections():
                    await index.ensure_collection(embedding.collection, embedding.dimensions, embedding.name)
                # Removals first: a point re-embedded for a meme may take the id of an orphan.
                for problem in sorted(report.problems, key=lambda p: not p.kind.startswith("orphan_")):
                    try:
                        why = await repairer.mend(problem)
                    except Exception as exc:  # one problem's failure is that problem's: go on
                        why = f"{type(exc).__name__}: {exc}"
                    if why is None:
                        report.repaired.append(problem)
                    else:
                        report.left.append((problem, why))
            finally:
                await repairer.close()
    finally:
        await store.close()
        await repo.close()
        await index.close()
    return report
