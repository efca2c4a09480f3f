"""``scrapy crawl staging -a source=ID [-a staging_path=DIR] [-a embedding=NAME] [-a limit=N]``"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from scrapy.exceptions import UsageError

from emomo.items import MemeItem
from emomo.sharding import Shard
from emomo.sources.staging import MANIFEST, ManifestUnreadable, StagingProblem, open_manifest, read_manifest
from emomo.spider import Argument, MemeSpider


class StagingSpider(MemeSpider):
    """Ingest a crawl output folder (manifest.jsonl and images/).

    Reads ``<staging_path>/<source>/manifest.jsonl`` and ``images/`` (the seed's crawler output)."""

    name = "staging"

    arguments = (*MemeSpider.arguments, MemeSpider.SHARD,
                 Argument("source", "ID", "the staging folder's name (fabiaoqing, say)"),
                 Argument("staging_path", "DIR", "where the staging folders are (default: sources.staging.path)"))
    source: str
    staging_path: str
    shard: Shard | None

    def setup(self) -> None:
        if not self.source or "/" in self.source or self.source.startswith("."):
            raise UsageError("pass -a source=ID: the staging folder's name, e.g. -a source=fabiaoqing")
        base = self.staging_path or self.config.sources.staging.path
        self.folder = os.path.join(os.path.abspath(base), self.source)
        if not os.path.lexists(os.path.join(self.folder, MANIFEST)):
            raise UsageError(f"no {MANIFEST} in {self.folder}: check -a source / -a staging_path "
                             "or sources.staging.path")
        try:
            open_manifest(self.folder).close()
        except ManifestUnreadable as exc:
            raise UsageError(str(exc)) from None

    async def items(self) -> AsyncIterator[Any]:
        entries = await asyncio.to_thread(lambda: list(read_manifest(self.folder)))
        manifest = os.path.join(self.folder, MANIFEST)
        usable = sum(1 for e in entries if not isinstance(e, StagingProblem) and self.mine(f"{self.source}_{e.id}",
                                                                                           count=False))
        self.found(min(usable, self.limit) if self.limit is not None else usable)
        yielded = 0
        for entry in entries:
            if isinstance(entry, StagingProblem):
                self.skip(entry.kind, manifest, entry.message)
                continue
            if not self.mine(f"{self.source}_{entry.id}"):
                continue
            if self.limit is not None and yielded >= self.limit:
                break
            yielded += 1
            yield MemeItem(
                source_type=f"staging:{self.source}", source_id=f"{self.source}_{entry.id}", url=entry.source_url,
                path=entry.path, file_identity=entry.identity, category=entry.category, tags=entry.tags,
                is_animated=entry.is_animated, format=entry.format,
            )
