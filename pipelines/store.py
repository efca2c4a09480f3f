"""Stage 5: store the image under {md5[:2]}/{md5}.{format}."""

from __future__ import annotations

from functools import partial
from typing import Any

from itemadapter import ItemAdapter

from emomo.imaging import CONTENT_TYPES
from emomo.ingest.stage import Stage
from emomo.storage import storage_key


class StorePipeline(Stage):
    name = "store"
    backend = "storage"
    skips_reused = True

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        store = self.runtime.store
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
