"""How much work a crawl keeps in flight: items admitted into the pipelines, and the database
pool that serves them. Pure arithmetic on what the crawl measured; the runtime asks."""

from __future__ import annotations

from collections.abc import Callable

from emomo.config import EmomoConfig
from emomo.providers.concurrency import AdaptiveLimit

#: the admission of a describer that does not say how many items it wants in flight
FALLBACK_ITEMS_IN_FLIGHT = 128
#: items in flight at most when sized automatically (an item holds its image: tens of kilobytes)
MAX_ADMISSION = 1024
#: the most places per VLM slot for the items behind it (their time there includes waits:
#: admitting more because items wait would only make them wait longer)
MAX_RATIO = 8.0


def sized_pool(config: EmomoConfig) -> EmomoConfig:
    """The config with its PostgreSQL pool sized to the work in flight, unless the user set it."""
    if config.database.pool_max_size:
        return config
    size = 10 if config.vlm.provider == "local" else min(50, 10 + config.vlm.max_in_flight // 4)
    return config.model_copy(update={"database": config.database.model_copy(update={"pool_max_size": size})})


def admission_limit(item_seconds: float | None, describing: float, limit: AdaptiveLimit | None,
                    hint: Callable[[float | None], int] | None) -> int:
    """Items in flight at most: ``item_seconds`` an item's median time in the pipelines (None
    until known), ``describing`` its mean time in the describe stage, ``limit`` the VLM's
    adaptive call limit, ``hint`` the describer's own sizing (a local one's engines)."""
    # The time an item spends outside the describe stage (stored, embedded, indexed).
    behind = max(0.0, item_seconds - describing) if item_seconds else None
    if limit is not None and limit.call_seconds and behind is not None:
        # Little's law: to keep ``level`` calls busy, the items behind the VLM take (their
        # time there / a call's time) places per slot, and ``level`` more wait for a slot
        # (which is what lets the level grow). A fast VLM (0.1 s) before 0.5 s uploads and
        # embeddings needs many more items in flight than it has slots.
        ratio = min(MAX_RATIO, max(1.0, behind / limit.call_seconds))
        return min(MAX_ADMISSION, int(limit.level * (ratio + 1)) + 16)
    return int(hint(behind)) if hint is not None else FALLBACK_ITEMS_IN_FLIGHT
