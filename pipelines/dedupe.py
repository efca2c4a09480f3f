"""Stage 2: skip an image already indexed in this collection (unless force), or in flight."""

from __future__ import annotations

import logging
from typing import Any

from itemadapter import ItemAdapter

from emomo.errors import DuplicateMeme
from emomo.ingest.stage import Stage


class DedupePipeline(Stage):
    name = "dedupe"
    interruptible = True

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        collection = self.runtime.collection
        adapter["collection"] = collection
        holder = self.runtime.claim(state)
        if holder is not None:
            reason = f"same image as {holder}, in flight"
        else:
            state.had_vector = await self.runtime.repo.vector_exists(state.md5, collection)
            if not state.had_vector or self.runtime.force:
                self.count("new" if not state.had_vector else "forced")
                return
            reason = f"md5 {state.md5} is already in collection {collection}"
        self.conclude("duplicate")
        self.log(logging.DEBUG, "Skipped %s as a duplicate: %s", state.source, reason)
        raise DuplicateMeme(f"{state.source}: {reason}")
