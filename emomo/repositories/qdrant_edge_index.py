"""The embedded vector index (``qdrant.path``): Qdrant Edge, the Qdrant engine in this process.

One shard per collection under ``<qdrant.path>/<collection>/``. Opening a shard maps its
segments from disk (tens of milliseconds at 100k points; qdrant-client's local mode read
every point into memory), so a crawl, ``scrapy search`` and ``scrapy stats`` open only the
shards they use. A shard is held by one process at a time (its write-ahead log is locked).

New points go to a plain segment, searched exactly; ``build`` turns them into an HNSW
index once enough have gathered (the crawl calls it at its end), so a search is right
before the build and fast after it. Every call runs on one dedicated thread: the shard
is not shared between threads, and its calls block.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from emomo.blocking import DedicatedThread
from emomo.config import QdrantConfig
from emomo.errors import BackendUnavailable, ConfigError
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
    dense_vector,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: the file Qdrant Edge writes into every shard it creates: a folder with it is a shard
SHARD_MARKER = "edge_config.json"
#: who holds a shard open (written beside it when opened): what the next process's refusal names
HOLDER = "emomo-holder.json"


def _command() -> str:
    """This process's command as a user typed it: ``scrapy crawl x``, ``python -m pytest -q``."""
    first = Path(sys.argv[0])
    name = (f"python -m {first.parent.name}" if first.name == "__main__.py"
            else "python -c" if sys.argv[0] == "-c" else first.name)
    return " ".join([name, *sys.argv[1:]])


def _write_holder(folder: Path) -> None:
    record = {"pid": os.getpid(), "command": _command(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        (folder / HOLDER).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    except OSError:  # a read-only folder: the refusal then names no holder
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(folder: Path, patience: float = 2.0) -> str:
    """How a refusal names the process holding ``folder``: "pid 123 (scrapy serve, since …)".
    A process that has just taken the folder writes its record a moment later (until then the
    record is missing or names an earlier holder, gone): it is waited for, a little."""
    deadline = time.monotonic() + patience
    while True:
        try:
            record = json.loads((folder / HOLDER).read_text(encoding="utf-8"))
            pid = int(record["pid"])
            if _alive(pid):
                return f"pid {pid} ({str(record['command'])[:120]}, since {record['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() >= deadline:
            return "another process (another crawl, or a search)"
        time.sleep(0.05)


def _claim(folder: Path) -> IO[bytes] | None:
    """This process's claim on the shard in ``folder``: a lock file beside it, ``flock``-ed
    before Qdrant Edge touches the folder and held until the shard is closed (the kernel lets
    go should the process die). Edge's own lock is taken too late to guard against another
    opener: a refused ``load`` has already rewritten the holder's segment files, whose next
    flush then fails, and two creations at one moment break each other. None when the folder
    is read-only: Edge's lock is then all there is."""
    try:
        lock = open(folder.parent / f".{folder.name}.lock", "a+b")  # noqa: SIM115 - held until the shard is closed
    except OSError:
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise _InUse from None
    return lock


def _log_held(folder: Path) -> bool:
    """Whether another program holds the shard's write-ahead log (Edge ``flock``-s its folder):
    asked, without harm, before opening a shard, which would harm it (see ``_claim``)."""
    try:
        fd = os.open(folder / "wal", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the lock, if it was had
    return False


class _InUse(Exception):
    """The shard is held by another process."""


def local_mode_folder(root: Path) -> bool:
    """A folder written by qdrant-client's local mode, the embedded index of earlier versions."""
    return (root / "meta.json").is_file() and (root / "collection").is_dir()


def legacy_message(root: Path) -> str:
    old = f"{root}.local-mode"
    return (f"qdrant.path: {root} holds an index written by qdrant-client's local mode, which this version "
            "no longer opens (it read every point into memory); convert it once, nothing is lost: "
            f"mv {root} {old} && scrapy index copy --from local:{old}")


def _first_line(exc: BaseException) -> str:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for noise in ("Service runtime error: ", "IO Error: "):
        line = line.replace(noise, "")
    return line[:400]


class EdgeIndex(PagedIndex):
    def __init__(self, config: QdrantConfig, path: str | None = None) -> None:
        self.config = config
        self.root = Path(path or config.path)
        self.where = f"embedded index {self.root}"
        self._thread = DedicatedThread("emomo-qdrant-edge")
        self._shards: dict[str, Any] = {}
        self._claims: dict[str, IO[bytes] | None] = {}
        #: collection -> whether it keeps BM25 terms
        self._text: dict[str, bool] = {}

    # --- opening ------------------------------------------------------------

    def folder(self, collection: str) -> Path:
        if not collection or collection in (".", "..") or "/" in collection or "\\" in collection:
            raise ConfigError(f"qdrant: {collection!r} cannot be a collection name (it names a folder)")
        return self.root / collection

    async def open(self) -> None:
        # Only the folder is checked here; shards are opened when first used.
        if local_mode_folder(self.root):
            raise ConfigError(legacy_message(self.root))
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"qdrant.path: {self.root} is not a folder")

    async def close(self) -> None:
        def close_all() -> None:
            while self._shards:
                name, shard = self._shards.popitem()
                try:
                    shard.flush()
                finally:
                    shard.close()
                    (self.folder(name) / HOLDER).unlink(missing_ok=True)
                    claim = self._claims.pop(name, None)
                    if claim is not None:
                        claim.close()
        try:
            await self._thread.run(close_all)
        finally:
            self._thread.shutdown()

    def _config_of(self, collection: str) -> dict[str, Any] | None:
        """The shard's own configuration file: what a start-up check reads, never the points."""
        marker = self.folder(collection) / SHARD_MARKER
        try:
            data = json.loads(marker.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise self._open_error(marker.parent, ValueError(f"{marker.name}: {_first_line(exc)}")) from None
        return data if isinstance(data, dict) else {}

    def _load(self, collection: str, dimensions: int | None = None) -> Any:
        """The open shard of ``collection``; created (with ``dimensions``) when missing, else None."""
        if collection in self._shards:
            return self._shards[collection]
        import qdrant_edge as edge

        folder = self.folder(collection)
        if not (folder / SHARD_MARKER).is_file():
            if dimensions is None:
                return None
            folder.parent.mkdir(parents=True, exist_ok=True)
        claim = None
        try:
            claim = _claim(folder)
            if _log_held(folder):
                raise _InUse
            # looked at again once claimed: a process that was creating it has finished
            shard = (self._open(edge, collection, dimensions)
                     if (folder / SHARD_MARKER).is_file() or dimensions is None
                     else self._create(edge, collection, dimensions))
        except Exception as exc:
            if claim is not None:
                claim.close()
            raise self._open_error(folder, exc) from None
        _write_holder(folder)
        self._shards[collection] = shard
        self._claims[collection] = claim
        return shard

    def _open(self, edge: Any, collection: str, dimensions: int | None) -> Any:
        folder = str(self.folder(collection))
        size = dimensions or self._size_on_disk(collection)
        if size is None:
            return edge.EdgeShard.load(folder)
        return edge.EdgeShard.load(folder, _shard_config(edge, size, text=self._has_text(collection)))

    def _create(self, edge: Any, collection: str, dimensions: int) -> Any:
        folder = self.folder(collection)
        config = _shard_config(edge, dimensions, text=True)
        try:
            shard = edge.EdgeShard.create(str(folder), config)
        except Exception:
            # A creation that stopped half-way left its log: open what is there.
            if not (folder / "wal").is_dir():
                raise
            shard = edge.EdgeShard.load(str(folder), config)
        _write_holder(folder)  # at once: a process refused meanwhile names this one
        _index_fields(edge, shard)
        return shard

    def _open_error(self, folder: Path, exc: Exception) -> ConfigError:
        cause = _first_line(exc)
        if isinstance(exc, _InUse) or "WouldBlock" in cause:
            return BackendUnavailable(
                f"qdrant.path: the embedded index folder {folder} is in use by {_holder(folder)}; the embedded "
                "index is single-process: wait for it to finish (or stop it), or set qdrant.url to a Qdrant "
                "server to run jobs side by side")
        if "is newer than application version" in cause:
            return ConfigError(f"qdrant.path: the index folder {folder} was written by a newer version of Qdrant "
                               f"Edge ({cause.rsplit(': ', 1)[-1]}); upgrade Emomo to open it")
        return ConfigError(f"qdrant.path: cannot open the index folder {folder}: {cause}; restore it from a "
                           "backup, or move it aside and rebuild its points from the database with "
                           "scrapy verify --repair")

    async def _with(self, collection: str, fn: Callable[[Any], T], empty: T) -> T:
        """``fn(shard)`` on the index thread; ``empty`` when the collection does not exist."""
        def call() -> T:
            shard = self._load(collection)
            return empty if shard is None else fn(shard)
        return await self._thread.run(call)

    # --- the interface ------------------------------------------------------

    def _size_on_disk(self, collection: str) -> int | None:
        config = self._config_of(collection)
        try:
            return int(config["vectors"][""]["size"]) if config is not None else None
        except (KeyError, TypeError, ValueError):
            return None

    async def dimensions(self, collection: str) -> int | None:
        return self._size_on_disk(collection)

    def _has_text(self, collection: str) -> bool:
        """Whether the collection keeps BM25 terms (those made before this version do not): read
        from its configuration file once, not at every upsert and search."""
        if collection not in self._text:
            config = self._config_of(collection)
            if config is None:
                return False  # not created yet: it will be, with the terms
            self._text[collection] = TEXT_VECTOR in (config.get("sparse_vectors") or {})
        return self._text[collection]

    async def text_search(self, collection: str) -> bool:
        return self._has_text(collection)

    async def add_text(self, collection: str) -> int:
        """Give an existing collection its BM25 terms: a shard's vectors are fixed when it is
        created, so the points are copied into a new shard that has them (terms made from each
        payload: no paid call), which then takes the old one's place. The points copied."""
        import shutil

        import qdrant_edge as edge

        size = self._size_on_disk(collection)
        if size is None or self._has_text(collection):
            return 0
        folder = self.folder(collection)
        fresh, old = folder.with_name(folder.name + ".text"), folder.with_name(folder.name + ".old")

        def rebuild() -> int:
            source = self._load(collection)
            shutil.rmtree(fresh, ignore_errors=True)
            target = edge.EdgeShard.create(str(fresh), _shard_config(edge, size))
            _index_fields(edge, target)
            copied, offset = 0, None
            while True:
                page, offset = source.scroll(edge.ScrollRequest(offset=offset, limit=512, with_payload=True,
                                                                with_vector=True))
                target.update(edge.UpdateOperation.upsert_points([_point(edge, str(r.id), dense_vector(r.vector),
                                                                         dict(r.payload or {})) for r in page]))
                copied += len(page)
                if offset is None:
                    break
            target.optimize()
            target.flush()
            target.close()
            self._shards.pop(collection).close()
            # Swapped by renames, still claimed: a crash leaves either the old shard in place or
            # both folders.
            folder.rename(old)
            fresh.rename(folder)
            shutil.rmtree(old)
            self._text[collection] = True
            self._shards[collection] = self._open(edge, collection, None)
            _write_holder(folder)
            return copied
        return await self._thread.run(rebuild)

    async def ensure_collection(self, collection: str, dimensions: int, embedding_name: str) -> None:
        await self.existing_size(collection, dimensions, embedding_name)
        await self._thread.run(self._load, collection, dimensions)

    async def upsert(self, collection: str, points: list[PointData]) -> None:
        import qdrant_edge as edge

        text = self._has_text(collection)

        def up(shard: Any) -> bool:
            shard.update(edge.UpdateOperation.upsert_points(
                [_point(edge, pid, vector, payload, text) for pid, vector, payload in points]))
            return True
        if not await self._with(collection, up, False):
            raise ConfigError(f"qdrant: the collection {collection!r} does not exist in {self.root}")

    async def delete(self, collection: str, pid: str) -> None:
        import qdrant_edge as edge

        await self._with(collection, lambda shard: shard.update(edge.UpdateOperation.delete_points([pid])), None)

    async def set_payload(self, collection: str, pid: str, payload: dict[str, Any]) -> None:
        import qdrant_edge as edge

        await self._with(collection, lambda shard: shard.update(edge.UpdateOperation.set_payload([pid], payload)),
                         None)

    async def search(self, collection: str, vector: list[float], top: int,
                     where: SearchFilter | None = None, text: str = "", words_only: bool = False) -> list[Hit]:
        import qdrant_edge as edge

        hybrid = bool(text) and self._has_text(collection)
        if words_only and not hybrid:
            return []
        conditions = where.conditions() if where else {}
        # qdrant-edge-py 0.9 turns a Python bool into an integer in a match, which matches no
        # boolean payload: the flag is checked here instead, fetching more until ``top`` are found.
        flag = conditions.pop("is_animated", None)
        query_filter = edge.Filter(must=[
            edge.FieldCondition(key, match=edge.MatchAny(list(value)) if isinstance(value, tuple)
                                else edge.MatchValue(value)) for key, value in conditions.items()
        ]) if conditions else None

        def request(limit: int) -> Any:
            if words_only:
                return edge.QueryRequest(limit=limit, query=edge.Query.Nearest(
                    edge.SparseVector(*query_terms(text)), using=TEXT_VECTOR), with_payload=True, filter=query_filter)
            if not hybrid:
                return edge.QueryRequest(limit=limit, query=edge.Query.Nearest(vector), with_payload=True,
                                         filter=query_filter)
            # The meaning and the words, each ranked by Qdrant, fused by reciprocal rank.
            words = edge.SparseVector(*query_terms(text))
            prefetches = [edge.Prefetch(limit=candidates(limit), query=edge.Query.Nearest(vector), filter=query_filter),
                          edge.Prefetch(limit=candidates(limit), query=edge.Query.Nearest(words, using=TEXT_VECTOR),
                                        filter=query_filter)]
            fusion: Any = edge.Fusion.Rrf(k=RRF_K)  # the stub types only the Fusion class, not its kinds
            return edge.QueryRequest(limit=limit, prefetches=prefetches, query=fusion, with_payload=True)

        def q(shard: Any) -> list[Hit]:
            limit = top if flag is None else top * 4
            while True:
                found = shard.query(request(limit))
                hits = [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in found]
                if flag is None:
                    return hits
                kept = [h for h in hits if bool(h.payload.get("is_animated")) == flag]
                if len(kept) >= top or len(found) < limit:
                    return kept[:top]
                limit *= 4
        return await self._with(collection, q, [])

    async def collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / SHARD_MARKER).is_file())

    async def count(self, collection: str) -> int:
        import qdrant_edge as edge

        return await self._with(collection, lambda shard: int(shard.count(edge.CountRequest(exact=True))), 0)

    async def _page(self, collection: str, offset: Any, limit: int, with_payload: Any,
                    with_vector: bool) -> tuple[list[Any], Any]:
        import qdrant_edge as edge

        return await self._with(collection, lambda shard: shard.scroll(edge.ScrollRequest(
            offset=offset, limit=limit, with_payload=with_payload, with_vector=with_vector)), ([], None))

    async def payloads(self, collection: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        records: list[Any] = await self._with(collection, lambda shard: shard.retrieve(ids, True, False), [])
        return {str(r.id): dict(r.payload or {}) for r in records}

    async def existing(self, collection: str, ids: list[str]) -> set[str]:
        records: list[Any] = await self._with(collection, lambda shard: shard.retrieve(ids, False, False), [])
        return {str(r.id) for r in records}

    async def build(self, collection: str) -> BuildReport:
        text = self._has_text(collection)

        def run(shard: Any) -> BuildReport:
            info = shard.info()
            points, indexed = int(info.points_count), int(info.indexed_vectors_count)
            if text:  # the count includes the BM25 terms, indexed as they arrive: one a point
                indexed = max(0, indexed - points)
            unindexed = points - indexed
            started = time.monotonic()
            built = unindexed >= self.config.build_after_points and bool(shard.optimize())
            if built:
                shard.flush()
            return BuildReport(collection, built, points, max(unindexed, 0), time.monotonic() - started)
        return await self._with(collection, run, BuildReport(collection, False, 0, 0, 0.0))


def _index_fields(edge: Any, shard: Any) -> None:
    """Payload indexes on the fields searches filter by."""
    kinds = {"keyword": edge.PayloadSchemaType.Keyword, "bool": edge.PayloadSchemaType.Bool}
    for name, kind in FILTER_FIELDS.items():
        shard.update(edge.UpdateOperation.create_field_index(name, kinds[kind]))


def _point(edge: Any, pid: str, vector: list[float], payload: dict[str, Any], text: bool = True) -> Any:
    """A point with its BM25 terms when the collection keeps them."""
    if not text:
        return edge.Point(pid, vector, payload)
    return edge.Point(pid, {"": vector, TEXT_VECTOR: edge.SparseVector(*document_terms(payload))}, payload)


def _shard_config(edge: Any, size: int, text: bool = True) -> Any:
    """How a shard keeps its data: vectors, search graph, payloads and ids on disk, mapped
    (Memory.Cold). A process that opens 200k points and runs one search (``scrapy search``)
    holds the pages it touched, not the shard; a process that searches all day (a server)
    keeps its working set in memory and answers in milliseconds.

    Edge optimizes only when told (``build``); then every segment gets its graph, however
    small: when to build is decided by build_after_points, not by segment sizes."""
    cold = edge.Memory.Cold
    return edge.EdgeConfig(
        vectors=edge.EdgeVectorParams(size=size, distance=edge.Distance.Cosine, memory=cold),
        # A shard made before hybrid search opens as it is (its vectors are fixed): add_text.
        sparse_vectors={TEXT_VECTOR: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)} if text else None,
        hnsw_config=edge.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000, memory=cold),
        payload_memory=cold, id_tracker_memory=cold,
        optimizers=edge.EdgeOptimizersConfig(indexing_threshold=1))
