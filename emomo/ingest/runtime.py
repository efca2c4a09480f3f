"""Per-crawl ingest runtime: the clients every stage shares and the items in flight."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from scrapy import signals
from scrapy.settings import BaseSettings

from emomo import clients, defaults
from emomo.config import EmbeddingConfig, EmomoConfig, load_config
from emomo.errors import BackendUnavailable
from emomo.ingest.batcher import MicroBatcher, counted
from emomo.providers import Describer, Embedder
from emomo.providers.retry import ProviderError
from emomo.ingest.spool import DescriptionSpool
from emomo.repositories import MemeRecord, MemeRepository, SourceRecord
from emomo.repositories.qdrant import QdrantRepository
from emomo.storage import ObjectStore

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


def config_from_settings(settings: BaseSettings) -> EmomoConfig:
    return load_config(settings.get("EMOMO_CONFIG", defaults.EMOMO_CONFIG) or None)


async def check_backends(config: EmomoConfig, embedding: EmbeddingConfig) -> None:
    """Open what a crawl's start opens, then let go: the checks run before any crawler exists."""
    runtime = IngestRuntime(config, embedding)
    try:
        await runtime.open()
    finally:
        await runtime.close()


async def probe_embedder(embedder: Embedder, embedding: EmbeddingConfig) -> None:
    """One tiny embedding: a refused key, an unreachable endpoint or a wrong
    dimension shows at start, not on the first meme."""
    try:
        await embedder.embed_passages(["表情包"])
    except Exception as exc:
        raise BackendUnavailable(f"embeddings[{embedding.name}]: {exc}") from None


@dataclass
class ItemState:
    """What the stages know about one item in flight and how to undo its writes."""

    md5: str
    source: str
    started: float = field(default_factory=time.monotonic)
    meme: MemeRecord | None = None
    had_vector: bool = False
    #: why the describer or the embedder failed: the meme is parked, not undone
    deferred: str | None = None
    #: the status a parked meme is recorded with: pending (retry later) or failed
    park_status: str = "pending"
    #: the item's source as recorded before this crawl (None: a source new to us)
    source_record: SourceRecord | None = None
    #: the meme this source named before its content changed: it moves to the new one
    #: once that is complete, and the old one is retired if no other source holds it
    replaces: str | None = None
    #: the backend an index-stage write was talking to (for the circuit breaker's message)
    writing: str = "database"
    undo: list[tuple[str, Callable[[], Awaitable[None]]]] = field(default_factory=list)


class IngestRuntime:
    """Clients for one crawl, built from the config when the crawl starts.

    ``open`` connects and checks what can only be checked against the backends
    (a locked local folder, a collection of another dimension), so a crawl with
    a bad setup stops before its first item.
    """

    def __init__(self, config: EmomoConfig, embedding: EmbeddingConfig, force: bool = False,
                 max_in_flight: int = 32, on_batch: Callable[[str, int], None] | None = None) -> None:
        self.config = config
        self.embedding = embedding
        self.collection = embedding.collection
        self.force = force
        self.repo: MemeRepository = clients.build_repository(config)
        self.index: QdrantRepository = clients.build_index(config)
        self.store: ObjectStore = clients.build_store(config)
        self.describer: Describer = clients.build_describer(config)
        self.embedder: Embedder = clients.build_embedder(embedding)
        # Pieces of many items go out together; each item still gets its own outcome.
        wait = config.ingest.batch_max_wait
        writes = config.ingest.write_batch_size
        self.embed_batcher = MicroBatcher(self.embedder.embed_passages, embedding.batch_size,
                                          config.ingest.embed_max_wait, "embed", on_batch=on_batch)
        self.upsert_batcher = MicroBatcher(self._upsert, writes, wait, "upsert", on_batch=on_batch)
        self.vector_batcher = MicroBatcher(self.repo.record_vectors, writes, wait, "vectors", on_batch=on_batch)
        self._states: dict[int, ItemState] = {}
        #: seconds from read to indexed, per processed item (for p50/p95 in stats)
        self.latencies: list[float] = []
        self.stats: Any = None
        self._claims: dict[str, str] = {}
        #: md5 -> sources read while another item held that md5: linked to its meme once it is done
        self._followers: dict[str, list[tuple[str, str, str | None]]] = {}
        self._opened = False
        self._open_error: Exception | None = None
        self._closed = False
        self._open_lock = asyncio.Lock()
        self.stop_cause: str | None = None
        self.max_in_flight = max_in_flight
        self._slots: asyncio.Semaphore | None = None
        self._admitted: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.crawler: Crawler | None = None
        self._poke_due = False
        self.spool = DescriptionSpool(config.ingest.spool_dir)
        #: writes that failed in a row (any item that completes resets it): the circuit breaker
        self._write_failures = 0
        self._closing_task: asyncio.Task[None] | None = None

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` without awaiting it here; ``close`` waits for it before closing the clients."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def stopping(self) -> bool:
        return self.stop_cause is not None

    @property
    def interrupted(self) -> bool:
        """A graceful stop was asked for (Ctrl-C, SIGTERM: what scrapyd's cancel sends).
        Scrapy's Crawler.stop turns ``crawling`` off before it closes the engine."""
        return self.crawler is not None and not self.crawler.crawling

    def should_stop(self) -> bool:
        """No new work for items in flight: the crawl is stopping, by a signal or a fatal error."""
        return self.stopping or self.interrupted

    def stop(self, cause: str, reason: str) -> None:
        """End the crawl early, as Scrapy's CloseSpider does, with ``reason`` as its finish
        reason: no more items are admitted or requests sent, no new paid call starts, and
        the items in flight finish (or are dropped unwritten). For causes no later item can
        escape (a refused key, a backend that takes no writes)."""
        if self.stop_cause is not None:
            return
        self.stop_cause = cause
        if self.stats is not None:
            self.stats.set_value("emomo/ingest/stopped", cause)
        logger.error("Stopping the crawl: %s", cause)
        if self.crawler is not None:
            # Not awaited: closing the engine waits for the items in flight, the caller among them.
            self._closing_task = asyncio.ensure_future(self.crawler.engine.close_spider_async(reason=reason))

    def backend_label(self, kind: str) -> str:
        """How a message names a backend: ``database (postgres)``, ``storage (s3)``, ..."""
        c = self.config
        return {"database": f"database ({c.database.driver})", "storage": f"storage ({c.storage.type})",
                "qdrant": f"Qdrant ({self.index.where})"}.get(kind, kind)

    def write_failed(self, kind: str, cause: str) -> None:
        """Count a failed write; after ``ingest.max_write_failures`` in a row, stop the crawl
        rather than pay the VLM for items that cannot be kept."""
        self._write_failures += 1
        limit = self.config.ingest.max_write_failures
        if self._write_failures >= limit:
            self.stop(f"{self._write_failures} writes in a row failed, the last to the {self.backend_label(kind)}: "
                      f"{cause}; check it, then run the crawl again", reason="write_failures")

    def write_ok(self) -> None:
        self._write_failures = 0

    async def keep_description(self, md5: str, model: str, description: str) -> bool:
        """Save a description the moment it was paid for; when the database refuses, in the
        local spool (replayed at the next start). False when it went to the spool."""
        try:
            await self.repo.save_description(md5, model, description)
            return True
        except Exception as exc:
            await asyncio.to_thread(self.spool.append, md5, model, description)
            logger.warning("Could not save the description of %s in the %s (%s); kept in %s until the next crawl",
                           md5, self.backend_label("database"), exc, self.spool.path)
            return False

    async def _replay_spool(self) -> None:
        kept = await asyncio.to_thread(self.spool.entries)
        for md5, model, description in kept:
            await self.repo.save_description(md5, model, description)
        if kept:
            await asyncio.to_thread(self.spool.clear)
            logger.info("Saved %d descriptions kept in %s during an earlier outage", len(kept), self.spool.path)

    async def retire(self, meme_id: str) -> bool:
        """Retire ``meme_id`` if no source holds it any more: its vector rows and points go,
        its row is marked retired. True when it was retired."""
        points = await self.repo.retire_if_orphan(meme_id)
        if points is None:
            return False
        for collection, pid in points:
            try:
                await self.index.delete(collection, pid)
            except Exception as exc:  # the row says retired: `scrapy verify --repair` removes the point
                logger.error("Could not delete point %s of retired meme %s from %s: %s", pid, meme_id, collection, exc)
        if self.stats is not None:
            self.stats.inc_value("emomo/ingest/retired")
        logger.info("Retired meme %s: no source holds it any more", meme_id)
        return True

    async def admit(self, item: Any) -> bool:
        """Wait for room in the pipelines (backpressure on the spider); False once stopping.

        Scrapy pulls items from ``start()`` without limit; without this a
        file-based spider would read every image of a source into memory at once.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        if self.stopping:
            return False
        await self._slots.acquire()
        if self.stopping:
            self._slots.release()
            return False
        self._admitted.add(id(item))
        return True

    def item_done(self, item: Any, **_: Any) -> None:
        """Signal handler (item scraped, dropped or failed): its room goes to the next item."""
        if id(item) in self._admitted:
            self._admitted.discard(id(item))
            assert self._slots is not None
            self._slots.release()
        self._poke_scraper()

    def _poke_scraper(self) -> None:
        """Tell a closing scraper when its last item is done.

        Scrapy 2.19 checks whether a closing spider's scraper is idle only when the items
        of a response are done; items that came from ``start()`` never trigger that check,
        so a crawl stopped while they are in flight (Ctrl-C, scrapyd's cancel) would wait
        in ``Scraper.close_spider_async`` forever. The check runs a moment later: the
        scraper counts the item as done only after this signal handler returns.
        """
        scraper = self.crawler.engine.scraper if self.crawler is not None else None
        slot = getattr(scraper, "slot", None)
        if self._poke_due or slot is None or slot.closing is None:
            return
        self._poke_due = True

        def poke() -> None:
            self._poke_due = False
            if scraper is None or scraper.slot is None or scraper.slot.closing is None or scraper.slot.closing.called:
                return
            if scraper.slot.is_idle():
                scraper._check_if_closing()
            else:
                self._poke_scraper()

        asyncio.get_running_loop().call_later(0.05, poke)

    @classmethod
    def from_settings(cls, settings: BaseSettings,
                      on_batch: Callable[[str, int], None] | None = None) -> IngestRuntime:
        config = config_from_settings(settings)
        embedding = config.embedding(settings.get("EMOMO_EMBEDDING", defaults.EMOMO_EMBEDDING) or None)
        return cls(config, embedding, force=settings.getbool("EMOMO_FORCE", defaults.EMOMO_FORCE),
                   max_in_flight=settings.getint("CONCURRENT_ITEMS"), on_batch=on_batch)

    async def _upsert(self, points: list[tuple[str, list[float], dict[str, Any]]]) -> list[None]:
        await self.index.upsert(self.collection, points)
        return [None] * len(points)

    async def open(self) -> None:
        async with self._open_lock:
            if self._opened:
                return
            if self._open_error is not None:
                raise self._open_error
            try:
                await self._open()
            except Exception as exc:
                self._open_error = exc
                raise
            self._opened = True

    async def _open(self) -> None:
        # The embedder first: a collection is never created with a dimension it would not fill.
        await probe_embedder(self.embedder, self.embedding)
        await self.index.open()
        await self.index.ensure_collection(self.collection, self.embedding.dimensions, self.embedding.name)
        await self.repo.open()
        await self._replay_spool()
        await self.store.open()
        logger.info("Ingest into collection %s (embedding %s, %s, %d-d); database %s; store %s",
                    self.collection, self.embedding.name, self.embedding.model,
                    self.embedding.dimensions, self.config.database.driver, self.config.storage.type)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.stats is not None and self.latencies:
            ordered = sorted(self.latencies)
            for name, q in (("p50", 0.50), ("p95", 0.95), ("max", 1.0)):
                value = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
                self.stats.set_value(f"emomo/ingest/latency_{name}_ms", round(value * 1000))
        for batcher in (self.embed_batcher, self.upsert_batcher, self.vector_batcher):
            await batcher.drain()
        for result in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(result, Exception):
                logger.error("A background write failed: %s", result)
        for closer in (self.describer.close, self.embedder.close, self.store.close,
                       self.repo.close, self.index.close):
            try:
                await closer()
            except Exception:
                logger.exception("Error while closing %r", closer)

    # --- items in flight ---------------------------------------------------

    def start(self, item: Any, md5: str, source: str) -> ItemState:
        state = ItemState(md5=md5, source=source)
        self._states[id(item)] = state
        return state

    def state(self, item: Any) -> ItemState:
        return self._states[id(item)]

    def peek(self, item: Any) -> ItemState | None:
        return self._states.get(id(item))

    def claim(self, state: ItemState) -> str | None:
        """Claim the item's md5 for this crawl; the source already holding it, if any."""
        holder = self._claims.get(state.md5)
        if holder is None:
            self._claims[state.md5] = state.source
        return holder

    def follow(self, md5: str, source_type: str, source_id: str, locator: str | None) -> None:
        """A source whose image is in flight with another item: it is linked to that item's
        meme once the meme is recorded (``link_followers``), or forgotten if it fails."""
        self._followers.setdefault(md5, []).append((source_type, source_id, locator))

    async def link_followers(self, md5: str, meme_id: str) -> None:
        """The sources that followed ``md5`` while it was in flight now hold its (recorded) meme."""
        for source_type, source_id, locator in self._followers.pop(md5, []):
            link = SourceRecord(source_type, source_id, meme_id, md5)
            previous = await self.repo.link_source(link, locator, replace=True)
            if previous is not None:
                await self.retire(previous)

    @staticmethod
    def park(state: ItemState, exc: Exception) -> None:
        """Mark the item's meme to be recorded and left for a later run."""
        state.deferred = str(exc)
        if isinstance(exc, ProviderError) and exc.item_fault:
            state.park_status = "failed"

    def finish(self, item: Any) -> ItemState | None:
        state = self._states.pop(id(item), None)
        if state is not None and self._claims.get(state.md5) == state.source:
            del self._claims[state.md5]
        return state

    async def rollback(self, item: Any) -> list[str]:
        """Undo what the stages wrote for ``item``, newest first; what could not be undone."""
        state = self.finish(item)
        leftovers: list[str] = []
        if state is None:
            return leftovers
        if self._claims.get(state.md5) is None:
            self._followers.pop(state.md5, None)  # their next run finds them new
        for what, undo in reversed(state.undo):
            try:
                await undo()
            except Exception as exc:
                leftovers.append(f"{what}: {exc}")
        return leftovers


_RUNTIMES: WeakKeyDictionary[Crawler, IngestRuntime] = WeakKeyDictionary()


def runtime_for(crawler: Crawler) -> IngestRuntime:
    """The crawl's one runtime, built by the first stage that asks."""
    runtime = _RUNTIMES.get(crawler)
    if runtime is None:
        runtime = IngestRuntime.from_settings(crawler.settings, on_batch=counted(crawler.stats))
        runtime.stats = crawler.stats
        runtime.crawler = crawler
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            crawler.signals.connect(runtime.item_done, signal=signal)
        _RUNTIMES[crawler] = runtime
    return runtime
