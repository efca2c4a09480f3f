"""Stage 6: record the meme row (status pending until its vector is indexed) with its description.

A reused meme that was pending without a description gets the one just made.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from itemadapter import ItemAdapter

from emomo.ingest.stage import Stage
from emomo.repositories import MemeRecord


class RecordPipeline(Stage):
    name = "record"

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        repo = self.runtime.repo
        if adapter.get("reused"):
            meme = state.meme
            assert meme is not None
            if adapter.get("description") and not meme.vlm_description:
                await repo.set_description(meme, adapter["description"], adapter["description_model"])
                meme.vlm_description = adapter["description"]
                self.count("described")
            elif state.deferred and state.park_status != meme.status:
                await repo.set_status(meme.id, state.park_status)
                self.count(state.park_status)
            else:
                self.count("reused")
            return
        meme = MemeRecord(
            id=str(uuid.uuid4()), source_type=adapter["source_type"], source_id=adapter["source_id"],
            md5_hash=state.md5, storage_key=adapter["storage_key"], format=adapter["format"],
            width=adapter["width"], height=adapter["height"], is_animated=bool(adapter["is_animated"]),
            file_size=adapter["file_size"], category=adapter.get("category") or "",
            tags=list(adapter.get("tags") or []), source_url=adapter.get("url"),
            vlm_description=adapter.get("description"), vlm_model=adapter.get("description_model"),
            status=state.park_status if state.deferred else "pending",
        )
        recorded = await repo.insert_meme(meme)
        if recorded.id != meme.id:
            # Another process (a second scrapyd job) recorded this image first: go on
            # with its meme, which is not ours to undo.
            if meme.vlm_description and not recorded.vlm_description:
                await repo.set_description(recorded, meme.vlm_description, meme.vlm_model or "")
                recorded.vlm_description = meme.vlm_description
            state.meme = recorded
            adapter.update({"meme_id": recorded.id, "reused": True})
            self.count("raced")
            return
        state.undo.append((f"meme row {meme.id}", partial(repo.delete_meme, meme.id)))
        state.meme = meme
        adapter["meme_id"] = meme.id
        self.count("created")
