"""Stage 3: reuse the meme already recorded for this md5: its object, row and description."""

from __future__ import annotations

from typing import Any

from itemadapter import ItemAdapter

from emomo.ingest.stage import Stage


class ReusePipeline(Stage):
    name = "reuse"
    interruptible = True

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        repo = self.runtime.repo
        meme = await repo.get_meme_by_md5(state.md5)
        if meme is None:
            self.count("new")
            return
        state.meme = meme
        # This describer's own description first (several VLMs may have described it).
        description = await repo.get_description(state.md5, self.runtime.describer.model) or meme.vlm_description
        adapter.update({
            "reused": True, "meme_id": meme.id, "storage_key": meme.storage_key,
            "storage_url": self.runtime.store.url(meme.storage_key),
            "description": description, "description_model": meme.vlm_model,
        })
        self.count("reused")
