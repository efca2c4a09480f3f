"""The embedded index on Qdrant Edge and ``scrapy index copy``: the interface on small
collections, the errors a user meets at start, and the move of a collection between indexes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import edge_shard, read_points, read_state, scrapy, scrapy_env
from crawling import run_crawl
from memegen import CAPTIONS, CATEGORIES, build_tree
from qdrant_edge import CountRequest

from emomo.config import QdrantConfig
from emomo.errors import BackendUnavailable, ConfigError
from emomo.repositories.qdrant_edge_index import EdgeIndex
from emomo.repositories.vector_index import SearchFilter, point_id

COLLECTION = "emomo-e5-small"


def unit(seed: int, dims: int = 8) -> list[float]:
    rng = random.Random(seed)
    v = [rng.uniform(-1, 1) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def sample_points(n: int, dims: int = 8) -> list[tuple[str, list[float], dict[str, Any]]]:
    return [(point_id("c", f"{i:032x}"), unit(i, dims),
             {"md5": f"{i:032x}", "category": ("猫", "狗")[i % 2], "is_animated": i % 3 == 0,
              "source_type": "chinesebqb", "tags": [f"t{i}"], "vlm_description": f"第{i}个"})
            for i in range(n)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_edge_index_create_upsert_filter_count_delete_reopen(tmp_path: Path) -> None:
    root = tmp_path / "qdrant"
    points = sample_points(30)

    async def first() -> None:
        index = EdgeIndex(QdrantConfig(path=str(root)))
        await index.open()
        try:
            assert await index.collections() == []
            assert await index.search("c", points[0][1], 3) == []  # no collection yet: no hits, no folder made
            assert not root.exists()
            await index.ensure_collection("c", 8, "local")
            await index.upsert("c", points)
            assert await index.count("c") == 30
            [best, *_] = await index.search("c", points[7][1], 5)
            assert (best.point_id, best.payload["md5"]) == (points[7][0], f"{7:032x}")
            assert best.score == pytest.approx(1.0, abs=1e-5)  # cosine
            cats = await index.search("c", points[7][1], 30, SearchFilter(category="猫"))
            assert len(cats) == 15 and {h.payload["category"] for h in cats} == {"猫"}
            moving = await index.search("c", points[7][1], 30, SearchFilter(is_animated=True, category="狗"))
            assert sorted(int(h.payload["md5"], 16) for h in moving) == [3, 9, 15, 21, 27]
            await index.delete("c", points[7][0])  # how a later stage's failure undoes a point
            assert await index.count("c") == 29
            assert points[7][0] not in {h.point_id for h in await index.search("c", points[7][1], 5)}
            with pytest.raises(ConfigError, match=r"embeddings\[big\].dimensions is 16 but the Qdrant collection "
                                                  r"'c' holds 8-dimensional vectors"):
                await index.ensure_collection("c", 16, "big")
        finally:
            await index.close()

    run(first())
    assert sorted(read_points(root)) == ["c"]
    assert len(read_points(root)["c"]) == 29

    async def again() -> None:
        index = EdgeIndex(QdrantConfig(path=str(root)))
        await index.open()
        try:
            assert await index.collections() == ["c"]
            assert await index.dimensions("c") == 8
            assert len(await index.points("c")) == 29
            page, following = await index.scroll("c", None, 10)
            assert len(page) == 10 and following is not None and len(page[0][1]) == 8
            assert await index.existing("c", [points[0][0], points[7][0]]) == {points[0][0]}
        finally:
            await index.close()

    run(again())


def clustered(n: int, dims: int = 384, clusters: int = 40, seed: int = 3) -> np.ndarray:
    """Unit vectors around a few dozen centres, as descriptions of memes gather around their
    captions (numpy: drawn in Python, 8,000 of them took two seconds of the suite)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1, 1, (clusters, dims))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    v = centres[rng.integers(clusters, size=n)] + rng.normal(0, 0.03, (n, dims))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_search_finds_the_nearest_before_the_build_and_after_it(tmp_path: Path) -> None:
    """8,000 points of 384 dimensions: searched over a plain segment (exactly), then over the
    HNSW graph; both agree with a scan done here."""
    root = tmp_path / "qdrant"
    vectors = clustered(8000)
    points = [(point_id("c", f"{i:032x}"), v, {"md5": f"{i:032x}"}) for i, v in enumerate(vectors.tolist())]
    near = vectors[np.arange(20) * 397] + np.random.default_rng(9).normal(0, 0.01, (20, vectors.shape[1]))
    queries = near.tolist()
    truth = [[points[i][0] for i in np.argsort(-(vectors @ q), kind="stable")[:5]] for q in near]

    async def search_all(index: EdgeIndex) -> list[list[str]]:
        return [[h.point_id for h in await index.search("c", q, 5)] for q in queries]

    async def go() -> tuple[list[list[str]], list[list[str]], Any, Any]:
        index = EdgeIndex(QdrantConfig(path=str(root), build_after_points=10_000))
        await index.open()
        try:
            await index.ensure_collection("c", 384, "local")
            for start in range(0, len(points), 500):
                await index.upsert("c", points[start:start + 500])
            before = await search_all(index)
            skipped = await index.build("c")
        finally:
            await index.close()
        index = EdgeIndex(QdrantConfig(path=str(root), build_after_points=5000))
        await index.open()
        try:
            built = await index.build("c")
            after = await search_all(index)
            return before, after, skipped, built
        finally:
            await index.close()

    before, after, skipped, built = run(go())
    assert (skipped.built, skipped.unindexed_before) == (False, 8000)
    assert (built.built, built.points, built.unindexed_before) == (True, 8000, 8000)
    assert before == truth  # exact before the build
    assert [f[0] for f in after] == [t[0] for t in truth]  # the point each query was made near
    recall = sum(len(set(f) & set(t)) for f, t in zip(after, truth, strict=True)) / (5 * len(truth))
    assert recall >= 0.9, recall  # HNSW is approximate, and good
    with edge_shard(root / "c") as shard:
        assert shard.info().indexed_vectors_count == 8000
        assert shard.count(CountRequest(exact=True)) == 8000


def test_a_second_process_on_the_shard_gets_one_line_and_exit_2(tmp_path: Path) -> None:
    root = tmp_path / "data" / "qdrant"

    async def hold() -> None:
        index = EdgeIndex(QdrantConfig(path=str(root)))
        await index.open()
        await index.ensure_collection(COLLECTION, 384, "local")
        points = sample_points(40, 384)
        await index.upsert(COLLECTION, points[:20])
        try:
            got = await asyncio.to_thread(scrapy, tmp_path, "stats", "--json")
            assert got.returncode == 2, got.stderr
            [line] = got.stderr.splitlines()
            # It names the holder: this process (its command, since when), which a user can stop.
            assert re.fullmatch(
                f"scrapy: error: qdrant.path: the embedded index folder {re.escape(str(root / COLLECTION))} is in "
                rf"use by pid {os.getpid()} \(python -[mc].*, since 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d\); the embedded "
                r"index is single-process: wait for it to finish \(or stop it\), or set qdrant.url to a Qdrant "
                "server to run jobs side by side", line), line
            # and in-process, the same refusal
            other = EdgeIndex(QdrantConfig(path=str(root)))
            with pytest.raises(BackendUnavailable, match=f"is in use by pid {os.getpid()}"):
                await other.count(COLLECTION)
            await other.close()
            # The refused never touched the shard: the holder writes on (a refused open once broke
            # the holder's next flush, "Tracker journal ... is shorter than expected").
            await index.upsert(COLLECTION, points[20:])
        finally:
            await index.close()

    run(hold())
    assert len(read_points(root)[COLLECTION]) == 40
    assert scrapy(tmp_path, "stats", "--json").returncode == 0


@pytest.mark.parametrize("damage, expected", [
    ("config", "cannot open the index folder"),
    ("newer", "was written by a newer version of Qdrant Edge (Data version 9.9.9 is newer than application "
              "version"),
    ("segment", "cannot open the index folder"),
])
def test_a_damaged_or_newer_shard_is_refused_in_one_line_naming_its_folder(
        tmp_path: Path, damage: str, expected: str) -> None:
    root = tmp_path / "data" / "qdrant"

    async def make() -> None:
        index = EdgeIndex(QdrantConfig(path=str(root)))
        await index.open()
        await index.ensure_collection(COLLECTION, 384, "local")
        await index.upsert(COLLECTION, sample_points(3, 384))
        await index.close()

    run(make())
    folder = root / COLLECTION
    if damage == "config":
        (folder / "edge_config.json").write_text("{garbage", encoding="utf-8")
    else:
        for segment in (folder / "segments").iterdir():
            name = "version.info" if damage == "newer" else "segment.json"
            (segment / name).write_text("9.9.9" if damage == "newer" else "{bad", encoding="utf-8")
    got = scrapy(tmp_path, "stats")
    assert got.returncode == 2
    [line] = got.stderr.splitlines()
    assert line.startswith("scrapy: error: qdrant.path: ") and str(folder) in line and expected in line, line
    assert "Service runtime error" not in line


def copy(workdir: Path, *args: str) -> dict[str, Any]:
    got = scrapy(workdir, "index", "copy", "--json", *args)
    assert got.returncode == 0, got.stderr[-3000:]
    return json.loads(got.stdout)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_local_mode_folder_is_refused_then_converted_and_searches_the_same(tmp_path: Path, cjk_font: str) -> None:
    tree = tmp_path / "ChineseBQB"
    planted = build_tree(tree, CAPTIONS[:12], CATEGORIES, seed=5)
    run_crawl(tmp_path, "chinesebqb", repo_path=str(tree))
    query = CAPTIONS[3]
    before = json.loads(scrapy(tmp_path, "search", query, "--json").stdout)
    assert len(before) == 10

    # Edge -> a folder in qdrant-client's local mode: what an earlier version left on disk
    data = tmp_path / "data"
    made = copy(tmp_path, "--from", "config", "--to", f"local:{data / 'old'}")
    assert made["collections"] == [{"collection": COLLECTION, "copied": 12, "already_there": 0,
                                    "source_points": 12, "target_points": 12, "seconds": made["collections"][0][
                                        "seconds"], "complete": True}]
    shutil.rmtree(data / "qdrant")
    (data / "old").rename(data / "qdrant")
    untouched = digest(data / "qdrant")

    refused = scrapy(tmp_path, "crawl", "chinesebqb", "-a", f"repo_path={tree}")
    assert refused.returncode == 2
    [line] = [x for x in refused.stderr.splitlines() if "Cannot start the crawl" in x]
    old = f"{data / 'qdrant'}.local-mode"
    assert line.endswith(f"qdrant.path: {data / 'qdrant'} holds an index written by qdrant-client's local mode, "
                         "which this version no longer opens (it read every point into memory); convert it once, "
                         f"nothing is lost: mv {data / 'qdrant'} {old} && scrapy index copy --from local:{old}")
    searched = scrapy(tmp_path, "search", query)
    assert searched.returncode == 2 and "scrapy index copy --from local:" in searched.stderr
    assert digest(data / "qdrant") == untouched

    # the command the line names
    (data / "qdrant").rename(old)
    converted = copy(tmp_path, "--from", f"local:{old}")
    assert [(c["collection"], c["copied"], c["target_points"], c["complete"]) for c in converted["collections"]] \
        == [(COLLECTION, 12, 12, True)]
    after = json.loads(scrapy(tmp_path, "search", query, "--json").stdout)
    assert [h["md5"] for h in after] == [h["md5"] for h in before]
    assert [h["score"] for h in after] == pytest.approx([h["score"] for h in before], abs=1e-4)
    stats = json.loads(scrapy(tmp_path, "stats", "--json").stdout)
    assert stats["collections"] == {COLLECTION: {"points": 12, "vectors": 12}}
    # the crawl goes on where it was: nothing new to do
    again = run_crawl(tmp_path, "chinesebqb", repo_path=str(tree))
    assert again.stat("emomo/dedupe/duplicate") == 12
    assert read_state(tmp_path).active_md5s() == {p.md5 for p in planted}


def test_edge_to_edge_copy_is_exact_and_a_cut_copy_finishes_when_run_again(tmp_path: Path) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    points = sample_points(700, 384)

    async def make() -> None:
        index = EdgeIndex(QdrantConfig(path=str(source)))
        await index.open()
        for name, part in (("one", points), ("two", points[:50])):
            await index.ensure_collection(name, 384, "local")
            await index.upsert(name, part)
        await index.close()

    run(make())
    first = copy(tmp_path, "--from", f"edge:{source}", "--to", f"edge:{target}", "--batch", "64")
    assert {c["collection"]: (c["copied"], c["already_there"], c["target_points"], c["complete"])
            for c in first["collections"]} == {"one": (700, 0, 700, True), "two": (50, 0, 50, True)}
    assert read_points(target) == read_points(source)

    # a copy cut short: the target lost some points; running it again writes only those
    with edge_shard(target / "one") as shard:
        from qdrant_edge import UpdateOperation

        shard.update(UpdateOperation.delete_points([p[0] for p in points[100:340]]))
    second = copy(tmp_path, "--from", f"edge:{source}", "--to", f"edge:{target}", "--collection", "one")
    assert [(c["copied"], c["already_there"], c["target_points"]) for c in second["collections"]] == [(240, 460, 700)]
    assert read_points(target) == read_points(source)

    # dimension clash and bad specs: one line, exit 2
    async def clash() -> None:
        index = EdgeIndex(QdrantConfig(path=str(tmp_path / "c")))
        await index.open()
        await index.ensure_collection("one", 8, "local")
        await index.close()

    run(clash())
    got = scrapy(tmp_path, "index", "copy", "--from", f"edge:{source}", "--to", f"edge:{tmp_path / 'c'}")
    assert got.returncode == 2
    assert got.stderr.splitlines() == [
        f"scrapy: error: embedded index {tmp_path / 'c'} holds 'one' with 8-dimensional vectors, the source "
        "384-dimensional ones; copy into another index or remove that collection first"]
    bad = scrapy(tmp_path, "index", "copy", "--from", "qdrant:somewhere")
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "scrapy: error: --from: 'qdrant:somewhere' names no index; give config, edge:PATH, local:PATH or "
        "http(s)://HOST:PORT"]


def test_a_crawl_builds_the_search_graph_once_enough_points_wait(tmp_path: Path, cjk_font: str) -> None:
    tree = tmp_path / "ChineseBQB"
    build_tree(tree, CAPTIONS[20:32], CATEGORIES, seed=8)
    (tmp_path / "config.yaml").write_text("qdrant:\n  build_after_points: 10\n", encoding="utf-8")
    config = {"EMOMO_CONFIG": "config.yaml"}
    first = run_crawl(tmp_path, "chinesebqb", repo_path=str(tree), limit="6", settings=config)
    assert "emomo/index/build_seconds" not in first.stats  # 6 waiting, fewer than 10: searched exactly
    second = run_crawl(tmp_path, "chinesebqb", repo_path=str(tree), settings=config)
    assert second.stat("emomo/index/build_seconds") >= 0
    assert len(second.lines(f"Built the search index of {COLLECTION}: 12 points (12 new) in ", "INFO")) == 1
    with edge_shard(tmp_path / "data" / "qdrant" / COLLECTION) as shard:
        # every point in the graph, and its BM25 terms (indexed as they arrive) counted beside it
        assert (shard.info().points_count, shard.info().indexed_vectors_count) == (12, 24)
    third = run_crawl(tmp_path, "chinesebqb", repo_path=str(tree), settings=config)
    assert "emomo/index/build_seconds" not in third.stats  # nothing new
    hits = json.loads(scrapy(tmp_path, "search", CAPTIONS[25], "--json", "--top", "3").stdout)
    assert CAPTIONS[25] in hits[0]["description"]


HOLDER = """
import sys, qdrant_edge as e
s = e.EdgeShard.create(sys.argv[1], e.EdgeConfig(vectors=e.EdgeVectorParams(size=4, distance=e.Distance.Cosine)))
s.update(e.UpdateOperation.upsert_points([e.Point(0, [1.0, 0.0, 0.0, 0.0], {"n": 0})]))
s.flush()
print("held", flush=True)
sys.stdin.readline()
for n in range(1, 30):
    s.update(e.UpdateOperation.upsert_points([e.Point(n, [1.0, float(n), 0.0, 0.0], {"n": n})]))
    s.flush()
s.close()
print("wrote", flush=True)
"""


def test_python_api_refuses_a_lock_held_in_another_process(tmp_path: Path) -> None:
    root = tmp_path / "qdrant"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root / "c")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=scrapy_env())
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    index = EdgeIndex(QdrantConfig(path=str(root)))
    with pytest.raises(BackendUnavailable, match=f"folder {root / 'c'} is in use by another process"):
        run(index.ensure_collection("c", 4, "local"))
    run(index.close())
    # The holder, another program on the Qdrant Edge API, writes on unharmed.
    out, err = holder.communicate("go\n", timeout=30)
    assert (holder.returncode, out.strip(), err) == (0, "wrote", "")
    assert len(read_points(root)["c"]) == 30


RACE = """
import asyncio, sys, time
from emomo.config import QdrantConfig
from emomo.repositories.qdrant_edge_index import EdgeIndex

async def main() -> None:
    index = EdgeIndex(QdrantConfig(path=sys.argv[1]))
    await index.open()
    start = float(sys.argv[2])
    time.sleep(max(0.0, start - time.time() - 0.005))  # sleep, not spin: the other test worker needs the core
    while time.time() < start:
        pass
    try:
        await index.ensure_collection("c", 4, "local")
        await asyncio.sleep(0.5)  # held while the other process, started at the same instant, tries
        print("opened")
    except Exception as exc:
        print(exc)
    await index.close()

asyncio.run(main())
"""


def test_two_processes_creating_one_shard_at_once_one_wins_the_other_is_told_it_is_in_use(tmp_path: Path) -> None:
    # Four races at once: creating a shard is a burst of writes, and two creations overlapping in
    # one folder once broke the winner too ("Failed to flush segment state"), one time in tens
    # on a busy machine; eight processes meeting at one instant make the overlap likely.
    start = f"{time.time() + 4.0}"
    roots = [tmp_path / str(race) for race in range(4)]
    procs = [(root, subprocess.Popen([sys.executable, "-c", RACE, str(root), start], stdout=subprocess.PIPE,
                                     text=True, env=scrapy_env())) for root in roots for _ in range(2)]
    outputs = {root: sorted(p.communicate(timeout=60)[0].strip() for r, p in procs if r == root) for root in roots}
    for root, (first, second) in outputs.items():
        assert first == "opened", (first, second)
        # The winner names itself beside the shard once it holds it; a loser that looks before says less.
        assert second.startswith((f"qdrant.path: the embedded index folder {root / 'c'} is in use by pid ",
                                  f"qdrant.path: the embedded index folder {root / 'c'} is in use by another "
                                  "process")), second
