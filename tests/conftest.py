"""Shared test helpers: the real ``scrapy`` CLI in a folder of its own (for what only a real
process shows: exit codes, signals, the log as a user sees it), and reading what a crawl left.

Most crawls run in the test process (tests/crawling.py). The state they leave is read straight
from the SQLite file, the index folder and the object folder, not through our code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED_DATA = REPO.parent / "shared" / "data"

sys.path.insert(0, str(TESTS))
# In-process crawls (tests/crawling.py) read the project's settings as `scrapy` does.
os.environ["SCRAPY_SETTINGS_MODULE"] = "emomo.settings"


def scrapy_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOMO_", "SCRAPY_"))}
    env["SCRAPY_SETTINGS_MODULE"] = "emomo.settings"
    # tests/ on the path: test configs name stand-in providers by dotted path.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


@dataclass
class Run:
    """A ``scrapy`` command run as a user runs it; for a crawl, its stats from the JSON file
    that the StatsFile extension writes (EMOMO_STATS_FILE), never regexes over the log."""

    returncode: int
    stdout: str
    stderr: str
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def log(self) -> str:
        return self.stderr

    def stat(self, key: str) -> Any:
        """A stat the crawl recorded; a key it never recorded fails the test."""
        if key not in self.stats:
            raise KeyError(f"the crawl recorded no stat {key!r}")
        return self.stats[key]

    def summary(self) -> str:
        lines = [line for line in self.stderr.splitlines() if "Ingest summary:" in line]
        assert lines, f"no ingest summary in the log:\n{self.stderr[-3000:]}"
        return lines[-1]


def scrapy(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> Run:
    stats_file = cwd / f".stats-{uuid.uuid4().hex}.json"
    extra = ["-s", f"EMOMO_STATS_FILE={stats_file}"] if args and args[0] == "crawl" else []
    proc = subprocess.run(
        [sys.executable, "-m", "scrapy", *args, *extra], cwd=cwd, env=scrapy_env(env),
        capture_output=True, text=True, timeout=timeout,
    )
    stats = json.loads(stats_file.read_text(encoding="utf-8")) if stats_file.exists() else {}
    stats_file.unlink(missing_ok=True)
    return Run(proc.returncode, proc.stdout, proc.stderr, stats)


def crawl(cwd: Path, spider: str, *args: str, env: dict[str, str] | None = None) -> Run:
    run = scrapy(cwd, "crawl", spider, *args, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    return run


def start_crawl(cwd: Path, spider: str, *args: str, env: dict[str, str] | None = None,
                log: Path | None = None) -> subprocess.Popen[str]:
    """A crawl in the background (its log in ``log`` when given)."""
    stderr = open(log, "w", encoding="utf-8") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "scrapy", "crawl", spider, *args], cwd=cwd, env=scrapy_env(env),
            stdout=subprocess.DEVNULL, stderr=stderr, text=True, start_new_session=True,
        )
    finally:
        if log is not None:
            stderr.close()  # type: ignore[union-attr]


def count_memes(workdir: Path, status: str = "active") -> int:
    """Memes with ``status`` in a crawl's SQLite file, while the crawl runs (0 before it has tables)."""
    db = workdir / "data" / "emomo.db"
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(db, timeout=1)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM memes WHERE status = ?", (status,)).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def kill(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# --- reading the state a crawl left ------------------------------------------

@dataclass
class State:
    memes: list[dict[str, Any]]
    vectors: list[dict[str, Any]]
    descriptions: list[dict[str, Any]]
    points: dict[str, dict[str, dict[str, Any]]]  # collection -> point id -> payload
    objects: list[str]

    def active_md5s(self) -> set[str]:
        return {m["md5_hash"] for m in self.memes if m["status"] == "active"}

    def comparable(self) -> dict[str, Any]:
        """What two runs over the same input must agree on (ids are random, content is not)."""
        return {
            "memes": sorted((m["md5_hash"], m["source_type"], m["source_id"], m["status"], m["storage_key"],
                             m["format"], m["width"], m["height"], m["is_animated"], m["vlm_description"])
                            for m in self.memes),
            "vectors": sorted((v["md5_hash"], v["collection"], v["qdrant_point_id"], v["status"])
                              for v in self.vectors),
            "points": {c: sorted(p) for c, p in self.points.items()},
            "objects": self.objects,
        }


@contextlib.contextmanager
def edge_shard(folder: Path) -> Iterator[Any]:
    """One collection of an embedded index, opened with Qdrant Edge itself (not our code)."""
    from qdrant_edge import EdgeShard

    shard = EdgeShard.load(str(folder))
    try:
        yield shard
    finally:
        shard.flush()
        shard.close()


def read_points(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{collection: {point id: payload}} of the embedded index under ``root``."""
    from qdrant_edge import ScrollRequest

    points: dict[str, dict[str, dict[str, Any]]] = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not (folder / "edge_config.json").is_file():
            continue
        with edge_shard(folder) as shard:
            found: dict[str, dict[str, Any]] = {}
            offset = None
            while True:
                page, offset = shard.scroll(ScrollRequest(offset=offset, limit=1000, with_payload=True,
                                                          with_vector=False))
                found.update({str(p.id): dict(p.payload or {}) for p in page})
                if offset is None:
                    break
            points[folder.name] = found
    return points


def read_state(cwd: Path) -> State:
    db = cwd / "data" / "emomo.db"
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        memes = [dict(r) for r in conn.execute("SELECT * FROM memes ORDER BY md5_hash")]
        vectors = [dict(r) for r in conn.execute("SELECT * FROM meme_vectors ORDER BY md5_hash")]
        descriptions = [dict(r) for r in conn.execute("SELECT * FROM meme_descriptions ORDER BY md5_hash")]
    finally:
        conn.close()
    points = read_points(cwd / "data" / "qdrant")
    store = cwd / "data" / "objects"
    objects = sorted(p.relative_to(store).as_posix() for p in store.rglob("*")
                     if p.is_file() and p.relative_to(store).parts[0] != ".tmp") if store.exists() else []
    return State(memes, vectors, descriptions, points, objects)


def assert_consistent(state: State, collection: str) -> None:
    """No orphans: every object, point and row has its counterparts."""
    assert all(m["status"] == "active" for m in state.memes), [m for m in state.memes if m["status"] != "active"]
    assert state.objects == sorted(m["storage_key"] for m in state.memes)
    vec_points = {v["qdrant_point_id"] for v in state.vectors if v["collection"] == collection}
    assert set(state.points.get(collection, {})) == vec_points
    assert {v["md5_hash"] for v in state.vectors} == {m["md5_hash"] for m in state.memes}
    for key in state.objects:
        md5 = key.split("/")[1].split(".")[0]
        assert key.startswith(md5[:2] + "/")


def assert_no_orphans(state: State, collection: str) -> None:
    """What any run leaves, finished or not: each object with its row and each row with its object
    (a retired meme keeps both), a vector and a point for each active meme and for no other, a row
    for each point."""
    assert set(state.objects) == {m["storage_key"] for m in state.memes}
    active = {m["md5_hash"] for m in state.memes if m["status"] == "active"}
    vectors = {v["md5_hash"]: v for v in state.vectors if v["collection"] == collection}
    assert set(vectors) == active
    assert set(state.points.get(collection, {})) == {v["qdrant_point_id"] for v in vectors.values()}


@pytest.fixture(scope="session")
def cjk_font() -> str:
    from memegen import font_path

    return font_path()


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
