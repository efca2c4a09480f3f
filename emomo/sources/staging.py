"""A staging folder in the seed's format: ``<staging>/<source>/manifest.jsonl`` and ``images/``.

Each manifest line: ``{"id", "filename", "category", "tags", "source_url",
"is_animated", "format", "crawled_at"}``. A manifest is another program's output:
a bad line is reported with its number and skipped, and the other lines still count.
"""

from __future__ import annotations

import codecs
import json
import os
import stat
import tempfile
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from emomo.errors import SourceUnreadable
from emomo.imaging import file_kind

MANIFEST = "manifest.jsonl"
IMAGES = "images"


#: a longer line is skipped unread: nothing a crawler writes for one image comes near it
MAX_LINE_BYTES = 1 << 20


class ManifestUnreadable(SourceUnreadable):
    """The manifest cannot be read at all (missing, a FIFO, no permission): the crawl cannot start."""


@dataclass(frozen=True)
class StagingEntry:
    line: int
    id: str
    filename: str
    path: str
    category: str = ""
    tags: list[str] = field(default_factory=list)
    source_url: str | None = None
    is_animated: bool | None = None
    format: str | None = None
    #: (device, inode) of the file when the line was read: the read refuses another file
    identity: tuple[int, int] | None = None


@dataclass(frozen=True)
class StagingProblem:
    line: int
    #: stats outcome: invalid_line, missing_file, not_regular, unsafe_filename, duplicate_id, duplicate_line
    kind: str
    message: str


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def _entry(line_no: int, record: Any, images: Path) -> StagingEntry | StagingProblem:
    if not isinstance(record, dict):
        return StagingProblem(line_no, "invalid_line", f"line {line_no}: expected a JSON object")
    item_id, filename = record.get("id"), record.get("filename")
    for key, value in (("id", item_id), ("filename", filename)):
        if not isinstance(value, str) or not value:
            return StagingProblem(line_no, "invalid_line", f"line {line_no}: field {key!r} is missing or not a string")
    assert isinstance(item_id, str) and isinstance(filename, str)
    if _has_control(item_id) or len(item_id) > 200:
        return StagingProblem(line_no, "invalid_line",
                              f"line {line_no}: field 'id' holds control characters or is over 200 characters")
    try:
        path = (images / filename).resolve()
        escapes = os.path.isabs(filename) or images.resolve() not in path.parents
    except (ValueError, OSError):  # a NUL in the name, a name too long for the file system
        escapes = True
    if escapes or _has_control(filename):
        return StagingProblem(line_no, "unsafe_filename", f"line {line_no}: filename {filename!r} escapes {images} "
                                                          "or holds control characters")
    try:
        # the resolved path, not followed again: what it names now is what the read must find
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        return StagingProblem(line_no, "missing_file", f"line {line_no}: file {path} does not exist "
                                                       f"or cannot be read ({exc.strerror})")
    mode = st.st_mode
    if not stat.S_ISREG(mode):
        return StagingProblem(line_no, "not_regular", f"line {line_no}: file {path} is not a regular file")
    tags = record.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return StagingProblem(line_no, "invalid_line", f"line {line_no}: field 'tags' must be a list of strings")
    animated = record.get("is_animated")
    source_url = record.get("source_url")
    return StagingEntry(
        line=line_no, id=item_id, filename=filename, path=str(path), category=str(record.get("category") or ""),
        tags=tags, source_url=source_url if isinstance(source_url, str) and source_url else None,
        is_animated=animated if isinstance(animated, bool) else None,
        format=record.get("format") if isinstance(record.get("format"), str) else None,
        identity=(st.st_dev, st.st_ino),
    )


def open_manifest(folder: str | os.PathLike[str]) -> BinaryIO:
    """``folder/manifest.jsonl``, opened for reading: a regular file, or ManifestUnreadable."""
    path = Path(folder) / MANIFEST
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ManifestUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ManifestUnreadable(f"{path} is not a regular file ({file_kind(mode)})")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _lines(f: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) for each line; None for a line over MAX_LINE_BYTES, skipped unread."""
    line_no = 0
    while raw := f.readline(MAX_LINE_BYTES + 1):
        line_no += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield line_no, None
            continue
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        yield line_no, raw


def read_manifest(folder: str | os.PathLike[str]) -> Iterator[StagingEntry | StagingProblem]:
    """Entries of ``folder/manifest.jsonl`` in file order, and the problems, by line number.

    A bad line is that line's problem alone: bytes that are not UTF-8, bad JSON, a missing
    or unsafe file, an id given twice. Only a manifest that cannot be opened stops the read
    (ManifestUnreadable).
    """
    folder = Path(folder)
    images = folder / IMAGES
    if images.is_symlink():
        raise ManifestUnreadable(f"{images} is a link (to {os.path.realpath(images)}): a staging folder's images "
                                 "must be inside it; not followed")
    first_line: dict[str, tuple[int, str]] = {}
    with open_manifest(folder) as f:
        for line_no, raw in _lines(f):
            if raw is None:
                yield StagingProblem(line_no, "invalid_line",
                                     f"line {line_no}: longer than {MAX_LINE_BYTES} bytes; skipped unread")
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield StagingProblem(line_no, "invalid_line", f"line {line_no}: not UTF-8 (byte {exc.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                entry = _entry(line_no, json.loads(line), images)
            except json.JSONDecodeError as exc:
                entry = StagingProblem(line_no, "invalid_line", f"line {line_no}: invalid JSON ({exc.msg})")
            except (ValueError, RecursionError, MemoryError) as exc:
                # nested too deep, a number of thousands of digits: this line's problem alone
                entry = StagingProblem(line_no, "invalid_line", f"line {line_no}: unreadable JSON "
                                                                f"({type(exc).__name__}: {str(exc)[:100]})")
            if isinstance(entry, StagingEntry):
                seen = first_line.get(entry.id)
                if seen is not None:
                    if seen[1] == entry.filename:
                        entry = StagingProblem(line_no, "duplicate_line", f"line {line_no}: repeats line {seen[0]}")
                    else:
                        entry = StagingProblem(
                            line_no, "duplicate_id", f"line {line_no}: id {entry.id!r} was given on line {seen[0]} "
                                                     f"to {seen[1]!r}, here to {entry.filename!r}; skipped")
                else:
                    first_line[entry.id] = (line_no, entry.filename)
            yield entry


def manifest_ids(folder: str | os.PathLike[str]) -> set[str]:
    """The ids a manifest already holds (bad lines ignored): what a writer must not add again."""
    if not (Path(folder) / MANIFEST).exists():
        return set()
    ids: set[str] = set()
    with open_manifest(folder) as f:
        for _, raw in _lines(f):
            try:
                record = json.loads(raw.decode("utf-8")) if raw is not None else None
            except (ValueError, RecursionError, MemoryError):  # UnicodeDecodeError, JSONDecodeError among them
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                ids.add(record["id"])
    return ids


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
