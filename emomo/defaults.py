"""Defaults of every EMOMO_* Scrapy setting, in one place.

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

EMOMO_CONFIG = ""
EMOMO_EMBEDDING = ""
EMOMO_FORCE = False
EMOMO_ENABLED = True
# Items wait on the VLM (~2 s), uploads, embeddings and writes: enough in flight that a slow call
# never serialises the crawl, few enough that memory stays flat and latency low. The describer
# knows how many (emomo.providers.Describer.admission); a number here overrides it.
EMOMO_MAX_ITEMS_IN_FLIGHT = 0
#: the admission of a describer that does not say
FALLBACK_ITEMS_IN_FLIGHT = 128
EMOMO_STATS_FILE = ""
EMOMO_FRONTIER = ""
EMOMO_FRONTIER_CRAWL = ""
EMOMO_FRONTIER_BUSY_TTL = 60
