"""A full disk (issue 22): refused at the start in one line, and mid-crawl a stop with a non-zero
exit and the summary, not a crawl that fails item after item and calls itself finished. The
disks are real: small tmpfs mounts (root only, as on the CI machine)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, scrapy
from crawling import run_crawl

SAMPLE = REPO / "samples" / "ChineseBQB"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 300 KB file system: the shipped samples' 30 objects take twice that."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_with_too_little_space_is_refused_at_the_start_in_one_line(tmp_path: Path, small_disk: Path) -> None:
    (tmp_path / "small.yaml").write_text(f"storage:\n  path: {small_disk}\n", encoding="utf-8")
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(SAMPLE), settings={"EMOMO_CONFIG": "small.yaml"})
    assert run.finish_reason == "backend_unavailable"
    [line] = run.lines("Cannot start the crawl", "ERROR")
    assert line.endswith(f"Cannot start the crawl: {small_disk}: its disk has 0 MB free, less than "
                         "ingest.min_free_mb=64; free some space (or point the data elsewhere)")
    assert "emomo/ingest/processed" not in run.stats


def test_a_disk_that_fills_mid_crawl_stops_it_with_exit_1_and_its_summary(tmp_path: Path, small_disk: Path) -> None:
    (tmp_path / "small.yaml").write_text(f"storage:\n  path: {small_disk}\ningest:\n  min_free_mb: 0\n",
                                         encoding="utf-8")
    run = scrapy(tmp_path, "crawl", "chinesebqb", "-a", f"repo_path={SAMPLE}", "-s", "EMOMO_CONFIG=small.yaml")
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.stat("finish_reason") == "disk_full"
    stopped = [line for line in run.stderr.splitlines() if "Stopping the crawl:" in line]
    assert len(stopped) == 1 and "the disk is full" in stopped[0] and "No space left on device" in stopped[0]
    assert "free some space, then run the crawl again" in stopped[0]
    # It stopped at the first full write, not after a string of them; what was stored is whole.
    assert 1 <= run.stat("emomo/store/failed") <= 4
    assert 0 < run.stat("emomo/ingest/processed") < 30
    assert "(30 items; disk_full)" in run.summary() or "disk_full" in run.summary()


def test_a_damaged_database_is_one_line_from_stats_and_verify(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "emomo.db").write_bytes(b"this is no database, it was overwritten\n" * 200)
    for command in (["stats"], ["verify"]):
        run = scrapy(tmp_path, *command)
        assert run.returncode == 1, run.stderr
        assert run.stderr.splitlines() == ["scrapy: error: DatabaseError: file is not a database"], run.stderr
