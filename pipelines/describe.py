"""Stage 4: describe the image (OCR locally, a VLM in production) unless a description is reused."""

from __future__ import annotations

from typing import Any

from itemadapter import ItemAdapter

from emomo.ingest.stage import Stage
from emomo.providers import DescribeContext


class DescribePipeline(Stage):
    name = "describe"

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        if adapter.get("description"):
            self.count("reused")
            return
        state = self.state(item)
        describer = self.runtime.describer
        context = DescribeContext(source=state.source, category=adapter.get("category") or "",
                                  tags=list(adapter.get("tags") or []))
        description = (await describer.describe(adapter["body"], adapter["format"], context)).strip()
        if not description:
            raise ValueError(f"describer {describer.model} returned an empty description")
        adapter["description"] = description
        adapter["description_model"] = describer.model
        self.count("described")
