"""Near-duplicate targets on a generated tree. Prints its figures; asserts nothing.

    .venv/bin/python bench/near_dupes.py [--originals 100] [--workdir /tmp/near]

The tree: ``originals`` memes with distinct captions; near-duplicates of them making 25% of the
files (JPEG quality 50-80, resized 50-150%, PNG<->JPG, crops of 2-6 pixels), placed in other
folders; and files making 15% that reuse an original's template (same face, same colours)
with another caption. It crawls the tree with ``scrapy crawl chinesebqb`` on the embedded
defaults twice, with ``dedupe.near`` on and off, and prints for each: describer calls (the VLM
calls of a production crawl) against distinct memes, near-duplicates merged, false merges (a
file merged into a meme with another caption), missed merges, and recall@5 of every caption.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
BIN = Path(sys.executable).parent

from memegen import CAPTIONS, CATEGORIES, meme_bytes  # noqa: E402
from PIL import Image  # noqa: E402


def variant(data: bytes, kind: str, rnd: random.Random) -> tuple[bytes, str]:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    buf = io.BytesIO()
    if kind == "jpeg":
        im.save(buf, "JPEG", quality=rnd.randint(50, 80))
        return buf.getvalue(), "jpg"
    if kind == "resize":
        f = rnd.uniform(0.5, 1.5)
        im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.LANCZOS).save(buf, "PNG")
        return buf.getvalue(), "png"
    if kind == "convert":
        im.save(buf, "PNG")
        return buf.getvalue(), "png"
    box = (rnd.randint(2, 6), rnd.randint(2, 6), im.width - rnd.randint(2, 6), im.height - rnd.randint(2, 6))
    im.crop(box).save(buf, "JPEG", quality=85)
    return buf.getvalue(), "jpg"


def build(root: Path, originals: int) -> dict[str, tuple[str, str]]:
    """Plant the tree; source id -> (kind, caption of the meme it should belong to)."""
    rnd = random.Random(15)
    total = round(originals / 0.60)
    near, template = round(total * 0.25), round(total * 0.15)
    # Captions no original carries: the rest of the list, then each original's with one more
    # character (the hardest case: a caption that nearly says the same).
    spare = list(CAPTIONS[originals:]) + [f"{c}吗" for c in CAPTIONS[:originals]]
    planted: dict[str, tuple[str, str]] = {}

    def put(folder: str, name: str, data: bytes, kind: str, caption: str) -> None:
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        planted[f"{folder}/{name}"] = (kind, caption)

    sources = []
    for i in range(originals):
        caption = f"{CAPTIONS[i % len(CAPTIONS)]}{i // len(CAPTIONS) or ''}"
        data = meme_bytes(caption, 5000 + i, "png")
        sources.append((caption, 5000 + i, data))
        put(CATEGORIES[i % 4], f"原图{i:05d}-{caption}.png", data, "original", caption)
    for j in range(near):
        caption, _, data = sources[j % originals]
        kind = ("jpeg", "resize", "convert", "crop")[j % 4]
        copy, ext = variant(data, kind, rnd)
        put(CATEGORIES[4 + j % 4], f"副本{j:05d}.{ext}", copy, kind, caption)
    for k in range(template):
        _, seed, _ = sources[(k * 7) % originals]
        caption = spare[k % len(spare)] + (str(k // len(spare)) if k >= len(spare) else "")
        put(CATEGORIES[8 + k % 4], f"换字{k:05d}-{caption}.png", meme_bytes(caption, seed, "png"), "template", caption)
    return planted


def crawl(workdir: Path, tree: Path, near: bool) -> dict[str, object]:
    config = workdir / "config.yaml"
    config.write_text(f"dedupe:\n  near: {'true' if near else 'false'}\n", encoding="utf-8")
    stats_file = workdir / "stats.json"
    env = {**os.environ, "SCRAPY_SETTINGS_MODULE": "emomo.settings"}
    proc = subprocess.run([str(BIN / "python"), "-m", "scrapy", "crawl", "chinesebqb", "-a", f"repo_path={tree}",
                           "-s", f"EMOMO_CONFIG={config}", "-s", f"EMOMO_STATS_FILE={stats_file}"],
                          cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(stats_file.read_text(encoding="utf-8"))


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


def report(workdir: Path, planted: dict[str, tuple[str, str]], stats: dict[str, object], label: str) -> None:
    conn = sqlite3.connect(workdir / "data" / "emomo.db")
    linked = dict(conn.execute("SELECT source_id, meme_id FROM meme_sources").fetchall())
    memes = conn.execute("SELECT COUNT(*) FROM memes WHERE status = 'active'").fetchone()[0]
    conn.close()
    by_caption: dict[str, str] = {}
    for source, (kind, caption) in planted.items():
        if kind in ("original", "template"):
            by_caption[caption] = linked[source]
    near = [(s, c) for s, (k, c) in planted.items() if k not in ("original", "template")]
    merged = sum(1 for s, c in near if linked.get(s) == by_caption[c])
    for source, caption in near if merged else ():  # with dedupe.near off, none is
        if linked.get(source) != by_caption[caption]:
            print(f"  not merged: {source} ({planted[source][0]} of {caption})")
    owner = {meme: caption for caption, meme in by_caption.items()}
    wrong = [(s, c, owner[linked[s]]) for s, (k, c) in planted.items()
             if linked.get(s) in owner and owner[linked[s]] != c]
    false = len(wrong)
    for source, caption, other in wrong:
        print(f"  false merge: {source} ({caption}) into the meme of {other}")
    distinct = len(by_caption)
    calls = int(stats.get("emomo/describe/described", 0))  # type: ignore[call-overload]
    r5 = asyncio.run(recall(workdir, by_caption))
    print(f"{label}: {len(planted)} files, {distinct} distinct memes, {memes} recorded; describer calls {calls} "
          f"= {calls / distinct:.3f} x distinct; near-duplicates merged {merged}/{len(near)}; false merges {false}; "
          f"recall@5 {r5:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=100)
    parser.add_argument("--workdir", default="/tmp/emomo-near-bench")
    args = parser.parse_args()
    base = Path(args.workdir)
    shutil.rmtree(base, ignore_errors=True)
    tree = base / "ChineseBQB"
    planted = build(tree, args.originals)
    for near in (True, False):
        workdir = base / ("near" if near else "off")
        workdir.mkdir(parents=True)
        stats = crawl(workdir, tree, near)
        report(workdir, planted, stats, f"dedupe.near {'on ' if near else 'off'}")


if __name__ == "__main__":
    main()
