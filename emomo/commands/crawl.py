"""``scrapy crawl``, with the meme spiders' arguments, config and backends checked before the crawl.

Scrapy's own command would report a bad ``-a embedding`` as a traceback from
inside the crawler; this one prints the one-line cause and exits with 2. A
crawl that stopped early (a refused API key) exits with 1.
"""

from __future__ import annotations

import argparse
import logging

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.exceptions import UsageError
from scrapy.spiderloader import get_spider_loader

from emomo.errors import ConfigError
from emomo.spider import MemeSpider

logger = logging.getLogger("emomo.crawl")


class Command(ScrapyCrawlCommand):
    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            super().run(args, opts)  # Scrapy's own usage errors
            return
        assert self.settings is not None and self.crawler_process is not None
        try:
            spidercls = get_spider_loader(self.settings).load(args[0])
        except KeyError:
            raise UsageError(f"Spider not found: {args[0]}", print_help=False) from None
        if issubclass(spidercls, MemeSpider):
            try:
                spidercls.preflight(self.settings, dict(opts.spargs))
            except (ConfigError, UsageError) as exc:
                # In the log too: a scrapyd job's log is where its operator looks.
                logger.error("Cannot start the crawl: %s", exc)
                raise UsageError(str(exc), print_help=False) from None
        crawler = self._create_crawler(args[0])
        self.crawler_process.crawl(crawler, **opts.spargs)
        self.crawler_process.start()
        if self.crawler_process.bootstrap_failed:
            self.exitcode = 1
        elif crawler.stats is not None and crawler.stats.get_value("emomo/ingest/stopped"):
            self.exitcode = 1
