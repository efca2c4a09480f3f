"""``scrapy index copy``: move collections between any two vector indexes.

An index is named by a spec:

- ``config`` (the default ``--to``): the index the configuration names;
- ``edge:PATH``: an embedded index folder (Qdrant Edge, one shard per collection);
- ``local:PATH``: a folder written by qdrant-client's local mode (earlier versions' embedded index);
- ``http(s)://HOST:PORT``: a Qdrant server or cluster (its key from qdrant.api_key / QDRANT_API_KEY).

Points keep their ids, vectors and payloads. A page of points already in the target is
not written again, so a copy cut short is finished by running it again; at the end the
target must hold every point of the source.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from emomo import clients
from emomo.config import EmomoConfig
from emomo.errors import ConfigError
from emomo.repositories.vector_index import VectorIndex

logger = logging.getLogger(__name__)

SPEC_HELP = "config, edge:PATH, local:PATH or http(s)://HOST:PORT"


def open_spec(config: EmomoConfig, spec: str, option: str) -> VectorIndex:
    """The index a spec names (not yet opened)."""
    from emomo.repositories.qdrant_client_index import QdrantClientIndex
    from emomo.repositories.qdrant_edge_index import EdgeIndex

    kind, _, rest = spec.partition(":")
    if spec == "config":
        return clients.build_index(config)
    if kind == "edge" and rest:
        return EdgeIndex(config.qdrant, path=rest)
    if kind == "local" and rest:
        return QdrantClientIndex(config.qdrant, local_path=rest)
    if kind in ("http", "https") and rest.startswith("//"):
        return QdrantClientIndex(config.qdrant.model_copy(update={"path": "", "url": spec, "host": ""}))
    raise ConfigError(f"{option}: {spec!r} names no index; give {SPEC_HELP}")


@dataclass
class CopyResult:
    collection: str
    copied: int = 0
    already: int = 0
    source_points: int = 0
    target_points: int = 0
    seconds: float = 0.0
    built: bool = False

    @property
    def complete(self) -> bool:
        return self.copied + self.already == self.source_points and self.target_points >= self.source_points

    def as_json(self) -> dict[str, Any]:
        return {"collection": self.collection, "copied": self.copied, "already_there": self.already,
                "source_points": self.source_points, "target_points": self.target_points,
                "seconds": round(self.seconds, 2), "complete": self.complete}


@dataclass
class CopyReport:
    source: str
    target: str
    results: list[CopyResult] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.results)


async def copy_collection(source: VectorIndex, target: VectorIndex, collection: str, batch: int) -> CopyResult:
    result = CopyResult(collection)
    started = time.monotonic()
    size = await source.dimensions(collection)
    if size is None:
        raise ConfigError(f"--collection: {source.where} has no collection {collection!r}")
    held = await target.dimensions(collection)
    if held is not None and held != size:
        raise ConfigError(f"{target.where} holds {collection!r} with {held}-dimensional vectors, the source "
                          f"{size}-dimensional ones; copy into another index or remove that collection first")
    await target.ensure_collection(collection, size, collection)
    offset: Any = None
    while True:
        page, offset = await source.scroll(collection, offset, batch)
        if page:
            there = await target.existing(collection, [pid for pid, _, _ in page])
            fresh = [point for point in page if point[0] not in there]
            if fresh:
                await target.upsert(collection, fresh)
            result.copied += len(fresh)
            result.already += len(there)
            logger.info("%s: %d points copied, %d already there", collection, result.copied, result.already)
        if offset is None:
            break
    result.source_points = await source.count(collection)
    result.target_points = await target.count(collection)
    result.built = (await target.build(collection)).built
    result.seconds = time.monotonic() - started
    return result


async def copy_indexes(config: EmomoConfig, source_spec: str, target_spec: str, names: list[str],
                       batch: int) -> CopyReport:
    if source_spec == target_spec:
        raise ConfigError("--from and --to name the same index")
    source = open_spec(config, source_spec, "--from")
    target = open_spec(config, target_spec, "--to")
    report = CopyReport(source.where, target.where)
    await source.open()
    try:
        await target.open()
        try:
            for collection in names or await source.collections():
                report.results.append(await copy_collection(source, target, collection, batch))
        finally:
            await target.close()
    finally:
        await source.close()
    return report
