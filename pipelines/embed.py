"""Stage 7: embed the description (passage side) with the crawl's embedding configuration."""

from __future__ import annotations

import logging
from typing import Any

from itemadapter import ItemAdapter

from emomo.ingest.stage import Stage


class EmbedPipeline(Stage):
    name = "embed"

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        if state.deferred:
            return
        try:
            description = adapter.get("description")
            if not description:
                # Never sent: one item without text must not fail its batch's other items.
                raise ValueError("the item has no description to embed")
            vector = await self.runtime.embed_batcher.submit(description)
        except Exception as exc:
            meme = state.meme
            if meme is None or meme.status == "active":
                # An active meme gaining a vector in another collection: nothing
                # to park; the item fails and a re-run tries again.
                raise
            # A new or pending meme keeps its object and row, as pending.
            self.runtime.park(state, exc)
            self.count("failed")
            self.log(logging.WARNING, "embed failed for %s: %s; the meme is recorded as %s",
                     state.source, state.deferred, state.park_status)
            if getattr(exc, "fatal", False):
                self.runtime.stop(f"embed failed: {exc}", reason="refused_key")
            return
        adapter["vector"] = vector
        self.count("ok")
