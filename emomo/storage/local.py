"""A filesystem object store: the embedded default."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from emomo.config import StorageConfig

_TMP_DIR = ".tmp"
#: temporary files older than this were left by a killed process
_STALE_SECONDS = 600


class LocalObjectStore:
    """Objects are files under ``storage.path``, named by their key.

    A write goes to a temporary file first and is renamed into place, so a
    crawl killed mid-write never leaves a partial object under a real key.
    """

    def __init__(self, config: StorageConfig) -> None:
        self.root = Path(config.path)
        self.public_url = config.public_url
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / _TMP_DIR).mkdir(exist_ok=True)
        self._sweep_stale_tmp()

    def _sweep_stale_tmp(self) -> None:
        cutoff = time.time() - _STALE_SECONDS
        for p in (self.root / _TMP_DIR).iterdir():
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except FileNotFoundError:
                pass

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"object key {key!r} escapes the store at {self.root}")
        return path

    def _put(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / _TMP_DIR)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    async def put(self, key: str, data: bytes, content_type: str) -> bool:
        # The filesystem keeps no content type: the key's extension says it.
        return await asyncio.to_thread(self._put, key, data)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    def _list(self) -> list[tuple[str, float]]:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d != _TMP_DIR]
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    found.append((path.relative_to(self.root).as_posix(), path.stat().st_mtime))
                except FileNotFoundError:
                    continue
        return found

    async def list_objects(self) -> AsyncIterator[tuple[str, float]]:
        for entry in await asyncio.to_thread(self._list):
            yield entry

    def url(self, key: str) -> str:
        if self.public_url:
            return f"{self.public_url}/{key}"
        return (self.root / key).resolve().as_uri()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None
