"""``scrapy crawl chinesebqb [-a repo_path=DIR] [-a embedding=NAME] [-a limit=N] [-a force=1]``"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from scrapy.exceptions import UsageError

from emomo.errors import SourceUnreadable
from emomo.items import MemeItem
from emomo.sharding import Shard
from emomo.sources.chinesebqb import BQBFile, walk
from emomo.spider import Argument, MemeSpider


class ChineseBQBSpider(MemeSpider):
    """Ingest a local clone of the ChineseBQB repository.

    Walks its category folders; ``repo_path`` defaults to sources.chinesebqb.repo_path."""

    name = "chinesebqb"

    arguments = (*MemeSpider.arguments, MemeSpider.SHARD,
                 Argument("repo_path", "DIR", "the clone (default: sources.chinesebqb.repo_path)"))
    repo_path: str
    shard: Shard | None

    def setup(self) -> None:
        self.repo_path = os.path.abspath(self.repo_path or self.config.sources.chinesebqb.repo_path)
        if not os.path.isdir(self.repo_path):
            raise UsageError(
                f"ChineseBQB clone not found at {self.repo_path}: pass -a repo_path=DIR "
                "or set sources.chinesebqb.repo_path"
            )

    async def items(self) -> AsyncIterator[Any]:
        try:
            found = await asyncio.to_thread(lambda: list(walk(self.repo_path)))
        except OSError as exc:
            raise SourceUnreadable(f"{self.repo_path}: {exc}") from None
        files = [f for f in found if isinstance(f, BQBFile)]
        for skipped in found:
            if not isinstance(skipped, BQBFile):
                self.skip(skipped.kind, skipped.path, skipped.reason)
        self.logger.info("Found %d image files under %s", len(files), self.repo_path)
        files = [f for f in files if self.mine(f.rel_path)][: self.limit]
        self.found(len(files))
        for f in files:
            yield MemeItem(source_type="chinesebqb", source_id=f.rel_path, path=f.path, file_identity=f.identity,
                           category=f.category, tags=f.tags)
