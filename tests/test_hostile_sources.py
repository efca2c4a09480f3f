"""Hostile trees, manifests and configs at the unit level: the walker, the reader, the manifest
reader, text cleaning and config ranges (issue 9). Each case failed (or hung) before the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hostile import BAD_FILE, BAD_FOLDER, CATEGORY, hostile_tree, manifest_line, world_readable_dir
from memegen import meme_bytes

from emomo.config import load_config
from emomo.errors import ConfigError
from emomo.imaging import ImageError, read_image
from emomo.sources.chinesebqb import BQBFile, Skipped, walk
from emomo.sources.staging import StagingEntry, StagingProblem, read_manifest
from emomo.text import clean_text, escape_name, unescape_name

T = TypeVar("T")


def within(seconds: float, fn: Callable[[], T]) -> T:
    """``fn()``, failing (not hanging) when it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


@pytest.fixture
def tree(tmp_path: Path, cjk_font: str) -> Any:
    t = hostile_tree(tmp_path)
    yield t
    # A walker blocked on a FIFO in a leftover thread would keep waiting for a writer: give it one.
    for fifo in ("x.jpg", "pipe"):
        try:
            fd = os.open(t.root / CATEGORY / fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass


def test_walk_takes_only_regular_files_inside_the_tree_and_says_what_it_skipped(tree: Any) -> None:
    found = within(20, lambda: list(walk(tree.root)))
    files = {f.rel_path: f for f in found if isinstance(f, BQBFile)}
    skipped = {s.rel_path: s for s in found if isinstance(s, Skipped)}
    assert set(files) == {escape_name(rel) for rel in tree.good}
    for rel, data in tree.good.items():
        path = files[escape_name(rel)].path
        assert Path(path).read_bytes() == data
        assert os.path.realpath(path).startswith(str(tree.root.resolve()) + os.sep)
    assert {rel: s.kind for rel, s in skipped.items()} == {escape_name(r): k for r, k in tree.skipped.items()}
    # A refused link names where it points, and nothing the target holds.
    assert "/etc/passwd" in skipped[f"{CATEGORY}/passwd.png"].reason
    assert str(tree.outside / "cat") in skipped["099Outside_外面BQB"].reason
    assert "FIFO" in skipped[f"{CATEGORY}/x.jpg"].reason
    assert "svg" in skipped[f"{CATEGORY}/a.svg"].reason.lower()


def test_names_that_are_not_utf8_get_a_stable_lossless_printable_source_id(tree: Any) -> None:
    found = [f for f in within(20, lambda: list(walk(tree.root))) if isinstance(f, BQBFile)]
    by_id = {f.rel_path: f for f in found}
    bad_file = f"{CATEGORY}/我\\xff.png"
    bad_folder = "100Bad_\\xff\\xfeBQB/bad00001.png"
    assert bad_file in by_id and bad_folder in by_id
    for f in found:
        f.rel_path.encode("utf-8")  # printable and storable: no lone surrogates
        f.category.encode("utf-8")
        for tag in f.tags:
            tag.encode("utf-8")
    assert by_id[bad_folder].category == "100Bad_\\xff\\xfeBQB"
    # Lossless: the id gives back the name's bytes; distinct names never share an id.
    assert os.fsencode(unescape_name(bad_file)) == os.fsencode(f"{CATEGORY}/{BAD_FILE}")
    assert os.fsencode(unescape_name(by_id[bad_folder].category)) == os.fsencode(BAD_FOLDER)
    assert escape_name("a\\xffb") != escape_name(os.fsdecode(b"a\xffb"))
    assert unescape_name(escape_name("a\\xffb")) == "a\\xffb"


def test_reads_are_bounded_and_only_regular_files_are_opened(tree: Any) -> None:
    fifo = str(tree.root / CATEGORY / "x.jpg")
    with pytest.raises(ImageError, match="not a regular file") as err:
        within(10, lambda: read_image(None, fifo, 1_000_000, 10_000_000))
    assert err.value.kind == "not_regular"
    with pytest.raises(ImageError, match="not a regular file"):
        within(10, lambda: read_image(None, "/dev/zero", 1_000_000, 10_000_000))
    # /proc's files are regular and say they hold 0 bytes: the read is bounded all the same.
    with pytest.raises(ImageError, match="over ingest.max_image_bytes=100") as err:
        read_image(None, "/proc/self/maps", 100, 10_000_000)
    assert err.value.kind == "invalid"
    with pytest.raises(ImageError, match="cannot read the file") as err:
        read_image(None, str(tree.root / "nothing.png"), 100, 10_000_000)
    assert err.value.kind == "unreadable"


def test_a_file_that_is_no_image_is_refused_without_printing_its_bytes(tmp_path: Path) -> None:
    secret = tmp_path / "passwd.png"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ImageError) as err:
        read_image(None, str(secret), 1000, 1000)
    assert "not an image" in str(err.value) and "root" not in str(err.value)


WALK_AS_NOBODY = """
import json, os, sys
from emomo.sources.chinesebqb import BQBFile, walk  # imported as root: the interpreter's files may be root's
os.setgid(65534); os.setuid(65534)
out = [[type(e).__name__, e.rel_path, getattr(e, "kind", ""), getattr(e, "reason", "")] for e in walk(sys.argv[1])]
print(json.dumps(out))
"""


def test_unreadable_folders_and_files_are_reported_not_dropped_silently(cjk_font: str) -> None:
    base = world_readable_dir()
    root = base / "ChineseBQB"
    cat = root / CATEGORY
    (cat / "locked").mkdir(parents=True)
    (cat / "locked" / "hidden00001.png").write_bytes(meme_bytes("看不见", 1, "png"))
    (cat / "ok00001.png").write_bytes(meme_bytes("看得见", 2, "png"))
    (cat / "noext").write_bytes(meme_bytes("没扩展名", 3, "png"))
    for p in (base, root, cat):
        p.chmod(0o755)
    (cat / "ok00001.png").chmod(0o644)
    (cat / "locked").chmod(0o000)
    (cat / "noext").chmod(0o000)
    if os.geteuid() == 0:
        out = subprocess.run([sys.executable, "-c", WALK_AS_NOBODY, str(root)], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert out.returncode == 0, out.stderr
        entries = json.loads(out.stdout)
    else:
        entries = [[type(e).__name__, e.rel_path, getattr(e, "kind", ""), getattr(e, "reason", "")]
                   for e in walk(root)]
    by_path = {e[1]: e for e in entries}
    assert by_path[f"{CATEGORY}/ok00001.png"][0] == "BQBFile"
    assert by_path[f"{CATEGORY}/locked"][:3] == ["Skipped", f"{CATEGORY}/locked", "unreadable"]
    assert "Permission denied" in by_path[f"{CATEGORY}/locked"][3]
    assert by_path[f"{CATEGORY}/noext"][:3] == ["Skipped", f"{CATEGORY}/noext", "unreadable"]


# --- staging manifests ---------------------------------------------------------------------

def test_a_hostile_manifest_costs_only_its_bad_lines(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    (folder / "images").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png", "d.png"):
        (folder / "images" / name).write_bytes(b"\x89PNG")
    lines = [
        b"\xef\xbb\xbf" + manifest_line(id="1", filename="a.png", tags=["一"]),   # 1: after a BOM
        manifest_line(id="2", filename="b\u0000.png", tags=[]),                     # 2: NUL in the name
        b'{"id": "3", "filename": "c.png", "tags": ["\xff"]}\n',                    # 3: not UTF-8
        manifest_line(id="4", filename="c.png", tags=["四"]),                       # 4: fine
        manifest_line(id="1", filename="d.png", tags=[]),                           # 5: id of line 1, other file
        manifest_line(id="1", filename="a.png", tags=["一"]),                       # 6: line 1 again
        b'{"id": "7", "filename": "d.png", "tags": ["' + b"x" * 2_000_000 + b'"]}\n',  # 7: 2 MB on one line
        manifest_line(id="8\u0007", filename="d.png", tags=[]),                     # 8: control character in the id
        manifest_line(id="9", filename="d.png", category="分类", tags=["九"]),      # 9: fine
    ]
    (folder / "manifest.jsonl").write_bytes(b"".join(lines))
    entries = within(20, lambda: list(read_manifest(folder)))
    good = [e for e in entries if isinstance(e, StagingEntry)]
    problems = {p.line: p for p in entries if isinstance(p, StagingProblem)}
    assert [(e.line, e.id) for e in good] == [(1, "1"), (4, "4"), (9, "9")]
    assert problems[2].kind == "unsafe_filename" and "line 2:" in problems[2].message
    assert problems[3].kind == "invalid_line" and "line 3: not UTF-8" in problems[3].message
    assert problems[5].kind == "duplicate_id" and "line 5: id '1' was given on line 1" in problems[5].message
    assert problems[6].kind == "duplicate_line" and "line 6: repeats line 1" in problems[6].message
    assert problems[7].kind == "invalid_line" and "line 7: longer than" in problems[7].message
    assert problems[8].kind == "invalid_line" and "line 8: field 'id'" in problems[8].message
    assert set(problems) == {2, 3, 5, 6, 7, 8}


def test_a_manifest_that_is_no_regular_file_is_refused(tmp_path: Path) -> None:
    from emomo.sources.staging import ManifestUnreadable, open_manifest

    folder = tmp_path / "shop"
    folder.mkdir()
    os.mkfifo(folder / "manifest.jsonl")
    with pytest.raises(ManifestUnreadable, match="not a regular file"):
        within(10, lambda: open_manifest(folder).close())


# --- text from sources ----------------------------------------------------------------------

def test_clean_text_drops_control_characters_and_bounds_the_length() -> None:
    assert clean_text("好\x00小子\x07!\u200b", 100) == ("好小子!\u200b", False)
    assert clean_text("a\n b\t c", 100) == ("a b c", False)
    assert clean_text("x" * 300_000, 64) == ("x" * 64, True)
    assert clean_text(os.fsdecode(b"\xffok"), 10) == ("ok", False)  # lone surrogates cannot be stored


# --- config ranges --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("ingest:\n  ocr_threads: -2\n", "ingest.ocr_threads must be >= 0, got -2"),
    ("ingest:\n  max_image_bytes: -1\n", "ingest.max_image_bytes must be >= 1, got -1"),
    ("ingest:\n  max_pixels: 0\n", "ingest.max_pixels must be >= 1, got 0"),
    ("ingest:\n  ocr_min_score: 1.5\n", "ingest.ocr_min_score must be <= 1, got 1.5"),
    ("vlm:\n  max_in_flight: 0\n", "vlm.max_in_flight must be >= 1, got 0"),
    ("ingest:\n  max_tag_chars: 0\n", "ingest.max_tag_chars must be >= 1, got 0"),
])
def test_numbers_out_of_range_are_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={}, base_dir=tmp_path)
    assert message in str(err.value)


def test_a_yaml_error_is_one_line_with_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("ingest:\n  ocr_threads: [1, 2\n  max_pixels: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={}, base_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:3:")
    assert "not valid YAML" in message
