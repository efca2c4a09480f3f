"""Descriptions that were paid for while the database refused writes, kept on local disk.

A VLM call is the money of an ingest. Its answer is saved by (md5, model) the moment
it exists; when the database cannot take it (the outage that also fails the item),
it goes to a JSON-lines file here, and the next crawl's start puts it in the database
before any item is read, so the re-run pays for nothing twice.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

FILE = "descriptions.jsonl"


class DescriptionSpool:
    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / FILE
        self._lock = threading.Lock()

    def append(self, md5: str, model: str, description: str) -> None:
        line = json.dumps({"md5": md5, "model": model, "description": description}, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

    def entries(self) -> list[tuple[str, str, str]]:
        """(md5, model, description) of each kept description; a torn last line is ignored."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
                found.append((str(record["md5"]), str(record["model"]), str(record["description"])))
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def clear(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)
