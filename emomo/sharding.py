"""``-a shard=K/N``: N workers split a file-based source between them, each item exactly once.

An item belongs to the shard its source id hashes to (CRC-32 of its UTF-8 bytes, mod N): stable
across machines, runs and Python versions, so the same K/N always takes the same items, and the
N shards together take every item once.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from scrapy.exceptions import UsageError


@dataclass(frozen=True)
class Shard:
    index: int  # 1..count
    count: int

    @classmethod
    def parse(cls, value: Any) -> Shard | None:
        if value in (None, ""):
            return None
        text = str(value).strip()
        k, sep, n = text.partition("/")
        try:
            shard = cls(int(k), int(n)) if sep else None
        except ValueError:
            shard = None
        if shard is None or not 1 <= shard.index <= shard.count:
            raise UsageError(f"-a shard={value}: expected K/N with 1 <= K <= N (this worker takes the K-th of "
                             "N shares of the source; start N workers with K = 1..N)")
        return shard

    def holds(self, source_id: str) -> bool:
        return zlib.crc32(source_id.encode("utf-8", "surrogateescape")) % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
