"""``scrapy crawl fabiaoqing [-a start_page=N] [-a max_pages=N] [-a limit=N] [-a output=ingest|staging]
[-a base_url=URL] [-a embedding=NAME] [-a resume=1] [-a frontier=redis://HOST:PORT/DB [-a crawl=NAME]]``"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import scrapy
from scrapy import signals
from scrapy.exceptions import DownloadCancelledError, UsageError
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from emomo.frontier import Frontier, SharedPageTracker, check_url, default_crawl_name, frontier_key, frontier_settings
from emomo.items import MemeItem
from emomo.netlog import quiet_network_tracebacks
from emomo.sources import fabiaoqing as site
from emomo.spider import SOURCE_UNREACHABLE, Argument, MemeSpider, choice, flag, positive_int

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings


def base_url(value: Any) -> str:
    url = (str(value or "") or site.DEFAULT_BASE_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"-a base_url={value}: expected an http(s) URL")
    return url


def failure_kind(failure: Failure) -> tuple[str, str]:
    """How a request that did not come is counted (``skipped/<kind>``) and said."""
    error = failure.value
    if isinstance(error, HttpError):
        status = error.response.status
        return f"http_{status}", f"not downloaded: HTTP {status}"
    if isinstance(error, DownloadCancelledError):
        return "too_large", f"not downloaded: {error}"
    return "download_error", f"not downloaded: {type(error).__name__}: {error}"


class FabiaoqingSpider(MemeSpider):
    """Crawl fabiaoqing.com's list pages and ingest (or stage) the images they list.

    Walks the list pages in order and downloads the images they list (with the site's
    Referer), until a page lists nothing, ``max_pages`` pages or ``limit`` images. Images
    whose source id is already ingested (or staged) are not downloaded again.

    ``resume=1`` starts after the last page whose images were all handled, a cursor kept
    with the data (the database, or the staging folder). JOBDIR works as for any spider.

    ``frontier=redis://…`` shares the crawl with every worker started with the same arguments
    (emomo.frontier): list pages and images are taken from one queue in Redis, each fetched
    once, and the crawl ends when the queue is drained and no worker is busy. ``limit`` then
    counts the images this worker found.
    """

    name = "fabiaoqing"
    # Polite by default, each overridable with -s: AutoThrottle never goes below
    # DOWNLOAD_DELAY, so at most about 2 requests a second reach the site (and its CDN).
    custom_settings = {
        "ROBOTSTXT_OBEY": True,
        "AUTOTHROTTLE_ENABLED": True,
        "AUTOTHROTTLE_START_DELAY": 1.0,
        "AUTOTHROTTLE_TARGET_CONCURRENCY": 1.0,
        "DOWNLOAD_DELAY": 0.5,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 2,
        "DOWNLOAD_TIMEOUT": 30,
        "DOWNLOAD_MAXSIZE": 10 * 1024 * 1024,
        "RETRY_TIMES": 3,
        # The site wants TLS 1.2 and accepts only older ciphers (the original crawler's finding).
        "DOWNLOAD_TLS_MIN_VERSION": "TLSv1.2",
        "DOWNLOAD_TLS_MAX_VERSION": "TLSv1.2",
        "DOWNLOADER_CLIENT_TLS_CIPHERS": "DEFAULT:@SECLEVEL=1",
        "USER_AGENT": "Mozilla/5.0 (compatible; emomo-crawler/0.1)",
    }

    arguments = (
        *MemeSpider.arguments,
        Argument("start_page", "N", "the first list page (default 1)", positive_int, 1),
        Argument("max_pages", "N", "at most N list pages", positive_int),
        Argument("output", "ingest|staging", "ingest the images (default), or append them to "
                 "<sources.staging.path>/fabiaoqing/ for `scrapy crawl staging`", choice("ingest", "staging"),
                 "ingest"),
        Argument("base_url", "URL", "the site (default: https://fabiaoqing.com)", lambda name, value: base_url(value)),
        Argument("resume", "1", "start after the last page whose images were all handled", flag),
        Argument("frontier", "redis://HOST:PORT/DB", "share the crawl with the workers started with the same "
                 "arguments (emomo.frontier)", attr="frontier_url"),
        Argument("crawl", "NAME", "the name the workers of one shared crawl meet under (default: the collection "
                 "and the site)", attr="crawl_name"),
    )
    start_page: int
    max_pages: int | None
    output: str
    base_url: str
    resume: bool
    frontier_url: str
    crawl_name: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._closing: asyncio.Future[None] | None = None
        self.frontier: Frontier | None = None
        self.known: set[str] = set()
        self.tracker: site.PageTracker | SharedPageTracker
        self.requested = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        output = kwargs.get("output", "ingest")
        if output == "staging":
            # Write a staging folder instead of ingesting (set before the settings freeze).
            crawler.settings.set("ITEM_PIPELINES", {"pipelines.staging_writer.StagingWriterPipeline": 100},
                                 priority="spider")
            crawler.settings.set("EMOMO_STAGING_SOURCE", site.SOURCE, priority="spider")
        spider = super().from_crawler(crawler, *args, **kwargs)
        quiet_network_tracebacks(str(crawler.settings.get("LOG_LEVEL")))
        if spider.frontier_url:
            crawler.settings.setdict(frontier_settings(spider.frontier_url, spider.frontier_key), priority="spider")
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            crawler.signals.connect(spider._item_done, signal=signal)
        return spider

    def configure(self, settings: BaseSettings) -> None:
        super().configure(settings)
        self.frontier_url = self.frontier_url or settings.get("EMOMO_FRONTIER") or ""
        if not self.frontier_url:
            return
        url = check_url(self.frontier_url)
        where = f"-a frontier={url}"
        if self.output == "staging":
            raise UsageError(f"{where}: a staging folder is one machine's; share the crawl with output=ingest")
        if self.config.database.driver == "sqlite":
            raise UsageError(f"{where}: the workers of a shared crawl need one database, and database.driver is "
                             "sqlite (a file of one machine): set database.driver: postgres and DATABASE_URL")
        if settings.get("JOBDIR"):
            raise UsageError(f"{where}: the queue is kept in Redis, which resumes the crawl; leave JOBDIR unset")
        crawl = self.crawl_name or settings.get("EMOMO_FRONTIER_CRAWL") or default_crawl_name(
            self.config.embedding(self.embedding or settings.get("EMOMO_EMBEDDING") or None).collection
            or self.config.qdrant.collection, self.base_url)
        self.frontier_key = frontier_key(self.name, crawl)
        try:
            self.frontier = Frontier.from_url(url, self.frontier_key)
            self.frontier.server.ping()
        except Exception as exc:
            raise UsageError(f"{where}: cannot reach Redis: {exc}") from None

    def needs_backends(self) -> bool:
        return self.output == "ingest"

    # --- the cursor and the ids already handled -------------------------------

    async def _load_state(self) -> str | None:
        if self.output == "staging":
            import os

            from emomo.sources.staging import CursorFile, manifest_ids

            folder = os.path.join(self.config.sources.staging.path, site.SOURCE)
            self._cursor_file = CursorFile(folder)
            self.known = await asyncio.to_thread(manifest_ids, folder)
            return self._cursor_file.get()
        runtime = self.runtime()
        self.known = await runtime.repo.source_ids(site.SOURCE)
        return await runtime.repo.get_cursor(site.SOURCE)

    def _save_cursor(self, page: int) -> None:
        self.logger.debug("List pages up to %d are done", page)
        assert self.crawler.stats is not None
        self.crawler.stats.set_value("emomo/fabiaoqing/cursor", page)
        if self.output == "staging":
            self._cursor_file.set(str(page))
            return
        self.runtime().background(self.runtime().repo.set_cursor(site.SOURCE, str(page)))

    # --- requests -------------------------------------------------------------

    async def start(self) -> AsyncIterator[Any]:
        # With JOBDIR, Scrapy restores spider.state with the queue: the pages whose image
        # requests come back are known again, so the cursor goes on advancing. The tracker is
        # set before the first await: the restored requests may be parsed while start() waits.
        saved: dict[str, Any] = getattr(self, "state", None) or {}
        if "pages" in saved:
            self.first_page = int(saved["first_page"])
            self.tracker = site.PageTracker.from_dict(saved["pages"], self._save_cursor)
        cursor = await self._load_state()
        page = self.start_page
        if self.resume and cursor:
            page = int(cursor) + 1
            self.logger.info("Resuming after list page %s", cursor)
        if self.frontier is not None:
            # Shared with the other workers: the first to start sets the first page.
            self.tracker = self.frontier.tracker(page, self._save_cursor)
            self.first_page = self.tracker.first_page
        elif "pages" not in saved:
            self.first_page = page
            self.tracker = site.PageTracker(page, self._save_cursor)
        if hasattr(self, "state") and isinstance(self.tracker, site.PageTracker):
            self.state["first_page"] = self.first_page
            self.tracker.on_change = lambda pages: self.state.__setitem__("pages", pages)
        self.logger.info("%d fabiaoqing images already %s", len(self.known),
                         "staged" if self.output == "staging" else "ingested")
        yield self.list_request(page)

    def list_request(self, page: int) -> scrapy.Request:
        return scrapy.Request(site.list_url(self.base_url, page), callback=self.parse_list,
                              errback=self.list_failed, cb_kwargs={"page": page})

    def list_failed(self, failure: Failure) -> None:
        """A list page that did not come (after Scrapy's retries): said in one line, counted. When
        no list page ever came, the site is out of reach and the crawl did not do its job."""
        request = failure.request  # type: ignore[attr-defined]
        kind, reason = failure_kind(failure)
        self.skip(kind, request.url, reason)
        self.done_with(request)
        assert self.crawler.stats is not None
        if not self.crawler.stats.get_value("emomo/fabiaoqing/pages") and not self._closing:
            self.logger.error("Cannot reach %s: its first list page did not come", self.base_url)
            # As CloseSpider does, without the traceback Scrapy logs for an errback that raises.
            self._closing = asyncio.ensure_future(
                self.crawler.engine.close_spider_async(reason=SOURCE_UNREACHABLE))

    def parse_list(self, response: Response, page: int) -> Iterator[scrapy.Request]:
        try:
            yield from self._parse_list(response, page)
        finally:
            self.done_with(response.request)  # every request it yielded is queued by now

    def _parse_list(self, response: Response, page: int) -> Iterator[scrapy.Request]:
        entries = site.parse_list(response.text, response.url)
        self.count("pages")
        if not entries:
            self.logger.info("List page %d lists no memes: the end of the list", page)
            self.tracker.page_parsed(page, 0)
            return
        requests = []
        # Each image once (a page may list one twice), up to the limit.
        fresh = list(dict.fromkeys(e.source_id for e in entries if e.source_id not in self.known))
        if self.limit is not None:
            fresh = fresh[:max(0, self.limit - self.requested)]
        # One round trip for the page: which of its images no other worker listed first.
        asked = set(fresh)
        first = self.frontier.first_listings(fresh) if self.frontier else asked
        for entry in entries:
            if entry.source_id in self.known:
                self.count("known")
                continue
            if entry.source_id not in asked:
                break  # past the limit
            if entry.source_id not in first:
                self.count("known")  # another worker listed it first
                continue
            self.known.add(entry.source_id)
            self.requested += 1
            requests.append(scrapy.Request(
                entry.image_url, callback=self.parse_image, errback=self.image_failed,
                headers={"Referer": site.referer(self.base_url)},
                cb_kwargs={"page": page, "entry": {
                    "source_id": entry.source_id, "text": entry.text, "tags": entry.tags,
                    "page_url": entry.page_url}},
            ))
        self.tracker.page_parsed(page, len(requests))
        yield from requests
        more_pages = self.max_pages is None or page - self.first_page + 1 < self.max_pages
        if more_pages and (self.limit is None or self.requested < self.limit):
            yield self.list_request(page + 1)

    def parse_image(self, response: Response, page: int, entry: dict[str, Any]) -> Iterator[MemeItem]:
        self.count("images")
        item = MemeItem(source_type=site.SOURCE, source_id=entry["source_id"], url=response.url,
                        body=response.body, category=site.CATEGORY, tags=list(entry["tags"]),
                        page_url=entry["page_url"])
        yield item

    def image_failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        kind, reason = failure_kind(failure)
        self.skip(kind, request.url, reason)
        self.tracker.image_done(request.cb_kwargs["page"])
        self.done_with(request)

    def _item_done(self, item: Any, response: Response | None = None, **_: Any) -> None:
        # Scrapy passes the response an item came from: its request names the list page.
        page = response.cb_kwargs.get("page") if response is not None else None
        if page is not None:
            self.tracker.image_done(page)
        if response is not None and response.request is not None:
            self.done_with(response.request)

    def done_with(self, request: scrapy.Request | None) -> None:
        """The request's work is over here: on a shared frontier, it is no longer this worker's
        to finish (had the worker died before, another would have taken it over)."""
        if self.frontier is not None and request is not None:
            self.frontier.done_with(request)
