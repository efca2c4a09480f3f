"""Stage 3: reuse what is known of this md5: the meme already recorded (its object, row and
description), or a description paid for by an earlier run whose item failed."""

from __future__ import annotations

from typing import Any

from itemadapter import ItemAdapter

from emomo.ingest.stage import Stage


class ReusePipeline(Stage):
    name = "reuse"
    backend = "database"
    interruptible = True

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        repo = self.runtime.repo
        model = self.runtime.describer.model
        meme = await repo.get_meme_by_md5(state.md5)
        # This describer's own description first (several VLMs may have described it).
        description = await repo.get_description(state.md5, model)
        if meme is None:
            if description:
                adapter.update({"description": description, "description_model": model})
            self.count("new")
            return
        state.meme = meme
        adapter.update({
            "reused": True, "meme_id": meme.id, "storage_key": meme.storage_key,
            "storage_url": self.runtime.store.url(meme.storage_key),
            "description": description or meme.vlm_description,
            "description_model": model if description else meme.vlm_model,
        })
        self.count("reused")
