"""The few Scrapy and scrapy-redis internals Emomo still leans on, each checked here so that an
upgrade which moves one fails by name, with where it is used, instead of in a crawl."""

from __future__ import annotations

import inspect

from scrapy.core.downloader import Downloader
from scrapy.core.downloader import Slot as DownloadSlot
from scrapy.core.engine import ExecutionEngine, _Slot
from scrapy.core.scraper import Scraper
from scrapy.core.scraper import Slot as ScraperSlot
from scrapy_redis.queue import Base as RedisQueue


def test_the_scraper_counts_items_in_process_and_can_be_asked_whether_it_is_done() -> None:
    # emomo.ingest.runtime: admission counts the items in the pipelines; a scraper closing while
    # items from start() are in flight is poked to check again (Scrapy 2.19 checks only after a
    # response's items).
    assert ScraperSlot().itemproc_size == 0, "Scraper's Slot.itemproc_size is gone (emomo.ingest.runtime)"
    assert callable(getattr(Scraper, "_check_if_closing", None)), (
        "Scraper._check_if_closing is gone (emomo.ingest.runtime._poke_scraper)")
    assert "is_idle" in dir(ScraperSlot) and "closing" in inspect.getsource(ScraperSlot.__init__)


def test_the_engine_can_be_woken_and_the_downloader_says_what_it_transfers() -> None:
    # emomo.frontier: an idle worker asks its engine for requests as soon as the shared queue
    # fills (the engine's own wake-up), and takes a request only when its last ones are on the wire.
    assert "nextcall" in inspect.signature(_Slot.__init__).parameters, "the engine's _Slot.nextcall is gone"
    assert "self._slot" in inspect.getsource(ExecutionEngine), "ExecutionEngine._slot is gone (emomo.frontier)"
    assert DownloadSlot(1, 0).transferring == set(), "the downloader Slot.transferring is gone (emomo.frontier)"
    assert "self.active" in inspect.getsource(Downloader.__init__), "Downloader.active is gone (emomo.frontier)"


def test_a_redis_queue_decodes_what_it_stored() -> None:
    # emomo.frontier takes a request's stored form out of Redis itself (take and hold in one script).
    assert callable(getattr(RedisQueue, "_decode_request", None)), "scrapy_redis Base._decode_request is gone"
