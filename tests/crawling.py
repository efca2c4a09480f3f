"""Crawls in the test process: the real spiders, pipelines, extensions and backends, built by
Scrapy's AsyncCrawlerRunner in the order ``scrapy crawl`` builds them (the spider first: its
arguments become settings) and run on asyncio (Scrapy's reactorless mode, the aiohttp
download handler), with the crawl's stats as Scrapy keeps them and its log captured.

What only a real process shows (exit codes, signals, scrapyd) stays in subprocess tests
(conftest.scrapy); everything else runs here, without a new interpreter, Scrapy import and
model load per crawl.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrapy.crawler import AsyncCrawlerRunner
from scrapy.spiderloader import get_spider_loader
from scrapy.utils.project import get_project_settings
from scrapy.utils.test import get_reactor_settings

LOG_FORMAT = "%(asctime)s [%(name)s] %(levelname)s: %(message)s"


@dataclass
class Crawl:
    stats: dict[str, Any]
    log: str

    def stat(self, key: str) -> Any:
        """A stat the crawl recorded; a key it never recorded fails the test (a typo must not
        read as 0). For an outcome that must not have happened: ``key not in crawl.stats``."""
        if key not in self.stats:
            near = difflib.get_close_matches(key, list(self.stats), n=3)
            raise KeyError(f"the crawl recorded no stat {key!r}" + (f"; near: {near}" if near else ""))
        return self.stats[key]

    @property
    def finish_reason(self) -> str:
        return str(self.stats.get("finish_reason", ""))

    def summary(self) -> str:
        lines = [line for line in self.log.splitlines() if "Ingest summary:" in line]
        assert lines, f"no ingest summary in the log:\n{self.log[-3000:]}"
        return lines[-1]

    def lines(self, text: str, level: str | None = None) -> list[str]:
        return [line for line in self.log.splitlines() if text in line and (level is None or f"] {level}:" in line)]


@contextmanager
def environment(cwd: Path, env: Mapping[str, str] | None) -> Iterator[None]:
    """Run in ``cwd`` (relative config paths resolve there) with ``env`` over os.environ, and no
    EMOMO_* variable of the test process's own."""
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    for key in [k for k in os.environ if k.startswith("EMOMO_")]:
        del os.environ[key]
    os.environ.update(env or {})
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


@contextmanager
def captured_log() -> Iterator[list[str]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(logging.DEBUG)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def run_crawl(workdir: Path, spider: str, *, settings: Mapping[str, Any] | None = None,
              env: Mapping[str, str] | None = None, **arguments: str) -> Crawl:
    """``scrapy crawl SPIDER -a k=v ... -s K=V ...`` in this process, from ``workdir``: the same
    checks before the crawl as the command, then the crawl; its stats and its log."""
    from emomo.spider import MemeSpider

    with environment(workdir, env), captured_log() as lines:
        project = get_project_settings()
        project.setdict(dict(settings or {}), priority="cmdline")
        spidercls = get_spider_loader(project).load(spider)
        if issubclass(spidercls, MemeSpider):
            spidercls.preflight(project, dict(arguments))
        project.setdict(get_reactor_settings() | {"TELNETCONSOLE_ENABLED": False}, priority="cmdline")
        crawler = AsyncCrawlerRunner(project).create_crawler(spidercls)
        asyncio.run(crawler.crawl_async(**arguments))
        assert crawler.stats is not None
        return Crawl(dict(crawler.stats.get_stats()), "\n".join(lines))
