"""Stage 5: store the image under {md5[:2]}/{md5}.{format}."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from itemadapter import ItemAdapter

from emomo.imaging import CONTENT_TYPES
from emomo.ingest.stage import Stage
from emomo.storage import storage_key


class StorePipeline(Stage):
    name = "store"
    backend = "storage"

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        store = self.runtime.store
        if adapter.get("reused"):
            # A recorded meme has its object: passed by, unless a forced run finds it lost
            # (a store restored from an old backup) and puts this item's bytes back.
            key = str(adapter["storage_key"])
            if not self.runtime.force or await store.exists(key):
                self.count("reused")
                return
            await store.put(key, adapter["body"], CONTENT_TYPES[adapter["format"]])
            self.count("restored")
            self.log(logging.WARNING, "Object %s of meme %s was missing: put back from %s",
                     key, adapter["meme_id"], state.source)
            return
        key = storage_key(state.md5, adapter["format"])
        created = await store.put(key, adapter["body"], CONTENT_TYPES[adapter["format"]])
        if created:
            # Keys are content addresses: an object we did not create belongs to
            # an earlier run of the same image and is left alone.
            state.undo.append((f"object {key}", partial(self.undo_upload, key, state.md5)))
        adapter["storage_key"] = key
        adapter["storage_url"] = store.url(key)
        self.count("uploaded" if created else "present")

    async def undo_upload(self, key: str, md5: str) -> None:
        """Delete the object we uploaded, unless a meme uses it (another process's, recorded
        meanwhile: our own row is undone before this runs)."""
        if await self.runtime.repo.get_meme_by_md5(md5) is None:
            await self.runtime.store.delete(key)
