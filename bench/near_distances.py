"""The fine distance between copies and their originals, and between other memes of one series.
Prints its figures; asserts nothing. What dedupe.near_same / near_different rest on.

    .venv/bin/python bench/near_distances.py [--memes 400] [--templates 5]

For every fourth of ``--memes`` captions drawn on ``--templates`` faces: each kind of copy
(emomo's test generator: re-encoded, resized, converted, cropped, a GIF's first frame) against its
original; the nearest three other members of its series (by the ranking blocks) against it; and
its caption with one character more or another. Each distance is the crawl's own ``judge``
against that one candidate, with its size (two files at different scales have the stricter bar,
``near_same_rescaled``). Then copies resized by Lanczos, bicubic and bilinear filters, and the
hardest other caption: a long caption drawn small, one character apart (the middle one) at its
own size, reduced (the last one, against the caption at its own size), and both reduced alike;
and that caption re-encoded as a JPEG at quality 30 and 50. What the thumbnails leave undecided
between two scales is then compared at one (``at_one_scale``), as the crawl does before reading
any text: the resized copies found the same there, and the other captions taken for the same.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from memegen import COPY_KINDS, copy_of, reencoded, resized, series_captions, template_bytes  # noqa: E402
from PIL import Image  # noqa: E402

from emomo import near  # noqa: E402
from emomo.config import EmomoConfig  # noqa: E402
from emomo.ingest.near_dupes import Verdict, judge, one_scale_distance  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memes", type=int, default=400)
    parser.add_argument("--templates", type=int, default=5)
    a = parser.parse_args()
    config = EmomoConfig().dedupe
    rnd = random.Random(7)
    memes = [(i % a.templates, caption) for i, caption in enumerate(series_captions(a.memes))]
    data = [template_bytes(t, caption, "png") for t, caption in memes]
    pictures = [near.measure(d) for d in data]
    vectors = np.stack([near.rank_vector(p.thumb) for p in pictures])

    def distance_to(picture: near.Picture, reference: near.Picture) -> tuple[float, bool]:
        """The distance and whether the crawl takes the picture for the same (its bar depends on
        the two sizes)."""
        [(verdict, value)] = judge(picture, [reference.thumb], [False], config, sizes=[reference.source]).verdicts
        return value, verdict is Verdict.SAME

    def verdict(picture: near.Picture, i: int) -> tuple[float, bool]:
        return distance_to(picture, pictures[i])

    def distance(picture: near.Picture, i: int) -> float:
        return verdict(picture, i)[0]

    def at_one_scale(copy: bytes, original: bytes) -> tuple[float, bool] | None:
        """What the crawl does with a file the thumbnails left undecided at two scales: the
        distance at one, and whether it is the same there (None: decided, or of one scale)."""
        picture, reference = near.measure(copy), near.measure(original)
        [(first, _)] = judge(picture, [reference.thumb], [False], config, sizes=[reference.source]).verdicts
        if first is not Verdict.MAYBE or not near.rescaled(picture.source, reference.source):
            return None
        found, value = one_scale_distance(config, near.first_frame_grey(copy), original)
        return value, found is Verdict.SAME

    copies: dict[str, list[tuple[float, bool]]] = {kind: [] for kind in COPY_KINDS}
    others, one_char = [], []
    for i in range(0, a.memes, 4):
        template, caption = memes[i]
        for kind in COPY_KINDS:
            copies[kind].append(verdict(near.measure(copy_of(data[i], kind, rnd)[0]), i))
        series = [j for j in range(a.memes) if memes[j][0] == template and j != i]
        nearest = [series[k] for k in near.nearest(vectors[series], vectors[i], 3)]
        others.append(min(distance(pictures[i], j) for j in nearest))
        other = caption + "吗" if i % 8 else caption[:-1] + ("好" if caption[-1] != "好" else "坏")
        one_char.append(distance(near.measure(template_bytes(template, other, "png")), i))
    # Resized copies by the filters apps use, and the hardest other caption: a long caption drawn
    # small, one character apart, reduced (its distinguishing stroke is at the reduced picture's
    # resolution or below): what the thumbnails leave undecided, and what they take for the same.
    filters = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC,
               "bilinear": Image.Resampling.BILINEAR}
    resizes: dict[str, list[tuple[float, bool]]] = {f: [] for f in filters}
    resizes_one: dict[str, list[tuple[float, bool] | None]] = {f: [] for f in filters}
    reduced_one: list[tuple[float, bool] | None] = []
    reduced_one_char: list[tuple[float, bool]] = []
    both_reduced: list[tuple[float, bool]] = []
    own_size: list[tuple[float, bool]] = []
    heavy_jpeg: list[tuple[float, bool]] = []
    for i in range(0, a.memes, 4):
        template, caption = memes[i]
        factor = rnd.uniform(0.5, 1.5)
        for name, resample in filters.items():
            copy = resized(data[i], factor, resample)
            resizes[name].append(verdict(near.measure(copy), i))
            resizes_one[name].append(at_one_scale(copy, data[i]))
        long = caption + memes[(i + 7) % a.memes][1] + memes[(i + 13) % a.memes][1]
        data_long = template_bytes(template, long, "png")
        original = near.measure(data_long)
        other = template_bytes(template, long[:-1] + ("好" if long[-1] != "好" else "坏"), "png")
        # at its own size, the middle character another (the ends may run off the picture);
        # one size: only the encoding tells a copy from its original
        middle = len(long) // 2
        swapped = long[:middle] + ("好" if long[middle] != "好" else "坏") + long[middle + 1:]
        swapped_bytes = template_bytes(template, swapped, "png")
        own_size.append(distance_to(near.measure(swapped_bytes), original))
        for resample in filters.values():  # and reduced: compared at one scale when undecided
            reduced_one.append(at_one_scale(resized(swapped_bytes, rnd.uniform(0.5, 0.9), resample), data_long))
        for quality in (30, 50):
            heavy_jpeg.append(distance_to(near.measure(reencoded(data_long, quality)), original))
        if distance_to(near.measure(other), original)[0] > config.near_same:
            for resample in (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC):
                factor = rnd.uniform(0.5, 0.75)
                reduced_bytes = resized(other, factor, resample)
                reduced = near.measure(reduced_bytes)
                reduced_one_char.append(distance_to(reduced, original))
                reduced_one.append(at_one_scale(reduced_bytes, data_long))
                # both passed on by one thumbnailer: one scale, both strokes gone
                both_reduced.append(distance_to(reduced, near.measure(resized(data_long, factor, resample))))
    print(f"dedupe.near_same {config.near_same}, near_different {config.near_different}")
    print(f"dedupe.near_same_rescaled {config.near_same_rescaled} (files at two scales), near_same_same_size "
          f"{config.near_same_same_size} (of one size); undecided: left to the text")
    for name, pairs in resizes.items():
        print(f"resized by {name:8} (0.5-1.5)  max {max(v for v, _ in pairs):.3f}  "
              f"undecided {sum(not same and v < config.near_different for v, same in pairs)}/{len(pairs)}, "
              f"then the same at one scale {one_scale_same(resizes_one[name])}")
    for name, pairs in (("at its own size", own_size), ("reduced", reduced_one_char),
                        ("both reduced alike", both_reduced)):
        print(f"a long caption one character apart, {name:18}  min {min(v for v, _ in pairs):.3f}  "
              f"taken for the same {sum(same for _, same in pairs)}/{len(pairs)}")
    print(f"a long caption one character apart, reduced, at one scale  min {one_scale_min(reduced_one)}  "
          f"taken for the same {one_scale_same(reduced_one)}")
    for kind, pairs in copies.items():
        values = [v for v, _ in pairs]
        print(f"copy {kind:12} max {max(values):.3f}  p99 {np.percentile(values, 99):.3f}  "
              f"undecided {sum(not same for _, same in pairs)}/{len(pairs)}")
    for k, quality in enumerate((30, 50)):
        pairs = heavy_jpeg[k::2]
        print(f"a long caption as a JPEG at quality {quality}  max {max(v for v, _ in pairs):.3f}  "
              f"undecided {sum(not same for _, same in pairs)}/{len(pairs)}")
    every = [v for pairs in copies.values() for v, _ in pairs]
    print(f"copies, every kind  max {max(every):.3f}  p99 {np.percentile(every, 99):.3f}")
    print(f"nearest other caption of the series  min {min(others):.3f}  p1 {np.percentile(others, 1):.3f}")
    print(f"one character more or another        min {min(one_char):.3f}  p1 {np.percentile(one_char, 1):.3f}  "
          f"below near_different {sum(v < config.near_different for v in one_char)}/{len(one_char)}")


def one_scale_same(pairs: list[tuple[float, bool] | None]) -> str:
    compared = [p for p in pairs if p is not None]
    return f"{sum(same for _, same in compared)}/{len(compared)}"


def one_scale_min(pairs: list[tuple[float, bool] | None]) -> str:
    values = [v for p in pairs if p is not None for v in p[:1]]
    return f"{min(values):.3f}" if values else "-"


if __name__ == "__main__":
    main()
