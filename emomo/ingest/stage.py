"""The base of every ingest pipeline stage: shared runtime, outcomes, failure and undo.

A stage subclass names itself and implements ``run``; this class turns any
exception from ``run`` into: undo what earlier stages wrote for the item, one
log line with the item's source and the cause, ``emomo/<stage>/failed`` and
``emomo/ingest/failed`` in stats, and a StageFailed drop so the crawl goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from itemadapter import ItemAdapter
from scrapy.exceptions import NotConfigured

from emomo.config import IngestConfig
from emomo.errors import DISK_FULL, IngestDrop, Interrupted, InvalidImage, StageFailed, disk_full
from emomo.imaging import ImageError, ImageInfo, read_image
from emomo.ingest.runtime import IngestRuntime
from emomo.ingest.state import ItemState
from emomo.text import clean_list, clean_text, escape_name

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self

    from PIL import Image
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger("emomo.ingest")


def item_source(adapter: ItemAdapter) -> str:
    """How a log line names the item: its file, else its URL, else its source id (printable:
    a file name that is not UTF-8 shows its bytes escaped)."""
    return escape_name(str(adapter.get("path") or adapter.get("url") or
                           f"{adapter.get('source_type')}:{adapter.get('source_id')}"))


def item_locator(adapter: ItemAdapter) -> str | None:
    """Where the item's file can be read again (`scrapy verify --repair` re-uploads from it),
    escaped as source ids are (emomo.text.unescape_name gives the path back)."""
    where = adapter.get("path") or adapter.get("url")
    return escape_name(str(where)) if where else None


def clean_item_text(adapter: ItemAdapter, limits: IngestConfig) -> bool:
    """Bound and clean what the source says (category, tags) before it costs anything:
    control characters out, lengths cut (ingest.max_*), the same for every backend.
    True when something had to be cut."""
    category, cut_category = clean_text(str(adapter.get("category") or ""), limits.max_category_chars)
    tags, cut_tags = clean_list(list(adapter.get("tags") or []), limits.max_tags, limits.max_tag_chars)
    adapter.update({"category": category, "tags": tags})
    return cut_category or cut_tags


async def read_item(adapter: ItemAdapter, limits: IngestConfig, stats: StatsCollector,
                    spider: Any, first_frame: Callable[[Image.Image], Any] | None = None) -> tuple[bytes, ImageInfo]:
    """The item's bytes and what they hold (``first_frame``: see ``emomo.imaging.probe``), its
    text cleaned. A bad file is logged with its source, counted (``emomo/read/<kind>``: invalid,
    unreadable, not_regular) and dropped (InvalidImage); text that had to be cut is counted
    (``emomo/read/truncated``)."""
    try:
        found = await asyncio.to_thread(
            read_image, adapter.get("body"), adapter.get("path"), limits.max_image_bytes, limits.max_pixels,
            adapter.get("file_identity"), limits.max_frames, limits.max_frame_pixels, first_frame)
    except ImageError as exc:
        source = item_source(adapter)
        stats.inc_value(f"emomo/read/{exc.kind}")
        stats.inc_value("emomo/ingest/invalid")
        logger.warning("Invalid image %s: %s", source, exc, extra={"spider": spider})
        raise InvalidImage(f"{source}: {exc}") from None
    if clean_item_text(adapter, limits):
        stats.inc_value("emomo/read/truncated")
        logger.info("Text of %s cut to the ingest.max_* limits", item_source(adapter), extra={"spider": spider})
    return found


class Stage:
    #: the <stage> in ``emomo/<stage>/<outcome>`` stats keys
    name: ClassVar[str]
    #: once the crawl is stopping, an item that reaches this stage is dropped unwritten
    #: (the stages before anything is paid for or stored); later stages finish the item
    interruptible: ClassVar[bool] = False
    #: the backend this stage writes to or reads from (database, storage, qdrant): its
    #: failures count towards the circuit breaker (ingest.max_write_failures)
    backend: ClassVar[str | None] = None

    def __init__(self, crawler: Crawler, runtime: IngestRuntime) -> None:
        self.crawler = crawler
        self.runtime = runtime
        assert crawler.stats is not None
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        # The runtime (an extension, built before the pipelines) holds the clients; without it
        # (EMOMO_ENABLED off, or a spider that ingests nothing) the stages are off too.
        runtime = crawler.get_extension(IngestRuntime)
        if runtime is None:
            raise NotConfigured  # the runtime said why, if anything was to be said
        return cls(crawler, runtime)

    def count(self, outcome: str) -> None:
        self.stats.inc_value(f"emomo/{self.name}/{outcome}")

    def conclude(self, outcome: str) -> None:
        """Count an item's final outcome: for this stage and in the crawl's ingest summary."""
        self.count(outcome)
        self.stats.inc_value(f"emomo/ingest/{outcome}")

    def log(self, level: int, msg: str, *args: Any) -> None:
        logger.log(level, msg, *args, extra={"spider": self.crawler.spider})

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        started = time.perf_counter()
        try:
            if self.interruptible and self.runtime.should_stop():
                raise Interrupted(f"{item_source(adapter)}: the crawl is stopping")
            await self.run(item, adapter)
        except Interrupted:
            await self.runtime.rollback(item)
            self.conclude("interrupted")
            raise
        except IngestDrop:
            await self.runtime.rollback(item)
            raise
        except Exception as exc:
            source = item_source(adapter)
            backend = self.failed_backend(item)
            leftovers = await self.runtime.rollback(item)
            self.conclude("failed")
            self.log(logging.ERROR, "%s failed for %s: %s: %s", self.name, source, type(exc).__name__, exc)
            for leftover in leftovers:
                self.count("undo_failed")
                self.log(logging.ERROR, "could not undo %s for %s", leftover, source)
            if disk_full(exc):
                self.runtime.stop(f"{self.name} failed for {source}: the disk is full ({type(exc).__name__}: {exc}); "
                                  "free some space, then run the crawl again", reason=DISK_FULL)
            elif backend is not None:
                self.runtime.write_failed(backend, f"{self.name} failed for {source}: {type(exc).__name__}: {exc}")
            raise StageFailed(f"{self.name} failed for {source}: {exc}") from exc
        finally:
            # Wall time per stage, summed: the ingest summary divides it by the items.
            self.stats.inc_value(f"emomo/{self.name}/ms", round((time.perf_counter() - started) * 1000))
            self.stats.inc_value(f"emomo/{self.name}/items")
        return item

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        raise NotImplementedError

    def failed_backend(self, item: Any) -> str | None:
        return self.backend

    def state(self, item: Any) -> ItemState:
        return self.runtime.state(item)
