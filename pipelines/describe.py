"""Stage 4: describe the image (OCR locally, a VLM in production) unless a description is reused."""

from __future__ import annotations

import logging
from typing import Any

from itemadapter import ItemAdapter

from emomo.errors import DISK_FULL, Interrupted, disk_full
from emomo.ingest.stage import Stage
from emomo.providers import DescribeContext
from emomo.text import clean_text


class DescribePipeline(Stage):
    name = "describe"
    interruptible = True

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        if adapter.get("description"):
            # From the meme already recorded, or paid for by an earlier run whose item failed.
            self.count("reused" if adapter.get("reused") else "cached")
            return
        state = self.state(item)
        describer = self.runtime.describer
        context = DescribeContext(source=state.source, category=adapter.get("category") or "",
                                  tags=list(adapter.get("tags") or []), should_stop=self.runtime.should_stop,
                                  image_text=state.near.image_text if state.near else None)
        try:
            description, cut = clean_text(await describer.describe(adapter["body"], adapter["format"], context),
                                          self.runtime.config.ingest.max_description_chars)
            if cut:
                # A description is embedded: its length is the embedder's time.
                self.count("truncated")
            if not description:
                raise ValueError(f"describer {describer.model} returned an empty description")
            if state.near is not None:
                state.near.image_text = context.image_text  # read by a local describer: kept for later checks
        except Interrupted:
            raise
        except Exception as exc:
            # A describer failure parks the meme: its object and row are still
            # written (as pending, or failed when retrying cannot help) and
            # `scrapy crawl pending` or a re-run describes it later.
            self.runtime.park(state, exc)
            self.count("failed")
            self.log(logging.WARNING, "describe failed for %s: %s; the meme is recorded as %s",
                     state.source, state.deferred, state.park_status)
            if getattr(exc, "fatal", False):
                self.runtime.stop(f"describe failed: {exc}", reason="refused_key")
            elif disk_full(exc):
                self.runtime.stop(f"describe failed for {state.source}: the disk is full ({state.deferred}); free "
                                  "some space, then run the crawl again", reason=DISK_FULL)
            return
        # Kept before anything else can fail: a later failure must not cost this call again.
        await self.runtime.keep_description(state.md5, describer.model, description)
        adapter["description"] = description
        adapter["description_model"] = describer.model
        self.count("described")
