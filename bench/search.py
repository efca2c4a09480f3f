"""Search quality on a generated tree of memes in template series. Prints its figures; asserts nothing.

    .venv/bin/python bench/search.py [--memes 2000] [--workdir /tmp/search2k]

It draws ``--memes`` memes on five templates (a panda head, a cat, a photo-like face, a dog, a
penguin), each with a caption of its own: 4 to 7 characters drawn from those of the test
captions, none inside another (``--joined`` draws ``tests/memegen.series_tree`` instead: past its
166 captions two are joined, so a caption is part of a dozen others and "the right meme" for it
is ambiguous). The files are numbered, not named after their captions: what a search finds by
text was read on the picture. It crawls them with ``scrapy crawl chinesebqb`` on the embedded defaults (once:
the index is kept in the workdir), then measures, in one process, with emomo.query.Searcher:

- whole captions: the right meme at rank 1, and as a ``"text"`` match;
- a piece of a caption (its 2nd to 4th characters): the meme in the top 5;
- ten off-topic queries: how many have no ``"text"`` hit;
- search by picture: a re-encoded, resized or cropped copy finds its meme at rank 1 as
  ``"picture"``; a same-template picture with another caption is never ``"picture"``;
- the time of a search (text and picture), p50 and p95.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
BIN = Path(sys.executable).parent

from memegen import CAPTIONS, CATEGORIES, SeriesFile, copy_of, series_tree, template_bytes  # noqa: E402

OFF_TOPIC = ("xyzzy", "汽车保险理赔流程", "SELECT * FROM users", "量子色动力学", "北京到上海的高铁时刻表",
             "如何申请护照", "lorem ipsum dolor", "太平洋有多深", "股票期权怎么交税", "一元二次方程求根公式")
OTHER_CAPTIONS = ("周一不想上班", "今晚吃火锅", "你说得对但是", "我先睡了", "外卖到了吗", "明天再说吧",
                  "这题我不会", "快递丢了", "电脑又蓝屏", "猫把杯子推了")


def distinct_captions(n: int, seed: int = 5) -> list[str]:
    """``n`` captions of 4-7 characters, none holding another."""
    rnd = random.Random(seed)
    pool = sorted({ch for caption in CAPTIONS for ch in caption})
    found: list[str] = []
    seen: set[str] = set()
    while len(found) < n:
        caption = "".join(rnd.choice(pool) for _ in range(rnd.randint(4, 7)))
        if caption in seen or any(caption in other or other in caption for other in found[-200:]):
            continue
        seen.add(caption)
        found.append(caption)
    return found


def distinct_tree(root: Path, n: int, templates: int = 5, gifs: float = 0.2) -> list[SeriesFile]:
    rnd = random.Random(11)
    planted = []
    for i, caption in enumerate(distinct_captions(n)):
        template = i % templates
        fmt = "gif" if rnd.random() < gifs else rnd.choice(("png", "jpg", "png", "webp"))
        rel = f"{CATEGORIES[template % (len(CATEGORIES) - 1)]}/{i:05d}.{fmt}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(template_bytes(template, caption, fmt))
        planted.append(SeriesFile(rel, "original", (template, caption)))
    return planted


def crawl(workdir: Path, root: Path) -> float:
    (workdir / "scrapy.cfg").write_text("[settings]\ndefault = emomo.settings\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOMO_", "SCRAPY_"))}
    started = time.monotonic()
    subprocess.run([str(BIN / "scrapy"), "crawl", "chinesebqb", "-a", f"repo_path={root}", "-s", "LOG_LEVEL=WARNING"],
                   cwd=workdir, env=env, check=True)
    return time.monotonic() - started


def pct(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(workdir: Path, root: Path, originals: list[Any], sample: int, copies_asked: int) -> None:
    from emomo.config import load_config
    from emomo.query import Searcher

    rnd = random.Random(3)
    chosen = rnd.sample(originals, min(sample, len(originals)))
    searcher = await Searcher(load_config(env={}, base_dir=workdir)).open()
    times: list[float] = []

    async def timed(query: str, top: int) -> list[dict[str, Any]]:
        t = time.perf_counter()
        hits = await searcher.search(query, top)
        times.append(time.perf_counter() - t)
        return hits

    try:
        await searcher.search("热身", 5)  # the query embedder loads
        whole = text_first = 0
        for f in chosen:
            hits = await timed(f.meme[1], 5)
            first = hits[0] if hits else {}
            whole += first.get("source_id") == f.rel_path
            text_first += first.get("source_id") == f.rel_path and first.get("match") == "text"
        pieces = 0
        for f in chosen:
            caption = f.meme[1]
            hits = await timed(caption[1:4] if len(caption) > 3 else caption, 5)
            pieces += any(h["source_id"] == f.rel_path for h in hits)
        no_text = 0
        for query in OFF_TOPIC:
            hits = await timed(query, 5)
            no_text += all(h["match"] != "text" for h in hits)
        n = len(chosen)
        print(f"memes in the index: {len(originals)}; {n} captions asked")
        print(f"whole caption, right meme at rank 1: {whole}/{n} = {whole / n:.3f} ({text_first} as a text match)")
        print(f"piece of a caption (3 characters), meme in the top 5: {pieces}/{n} = {pieces / n:.3f}")
        print(f"off-topic queries with no text hit: {no_text}/{len(OFF_TOPIC)}")
        print(f"text search in process: p50 {pct(times, 0.5):.1f} ms, p95 {pct(times, 0.95):.1f} ms "
              f"over {len(times)} searches")

        picture_times: list[float] = []
        found = wrong = 0
        copies = rnd.sample(chosen, min(copies_asked, len(chosen)))
        for k, f in enumerate(copies):
            data, _ = copy_of((root / f.rel_path).read_bytes(), ("jpeg", "resize", "crop")[k % 3], rnd)
            t = time.perf_counter()
            hits = await searcher.search_picture(data, 5)
            picture_times.append(time.perf_counter() - t)
            found += bool(hits) and hits[0]["source_id"] == f.rel_path and hits[0]["match"] == "picture"
            wrong += bool(hits) and hits[0]["source_id"] != f.rel_path and hits[0]["match"] == "picture"
        taken = 0
        for k, caption in enumerate(OTHER_CAPTIONS):
            hits = await searcher.search_picture(template_bytes(k % 5, caption, "png"), 5)
            taken += any(h["match"] == "picture" for h in hits)
        print(f"picture of a copy (jpeg, resize, crop), the meme at rank 1: {found}/{len(copies)} = "
              f"{found / len(copies):.3f}; taken for another meme: {wrong}")
        print(f"same-template pictures with another caption taken for a meme: {taken}/{len(OTHER_CAPTIONS)}")
        print(f"search by picture in process: p50 {pct(picture_times, 0.5):.1f} ms, "
              f"p95 {pct(picture_times, 0.95):.1f} ms")
    finally:
        await searcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memes", type=int, default=2000)
    parser.add_argument("--sample", type=int, default=300, help="captions asked (whole and in pieces)")
    parser.add_argument("--copies", type=int, default=300, help="copies searched by picture (at most --sample)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/emomo-search-bench"))
    parser.add_argument("--joined", action="store_true", help="series_tree's joined captions")
    args = parser.parse_args()
    root = args.workdir / "ChineseBQB"
    fresh = not (args.workdir / "data").exists()
    if fresh:
        args.workdir.mkdir(parents=True, exist_ok=True)
    # the same files again on a second run
    planted = series_tree(root, args.memes, copies=0.0, seed=11) if args.joined else distinct_tree(root, args.memes)
    originals = [f for f in planted if f.kind == "original"]
    if fresh:
        print(f"crawled {len(originals)} memes in {crawl(args.workdir, root):.0f} s")
    asyncio.run(measure(args.workdir, root, originals, args.sample, args.copies))


if __name__ == "__main__":
    main()
