"""A local clone of ChineseBQB: which files are memes, and what their names say.

Facts this follows (../shared/data/chinesebqb.md): one top folder per category
such as ``001Funny_滑稽大佬😏BQB``; file names such as
``滑稽大佬00001-360度鄙视你.gif`` (series, number, keywords), but also hashes,
GUIDs, screenshots' names, and files with no extension or the wrong one.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from emomo.imaging import SNIFF_BYTES, sniff_format

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
    rel_path: str  # POSIX path inside the clone: the item's source id
    path: str
    category: str
    tags: list[str] = field(default_factory=list)


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


def looks_like_image(path: str, name: str) -> bool:
    """By extension, else by the first bytes: files with no or an odd extension are common."""
    if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return sniff_format(f.read(SNIFF_BYTES)) is not None
    except OSError:
        return False


def walk(repo: str | os.PathLike[str]) -> Iterator[BQBFile]:
    """Meme files of the clone in a stable order: category folders, then paths, by name."""
    root = Path(repo)
    for top in sorted(os.scandir(root), key=lambda e: e.name):
        if not top.is_dir() or top.name.startswith(".") or top.name in SKIP_DIRS:
            continue
        for dirpath, dirnames, filenames in os.walk(top.path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if skipped(name) or not looks_like_image(path, name):
                    continue
                rel = Path(path).relative_to(root).as_posix()
                yield BQBFile(rel_path=rel, path=path, category=top.name, tags=file_tags(top.name, name))
