"""Scrapy settings of the Emomo project (the ``scrapy.settings`` entry point of the egg)."""

from __future__ import annotations

BOT_NAME = "emomo"
SPIDER_MODULES = ["spiders"]
NEWSPIDER_MODULE = "spiders"
COMMANDS_MODULE = "emomo.commands"

TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"

# The ingest pipelines, the runtime and its extensions, and every EMOMO_* default.
ADDONS = {"emomo.addon.EmomoAddon": 0}

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
