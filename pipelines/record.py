"""Stage 6: record the meme row (status pending until its vector is indexed) with its description
and its source.

A reused meme that was pending without a description gets the one just made, and a source new to
it is linked.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from itemadapter import ItemAdapter

from emomo.ingest.near_dupes import signature
from emomo.ingest.stage import Stage, item_locator
from emomo.repositories import MemeRecord, SourceRecord


class RecordPipeline(Stage):
    name = "record"
    backend = "database"

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        if adapter.get("reused"):
            await self.update_reused(state, adapter)
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
        # The near-duplicate signature goes with the row, and with it if the row is undone
        # (ON DELETE CASCADE).
        near = state.near
        recorded = await self.runtime.repo.insert_meme(meme, item_locator(adapter),
                                                       None if near is None else signature(near))
        if recorded.id != meme.id:
            # Another process (a second scrapyd job) recorded this image first: go on
            # with its meme, which is not ours to undo.
            state.meme = recorded
            adapter.update({"meme_id": recorded.id, "reused": True})
            self.count("raced")
            await self.update_reused(state, adapter)
            return
        state.undo.append((f"meme row {meme.id}", partial(self.runtime.repo.delete_meme, meme.id)))
        if near is not None:
            self.runtime.near_index.add(meme.id, near.phash, near.blocks)
        state.meme = meme
        adapter["meme_id"] = meme.id
        self.count("created")

    async def update_reused(self, state: Any, adapter: ItemAdapter) -> None:
        repo = self.runtime.repo
        meme = state.meme
        assert meme is not None
        if state.source_record is None:
            # The same image under a new name: that source holds this meme too.
            link = SourceRecord(str(adapter["source_type"]), str(adapter["source_id"]), meme.id, state.md5)
            await repo.link_source(link, item_locator(adapter), replace=False)
        if adapter.get("description") and not meme.vlm_description:
            await repo.set_description(meme, adapter["description"], adapter["description_model"])
            meme.vlm_description = adapter["description"]
            self.count("described")
        elif state.deferred and state.park_status != meme.status:
            await repo.set_status(meme.id, state.park_status)
            meme.status = state.park_status
            self.count(state.park_status)
        else:
            self.count("reused")
