"""The per-crawl ingest runtime: a Scrapy extension that holds the clients every stage shares.

Scrapy builds it with the crawler (``EXTENSIONS``) and the stages and spiders reach it with
``crawler.get_extension(IngestRuntime)``. It opens its backends once, on ``spider_opened``: a
backend that cannot be used (a locked folder, a collection of another dimension, a refused
key) is logged in one line and closes the spider with the finish reason
``backend_unavailable`` before any item is read (``scrapy crawl`` exits 2). It closes them on
``spider_closed``, after the last item.

Settings: ``EMOMO_CONFIG``, ``EMOMO_EMBEDDING``, ``EMOMO_FORCE``, ``EMOMO_ENABLED``,
``EMOMO_MAX_ITEMS_IN_FLIGHT`` (defaults in emomo.addon).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import CloseSpider, NotConfigured
from scrapy.settings import BaseSettings

from emomo import clients
from emomo.blocking import one_blas_thread
from emomo.config import EmbeddingConfig, EmomoConfig, load_config
from emomo.errors import BackendUnavailable, ConfigError, error_text
from emomo.ingest.admission import Admission
from emomo.ingest.batcher import MicroBatcher, counted
from emomo.ingest.breaker import WriteBreaker
from emomo.ingest.in_flight import Follower, InFlight
from emomo.ingest.metrics import ItemTimes
from emomo.ingest.near_dupes import NearIndex, NearInFlight
from emomo.ingest.sizing import admission_limit, sized_pool
from emomo.ingest.spool import DescriptionSpool
from emomo.ingest.state import ItemState, attach, detach, peek, state_of
from emomo.providers import Describer, Embedder
from emomo.providers.concurrency import AdaptiveLimit
from emomo.providers.errors import ProviderError
from emomo.repositories import MemeRepository, SourceRecord
from emomo.repositories.vector_index import VectorIndex
from emomo.storage import ObjectStore

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

#: the finish reason of a crawl whose backends could not be opened (exit code 2)
BACKEND_UNAVAILABLE = "backend_unavailable"


def config_from_settings(settings: BaseSettings) -> EmomoConfig:
    return load_config(settings.get("EMOMO_CONFIG") or None)


async def probe_embedder(embedder: Embedder, embedding: EmbeddingConfig) -> None:
    """One tiny embedding: a refused key, an unreachable endpoint or a wrong
    dimension shows at start, not on the first meme."""
    try:
        await embedder.embed_passages(["表情包"])
    except Exception as exc:
        raise BackendUnavailable(f"embeddings[{embedding.name}]: {exc}") from None


def check_free_space(config: EmomoConfig) -> None:
    """Refuse to start (ConfigError, one line) when a folder the crawl writes to sits on a disk
    with less than ingest.min_free_mb free."""
    need = config.ingest.min_free_mb * 1024 * 1024
    for path in config.local_write_paths():
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None:
            continue
        free = shutil.disk_usage(existing).free
        if free < need:
            raise ConfigError(f"{path}: its disk has {free // (1024 * 1024)} MB free, less than ingest.min_free_mb="
                              f"{config.ingest.min_free_mb}; free some space (or point the data elsewhere)")


class IngestRuntime:
    def __init__(self, crawler: Crawler, config: EmomoConfig, embedding: EmbeddingConfig, force: bool,
                 max_items_in_flight: int) -> None:
        self.crawler = crawler
        self.config = config
        self.embedding = embedding
        self.collection = embedding.collection
        self.force = force
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.repo: MemeRepository = clients.build_repository(sized_pool(config))
        self.index: VectorIndex = clients.build_index(config)
        self.store: ObjectStore = clients.build_store(config)
        self.describer: Describer = clients.build_describer(config)
        self.embedder: Embedder = clients.build_embedder(embedding)
        # Pieces of many items go out together; each item still gets its own outcome. An
        # embedding batch is split piece by piece only when the error is an item's fault: a
        # 503 for 32 texts must not become 32 more paid calls. Writes are split on any error.
        on_batch = counted(self.stats)
        wait, writes = config.ingest.batch_max_wait, config.ingest.write_batch_size
        embed_wait = getattr(self.embedder, "batch_wait", None)
        self.embed_batcher = MicroBatcher(self.embedder.embed_passages, embedding.batch_size,
                                          config.ingest.embed_max_wait if embed_wait is None else embed_wait,
                                          "embed", on_batch=on_batch,
                                          isolate=lambda exc: isinstance(exc, ProviderError) and exc.item_fault)
        self.upsert_batcher = MicroBatcher(self._upsert, writes, wait, "upsert", on_batch=on_batch)
        self.vector_batcher = MicroBatcher(self.repo.record_vectors, writes, wait, "vectors", on_batch=on_batch)
        # Paid descriptions are kept at once, in one statement for those that arrive together.
        self.description_batcher = MicroBatcher(self.repo.save_descriptions, writes, wait, "descriptions",
                                                on_batch=on_batch)
        self.max_items_in_flight = max_items_in_flight
        self.admission = Admission(self._admission_limit, self._items_in_process)

        # The adaptive limits of API calls report their level to the stats as it changes.
        self.limits = {stage: limit for stage, limit in (("describe", getattr(self.describer, "limit", None)),
                                                          ("embed", getattr(self.embedder, "limit", None)))
                       if isinstance(limit, AdaptiveLimit)}
        for stage, limit in self.limits.items():
            limit.on_change = partial(self._level_changed, stage)
            self._level_changed(stage, limit.level)
        self.times = ItemTimes()
        self.spool = DescriptionSpool(config.ingest.spool_dir)
        self.stop_cause: str | None = None
        self._opened = False
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing_task: asyncio.Task[None] | None = None
        self._poke_due = False
        self.in_flight = InFlight(self.repo, self.collection, shared=config.database.driver != "sqlite",
                                  claim_timeout=config.ingest.claim_timeout)
        #: every recorded meme's near-duplicate signature
        self.near_index = NearIndex()
        self.breaker = WriteBreaker(config.ingest.max_write_failures)

    def _admission_limit(self) -> int:
        """Items in flight at most now (emomo.ingest.sizing)."""
        if self.max_items_in_flight > 0:
            return self.max_items_in_flight
        described = self.stats.get_value("emomo/describe/items", 0)
        describing = self.stats.get_value("emomo/describe/ms", 0) / 1000 / described if described else 0.0
        return admission_limit(self.times.median(), describing, self.limits.get("describe"),
                               getattr(self.describer, "admission", None))

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        if not settings.getbool("EMOMO_ENABLED"):
            raise NotConfigured("EMOMO_ENABLED is off")
        spider = crawler.spider
        needs = getattr(spider, "needs_backends", None)
        if needs is None or not needs():
            # Not a meme spider, or one that writes no index (fabiaoqing -a output=staging): as
            # asked, so without the warning Scrapy logs for a component switched off by a message.
            raise NotConfigured
        if settings.get("LOG_LEVEL") != "DEBUG":
            # The openai SDK's httpx logs every request at INFO: a thousand lines a crawl.
            logging.getLogger("httpx").setLevel(logging.WARNING)
        config: EmomoConfig = getattr(spider, "config", None) or config_from_settings(settings)
        embedding = config.embedding(settings.get("EMOMO_EMBEDDING") or None)
        runtime = cls(crawler, config, embedding,
                      force=settings.getbool("EMOMO_FORCE"),
                      max_items_in_flight=settings.getint("EMOMO_MAX_ITEMS_IN_FLIGHT"))
        crawler.signals.connect(runtime.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(runtime.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(runtime.item_scraped, signal=signals.item_scraped)
        for signal in (signals.item_dropped, signals.item_error):
            crawler.signals.connect(runtime.item_left, signal=signal)
        return runtime

    # --- opening and closing ------------------------------------------------

    async def spider_opened(self) -> None:
        try:
            await self.open()
        except ConfigError as exc:
            # In the log, in one line: a scrapyd job's log is where its operator looks.
            logger.error("Cannot start the crawl: %s", exc)
            raise CloseSpider(BACKEND_UNAVAILABLE) from None

    async def spider_closed(self) -> None:
        await self.close()

    async def open(self) -> None:
        check_free_space(self.config)
        # The embedder first: a collection is never created with a dimension it would not fill.
        await probe_embedder(self.embedder, self.embedding)
        await self.index.open()
        await self.index.ensure_collection(self.collection, self.embedding.dimensions, self.embedding.name)
        await self.repo.open()
        if self.config.dedupe.near:
            one_blas_thread()
            started = time.monotonic()
            await self.near_index.refresh(self.repo, force=True)
            logger.debug("Loaded %d near-duplicate signatures in %.2f s", len(self.near_index),
                         time.monotonic() - started)
        await self._replay_spool()
        await self.store.open()
        self._opened = True
        logger.info("Ingest into collection %s (embedding %s, %s, %d-d); database %s; store %s",
                    self.collection, self.embedding.name, self.embedding.model,
                    self.embedding.dimensions, self.config.database.driver, self.config.storage.type)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.times.write_stats(self.stats)
        for stage, limit in self.limits.items():
            self.stats.set_value(f"emomo/{stage}/pushed_back", limit.congestion_events)
        for batcher in (self.embed_batcher, self.upsert_batcher, self.vector_batcher, self.description_batcher):
            await batcher.drain()
        await self.in_flight.clear(self._opened)
        for result in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(result, Exception):
                logger.error("A background write failed: %s", result)
        if self._opened:
            await self._build_index()
        for closer in (self.describer.close, self.embedder.close, self.store.close,
                       self.repo.close, self.index.close):
            try:
                await closer()
            except Exception:
                logger.exception("Error while closing %r", closer)

    async def _build_index(self) -> None:
        """Build the collection's search index once enough points wait outside it: minutes at
        200k points, so at the end of a crawl and never when it was asked to stop now."""
        if self.should_stop():
            return
        try:
            report = await self.index.build(self.collection)
        except Exception as exc:
            logger.error("Could not build the search index of %s (searches stay exact): %s", self.collection, exc)
            return
        if report.built:
            self.stats.set_value("emomo/index/build_seconds", round(report.seconds, 1))
            logger.info("Built the search index of %s: %d points (%d new) in %.1f s",
                        self.collection, report.points, report.unindexed_before, report.seconds)

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` without awaiting it here; ``close`` waits for it before closing the clients."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upsert(self, points: list[tuple[str, list[float], dict[str, Any]]]) -> list[None]:
        await self.index.upsert(self.collection, points)
        return [None] * len(points)

    # --- stopping -----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stop_cause is not None

    @property
    def interrupted(self) -> bool:
        """A graceful stop was asked for (Ctrl-C, SIGTERM: what scrapyd's cancel sends).
        Scrapy's Crawler.stop turns ``crawling`` off before it closes the engine."""
        return not self.crawler.crawling

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
        self.stats.set_value("emomo/ingest/stopped", cause)
        logger.error("Stopping the crawl: %s", cause)
        # Not awaited: closing the engine waits for the items in flight, the caller among them.
        self._closing_task = asyncio.ensure_future(self.crawler.engine.close_spider_async(reason=reason))

    def backend_label(self, kind: str) -> str:
        """How a message names a backend: ``database (postgres)``, ``storage (s3)``, ..."""
        c = self.config
        return {"database": f"database ({c.database.driver})", "storage": f"storage ({c.storage.type})",
                "qdrant": f"Qdrant ({self.index.where})"}.get(kind, kind)

    def write_failed(self, kind: str, cause: str) -> None:
        """Count a failed write; the crawl stops when the write breaker trips."""
        if self.breaker.failed():
            self.stop(f"{self.breaker.failures} writes in a row failed, the last to the {self.backend_label(kind)}: "
                      f"{cause}; check it, then run the crawl again", reason="write_failures")

    def write_ok(self) -> None:
        self.breaker.ok()

    # --- admission and the scraper ------------------------------------------

    def _items_in_process(self) -> int:
        slot = self.crawler.engine.scraper.slot
        return slot.itemproc_size if slot is not None else 0

    async def admit(self) -> bool:
        """Wait for room in the pipelines; False once the crawl is stopping."""
        return await self.admission.wait(self.should_stop)

    async def drained(self) -> bool:
        """Wait until the last item is out of the pipelines; False once the crawl is stopping."""
        return await self.admission.drained(self.should_stop)

    def item_scraped(self, item: Any, **_: Any) -> None:
        """Signal handler: the item went through every pipeline. What the runtime still holds
        for it (when a project runs without the last stage) is let go; room for the next item."""
        self.finish(item)
        self.item_done()

    async def item_left(self, item: Any, **_: Any) -> None:
        """Signal handler: the item was dropped or failed. Our stages undo their own writes
        before they drop an item; one dropped by another pipeline (a user's, between ours) or
        failing outside our stages still holds our writes and claims: they are undone and let
        go here, whichever way the item left, so no later item waits for it."""
        if self.peek(item) is not None:
            self.stats.inc_value("emomo/ingest/dropped")
            for leftover in await self.rollback(item):
                self.stats.inc_value("emomo/ingest/undo_failed")
                logger.error("Could not undo %s for an item dropped by another pipeline", leftover)
        self.item_done()

    def item_done(self) -> None:
        """Room for the next item."""
        self.admission.item_done()
        self._poke_scraper()

    def _poke_scraper(self) -> None:
        """Tell a closing scraper when its last item is done.

        Scrapy 2.19 checks whether a closing spider's scraper is idle only when the items
        of a response are done; items that came from ``start()`` never trigger that check,
        so a crawl stopped while they are in flight (Ctrl-C, scrapyd's cancel) would wait
        in ``Scraper.close_spider_async`` forever. The check runs a moment later: the
        scraper counts the item as done only after this signal handler returns.
        """
        scraper = self.crawler.engine.scraper
        if self._poke_due or scraper.slot is None or scraper.slot.closing is None:
            return
        self._poke_due = True

        def poke() -> None:
            self._poke_due = False
            slot = scraper.slot
            if slot is None or slot.closing is None or slot.closing.called:
                return
            if slot.is_idle():
                scraper._check_if_closing()
            else:
                self._poke_scraper()

        asyncio.get_running_loop().call_later(0.05, poke)

    # --- paid work and retirement -------------------------------------------

    async def keep_description(self, md5: str, model: str, description: str) -> bool:
        """Save a description the moment it was paid for; when the database refuses, in the
        local spool (replayed at the next start). False when it went to the spool."""
        try:
            await self.description_batcher.submit((md5, model, description))
            return True
        except Exception as exc:
            await asyncio.to_thread(self.spool.append, md5, model, description)
            logger.warning("Could not save the description of %s in the %s (%s); kept in %s until the next crawl",
                           md5, self.backend_label("database"), exc, self.spool.path)
            return False

    async def _replay_spool(self) -> None:
        kept = await asyncio.to_thread(self.spool.entries)
        if kept:
            await self.repo.save_descriptions(kept)
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
        self.stats.inc_value("emomo/ingest/retired")
        logger.info("Retired meme %s: no source holds it any more", meme_id)
        return True

    # --- items in flight ---------------------------------------------------

    def start(self, item: Any, md5: str, source: str) -> ItemState:
        if self.times.started():
            assert self.times.first is not None
            self.stats.set_value("emomo/ingest/first_start", round(self.times.first[0], 3))  # the progress line's
        return attach(item, ItemState(md5=md5, source=source))

    @staticmethod
    def state(item: Any) -> ItemState:
        return state_of(item)

    @staticmethod
    def peek(item: Any) -> ItemState | None:
        return peek(item)

    @property
    def near_in_flight(self) -> NearInFlight:
        """The near-duplicate signatures of the items in flight (a copy read at the same moment
        as its original waits for it)."""
        return self.in_flight.near

    def claim(self, state: ItemState) -> str | None:
        """Claim the item's md5 for this crawl; the source already holding it, if any."""
        return self.in_flight.claim(state)

    async def claim_shared(self, state: ItemState) -> str | None:
        """Claim the item's md5 among the workers sharing the database; the worker holding it."""
        return await self.in_flight.claim_shared(state)

    def follow(self, md5: str, source_type: str, source_id: str, locator: str | None) -> None:
        """A source whose image is in flight with another item: it is linked to that item's
        meme once the meme is recorded (``link_followers``), or forgotten if it fails."""
        self.in_flight.follow(md5, Follower(source_type, source_id, locator))

    async def link_followers(self, md5: str, meme_id: str) -> None:
        """The sources that followed ``md5`` while it was in flight now hold its (recorded) meme."""
        while (follower := self.in_flight.next_follower(md5)) is not None:
            link = SourceRecord(follower.source_type, follower.source_id, meme_id, md5)
            previous = await self.repo.link_source(link, follower.locator, replace=True)
            if previous is not None:
                await self.retire(previous)

    @staticmethod
    def park(state: ItemState, exc: Exception) -> None:
        """Mark the item's meme to be recorded and left for a later run (with the reason: an
        exception without a message is named by its type)."""
        state.deferred = error_text(exc)
        if isinstance(exc, ProviderError) and exc.item_fault:
            state.park_status = "failed"

    def finish(self, item: Any) -> ItemState | None:
        """The item leaves the pipelines: its state comes off it and its md5 claim is let go
        (once: a second call finds no state)."""
        state = detach(item)
        if state is not None and self.in_flight.leave(state):
            self.background(self.in_flight.release(state.md5))
        return state

    async def rollback(self, item: Any) -> list[str]:
        """Undo what the stages wrote for ``item``, newest first; what could not be undone."""
        state = self.finish(item)
        leftovers: list[str] = []
        if state is None:
            return leftovers
        if not self.in_flight.claimed(state.md5):
            self.in_flight.forget_followers(state.md5)  # their next run finds them new
        for what, undo in reversed(state.undo):
            try:
                await undo()
            except Exception as exc:
                leftovers.append(f"{what}: {exc}")
        return leftovers

    def record_latency(self, state: ItemState) -> None:
        self.times.done(time.monotonic() - state.started)

    def _level_changed(self, stage: str, level: int) -> None:
        self.stats.set_value(f"emomo/{stage}/in_flight_level", level)
        self.stats.max_value(f"emomo/{stage}/in_flight_max", level)
        logger.debug("%s calls in flight: now at most %d", stage, level)
