"""``scrapy crawl``, with the meme spiders' arguments, config and backends checked before the crawl.

Scrapy's own command would report a bad ``-a embedding`` as a traceback from
inside the crawler, and a usage block after it; this one logs the one-line
cause and exits with 2. What only the backends can tell is checked when the crawl
opens them, which closes the spider with its own finish reason; how the crawl
ended sets the exit code (``EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.crawler import Crawler
from scrapy.exceptions import UsageError
from scrapy.spiderloader import get_spider_loader
from scrapy.utils.log import configure_logging

from emomo.errors import DISK_FULL, ConfigError
from emomo.ingest.runtime import BACKEND_UNAVAILABLE
from emomo.spider import NOTHING_USABLE, SOURCE_UNREACHABLE, SOURCE_UNREADABLE, MemeSpider

logger = logging.getLogger("emomo.crawl")

#: exit code of a crawl stopped by a signal (Ctrl-C, SIGTERM, scrapyd's cancel): run it again to go on
INTERRUPTED = 3
#: finish reasons that are no success, and the exit code of each (any other reason: 0)
EXIT_CODES = {
    # Spider.start() raised: some of the source may never have been read.
    "start_error": 1,
    # The backends could not be opened (a locked folder, a refused key, another dimension),
    # or the source went away between the checks and the crawl: as a refused start.
    BACKEND_UNAVAILABLE: 2,
    SOURCE_UNREADABLE: 2,
    # Stopped early: an API key was refused, or the writes kept failing (an outage).
    "refused_key": 1,
    "write_failures": 1,
    DISK_FULL: 1,
    # The source could not be reached at all (a site's first page never came), or held nothing
    # that could be taken (every manifest line invalid, every file broken).
    SOURCE_UNREACHABLE: 1,
    NOTHING_USABLE: 1,
    # One signal: the items in flight were finished or dropped, the summary written.
    "shutdown": INTERRUPTED,
    # Two signals: no finish reason was ever recorded (the reactor stopped at once).
    "": INTERRUPTED,
}


def exit_on_signal() -> None:
    """SIGINT and SIGTERM end the process at once with the interrupted exit code."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: os._exit(INTERRUPTED))


class Command(ScrapyCrawlCommand):
    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        if len(args) != 1:
            return
        assert self.settings is not None
        try:
            spidercls = get_spider_loader(self.settings).load(args[0])
        except KeyError:
            names = ", ".join(sorted(get_spider_loader(self.settings).list()))
            raise UsageError(f"Spider not found: {args[0]} (spiders: {names})", print_help=False) from None
        if issubclass(spidercls, MemeSpider):
            # Before the crawler process exists (and logs Scrapy's banner): a refusal is one line.
            try:
                spidercls.preflight(self.settings, dict(opts.spargs))
            except (ConfigError, UsageError) as exc:
                # In the log: a scrapyd job's log (LOG_FILE) is where its operator looks.
                configure_logging(self.settings)
                logger.error("Cannot start the crawl: %s", exc)
                logging.shutdown()
                raise SystemExit(2) from None

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            super().run(args, opts)  # Scrapy's own usage errors
            return
        assert self.settings is not None and self.crawler_process is not None
        crawler = self.crawler_process.create_crawler(args[0])
        self.crawler_process.crawl(crawler, **opts.spargs)
        # Outside the crawl a signal exits at once with the interrupted code. Scrapy installs its
        # own handlers while the crawl runs; when the reactor stops, Twisted puts back the ones it
        # found, these, so a second Ctrl-C while threads wind down cannot end in a traceback (-2).
        exit_on_signal()
        self.crawler_process.start()
        exit_on_signal()
        self.exitcode = self.exit_code(crawler)
        if self.exitcode == INTERRUPTED:
            # Interrupted, everything written and closed: leave now. The interpreter's own teardown
            # (joining idle engine threads) is where an impatient second Ctrl-C used to land, as a
            # traceback and exit code -2.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(INTERRUPTED)

    def exit_code(self, crawler: Crawler) -> int:
        assert self.crawler_process is not None
        if self.crawler_process.bootstrap_failed:
            return 1
        stats = crawler.stats
        if stats is None:
            return 0
        reason = str(stats.get_value("finish_reason", ""))
        if reason in EXIT_CODES:
            return EXIT_CODES[reason]
        return 1 if stats.get_value("emomo/ingest/stopped") else 0
