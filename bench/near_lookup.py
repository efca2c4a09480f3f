"""Near-duplicate check at template scale: is the work per file flat as one series grows?
Prints its figures; asserts nothing.

    .venv/bin/python bench/near_lookup.py [--sizes 100,1000,10000] [--probes 300] [--copies 0.1]
    .venv/bin/python bench/near_lookup.py --driver postgres    # DATABASE_URL, or the local server
                                                               # (vacuumed and checkpointed after each
                                                               # size is recorded; --no-settle: not)

It draws one series (a panda head, each member with its own caption, a fifth of them
animated), records it through the project's repository as the record stage would (a meme, its
signature, its vector row), growing it to each size in turn. At each size it runs the dedupe
stage's near-duplicate check (``find_near_duplicate``: the in-memory index, the one query for
the nearest candidates, the fine check) for new files of the same series (another caption:
must stay apart) and for copies of recorded members (re-encoded, resized, converted, cropped,
a GIF's first frame: must merge), and prints per-file wall and CPU time (p50/p95, measured on
the check alone: the file's decode and measure are the same at every size and shown apart),
candidates compared, and the answers.

The files checked are mixed as the issue's tree is (``--copies 0.1``: one in ten a copy, the
kinds in turn); the p95 of the copies alone, and of the crops among them (the costliest kind:
a fit to the series' frame, often a second ranking), are printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from memegen import COPY_KINDS, copy_of, series_captions, template_bytes  # noqa: E402

from emomo.blocking import one_blas_thread  # noqa: E402
from emomo.config import DatabaseConfig, EmomoConfig  # noqa: E402
from emomo.ingest.near_dupes import NearIndex, NearInFlight, find_near_duplicate, signature  # noqa: E402
from emomo.ingest.state import ItemState  # noqa: E402
from emomo.near import NearCheck, measure  # noqa: E402
from emomo.repositories import MemeRecord, VectorRecord  # noqa: E402

COLLECTION = "bench"


class Stats(Counter[str]):
    def inc_value(self, key: str, count: int = 1) -> None:
        self[key] += count


def member(i: int, caption: str) -> bytes:
    return template_bytes(0, caption, "gif" if i % 5 == 0 else "png")


class Store(dict[str, bytes]):
    """The objects a candidate's text is read from, when the thumbnails cannot decide."""

    async def get(self, key: str) -> bytes:
        return self[key]


async def record(repo: Any, store: Store, i: int, caption: str, data: bytes) -> None:
    check = NearCheck.of(measure(data))
    md5 = uuid.UUID(int=i).hex
    meme = MemeRecord(id=str(uuid.UUID(int=i + (1 << 64))), source_type="bench", source_id=str(i), md5_hash=md5,
                      storage_key=f"{md5[:2]}/{md5}.png", format="png", width=240, height=240, is_animated=False,
                      file_size=len(data), category="熊猫头", status="pending", vlm_description=caption,
                      vlm_model="bench")
    await repo.insert_meme(meme, None, signature(check))
    store[meme.storage_key] = data
    await repo.record_vectors([VectorRecord(str(uuid.uuid4()), meme.id, md5, COLLECTION, "bench", str(uuid.uuid4()))])


def runtime_for(config: EmomoConfig, repo: Any, store: Store) -> Any:
    return SimpleNamespace(config=config, repo=repo, store=store, describer=None, stats=Stats(),
                           collection=COLLECTION, near_in_flight=NearInFlight(), near_index=NearIndex(),
                           should_stop=lambda: False)


async def probe(runtime: Any, data: bytes, n: int) -> tuple[float, float, bool, float]:
    """One file through the check: (wall s, CPU s, merged, measure s)."""
    started = time.perf_counter()
    picture = measure(data)
    measured = time.perf_counter() - started
    state = ItemState(md5=f"probe{n:027d}", source=f"probe {n}")
    state.near = NearCheck.of(picture)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        match = await find_near_duplicate(runtime, state, data, picture)
    finally:
        runtime.near_in_flight.leave(state.md5, state.near)
    return time.perf_counter() - wall, time.process_time() - cpu, match is not None, measured


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace, repo: Any, settle: Any = None) -> None:
    sizes = sorted(int(s) for s in args.sizes.split(","))
    every = max(1, round(1 / args.copies)) if args.copies > 0 else 0
    n_copies = args.probes // every if every else 0
    captions = series_captions(sizes[-1] + args.probes - n_copies)
    recorded_captions, others = captions[:sizes[-1]], captions[sizes[-1]:]
    config = EmomoConfig()
    one_blas_thread()  # as a crawl that checks near-duplicates does
    rnd = random.Random(3)
    await repo.open()
    store = Store()
    done = 0
    print(f"one series (template 0); {args.probes} files a size: {args.probes - n_copies} new captions and "
          f"{n_copies} copies (the kinds in turn); dedupe.near_candidates {config.dedupe.near_candidates}")
    print(f"{'members':>8} {'check p50 ms':>13} {'p95 ms':>8} {'CPU p50 ms':>11} {'p95 ms':>8} {'measure ms':>11} "
          f"{'copies p95':>11} {'crops p95':>10} {'candidates/file':>16} {'copies merged':>14} "
          f"{'others kept apart':>18}")
    for size in sizes:
        started = time.perf_counter()
        for i in range(done, size):
            await record(repo, store, i, recorded_captions[i], member(i, recorded_captions[i]))
        done = size
        if settle is not None:
            await asyncio.to_thread(settle)
        runtime = runtime_for(config, repo, store)
        loaded = time.perf_counter()
        await runtime.near_index.refresh(repo, force=True)
        load_s = time.perf_counter() - loaded
        walls: dict[str, list[float]] = {}
        cpus, measures = [], []
        merged = apart = 0
        new = copies = 0
        for n in range(args.probes):
            if every and n % every == every - 1:
                kind = COPY_KINDS[copies % len(COPY_KINDS)]
                target = rnd.randrange(size)
                data, _ = copy_of(member(target, recorded_captions[target]), kind, rnd)
                copies += 1
            else:
                kind, data = "new", template_bytes(0, others[new], "png")
                new += 1
            wall, cpu, hit, m = await probe(runtime, data, n)
            walls.setdefault(kind, []).append(wall)
            cpus.append(cpu)
            measures.append(m)
            if kind == "new":
                apart += not hit
                if hit and os.environ.get("BENCH_DEBUG"):
                    print("merged a new caption:", others[new - 1])
            else:
                merged += hit
        every_wall = [w for ws in walls.values() for w in ws]
        copy_walls = [w for kind, ws in walls.items() if kind != "new" for w in ws]
        per = runtime.stats["emomo/near/candidates"] / args.probes
        timing = (f"{pct(every_wall, .5) * 1000:>13.1f} {pct(every_wall, .95) * 1000:>8.1f} "
                  f"{pct(cpus, .5) * 1000:>11.1f} {pct(cpus, .95) * 1000:>8.1f} "
                  f"{statistics.median(measures) * 1000:>11.1f} {pct(copy_walls, .95) * 1000:>11.1f} "
                  f"{pct(walls.get('crop', [math.nan]), .95) * 1000:>10.1f}")
        print(f"{size:>8} {timing} {per:>16.1f} {merged:>9}/{copies} {apart:>13}/{new}   "
              f"(recorded in {time.perf_counter() - started:.0f} s; index loaded in {load_s * 1000:.0f} ms; "
              f"OCR reads {runtime.stats['emomo/near/ocr_reads']}; of {args.probes} files: put in a "
              f"candidate's frame {runtime.stats['emomo/near/framed']}, fitted to one of their own "
              f"{runtime.stats['emomo/near/refitted']}, ranked again {runtime.stats['emomo/near/reframed']}; "
              f"wall a file: reading new signatures {runtime.stats['emomo/near/wall_ms/refresh'] / args.probes:.1f} "
              f"ms, the candidates' query and judgement {runtime.stats['emomo/near/wall_ms/nearest'] / args.probes:.1f}"
              f" ms, of which the judgement {runtime.stats['emomo/near/wall_ms/recorded'] / args.probes:.1f} ms)",
              flush=True)
    await repo.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--probes", type=int, default=300, help="files checked at each size")
    parser.add_argument("--copies", type=float, default=0.1, help="the share of them that are copies")
    parser.add_argument("--driver", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--no-settle", action="store_true",
                        help="PostgreSQL: check right after recording, without VACUUM ANALYZE and CHECKPOINT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emomo-near-") as d:
        if args.driver == "sqlite":
            from emomo.repositories.sqlite import SQLiteMemeRepository

            asyncio.run(run(args, SQLiteMemeRepository(DatabaseConfig(path=str(Path(d) / "emomo.db")))))
            return
        import os

        import psycopg

        from emomo.repositories.postgres import PostgresMemeRepository

        admin = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        db = f"emomo_near_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        try:
            dsn = admin.rsplit("/", 1)[0] + f"/{db}"

            def settle() -> None:
                """What a long crawl's database has: its statistics, its dead rows vacuumed, and no
                checkpoint under way (right after writing 10,000 memes, the server's flushing
                doubled the check's p50; the query plans do not depend on it)."""
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE")
                    conn.execute("CHECKPOINT")

            asyncio.run(run(args, PostgresMemeRepository(DatabaseConfig(driver="postgres", url=dsn)),
                            None if args.no_settle else settle))
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
