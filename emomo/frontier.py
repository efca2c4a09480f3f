"""``-a frontier=redis://HOST:PORT/DB``: several processes share one crawl of a site through Redis.

scrapy-redis holds the shared request queue and dupefilter: every worker started with the same
arguments pushes the requests its callbacks yield there and takes the next one from there, so
list pages and images are spread over the workers and none is fetched twice. This module adds
what scrapy-redis leaves to its users:

- **One crawl, one key.** The workers of a crawl meet under ``emomo:<spider>:<crawl>``; the name
  defaults to the collection and the site, so the same arguments mean the same crawl.
- **An end.** scrapy-redis spiders wait for more work forever (or for a guessed idle timeout).
  Here a worker marks itself busy in Redis *before* it takes a request, and idle when its engine
  is idle (nothing queued, downloading or in the pipelines). The crawl is over when the queue is
  empty and no worker is busy, read in one Redis script: a busy worker is the only one that can
  add requests, and it adds them before it goes idle, so that state cannot change afterwards.
  A worker that dies stops renewing its mark, which lapses after ``EMOMO_FRONTIER_BUSY_TTL`` seconds.
- **Shared bookkeeping.** Which images are already listed (an image listed on two pages is
  requested once, whoever parsed the pages), and the page tracker whose cursor ``resume=1`` reads.

The frontier's keys stay in Redis while the crawl is unfinished: workers started again with the
same arguments go on with its queue. The worker that sees the crawl finished deletes them. The
requests a killed worker had taken are lost with it; their list page then never counts as done,
so the cursor stays before it and the next ``resume=1`` crawl lists it again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import DontCloseSpider, UsageError
from scrapy_redis.connection import get_redis
from scrapy_redis.scheduler import Scheduler as RedisScheduler
from twisted.internet import task, threads
from twisted.internet.defer import Deferred

from emomo.addon import SETTINGS

#: the default of EMOMO_FRONTIER_BUSY_TTL
BUSY_TTL: int = SETTINGS["EMOMO_FRONTIER_BUSY_TTL"]

if TYPE_CHECKING:
    from typing import Self

    from redis import Redis
    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Request
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

# The crawl is over: nothing queued, nothing held (a dead worker's requests are queued again
# first), and no worker marked busy whose mark is still alive.
_DONE = """
if redis.call('ZCARD', KEYS[1]) > 0 or redis.call('SCARD', KEYS[3]) > 0 then return 0 end
local now = tonumber(redis.call('TIME')[1])
local marks = redis.call('HGETALL', KEYS[2])
for i = 2, #marks, 2 do
  if tonumber(marks[i]) > now then return 0 end
end
return 1
"""

# Take the next request and hold it: the queue's first entry moves to this worker's held hash
# (an id -> score and request), and the worker is marked busy, all at once. KEYS: queue, held,
# busy, holders; ARGV: worker, ttl. Returns {id, request} or nil.
_TAKE = """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return nil end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, 0)
local now = tonumber(redis.call('TIME')[1])
redis.call('HSET', KEYS[3], ARGV[1], now + tonumber(ARGV[2]))
redis.call('SADD', KEYS[4], ARGV[1])
local id = redis.call('HINCRBY', KEYS[2], '#', 1)
redis.call('HSET', KEYS[2], id, first[2] .. ' ' .. first[1])
return {id, first[1]}
"""

# Put back in the queue what workers whose busy mark lapsed (killed mid-crawl) were holding,
# or what worker ARGV[2] holds (it stops before its requests are done). KEYS: queue, busy,
# holders; ARGV: the held hash's key prefix, a worker or ''. Returns how many requests.
_TAKE_OVER = """
local now = tonumber(redis.call('TIME')[1])
local moved = 0
for _, worker in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local mark = redis.call('HGET', KEYS[2], worker)
  if worker == ARGV[2] or not mark or tonumber(mark) <= now then
    local held = ARGV[1] .. worker
    local entries = redis.call('HGETALL', held)
    for i = 1, #entries, 2 do
      if entries[i] ~= '#' then
        local value = entries[i + 1]
        local space = string.find(value, ' ', 1, true)
        redis.call('ZADD', KEYS[1], tonumber(string.sub(value, 1, space - 1)), string.sub(value, space + 1))
        moved = moved + 1
      end
    end
    redis.call('DEL', held)
    redis.call('SREM', KEYS[3], worker)
    redis.call('HDEL', KEYS[2], worker)
  end
end
return moved
"""

# Mark this worker busy until now + ttl, by the Redis server's clock (workers' clocks may differ).
_BUSY = """
local now = tonumber(redis.call('TIME')[1])
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
return now
"""

# Advance the cursor over the pages that are parsed and have no image outstanding; returns the
# last page now done, or 0 when the cursor did not move. KEYS: next page, parsed set, outstanding hash.
_ADVANCE = """
local function advance()
  local nxt = tonumber(redis.call('GET', KEYS[1]))
  local start = nxt
  while redis.call('SISMEMBER', KEYS[2], nxt) == 1 and tonumber(redis.call('HGET', KEYS[3], nxt) or '0') <= 0 do
    redis.call('HDEL', KEYS[3], nxt)
    redis.call('SREM', KEYS[2], nxt)
    nxt = nxt + 1
  end
  if nxt == start then return 0 end
  redis.call('SET', KEYS[1], nxt)
  return nxt - 1
end
if ARGV[1] == 'parsed' then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('HINCRBY', KEYS[3], ARGV[2], ARGV[3])
elseif redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
else
  return 0
end
return advance()
"""


#: seconds between an idle worker's looks at the shared queue
WAKE_INTERVAL = 0.5
#: the request meta key of a request this worker holds (its id in the held hash)
HELD = "emomo_frontier_held"


def frontier_key(spider: str, crawl: str) -> str:
    return f"emomo:{spider}:{crawl}"


def default_crawl_name(collection: str, base_url: str) -> str:
    """The workers of one collection crawling one site meet under one name."""
    return f"{collection}:{hashlib.sha1(base_url.encode()).hexdigest()[:10]}"


def check_url(url: str) -> str:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"-a frontier={url}: expected a Redis URL, redis://HOST:PORT/DB")
    return url


def frontier_settings(url: str, key: str) -> dict[str, Any]:
    """The Scrapy settings that put a crawl's requests in Redis under ``key``."""
    return {
        "SCHEDULER": "emomo.frontier.FrontierScheduler",
        "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
        "SCHEDULER_QUEUE_CLASS": "scrapy_redis.queue.PriorityQueue",
        "SCHEDULER_QUEUE_KEY": f"{key}:requests",
        "SCHEDULER_DUPEFILTER_KEY": f"{key}:dupefilter",
        # Several workers share the queue: the one that sees the crawl finished clears it, not
        # each worker as it closes (scrapy-redis's default would empty it under the others).
        "SCHEDULER_PERSIST": True,
        "REDIS_URL": url,
        "EMOMO_FRONTIER_KEY": key,
    }


class Frontier:
    """A crawl's shared state in Redis, besides scrapy-redis's queue and dupefilter."""

    def __init__(self, server: Redis, key: str, worker: str = "", busy_ttl: int = BUSY_TTL) -> None:
        self.server = server
        self.key = key
        #: this process's name among the workers (the spider's and the scheduler's agree)
        self.worker = worker or _worker_name()
        self.busy_ttl = busy_ttl
        self.is_busy = False
        self._done = server.register_script(_DONE)
        self._busy = server.register_script(_BUSY)
        self._take = server.register_script(_TAKE)
        self._take_over = server.register_script(_TAKE_OVER)

    @classmethod
    def from_url(cls, url: str, key: str, worker: str = "", busy_ttl: int = BUSY_TTL) -> Self:
        return cls(get_redis(url=url), key, worker, busy_ttl)

    @property
    def queue_key(self) -> str:
        return f"{self.key}:requests"

    def mark_busy(self) -> None:
        self._busy(keys=[f"{self.key}:busy"], args=[self.worker, self.busy_ttl])
        self.is_busy = True

    def mark_idle(self) -> None:
        # Idle means every request taken is done: nothing is held any more.
        pipe = self.server.pipeline()
        pipe.hdel(f"{self.key}:busy", self.worker)
        pipe.delete(self.held_key)
        pipe.srem(f"{self.key}:holders", self.worker)
        pipe.execute()
        self.is_busy = False

    @property
    def held_key(self) -> str:
        return f"{self.key}:held:{self.worker}"

    def take(self) -> tuple[str, bytes] | None:
        """The next request, held by this worker until ``release``: (its id, its encoding)."""
        taken = self._take(keys=[self.queue_key, self.held_key, f"{self.key}:busy", f"{self.key}:holders"],
                           args=[self.worker, self.busy_ttl])
        if not taken:
            return None
        self.is_busy = True
        return str(int(taken[0])), bytes(taken[1])

    def release(self, held: str) -> None:
        """A held request is done (parsed, its item out of the pipelines, failed, or queued again)."""
        self.server.hdel(self.held_key, held)

    def done_with(self, request: Request) -> None:
        """``request`` is done with, if this worker held it."""
        held = request.meta.pop(HELD, None)
        if held is not None:
            self.release(held)

    def take_over(self, worker: str = "") -> int:
        """Queue again what dead workers held (and ``worker``'s); how many requests."""
        return int(self._take_over(keys=[self.queue_key, f"{self.key}:busy", f"{self.key}:holders"],
                                   args=[f"{self.key}:held:", worker]))

    def give_back(self) -> int:
        """Queue again what this worker holds: it stops before their work is done."""
        self.is_busy = False
        return self.take_over(self.worker)

    def renew(self) -> None:
        if self.is_busy:
            self.mark_busy()

    def done(self) -> bool:
        return bool(self._done(keys=[self.queue_key, f"{self.key}:busy", f"{self.key}:holders"]))

    def first_listings(self, source_ids: list[str]) -> set[str]:
        """Those of ``source_ids`` this worker is the first to find on a list page in this crawl:
        one round trip for a page's images."""
        if not source_ids:
            return set()
        pipe = self.server.pipeline(transaction=False)
        for source_id in source_ids:
            pipe.sadd(f"{self.key}:listed", source_id)
        return {source_id for source_id, added in zip(source_ids, pipe.execute(), strict=True) if added}

    def clear(self) -> None:
        """Delete every key of the crawl: the next crawl with these arguments starts afresh."""
        keys = list(self.server.scan_iter(match=f"{self.key}:*", count=1000))
        if keys:
            self.server.delete(*keys)

    def tracker(self, start_page: int, on_advance: Callable[[int], None]) -> SharedPageTracker:
        return SharedPageTracker(self, start_page, on_advance)


class SharedPageTracker:
    """The page tracker of emomo.sources.fabiaoqing.PageTracker, kept in Redis so that every
    worker counts the images of every page: a page is done when the images it listed are, by
    whichever workers. The worker whose image completes a page moves the cursor."""

    def __init__(self, frontier: Frontier, start_page: int, on_advance: Callable[[int], None]) -> None:
        self.server = frontier.server
        key = frontier.key
        self.keys = [f"{key}:next_page", f"{key}:parsed", f"{key}:outstanding"]
        # The first worker sets where the crawl starts; the others (and workers started again on
        # an unfinished crawl) go on from there.
        self.server.set(self.keys[0], start_page, nx=True)
        self.server.set(f"{key}:first_page", start_page, nx=True)
        self.first_page = int(self.server.get(f"{key}:first_page") or start_page)
        self.on_advance = on_advance
        self._script = self.server.register_script(_ADVANCE)

    def page_parsed(self, page: int, images: int) -> None:
        self._moved(self._script(keys=self.keys, args=["parsed", page, images]))

    def image_done(self, page: int) -> None:
        self._moved(self._script(keys=self.keys, args=["done", page]))

    def _moved(self, done_up_to: Any) -> None:
        if int(done_up_to):
            self.on_advance(int(done_up_to))


class FrontierScheduler(RedisScheduler):
    """scrapy-redis's scheduler that knows when the shared crawl is over (see the module)."""

    frontier: Frontier

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        scheduler = super().from_crawler(crawler)
        settings: BaseSettings = crawler.settings
        scheduler.frontier = Frontier(scheduler.server, settings["EMOMO_FRONTIER_KEY"],
                                      busy_ttl=settings.getint("EMOMO_FRONTIER_BUSY_TTL"))
        scheduler.crawler = crawler
        # scrapy-redis counts with the spider argument Scrapy 2.19 deprecates: count here instead.
        scheduler.stats = None
        crawler.signals.connect(scheduler.spider_idle, signal=signals.spider_idle)
        return scheduler

    def open(self, spider: Spider) -> None:
        super().open(spider)
        # One frontier per crawler: the spider's (it marks the pages and images it lists), when
        # it has one, so both speak for the same worker.
        shared = getattr(spider, "frontier", None)
        if isinstance(shared, Frontier) and shared.key == self.frontier.key:
            shared.busy_ttl = self.frontier.busy_ttl
            self.frontier = shared
        # The busy mark's renewal and the look for work talk to Redis off the reactor: a slow
        # answer must not stall the crawl, nor delay the renewal until other workers take over
        # this one's live work.
        self._renewal = task.LoopingCall(threads.deferToThread, self.frontier.renew)
        self._renewal.start(max(1, self.frontier.busy_ttl // 4), now=False)
        self._wake = task.LoopingCall(self._wake_when_work_arrives)
        self._wake.start(WAKE_INTERVAL, now=False)

    def _wake_when_work_arrives(self) -> Deferred[None] | None:
        # An idle engine asks for requests only at its 5 s heartbeat; other workers' list pages
        # (or a dead worker's requests, put back) fill the queue meanwhile. Ask sooner (the
        # engine's own wake-up call, as a finished download makes it).
        if self.frontier.is_busy:
            return None

        def look() -> bool:
            self._take_over()
            return bool(len(self.queue))

        def wake(work: bool) -> None:
            slot = getattr(self.crawler.engine, "_slot", None)
            if work and slot is not None:
                slot.nextcall.schedule()
        found: Deferred[bool] = threads.deferToThread(look)
        return found.addCallback(wake)

    def next_request(self) -> Request | None:
        # Take a request only when the ones taken are all on the wire: Scrapy would otherwise
        # pull up to CONCURRENT_REQUESTS into its downloader, where the other workers could
        # not have them (and a killed worker would lose them).
        if not len(self.queue) or self._waiting_to_download():
            return None
        # Taken, held and marked busy in one step: a worker holding a request is never seen
        # idle, and what a killed worker held goes back to the queue (take_over).
        taken = self.frontier.take()
        if taken is None:
            return None
        held, data = taken
        request: Request = self.queue._decode_request(data)
        request.meta[HELD] = held
        self.crawler.stats.inc_value("scheduler/dequeued/redis")
        return request

    def enqueue_request(self, request: Request) -> bool:
        # A held request coming back (a retry, a redirect) is in the queue again, not held.
        self.frontier.done_with(request)
        queued = bool(super().enqueue_request(request))
        if queued:
            self.crawler.stats.inc_value("scheduler/enqueued/redis")
        return queued

    def _take_over(self) -> None:
        moved = self.frontier.take_over()
        if moved:
            self.crawler.stats.inc_value("emomo/frontier/taken_over", moved)
            logger.warning("Queued again %d requests of a worker that stopped answering (its busy mark "
                           "lapsed)", moved, extra={"spider": self.spider})

    def _waiting_to_download(self) -> bool:
        # A request is waiting when the downloader has it (in a middleware, say robots.txt's,
        # or a download slot's queue) but is not transferring it yet.
        engine = self.crawler.engine
        if engine is None:
            return False
        downloader = engine.downloader
        return len(downloader.active) > sum(len(slot.transferring) for slot in downloader.slots.values())

    def spider_idle(self, spider: Spider) -> None:
        """Scrapy found this worker idle: the crawl ends here only if it is over everywhere."""
        if self.frontier.is_busy:
            self.frontier.mark_idle()
        self._take_over()
        if not self.frontier.done():
            raise DontCloseSpider
        logger.info("The shared frontier %s is drained and no worker is busy: the crawl is over",
                    self.frontier.key, extra={"spider": spider})

    def close(self, reason: str) -> None:
        for loop in (self._renewal, self._wake):
            if loop.running:
                loop.stop()
        try:
            # Stopped early (a signal, a refused key): what this worker took and did not finish
            # goes back to the queue, for the other workers or the next start.
            given = self.frontier.give_back()
            if given:
                logger.info("Gave back %d requests to the shared frontier", given, extra={"spider": self.spider})
            if reason == "finished" and self.frontier.done():
                self.frontier.clear()
        except Exception as exc:  # Redis gone at the end: its keys stay, the busy mark lapses
            logger.warning("Could not update the shared frontier %s: %s", self.frontier.key, exc)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
