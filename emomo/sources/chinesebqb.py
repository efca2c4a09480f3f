"""A local clone of ChineseBQB: which files are memes, and what their names say.

Facts this follows (../shared/data/chinesebqb.md): one top folder per category
such as ``001Funny_滑稽大佬😏BQB``; file names such as
``滑稽大佬00001-360度鄙视你.gif`` (series, number, keywords), but also hashes,
GUIDs, screenshots' names, and files with no extension or the wrong one.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

from emomo.imaging import SNIFF_BYTES, UNSUPPORTED_SUFFIXES, file_kind, sniff_format, sniff_unsupported
from emomo.text import escape_name, strip_undecodable

#: top-level folders that hold no memes
SKIP_DIRS = frozenset({"README", "cdn", "chinesebqb-md", "node_modules"})
#: never memes: archives, docs, scripts, and downloads that never finished
SKIP_SUFFIXES = frozenset({
    ".zip", ".md", ".js", ".py", ".json", ".txt", ".html", ".yml", ".yaml",
    ".bdc-downloading", ".crdownload", ".part", ".partial", ".download", ".tmp", ".aria2",
})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
#: names a phone or a screenshot tool gave: they say nothing about the meme
_JUNK_PREFIXES = ("QQ图片", "微信图片", "Snipaste", "截图", "屏幕截图", "IMG_", "mmexport", "image")

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CAMEL_PREFIX = re.compile(r"^(?:[A-Z][a-z]+)+")
_NUMBERED = re.compile(r"^(?P<series>.*?)(?P<num>\d{3,})(?:[-_ ](?P<rest>.*))?$")
_HEXISH = re.compile(r"^[0-9a-zA-Z]{12,}$")


@dataclass(frozen=True)
class BQBFile:
    rel_path: str  # POSIX path inside the clone, escaped (emomo.text.escape_name): the item's source id
    path: str  # the file to read: its real path, inside the clone
    category: str
    tags: list[str] = field(default_factory=list)
    #: (device, inode) of the file listed: the read refuses any other file found at ``path`` then
    identity: tuple[int, int] | None = None


def _strip_symbols(text: str) -> str:
    """Drop emoji, variation selectors and joiners; keep letters, digits and CJK."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN" or ch in "_- ")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def category_names(folder: str) -> list[str]:
    """The category's Chinese name(s), without number, English and emoji; else its English name."""
    name = _strip_symbols(folder)
    name = re.sub(r"^\d+_?", "", name)
    name = re.sub(r"_?BQB_?$", "", name)
    parts = [p.strip() for p in name.split("_") if p.strip()]
    chinese = []
    for part in parts:
        if has_cjk(part):
            part = re.sub(r"^\d+", "", part)
            stripped = _CAMEL_PREFIX.sub("", part)
            chinese.append(stripped if has_cjk(stripped[:1]) else part)
    if chinese:
        return chinese
    english = " ".join(p for p in parts if not p.isdigit())
    return [english] if english else []


def name_tags(stem: str) -> list[str]:
    """Tags from a file name without its extension: the series and the keywords."""
    stem = stem.strip()
    if not stem or stem.startswith(_JUNK_PREFIXES) or stem.startswith("{"):
        return []
    if not has_cjk(stem) and (_HEXISH.match(stem) or stem.replace("-", "").isdigit()):
        return []
    m = _NUMBERED.match(stem)
    if m:
        words = [m.group("series")] + (m.group("rest") or "").split("-")
    else:
        words = stem.split("-")
    tags = []
    for word in words:
        word = word.strip(" _-")
        if word and not word.isdigit() and not (not has_cjk(word) and _HEXISH.match(word)):
            tags.append(word)
    return tags


def file_tags(category: str, filename: str) -> list[str]:
    stem, suffix = os.path.splitext(filename)
    if suffix.lower() not in IMAGE_SUFFIXES:
        stem = filename  # no extension, or a dot that belongs to the name
    return list(dict.fromkeys(name_tags(stem) + category_names(category)))


def skipped(name: str) -> bool:
    """Quietly skipped: dotfiles, archives, docs, scripts, partial downloads."""
    if name.startswith("."):
        return True
    suffix = os.path.splitext(name)[1].lower()
    return suffix in SKIP_SUFFIXES


@dataclass(frozen=True)
class Skipped:
    """A path the walk did not take, and why: the spider logs it and counts ``kind``."""

    rel_path: str  # escaped, relative to the clone
    path: str  # escaped, as the user named the clone: what the log shows
    kind: str  # link_outside, link_loop, not_regular, unreadable, unsupported_format, too_deep, changed
    reason: str


#: folders below a category folder walked at most this deep (ChineseBQB's are 1 or 2): deeper is
#: no meme collection, and a bound keeps a hostile tree of thousands of nested folders cheap
MAX_DEPTH = 32
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def identity(st: os.stat_result) -> tuple[int, int]:
    """What a file is, whatever its path: the read checks it opened the file the walk listed."""
    return st.st_dev, st.st_ino


def _head(path: str, expected: tuple[int, int]) -> bytes:
    """The first bytes of the regular file the walk listed (not a link put in its place since)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if identity(st) != expected:
            raise OSError("changed since it was listed: not read")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{file_kind(st.st_mode)}: not read")
        return os.read(fd, SNIFF_BYTES)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Folder:
    real: str
    id: tuple[int, int]
    rel: str
    category: str
    depth: int


class _Walk:
    """One walk of a clone, folder by folder off a stack (no recursion: a tree nested a thousand
    deep is walked to MAX_DEPTH and said). Only what resolves inside the clone is followed: Git
    keeps symlinks, so a fork can link a file or a whole category anywhere on the machine.
    Folders are walked once each (a link back up the tree would never end).

    Each folder is opened without following a link and checked to be the one its parent listed,
    and listed through that descriptor; each file's identity is kept for the read. A file or
    folder swapped for a link to elsewhere between the listing and the read is refused then.
    """

    def __init__(self, repo: str | os.PathLike[str]) -> None:
        self.top = os.path.abspath(repo)
        self.real_root = os.path.realpath(self.top)
        self.visited: set[tuple[int, int]] = set()

    def skip(self, rel: str, kind: str, reason: str) -> Skipped:
        return Skipped(escape_name(rel), escape_name(os.path.join(self.top, rel)), kind, reason)

    def inside(self, real: str) -> bool:
        return real == self.real_root or real.startswith(self.real_root + os.sep)

    def entries(self, folder: _Folder) -> list[tuple[str, os.stat_result]] | Skipped:
        """The folder's entries with their own status (a link's, not its target's), read through
        a descriptor of the folder its parent listed."""
        try:
            fd = os.open(folder.real, _OPEN_DIR)
        except OSError as exc:
            return self.skip(folder.rel, "unreadable", f"cannot open the folder: {exc.strerror or exc}")
        try:
            if identity(os.fstat(fd)) != folder.id:
                return self.skip(folder.rel, "changed", "the folder changed since it was listed: not walked")
            with os.scandir(fd) as it:
                found = [(e.name, e.stat(follow_symlinks=False)) for e in it]
        except OSError as exc:
            return self.skip(folder.rel, "unreadable", f"cannot list the folder: {exc.strerror or exc}")
        finally:
            os.close(fd)
        return sorted(found)

    def resolve(self, name: str, st: os.stat_result, real_dir: str, rel: str) -> tuple[str, os.stat_result] | Skipped:
        """The real path and status of an entry, or why it is not followed."""
        real = os.path.join(real_dir, name)
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(real)
            if not self.inside(real):
                return self.skip(rel, "link_outside", f"a link -> {real}, outside {self.real_root}: not followed")
            try:
                st = os.stat(real, follow_symlinks=False)
            except OSError as exc:
                return self.skip(rel, "unreadable", f"a link -> {real}: cannot read: {exc.strerror or exc}")
        if stat.S_ISDIR(st.st_mode) and identity(st) in self.visited:
            return self.skip(rel, "link_loop", f"a link -> {real}, a folder already walked: not followed")
        return real, st

    def run(self) -> Iterator[BQBFile | Skipped]:
        root = _Folder(self.real_root, identity(os.stat(self.real_root)), "", "", 0)
        self.visited.add(root.id)
        tops = self.entries(root)
        if isinstance(tops, Skipped):
            raise OSError(f"cannot list {self.top}: {tops.reason}")
        for name, st in tops:
            if name.startswith(".") or name in SKIP_DIRS:
                continue
            found = self.resolve(name, st, self.real_root, name)
            if isinstance(found, Skipped):
                yield found
            elif stat.S_ISDIR(found[1].st_mode):
                # Files at the top are the clone's own (zips, README.md, build.js): no memes.
                yield from self.category(_Folder(found[0], identity(found[1]), name, name, 0))

    def category(self, top: _Folder) -> Iterator[BQBFile | Skipped]:
        """A category folder and every folder under it: files of a folder first, then its
        folders, each by name (a stable order)."""
        stack = [top]
        while stack:
            folder = stack.pop()
            if folder.id in self.visited:  # reached twice (a link to it listed before it was walked)
                continue
            self.visited.add(folder.id)
            entries = self.entries(folder)
            if isinstance(entries, Skipped):
                yield entries
                continue
            below: list[_Folder] = []
            for name, st in entries:
                if name.startswith("."):
                    continue
                child = f"{folder.rel}/{name}"
                found = self.resolve(name, st, folder.real, child)
                if isinstance(found, Skipped):
                    yield found
                    continue
                real, child_st = found
                if stat.S_ISDIR(child_st.st_mode):
                    if folder.depth >= MAX_DEPTH:
                        yield self.skip(child, "too_deep", f"a folder more than {MAX_DEPTH} levels below the "
                                        "category: not walked")
                    else:
                        below.append(_Folder(real, identity(child_st), child, folder.category, folder.depth + 1))
                elif not stat.S_ISREG(child_st.st_mode):
                    yield self.skip(child, "not_regular", f"{file_kind(child_st.st_mode)}: not read")
                else:
                    yield from self.file(real, identity(child_st), child, name, folder.category)
            stack.extend(reversed(below))

    def file(self, real: str, file_id: tuple[int, int], rel: str, name: str,
             category: str) -> Iterator[BQBFile | Skipped]:
        if skipped(name):
            return
        suffix = os.path.splitext(name)[1].lower()
        if suffix in UNSUPPORTED_SUFFIXES:
            yield self.skip(rel, "unsupported_format", f"{UNSUPPORTED_SUFFIXES[suffix]} image: not ingested "
                            "(accepted: jpg, png, gif, webp)")
            return
        if suffix not in IMAGE_SUFFIXES:
            # No extension or an odd one (common in the clone): the first bytes decide.
            try:
                head = _head(real, file_id)
            except OSError as exc:
                yield self.skip(rel, "unreadable", f"cannot read: {exc.strerror or exc}")
                return
            if sniff_format(head) is None:
                other = sniff_unsupported(head)
                if other:
                    yield self.skip(rel, "unsupported_format", f"{other} image: not ingested "
                                    "(accepted: jpg, png, gif, webp)")
                return  # a LICENSE or a note: no meme
        yield BQBFile(rel_path=escape_name(rel), path=real, category=escape_name(category),
                      tags=file_tags(strip_undecodable(category), strip_undecodable(name)), identity=file_id)


def walk(repo: str | os.PathLike[str]) -> Iterator[BQBFile | Skipped]:
    """Meme files of the clone in a stable order (category folders, then paths, by name), and
    what was skipped that a user must hear about (links out, unreadable, special files,
    other image formats). Docs, archives, dotfiles and partial downloads are skipped quietly."""
    return _Walk(repo).run()
