"""Near-duplicate targets on a generated tree. Prints its figures; asserts nothing.

    .venv/bin/python bench/near_dupes.py [--memes 400] [--templates 5] [--workdir /tmp/near]
    .venv/bin/python bench/near_dupes.py --tree faces   # 100 originals each on a face of its own

``series`` (the default): memes drawn on a few templates (a panda head, a cat, a photo-like face,
a dog, a penguin), each with its own caption, a fifth of them animated; copies of 10% of them
(re-encoded, resized, converted, cropped by a few pixels, a GIF's first frame), half beside their
original, half in a later folder; and, the hardest case, 5% more files whose caption is an
original's with one character more or another. ``faces``: the earlier tree, 100 originals with
distinct faces, near-duplicates making 25% of the files and other captions on an original's face
15%.

It crawls the tree with ``scrapy crawl chinesebqb`` on the embedded defaults twice, with
``dedupe.near`` on and off, and prints for each: describer calls (the VLM calls of a production
crawl) against distinct memes, copies merged, false merges (a file merged into a meme with
another caption), the near-duplicate counters (candidates compared, OCR reads, waits) and
recall@5 of every caption.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
BIN = Path(sys.executable).parent

from memegen import (  # noqa: E402
    CAPTIONS,
    CATEGORIES,
    COPY_KINDS,
    SeriesFile,
    copy_of,
    meme_bytes,
    series_tree,
    template_bytes,
)


def harder(root: Path, planted: list[SeriesFile], share: float, rnd: random.Random) -> None:
    """Files whose caption is an original's with a character more or another: other memes."""
    originals = [f for f in planted if f.kind == "original"]
    for k, f in enumerate(rnd.sample(originals, round(len(originals) * share))):
        template, caption = f.meme
        other = caption + "吗" if k % 2 else caption[:-1] + ("好" if caption[-1] != "好" else "坏")
        name = f"{CATEGORIES[-2]}/换字{k:04d}-{other}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(template_bytes(template, other, "png"))
        planted.append(SeriesFile(name, "original", (template, other)))


def faces_tree(root: Path, originals: int) -> list[SeriesFile]:
    """The earlier tree: distinct faces; 25% near-duplicates; 15% another caption on a face."""
    rnd = random.Random(15)
    total = round(originals / 0.60)
    near, template = round(total * 0.25), round(total * 0.15)
    spare = list(CAPTIONS[originals:]) + [f"{c}吗" for c in CAPTIONS[:originals]]
    planted: list[SeriesFile] = []

    def put(folder: str, name: str, data: bytes, kind: str, meme: tuple[int, str]) -> None:
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        planted.append(SeriesFile(f"{folder}/{name}", kind, meme))

    sources = []
    for i in range(originals):
        caption = f"{CAPTIONS[i % len(CAPTIONS)]}{i // len(CAPTIONS) or ''}"
        data = meme_bytes(caption, 5000 + i, "png")
        sources.append((caption, 5000 + i, data))
        put(CATEGORIES[i % 4], f"原图{i:05d}-{caption}.png", data, "original", (5000 + i, caption))
    for j in range(near):
        caption, seed, data = sources[j % originals]
        kind = ("jpeg", "resize", "convert", "crop")[j % 4]
        copy, ext = copy_of(data, kind, rnd)
        put(CATEGORIES[4 + j % 4], f"副本{j:05d}.{ext}", copy, kind, (seed, caption))
    for k in range(template):
        _, seed, _ = sources[(k * 7) % originals]
        caption = spare[k % len(spare)] + (str(k // len(spare)) if k >= len(spare) else "")
        put(CATEGORIES[8 + k % 4], f"换字{k:05d}-{caption}.png", meme_bytes(caption, seed, "png"), "original",
            (seed, caption))
    return planted


def evaluate(planted: list[SeriesFile], linked: dict[str, str], calls: int) -> dict[str, Any]:
    """How a crawl's source -> meme links compare with what the tree holds."""
    meme_of: dict[tuple[int, str], str] = {}
    for f in planted:
        if f.kind == "original" and f.rel_path in linked:
            meme_of[f.meme] = linked[f.rel_path]
    owner = {meme_id: meme for meme, meme_id in meme_of.items()}
    copies = [f for f in planted if f.kind != "original"]
    merged = [f for f in copies if linked.get(f.rel_path) == meme_of.get(f.meme)]
    missed = [f for f in copies if f not in merged]
    false = [f for f in planted if linked.get(f.rel_path) in owner and owner[linked[f.rel_path]] != f.meme]
    distinct = len({f.meme for f in planted})
    return {"files": len(planted), "distinct": distinct, "calls": calls, "copies": len(copies),
            "merged": len(merged), "missed": missed, "false": false,
            "missed_by_kind": {k: n for k in COPY_KINDS if (n := sum(f.kind == k for f in missed))}}


def print_evaluation(label: str, result: dict[str, Any]) -> None:
    print(f"{label}: {result['files']} files, {result['distinct']} distinct memes; "
          f"describer calls {result['calls']} = {result['calls'] / result['distinct']:.3f} x distinct; "
          f"copies merged {result['merged']}/{result['copies']} "
          f"(missed by kind: {result['missed_by_kind'] or 'none'}); false merges {len(result['false'])}", flush=True)
    for f in result["false"]:
        print(f"  false merge: {f.rel_path} ({f.meme[1]})")
    if len(result["missed"]) <= 10:  # a few: which (many: the check was off)
        for f in result["missed"]:
            print(f"  missed: {f.rel_path} ({f.kind} of {f.meme[1]})")


def crawl(workdir: Path, tree: Path, near: bool) -> dict[str, Any]:
    config = workdir / "config.yaml"
    config.write_text(f"dedupe:\n  near: {'true' if near else 'false'}\n", encoding="utf-8")
    stats_file = workdir / "stats.json"
    env = {**os.environ, "SCRAPY_SETTINGS_MODULE": "emomo.settings"}
    proc = subprocess.run([str(BIN / "python"), "-m", "scrapy", "crawl", "chinesebqb", "-a", f"repo_path={tree}",
                           "-s", f"EMOMO_CONFIG={config}", "-s", f"EMOMO_STATS_FILE={stats_file}"],
                          cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    stats: dict[str, Any] = json.loads(stats_file.read_text(encoding="utf-8"))
    return stats


async def recall(workdir: Path, captions: dict[str, str]) -> float:
    """Share of captions whose meme is among the top 5 hits of a search for the caption."""
    from emomo.config import load_config
    from emomo.query import Searcher

    searcher = await Searcher(load_config(workdir / "config.yaml", base_dir=workdir)).open()
    try:
        found = 0
        for caption, meme_id in captions.items():
            hits = await searcher.search(caption, top=5)
            found += any(h["meme_id"] == meme_id for h in hits)
    finally:
        await searcher.close()
    return found / len(captions)


def report(workdir: Path, planted: list[SeriesFile], stats: dict[str, Any], label: str) -> None:
    conn = sqlite3.connect(workdir / "data" / "emomo.db")
    linked = dict(conn.execute("SELECT source_id, meme_id FROM meme_sources").fetchall())
    conn.close()
    result = evaluate(planted, linked, int(stats.get("emomo/describe/described", 0)))
    print_evaluation(label, result)
    processed = max(1, int(stats.get("emomo/dedupe/items", 1)))
    print(f"  near-duplicate work: candidates compared {stats.get('emomo/near/candidates', 0)}, OCR reads "
          f"{stats.get('emomo/near/ocr_reads', 0)}, waits on a file in flight {stats.get('emomo/near/waited', 0)}; "
          f"dedupe stage {stats.get('emomo/dedupe/ms', 0) / processed:.1f} ms a file")
    captions = {f.meme[1]: linked[f.rel_path] for f in planted if f.kind == "original" and f.rel_path in linked}
    print(f"  recall@5 of every caption {asyncio.run(recall(workdir, captions)):.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", choices=("series", "faces"), default="series")
    parser.add_argument("--memes", type=int, default=400, help="originals of the series tree")
    parser.add_argument("--templates", type=int, default=5)
    parser.add_argument("--originals", type=int, default=100, help="originals of the faces tree")
    parser.add_argument("--workdir", default="/tmp/emomo-near-bench")
    args = parser.parse_args()
    base = Path(args.workdir)
    shutil.rmtree(base, ignore_errors=True)
    tree = base / "ChineseBQB"
    if args.tree == "series":
        planted = series_tree(tree, args.memes, templates=args.templates)
        harder(tree, planted, 0.05, random.Random(16))
    else:
        planted = faces_tree(tree, args.originals)
    for near in (True, False):
        workdir = base / ("near" if near else "off")
        workdir.mkdir(parents=True)
        stats = crawl(workdir, tree, near)
        report(workdir, planted, stats, f"dedupe.near {'on ' if near else 'off'}")


if __name__ == "__main__":
    main()
