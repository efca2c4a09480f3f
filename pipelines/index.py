"""Stage 8: upsert the Qdrant point with the seed's payload, record the vector, activate the meme."""

from __future__ import annotations

import logging
import time
import uuid
from functools import partial
from typing import Any

from itemadapter import ItemAdapter

from emomo.ingest.stage import Stage
from emomo.repositories import VectorRecord
from emomo.repositories.qdrant import point_id


class IndexPipeline(Stage):
    name = "index"

    async def run(self, item: Any, adapter: ItemAdapter) -> None:
        state = self.state(item)
        meme = state.meme
        assert meme is not None, "the record or reuse stage sets the meme"
        runtime = self.runtime
        if state.deferred:
            # Parked by the describer or the embedder: the row and object stay for a later run.
            runtime.finish(item)
            adapter.update({"status": state.park_status, "body": None, "vector": None})
            self.conclude("pending" if state.park_status == "pending" else "failed")
            return
        pid = point_id(runtime.collection, state.md5)
        payload = {
            "meme_id": meme.id, "source_type": meme.source_type, "category": meme.category,
            "is_animated": meme.is_animated, "tags": meme.tags,
            "vlm_description": adapter["description"], "storage_url": runtime.store.url(meme.storage_key),
            "md5": state.md5,
        }
        await runtime.upsert_batcher.submit((pid, adapter["vector"], payload))
        if not state.had_vector:
            # A forced re-run overwrote an existing point: deleting it would lose the old vector.
            state.undo.append((f"point {pid}", partial(runtime.index.delete, runtime.collection, pid)))
        await runtime.vector_batcher.submit(VectorRecord(
            id=str(uuid.uuid4()), meme_id=meme.id, md5_hash=state.md5, collection=runtime.collection,
            embedding_model=runtime.embedder.model, qdrant_point_id=pid,
        ))
        runtime.finish(item)
        runtime.latencies.append(time.monotonic() - state.started)
        # The bytes and the vector are written; an exported feed needs neither.
        adapter.update({"point_id": pid, "status": "active", "body": None, "vector": None})
        self.conclude("processed")
        self.log(logging.DEBUG, "Ingested %s as meme %s (point %s)", state.source, meme.id, pid)
