"""``scrapy crawl pending [-a limit=N] [-a embedding=NAME] [-a failed=1]`` (the seed's RetryPending)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from emomo.ingest.pending import pending_memes
from emomo.items import MemeItem
from emomo.sharding import Shard
from emomo.spider import Argument, MemeSpider, flag


class PendingSpider(MemeSpider):
    """Complete the memes a describer or embedder failure left pending.

    Completes memes whose description or embedding failed: their bytes come back
    from the object store and go through the same pipelines. ``failed=1`` retries
    the memes marked failed too."""

    name = "pending"

    arguments = (*MemeSpider.arguments, MemeSpider.SHARD,
                 Argument("failed", "1", "retry the memes marked failed too", flag))
    failed: bool
    shard: Shard | None

    @property
    def statuses(self) -> tuple[str, ...]:
        return ("pending", "failed") if self.failed else ("pending",)

    async def items(self) -> AsyncIterator[Any]:
        take = None if self.shard is None else (lambda meme: self.mine(meme.source_id))
        runtime = self.runtime()
        async for found in pending_memes(runtime.repo, runtime.store, self.statuses, self.limit, take):
            meme = found.meme
            if found.body is None:
                self.count("missing_object")
                self.logger.error("meme %s (%s:%s): %s", meme.id, meme.source_type, meme.source_id, found.error)
                continue
            yield MemeItem(source_type=meme.source_type, source_id=meme.source_id, url=meme.source_url,
                           body=found.body, category=meme.category, tags=meme.tags)
