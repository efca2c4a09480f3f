"""Emomo as a Scrapy add-on: ``ADDONS = {"emomo.addon.EmomoAddon": 0}`` installs the ingest
pipelines, the runtime and its extensions, and the default of every ``EMOMO_*`` setting (this
module is the one place of them; nothing falls back at the point of use). The project's
settings (emomo.settings) enable it; a project of a user's own can too.

EMOMO_CONFIG      path of a config file over the packaged one (else $EMOMO_CONFIG)
EMOMO_EMBEDDING   embedding configuration to write (spider argument ``embedding``); empty: the default one
EMOMO_FORCE       embed again even when (md5, collection) is already indexed (spider argument ``force``)
EMOMO_ENABLED     False switches the ingest pipelines off (items pass through untouched)
EMOMO_MAX_ITEMS_IN_FLIGHT  items a spider's start() lets into the pipelines at once (backpressure);
                  0: sized to the describer (a few per OCR engine; twice the VLM calls in flight)
EMOMO_STATS_FILE  a path: the crawl's stats are written there as JSON when it closes
EMOMO_FRONTIER    a Redis URL (redis://HOST:PORT/DB): the crawl's requests are shared there with the
                  other workers started with the same arguments (spider argument ``frontier``)
EMOMO_FRONTIER_CRAWL  the name under which the workers of one shared crawl meet (spider argument
                  ``crawl``); empty: the collection and the site
EMOMO_FRONTIER_BUSY_TTL  seconds a worker's busy mark lasts in Redis unless renewed: how long a killed
                  worker holds the end of a shared crawl back
"""

from __future__ import annotations

from typing import Any

from scrapy.settings import BaseSettings
from scrapy.utils.misc import load_object

#: every EMOMO_* setting and its default
SETTINGS: dict[str, Any] = {
    "EMOMO_CONFIG": "",
    "EMOMO_EMBEDDING": "",
    "EMOMO_FORCE": False,
    "EMOMO_ENABLED": True,
    # Items wait on the VLM (~2 s), uploads, embeddings and writes: enough in flight that a slow
    # call never serialises the crawl, few enough that memory stays flat. The describer knows how
    # many (emomo.providers.Describer.admission); a number here overrides it.
    "EMOMO_MAX_ITEMS_IN_FLIGHT": 0,
    "EMOMO_STATS_FILE": "",
    "EMOMO_FRONTIER": "",
    "EMOMO_FRONTIER_CRAWL": "",
    "EMOMO_FRONTIER_BUSY_TTL": 60,
}

#: the stages in the seed's order; each is one module in pipelines/
PIPELINES = {
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


def setting_defaults(settings: BaseSettings) -> None:
    """The EMOMO_* defaults where the settings are silent (commands without a crawler need them too)."""
    for name, value in SETTINGS.items():
        settings.setdefault(name, value, priority="addon")


class EmomoAddon:
    def update_settings(self, settings: BaseSettings) -> None:
        setting_defaults(settings)
        # Added to what the project has; a component it lists already keeps its place.
        for name, components in (("ITEM_PIPELINES", PIPELINES), ("EXTENSIONS", EXTENSIONS)):
            for path, order in components.items():
                settings.setdefault_in_component_priority_dict(name, load_object(path), order)
