"""Object stores: a Protocol, the key scheme, and (in emomo.registry) the name -> class map."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable


def storage_key(md5: str, fmt: str) -> str:
    """Content-addressed key: a two-character prefix spreads objects over folders and shards."""
    return f"{md5[:2]}/{md5}.{fmt}"


@runtime_checkable
class ObjectStore(Protocol):
    """Where meme images live."""

    async def open(self) -> None:
        """Connect and check the bucket (or folder) is there; raise BackendUnavailable if not."""

    async def put(self, key: str, data: bytes, content_type: str) -> bool:
        """Store ``data`` under ``key``; False when an object was already there (nothing written)."""

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    def list_objects(self) -> AsyncIterator[tuple[str, float]]:
        """Every object's key and its last-modified time (seconds since the epoch), in pages."""

    def url(self, key: str) -> str:
        """The URL a user opens to see the object."""

    async def close(self) -> None: ...
