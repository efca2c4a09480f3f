"""A staging folder in the seed's format: ``<staging>/<source>/manifest.jsonl`` and ``images/``.

Each manifest line: ``{"id", "filename", "category", "tags", "source_url",
"is_animated", "format", "crawled_at"}``. A bad line is reported with its
number and skipped; the other lines still count.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.jsonl"
IMAGES = "images"


@dataclass(frozen=True)
class StagingEntry:
    line: int
    id: str
    path: str
    category: str = ""
    tags: list[str] = field(default_factory=list)
    source_url: str | None = None
    is_animated: bool | None = None
    format: str | None = None


@dataclass(frozen=True)
class StagingProblem:
    line: int
    kind: str  # stats outcome: invalid_line, missing_file, unsafe_filename
    message: str


def _entry(line_no: int, record: Any, images: Path) -> StagingEntry | StagingProblem:
    if not isinstance(record, dict):
        return StagingProblem(line_no, "invalid_line", f"line {line_no}: expected a JSON object")
    item_id, filename = record.get("id"), record.get("filename")
    for key, value in (("id", item_id), ("filename", filename)):
        if not isinstance(value, str) or not value:
            return StagingProblem(line_no, "invalid_line", f"line {line_no}: field {key!r} is missing or not a string")
    assert isinstance(item_id, str) and isinstance(filename, str)
    path = (images / filename).resolve()
    if os.path.isabs(filename) or images.resolve() not in path.parents:
        return StagingProblem(line_no, "unsafe_filename",
                              f"line {line_no}: filename {filename!r} escapes {images}")
    if not path.is_file():
        return StagingProblem(line_no, "missing_file", f"line {line_no}: file {path} does not exist")
    tags = record.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return StagingProblem(line_no, "invalid_line", f"line {line_no}: field 'tags' must be a list of strings")
    animated = record.get("is_animated")
    return StagingEntry(
        line=line_no, id=item_id, path=str(path), category=str(record.get("category") or ""),
        tags=tags, source_url=record.get("source_url") or None,
        is_animated=animated if isinstance(animated, bool) else None,
        format=record.get("format") if isinstance(record.get("format"), str) else None,
    )


def read_manifest(folder: str | os.PathLike[str]) -> Iterator[StagingEntry | StagingProblem]:
    """Entries of ``folder/manifest.jsonl`` in file order, and the problems, by line number."""
    folder = Path(folder)
    images = folder / IMAGES
    with open(folder / MANIFEST, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield StagingProblem(line_no, "invalid_line", f"line {line_no}: invalid JSON ({exc.msg})")
                continue
            yield _entry(line_no, record, images)


def manifest_ids(folder: str | os.PathLike[str]) -> set[str]:
    """The ids a manifest already holds (bad lines ignored): what a writer must not add again."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return set()
    return {rec["id"] for rec in _raw_records(path) if isinstance(rec.get("id"), str)}


def _raw_records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


class StagingWriter:
    """Appends to ``folder/manifest.jsonl`` and ``folder/images/``; an id already there is skipped.

    The image is in place before its manifest line is appended, so a reader never
    finds a line without its file.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        (self.folder / IMAGES).mkdir(parents=True, exist_ok=True)
        self.ids = manifest_ids(self.folder)
        self._lock = threading.Lock()

    def write(self, item_id: str, data: bytes, fmt: str, category: str, tags: list[str],
              source_url: str | None, is_animated: bool) -> bool:
        with self._lock:
            if item_id in self.ids:
                return False
            self.ids.add(item_id)
        filename = f"{item_id}.{fmt}"
        fd, tmp = tempfile.mkstemp(dir=self.folder / IMAGES, prefix=".part-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, self.folder / IMAGES / filename)
        line = json.dumps({
            "id": item_id, "filename": filename, "category": category, "tags": tags,
            "source_url": source_url, "is_animated": is_animated, "format": fmt,
            "crawled_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }, ensure_ascii=False)
        with self._lock, open(self.folder / MANIFEST, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return True


class CursorFile:
    """A crawl's resume cursor kept beside the staging data it describes."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / "cursor.json"

    def get(self) -> str | None:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8")).get("cursor")
        except (OSError, ValueError, AttributeError):
            return None
        return str(value) if value is not None else None

    def set(self, cursor: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cursor": cursor}), encoding="utf-8")
        os.replace(tmp, self.path)
