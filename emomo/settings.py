"""Scrapy settings of the Emomo project (the ``scrapy.settings`` entry point of the egg)."""

from __future__ import annotations

from emomo.defaults import (  # noqa: F401
    EMOMO_CONFIG,
    EMOMO_EMBEDDING,
    EMOMO_ENABLED,
    EMOMO_FORCE,
    EMOMO_FRONTIER,
    EMOMO_FRONTIER_BUSY_TTL,
    EMOMO_FRONTIER_CRAWL,
    EMOMO_MAX_ITEMS_IN_FLIGHT,
    EMOMO_STATS_FILE,
)

BOT_NAME = "emomo"
SPIDER_MODULES = ["spiders"]
NEWSPIDER_MODULE = "spiders"
COMMANDS_MODULE = "emomo.commands"

TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"

# The stages in the seed's order; each is one module in pipelines/.
ITEM_PIPELINES = {
    "pipelines.read.ReadPipeline": 100,
    "pipelines.dedupe.DedupePipeline": 200,
    "pipelines.reuse.ReusePipeline": 300,
    "pipelines.describe.DescribePipeline": 400,
    "pipelines.store.StorePipeline": 500,
    "pipelines.record.RecordPipeline": 600,
    "pipelines.embed.EmbedPipeline": 700,
    "pipelines.index.IndexPipeline": 800,
}

EXTENSIONS = {
    "emomo.ingest.runtime.IngestRuntime": 100,
    "emomo.summary.IngestSummary": 500,
    "emomo.progress.IngestProgress": 505,
    "emomo.statsfile.StatsFile": 510,
}
# Responses waiting for the pipelines (fabiaoqing images): bounded, not unbounded.
SCRAPER_SLOT_MAX_ACTIVE_SIZE = 50_000_000

ROBOTSTXT_OBEY = True
LOG_LEVEL = "INFO"
# Crawls read local files and write our own stores: no cookies, and no console
# or remote-control listener that would execute code sent to a port.
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False
FEED_EXPORT_ENCODING = "utf-8"
