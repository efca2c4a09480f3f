"""A staging folder in the seed's format: ``<staging>/<source>/manifest.jsonl`` and ``images/``.

Each manifest line: ``{"id", "filename", "category", "tags", "source_url",
"is_animated", "format", "crawled_at"}``. A bad line is reported with its
number and skipped; the other lines still count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
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
