"""Stage 8: upsert the Qdrant point with the seed's payload, record the vector, activate the meme."""

from __future__ import annotations

import logging
import uuid
from functools import partial
from typing import Any

from itemadapter import ItemAdapter

from emomo.ingest.stage import Stage, item_locator
from emomo.repositories import SourceRecord, VectorRecord
from emomo.repositories.vector_index import point_id, point_payload


class IndexPipeline(Stage):
    name = "index"
    backend = "database"

    def failed_backend(self, item: Any) -> str | None:
        state = self.runtime.peek(item)
        return state.writing if state is not None else self.backend

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        meme = state.meme
        assert meme is not None, "the record or reuse stage sets the meme"
        runtime = self.runtime
        if state.deferred:
            # Parked by the describer or the embedder: the row and object stay for a later run,
            # with the status the stats report (an embedder refusing this item: failed).
            meme.status = await runtime.repo.park(meme.id, state.park_status, state.deferred,
                                                  runtime.config.ingest.max_attempts)
            await runtime.link_followers(state.md5, meme.id)
            runtime.finish(item)
            runtime.write_ok()
            adapter.update({"status": meme.status, "body": None, "vector": None})
            self.conclude("pending" if meme.status == "pending" else "failed")
            return
        pid = point_id(runtime.collection, state.md5)
        payload = point_payload(meme, adapter["description"], runtime.store.url(meme.storage_key))
        state.writing = "qdrant"
        await runtime.upsert_batcher.submit((pid, adapter["vector"], payload))
        state.writing = "database"
        if not state.had_vector:
            # A forced re-run overwrote an existing point: deleting it would lose the old vector.
            state.undo.append((f"point {pid}", partial(runtime.index.delete, runtime.collection, pid)))
        await runtime.vector_batcher.submit(VectorRecord(
            id=str(uuid.uuid4()), meme_id=meme.id, md5_hash=state.md5, collection=runtime.collection,
            embedding_model=runtime.embedder.model, qdrant_point_id=pid,
        ))
        if state.replaces:
            # The source's new content is complete: the source moves to it, and its old meme
            # is retired unless another source still holds it.
            link = SourceRecord(str(adapter["source_type"]), str(adapter["source_id"]), meme.id, state.md5)
            previous = await runtime.repo.link_source(link, item_locator(adapter), replace=True)
            if previous is not None:
                await runtime.retire(previous)
        await runtime.link_followers(state.md5, meme.id)
        runtime.finish(item)
        runtime.write_ok()
        runtime.record_latency(state)
        # The bytes and the vector are written; an exported feed needs neither.
        adapter.update({"point_id": pid, "status": "active", "body": None, "vector": None})
        self.conclude("processed")
        self.log(logging.DEBUG, "Ingested %s as meme %s (point %s)", state.source, meme.id, pid)
