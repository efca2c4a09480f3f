"""Stage 7: embed the description (passage side) with the crawl's embedding configuration."""

from __future__ import annotations

from typing import Any

from itemadapter import ItemAdapter

from emomo.ingest.stage import Stage


class EmbedPipeline(Stage):
    name = "embed"

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        [vector] = await self.runtime.embedder.embed_passages([adapter["description"]])
        adapter["vector"] = vector
        self.count("ok")
