"""Defaults of every EMOMO_* Scrapy setting, in one place.

EMOMO_CONFIG      path of a config file over the packaged one (else $EMOMO_CONFIG)
EMOMO_EMBEDDING   embedding configuration to write (spider argument ``embedding``); empty: the default one
EMOMO_FORCE       embed again even when (md5, collection) is already indexed (spider argument ``force``)
EMOMO_ENABLED     False switches the ingest pipelines off (items pass through untouched)
"""

from __future__ import annotations

EMOMO_CONFIG = ""
EMOMO_EMBEDDING = ""
EMOMO_FORCE = False
EMOMO_ENABLED = True
