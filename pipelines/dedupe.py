"""Stage 2: skip an image already indexed in this collection (unless force), or in flight; notice a
source whose content changed since it was ingested."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter

from emomo.errors import DuplicateMeme
from emomo.ingest.near_dupes import find_near_duplicate, keep_better_file, measure_item
from emomo.ingest.stage import Stage, item_locator
from emomo.ingest.state import ItemState
from emomo.repositories import SourceRecord

if TYPE_CHECKING:
    from PIL import Image


class DedupePipeline(Stage):
    name = "dedupe"
    backend = "database"
    interruptible = True

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        # The first frame is the check's alone, and not held once this stage is done with it.
        grey, state.first_frame = state.first_frame, None
        runtime = self.runtime
        collection = runtime.collection
        adapter["collection"] = collection
        source_type, source_id = str(adapter["source_type"]), str(adapter["source_id"])
        state.source_record = await runtime.repo.get_source(source_type, source_id)
        if state.source_record is not None and state.source_record.md5_hash != state.md5:
            # Same path or id, new bytes: the new content goes through (before any paid call,
            # since this is where it is noticed); the source moves to it once it is complete.
            state.replaces = state.source_record.meme_id
            self.count("changed")
            self.log(logging.INFO, "%s changed since it was ingested (md5 %s, now %s): ingesting the new content",
                     state.source, state.source_record.md5_hash, state.md5)
        holder = runtime.claim(state)
        if holder is not None:
            if state.source_record is None or state.replaces:
                runtime.follow(state.md5, source_type, source_id, item_locator(adapter))
            reason = f"same image as {holder}, in flight"
        else:
            meme_id = await runtime.repo.find_vector(state.md5, collection)
            state.had_vector = meme_id is not None
            if (meme_id is None and state.source_record is not None and not state.replaces and not runtime.force
                    and await runtime.repo.meme_indexed(state.source_record.meme_id, collection)):
                # A source recorded as a near-duplicate of another file's meme: done already.
                meme_id = state.source_record.meme_id
            if meme_id is None or runtime.force:
                other = await runtime.claim_shared(state)
                if other is None:
                    if meme_id is None and runtime.config.dedupe.near:
                        await self.near_duplicate(state, adapter, grey)
                    self.count("new" if meme_id is None else "forced")
                    return
                # Another worker is ingesting this image now: it pays for it, not us. This source
                # is linked to its meme by the next run that reads it.
                self.conclude("duplicate")
                self.count("claimed_elsewhere")
                raise DuplicateMeme(f"{state.source}: md5 {state.md5} is being ingested by worker {other}")
            if state.source_record is None or state.replaces:
                # Indexed already, under another source: this source holds it too.
                link = SourceRecord(source_type, source_id, meme_id, state.md5)
                previous = await runtime.repo.link_source(link, item_locator(adapter), replace=True)
                if previous is not None:
                    await runtime.retire(previous)
            await runtime.link_followers(state.md5, meme_id)
            reason = f"md5 {state.md5} is already in collection {collection}"
        self.conclude("duplicate")
        self.log(logging.DEBUG, "Skipped %s as a duplicate: %s", state.source, reason)
        raise DuplicateMeme(f"{state.source}: {reason}")

    async def near_duplicate(self, state: ItemState, adapter: ItemAdapter, grey: Image.Image | None) -> None:
        """Drop the item as another source of a recorded meme it nearly duplicates, if any
        (``grey``: its first frame as the read stage decoded it)."""
        runtime = self.runtime
        picture, state.near = await measure_item(runtime, adapter["body"], grey)
        match = await find_near_duplicate(runtime, state, adapter["body"], picture)
        if match is None:
            return
        meme_id = match.meme.meme_id
        if await keep_better_file(runtime, state, adapter, match):
            self.count("better_file")
            self.log(logging.INFO, "%s is a better copy of meme %s (%dx%d, was %dx%d): the meme shows it now",
                     state.source, meme_id, adapter["width"], adapter["height"], match.meme.file.width,
                     match.meme.file.height)
        link = SourceRecord(str(adapter["source_type"]), str(adapter["source_id"]), meme_id, state.md5)
        previous = await runtime.repo.link_source(link, item_locator(adapter), replace=True)
        if previous is not None:
            await runtime.retire(previous)
        await runtime.link_followers(state.md5, meme_id)
        self.count("near_duplicate")
        self.conclude("duplicate")
        how = "the same text" if math.isnan(match.distance) else f"fine distance {match.distance:.2f}"
        reason = f"a near-duplicate of meme {meme_id} ({how})"
        self.log(logging.DEBUG, "Recorded %s as another source: %s", state.source, reason)
        raise DuplicateMeme(f"{state.source}: {reason}")
