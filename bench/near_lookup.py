"""Near-duplicate lookup benchmark: is the cost per item flat as recorded memes grow?
Prints its figures; asserts nothing.

    .venv/bin/python bench/near_lookup.py [--sizes 1000,20000,100000,200000]

At each size it records that many memes with perceptual hashes (random 64-bit values, with one
in ten a near copy of an earlier one, so that lookups find candidates) through the project's
repository, then times ``near_candidates`` for 500 probes (half near a recorded hash, half
not) and prints p50/p95 ms, candidates per lookup, and the time of a full scan of every hash
(what the band keys avoid) for comparison. ``--driver postgres`` uses DATABASE_URL (a fresh
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emomo.config import DatabaseConfig  # noqa: E402
from emomo.near import band_keys, hamming, probe_keys  # noqa: E402
from emomo.repositories.sqlite import SQLiteMemeRepository  # noqa: E402

DISTANCE = 8


def signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def near(value: int, rnd: random.Random, bits: int) -> int:
    return signed((value & ((1 << 64) - 1)) ^ sum(1 << b for b in rnd.sample(range(64), bits)))


def rows(start: int, count: int, rnd: random.Random, hashes: list[int]) -> list[tuple[str, int]]:
    out = []
    for _ in range(count):
        value = near(rnd.choice(hashes), rnd, rnd.randint(1, 8)) if hashes and rnd.random() < 0.1 \
            else signed(rnd.getrandbits(64))
        hashes.append(value)
        out.append((str(uuid.UUID(int=rnd.getrandbits(128))), value))
    return out


def bulk_insert_sqlite(path: Path, batch: list[tuple[str, int]], start: int) -> None:
    """Rows as the record stage writes them (a meme, its hash, its four band keys), in bulk."""
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO memes (id, source_type, source_id, md5_hash, storage_key, format, width, height, "
            "file_size, status) VALUES (?, 'bench', ?, ?, ?, 'png', 240, 240, 1000, 'active')",
            [(mid, str(start + i), f"{start + i:032x}", f"{start + i:032x}.png") for i, (mid, _) in enumerate(batch)])
        conn.executemany("INSERT INTO meme_phashes (meme_id, phash) VALUES (?, ?)", batch)
        conn.executemany("INSERT INTO meme_phash_bands (band_key, meme_id) VALUES (?, ?)",
                         [(key, mid) for mid, value in batch for key in band_keys(value)])
    conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,20000,100000,200000")
    parser.add_argument("--probes", type=int, default=500)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rnd = random.Random(15)
    folder = Path(tempfile.mkdtemp(prefix="emomo-near-"))
    path = folder / "emomo.db"
    repo = SQLiteMemeRepository(DatabaseConfig(path=str(path)))
    await repo.open()
    await repo.migrate()
    hashes: list[int] = []
    print(f"near-duplicate lookup, SQLite at {path}, distance {DISTANCE} bits, "
          f"{len(probe_keys(0, DISTANCE))} band keys a lookup")
    print(f"{'memes':>8} {'p50 ms':>8} {'p95 ms':>8} {'candidates':>11} {'within':>7} {'scan ms':>8}")
    try:
        for size in sizes:
            missing = size - len(hashes)
            if missing > 0:
                bulk_insert_sqlite(path, rows(len(hashes), missing, rnd, hashes), len(hashes))
            probes = [near(rnd.choice(hashes), rnd, rnd.randint(0, 8)) if i % 2 else signed(rnd.getrandbits(64))
                      for i in range(args.probes)]
            times, found, within = [], [], []
            for value in probes:
                started = time.perf_counter()
                candidates = await repo.near_candidates(probe_keys(value, DISTANCE))
                close = [c for c in candidates if hamming(value, c.phash) <= DISTANCE]
                times.append((time.perf_counter() - started) * 1000)
                found.append(len(candidates))
                within.append(len(close))
            started = time.perf_counter()
            scan = sqlite3.connect(path)
            every = [int(r[0]) for r in scan.execute("SELECT phash FROM meme_phashes")]
            scan.close()
            _ = [h for h in every if hamming(probes[1], h) <= DISTANCE]
            scan_ms = (time.perf_counter() - started) * 1000
            times.sort()
            print(f"{size:>8} {statistics.median(times):>8.2f} {times[int(len(times) * 0.95)]:>8.2f} "
                  f"{statistics.mean(found):>11.1f} {statistics.mean(within):>7.2f} {scan_ms:>8.1f}", flush=True)
    finally:
        await repo.close()
        shutil.rmtree(folder)


if __name__ == "__main__":
    asyncio.run(main())
