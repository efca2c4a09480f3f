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


def _frame_bomb(frames: int, side: int) -> bytes:
    """A GIF of ``frames`` frames on a ``side``-pixel screen, each frame one pixel: tens of KB."""
    import struct

    out = bytearray(b"GIF89a" + struct.pack("<HH", side, side) + bytes([0x80, 0, 0]) + b"\0\0\0\xff\xff\xff")
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for _ in range(frames):
        out += b"\x21\xf9\x04\x04\x01\x00\x00\x00" + b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00"
        out += b"\x02\x02\x44\x01\x00"
    return bytes(out + b"\x3b")


@pytest.mark.parametrize(("frames", "message"), [
    (2000, "an animation of 2000 frames is over ingest.max_frames=1000"),
    (100, "an animation of 100 frames of 3000x3000 pixels (900000000 in all) is over "
          "ingest.max_frame_pixels=400000000"),
])
def test_a_frame_bomb_is_refused_before_its_frames_are_decoded(frames: int, message: str) -> None:
    from emomo.config import IngestConfig

    limits = IngestConfig()
    bomb = _frame_bomb(frames, 3000)
    assert len(bomb) < 60_000
    with pytest.raises(ImageError) as err:
        within(5, lambda: read_image(bomb, None, limits.max_image_bytes, limits.max_pixels, None, limits.max_frames,
                                     limits.max_frame_pixels))
    assert str(err.value) == message


def test_a_png_with_a_bad_checksum_is_called_a_broken_png(tmp_path: Path, cjk_font: str) -> None:
    data = bytearray(meme_bytes("校验", 6, "png"))
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    with pytest.raises(ImageError, match="^broken png file: its header cannot be read$"):
        read_image(bytes(data), None, 10_000_000, 10_000_000)


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


def test_a_line_that_breaks_the_json_parser_costs_only_itself(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.png").write_bytes(b"\x89PNG")
    lines = [b"[" * 100_000 + b"\n",                                               # 1: nested past the recursion limit
             b'{"id": "2", "filename": "a.png", "n": ' + b"9" * 5000 + b"}\n",     # 2: a 5,000-digit number
             manifest_line(id="3", filename="a.png", tags=[])]                     # 3: fine
    (folder / "manifest.jsonl").write_bytes(b"".join(lines))
    entries = within(20, lambda: list(read_manifest(folder)))
    assert [(e.line, e.id) for e in entries if isinstance(e, StagingEntry)] == [(3, "3")]
    problems = {p.line: p.message for p in entries if isinstance(p, StagingProblem)}
    assert problems[1].startswith("line 1: unreadable JSON (RecursionError") and "\n" not in problems[1]
    assert problems[2].startswith("line 2: unreadable JSON (ValueError: Exceeds the limit")


def test_a_staging_images_folder_that_is_a_link_is_refused_in_one_line(tmp_path: Path) -> None:
    from emomo.sources.staging import ManifestUnreadable

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "a.png").write_bytes(b"\x89PNG")
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "images").symlink_to(outside)
    (folder / "manifest.jsonl").write_bytes(manifest_line(id="1", filename="a.png", tags=[]))
    with pytest.raises(ManifestUnreadable, match=f"^{folder / 'images'} is a link \\(to {outside}\\): "):
        list(read_manifest(folder))


def test_a_file_swapped_for_a_link_after_the_walk_is_not_read(tmp_path: Path, cjk_font: str) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(meme_bytes("机密", 1, "png"))
    category = tmp_path / "repo" / "001Funny_滑稽BQB"
    category.mkdir(parents=True)
    for name in ("m1.png", "m2.png"):
        (category / name).write_bytes(meme_bytes(name, 2, "png"))
    [first, second] = [f for f in walk(tmp_path / "repo") if isinstance(f, BQBFile)]
    # between the listing and the read: one file becomes a link out, the other another file
    link = category / "tmp.lnk"
    link.symlink_to(secret)
    os.replace(link, first.path)
    os.replace(secret, second.path)
    for listed in (first, second):
        with pytest.raises(ImageError, match="listed") as err:
            read_image(None, listed.path, 10_000_000, 10_000_000, listed.identity)
        assert err.value.kind == "changed"


def test_a_tree_nested_a_thousand_deep_is_walked_to_its_bound(tmp_path: Path, cjk_font: str) -> None:
    from emomo.sources.chinesebqb import MAX_DEPTH

    category = tmp_path / "repo" / "002Cat_猫BQB"
    category.mkdir(parents=True)
    (category / "top.png").write_bytes(meme_bytes("上面", 3, "png"))
    deep = category
    for _ in range(1000):
        deep = deep / "d"
        os.mkdir(deep)
    (deep / "bottom.png").write_bytes(meme_bytes("下面", 4, "png"))
    (category / "d" / "near.png").write_bytes(meme_bytes("近", 5, "png"))
    try:
        found = within(60, lambda: list(walk(tmp_path / "repo")))
    finally:
        # pytest's clean-up of old temporary folders recurses: it could not remove this one
        (deep / "bottom.png").unlink()
        while deep != category:
            for leftover in deep.iterdir():
                leftover.unlink()
            deep.rmdir()
            deep = deep.parent
    assert [f.rel_path for f in found if isinstance(f, BQBFile)] == ["002Cat_猫BQB/top.png", "002Cat_猫BQB/d/near.png"]
    [too_deep] = [f for f in found if isinstance(f, Skipped)]
    assert too_deep.kind == "too_deep" and too_deep.rel_path.count("/d") == MAX_DEPTH + 1
    assert f"more than {MAX_DEPTH} levels" in too_deep.reason


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
    ("ingest:\n  batch_max_wait: .inf\n", "ingest.batch_max_wait must be a finite number, got inf"),
    ("ingest:\n  ocr_threads: 1000000000000000000000000000000\n", "ingest.ocr_threads must be <= "),
    ("ingest:\n  ocr_threads: 100000\n", f"ingest.ocr_threads must be <= {4 * (os.cpu_count() or 1)}, got 100000"),
    ("vlm:\n  timeout: 1.0e9\n", "vlm.timeout must be <= 3600, got '1.0e9'"),
    ("server:\n  idle_timeout: .nan\n", "server.idle_timeout must be a finite number, got nan"),
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
