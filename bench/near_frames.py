"""Out of the series' frame: how often members of a series are taken for crops, and how often a
crop finds its original. Prints its figures; asserts nothing.

    .venv/bin/python bench/near_frames.py [--memes 800] [--crops 300] [--seed 7]

It draws a series tree (``memegen.series_tree``: memes on five templates, each with its own
caption) and crops of some of its originals, puts every original in the in-memory index
(``NearIndex``), then, as the dedupe stage does against recorded memes:

- judges each original against its nearest members (itself left out): how many are taken out
  of the series' frame (each would be recorded ``shifted`` and ranked in that frame), put in a
  candidate's frame, fitted to one of their own, and how many match another caption;
- judges each crop against its nearest, and when it is out of the series' frame ranks it again
  in that frame and judges the next nearest: how many find their original (the same), how many
  are left to the text (undecided), how many match another meme.

Everything runs in this process on one thread (no crawl): the figures are the check's own.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from memegen import copy_of, series_tree  # noqa: E402

from emomo.blocking import one_blas_thread  # noqa: E402
from emomo.config import DedupeConfig  # noqa: E402
from emomo.ingest.near_dupes import Judgement, NearIndex, Verdict, judge  # noqa: E402
from emomo.near import NearCheck, Picture, measure  # noqa: E402


def judged(picture: Picture, ids: list[str], checks: dict[str, NearCheck], config: DedupeConfig,
           series_cells: np.ndarray | None = None) -> Judgement:
    return judge(picture, [checks[i].thumb for i in ids], [checks[i].shifted for i in ids], config,
                 series_cells, [checks[i].zscores for i in ids])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--memes", type=int, default=800)
    ap.add_argument("--crops", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    one_blas_thread()
    config = DedupeConfig()
    k, bits = config.near_candidates, config.near_distance
    with tempfile.TemporaryDirectory(prefix="emomo-frames-") as d:
        root = Path(d)
        planted = [f for f in series_tree(root, a.memes, copies=0.0) if f.kind == "original"]
        files = {f.rel_path: (root / f.rel_path).read_bytes() for f in planted}
    pictures = {path: measure(data) for path, data in files.items()}
    checks = {path: NearCheck.of(p) for path, p in pictures.items()}
    index = NearIndex()
    for path, check in checks.items():
        index.add(path, check.phash, check.blocks)

    reframed = framed = refitted = false = 0
    for path, picture in pictures.items():
        ids = [i for i in index.candidates(picture.phash, checks[path].vector, bits, k + 1) if i != path][:k]
        j = judged(picture, ids, checks, config)
        reframed += j.reframed is not None
        framed += j.framed
        refitted += j.refitted
        false += any(v is Verdict.SAME for v, _ in j.verdicts)
    n = len(pictures)
    print(f"members of a series ({n}, each against its nearest {k}): taken out of its frame {reframed}, "
          f"put in a candidate's frame {framed}, fitted to one of their own {refitted}, "
          f"the same as another caption {false}")

    rnd = random.Random(a.seed)
    found = undecided = wrong = out = 0
    crops = rnd.sample(sorted(files), min(a.crops, len(files)))
    for own in crops:
        picture = measure(copy_of(files[own], "crop", rnd)[0])
        check = NearCheck.of(picture)
        seen: set[str] = set()
        cells: np.ndarray | None = None
        answer: str | None = None
        for _round in range(2):  # as the dedupe stage: again in the series' frame when out of it
            ids = [i for i in index.candidates(picture.phash, check.vector, bits, k + len(seen)) if i not in seen][:k]
            seen.update(ids)
            j = judged(picture, ids, checks, config, cells)
            same = [i for i, (v, _) in zip(ids, j.verdicts, strict=True) if v is Verdict.SAME]
            if same:
                answer = same[0]
                break
            if any(v is Verdict.MAYBE for v, _ in j.verdicts):
                answer = "undecided"
                break
            if j.reframed is None:
                break
            out += _round == 0
            check.out_of_frame(j.reframed)
            cells = j.cells
        found += answer == own
        undecided += answer == "undecided"
        wrong += answer not in (own, "undecided", None)
    print(f"crops ({len(crops)}): found their original {found}, left to the text {undecided}, "
          f"matched another meme {wrong}; out of the series' frame at the first ranking {out}")


if __name__ == "__main__":
    main()
