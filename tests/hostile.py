"""Builds the hostile inputs of issue 9: a ChineseBQB tree a stranger's fork could hold and a
staging manifest another program could write. Shared by the unit tests and the crawls."""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from memegen import meme_bytes
from PIL import Image

CATEGORY = "001Funny_滑稽大佬😏BQB"
#: a folder name and a file name whose bytes are not UTF-8
BAD_FOLDER = os.fsdecode(b"100Bad_\xff\xfeBQB")
BAD_FILE = os.fsdecode("我".encode() + b"\xff.png")


def other_image(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, format=fmt)
    return buf.getvalue()


@dataclass
class HostileTree:
    root: Path
    outside: Path
    #: relative paths (as the source ids should read) of the images to ingest
    good: dict[str, bytes] = field(default_factory=dict)
    #: relative path -> the stats kind it must be skipped under
    skipped: dict[str, str] = field(default_factory=dict)
    #: bytes that must never be ingested (they live outside the tree)
    outside_image: bytes = b""


def hostile_tree(base: Path) -> HostileTree:
    root = base / "ChineseBQB"
    outside = base / "outside"
    cat = root / CATEGORY
    cat.mkdir(parents=True)
    outside.mkdir()
    tree = HostileTree(root, outside)

    def good(rel: str, caption: str, seed: int) -> None:
        data = meme_bytes(caption, seed, "png")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        tree.good[rel] = data

    good(f"{CATEGORY}/滑稽大佬00001-好家伙.png", "好家伙", 1)
    # Names that are not UTF-8: ingested under an escaped, lossless source id.
    good(f"{CATEGORY}/{BAD_FILE}", "字节名字", 2)
    good(f"{BAD_FOLDER}/bad00001.png", "坏文件夹", 3)
    # A link inside the tree to a file inside the tree: followed.
    os.symlink("滑稽大佬00001-好家伙.png", cat / "inside-link.png")
    tree.good[f"{CATEGORY}/inside-link.png"] = tree.good[f"{CATEGORY}/滑稽大佬00001-好家伙.png"]

    # Not regular files: opening one would block or never end.
    os.mkfifo(cat / "x.jpg")
    os.mkfifo(cat / "pipe")
    tree.skipped[f"{CATEGORY}/x.jpg"] = "not_regular"
    tree.skipped[f"{CATEGORY}/pipe"] = "not_regular"
    # Links that leave the tree: a device, an image elsewhere, a system file, a whole category.
    tree.outside_image = meme_bytes("外面的图", 4, "png")
    (outside / "secret.png").write_bytes(tree.outside_image)
    (outside / "cat").mkdir()
    (outside / "cat" / "inner00001-外面.png").write_bytes(meme_bytes("外面分类", 5, "png"))
    os.symlink("/dev/zero", cat / "z.jpg")
    os.symlink(outside / "secret.png", cat / "leak.png")
    os.symlink("/etc/passwd", cat / "passwd.png")
    os.symlink(outside / "cat", root / "099Outside_外面BQB")
    for rel in ("z.jpg", "leak.png", "passwd.png"):
        tree.skipped[f"{CATEGORY}/{rel}"] = "link_outside"
    tree.skipped["099Outside_外面BQB"] = "link_outside"
    # A folder link back up the tree: walking it would never end.
    os.symlink("..", cat / "loop")
    tree.skipped[f"{CATEGORY}/loop"] = "link_loop"
    # Images in formats we do not ingest, under their own extension.
    (cat / "a.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    (cat / "b.bmp").write_bytes(other_image("BMP"))
    (cat / "c.tiff").write_bytes(other_image("TIFF"))
    (cat / "d.ico").write_bytes(other_image("ICO"))
    for rel in ("a.svg", "b.bmp", "c.tiff", "d.ico"):
        tree.skipped[f"{CATEGORY}/{rel}"] = "unsupported_format"
    # What a clone also holds: skipped without a warning, as before.
    (cat / "index.md").write_text("# index", encoding="utf-8")
    return tree


def world_readable_dir() -> Path:
    """A folder that an unprivileged user can enter (pytest's tmp folders are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="emomo-nobody-"))
    path.chmod(0o755)
    return path


def manifest_line(**record: object) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
