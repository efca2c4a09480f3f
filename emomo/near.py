"""Near-duplicates: the same meme re-encoded, resized, converted or lightly cropped.

A meme's perceptual hash is a 64-bit difference hash (dHash) of its first frame: grey, its
border trimmed (a crop of a few pixels then moves little), shrunk to 9x8, one bit per pair of
neighbours, set when the right one is brighter. Re-encoding and resizing move a few bits; a
different meme moves about half. The hash only finds candidates: memes are templates, and the
same face with another caption is another meme, so a candidate is the same meme only when the
text on both images is the same too (emomo.ingest.near_dupes).

Lookup stays flat as memes grow (multi-index hashing): the hash is cut into 3 bands of 21-22
bits, each stored as a key. Two hashes within ``d`` bits agree to within ``d // 3`` bits on at
least one band (were every band off by more, the total would exceed ``d``), so a lookup asks for
the few hundred keys near the item's own bands (696 at d = 8): index seeks, each finding about
one meme in two million, not a scan of every meme.
"""

from __future__ import annotations

import io
import re
from difflib import SequenceMatcher
from itertools import combinations

import numpy as np
from PIL import Image

#: the hash's bands: 21, 21 and 22 bits
BANDS = 3
BAND_SIZES = (21, 21, 22)
#: of each side, trimmed before hashing: a crop of a few pixels falls mostly in it
TRIM = 0.08


def perceptual_hash(data: bytes) -> int:
    """The dHash of an image's first frame (transparency on white), as a signed 64-bit integer
    (what a BIGINT column holds)."""
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        frame = im.convert("RGBA")
    grey = Image.alpha_composite(Image.new("RGBA", frame.size, (255, 255, 255, 255)), frame).convert("L")
    w, h = grey.size
    dx, dy = round(w * TRIM), round(h * TRIM)
    if w - 2 * dx >= 9 and h - 2 * dy >= 8:
        grey = grey.crop((dx, dy, w - dx, h - dy))
    pixels = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


#: a hash with fewer set bits (or fewer unset ones) than this describes a flat picture: a plain
#: colour, a near-empty frame. Its bits say where the picture is *not* brighter, which any
#: other flat picture shares whatever its colour, so it finds no near-duplicates.
MIN_DETAIL_BITS = 8


def informative(value: int) -> bool:
    """Whether the hash carries enough of the picture to find its near-duplicates by."""
    ones = (value & ((1 << 64) - 1)).bit_count()
    return MIN_DETAIL_BITS <= ones <= 64 - MIN_DETAIL_BITS


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()


def _bands(value: int) -> list[int]:
    unsigned = value & ((1 << 64) - 1)
    out, shift = [], 0
    for size in BAND_SIZES:
        out.append((unsigned >> shift) & ((1 << size) - 1))
        shift += size
    return out


def band_keys(value: int) -> list[int]:
    """The keys a meme's hash is stored under: band number and band value in one integer."""
    return [(i << 22) | band for i, band in enumerate(_bands(value))]


def probe_keys(value: int, max_distance: int) -> list[int]:
    """The keys any hash within ``max_distance`` bits of ``value`` is stored under, at least one."""
    flips = max_distance // BANDS
    keys = []
    for i, band in enumerate(_bands(value)):
        for n in range(flips + 1):
            keys += [(i << 22) | (band ^ sum(1 << bit for bit in bits))
                     for bits in combinations(range(BAND_SIZES[i]), n)]
    return keys


_NOT_TEXT = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """What OCR noise leaves alone: letters and digits, lower case, no spaces or punctuation."""
    return _NOT_TEXT.sub("", text).lower()


def same_text(a: str, b: str, min_similarity: float) -> bool:
    """Whether two images carry the same text (as OCR read it): both none, or alike enough."""
    a, b = normalize_text(a), normalize_text(b)
    if not a or not b:
        return a == b
    return SequenceMatcher(None, a, b, autojunk=False).ratio() >= min_similarity
