"""Near-duplicates: the same meme re-encoded, resized, converted, lightly cropped, or a GIF's
first frame saved as a still. Pure functions; imports nothing of the project.

Memes are templates: one face, hundreds of captions. Three measures of a picture's first frame
(grey, transparency on white) tell a copy from another caption on the same face:

* the coarse hash, a 64-bit difference hash (dHash) of the picture with its border trimmed,
  shrunk to 9x8: re-encoding and resizing move a few bits, another picture about half. It only
  says "maybe the same template": a series' members are within a few bits of each other.
* the blocks, the means of 8x8 blocks of the picture's thumbnail (z-scores): a vector that puts
  copies next to their original, for picking the few candidates worth a closer look.
* the thumbnail, 64x64 exact area means. The fine distance of two pictures is the largest
  difference of any 4x4-cell block of their thumbnails: a copy differs a little everywhere,
  another caption a lot where the caption is. Before comparing, the new picture is put in the
  candidate's frame: a crop of a few pixels moves everything by a fraction of a cell, which
  the blocks would read as a change. Offset and scale are fitted per axis on row and column
  profiles (rows first; the rows that disagree, a caption, are left out of the column fit),
  then the thumbnail is resampled from the picture by exact area means: two products with
  matrices of each pixel's share in each cell (fractions of a pixel included).

docs/near-duplicates.md has the figures these choices rest on.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

T = TypeVar("T")

#: of each side, trimmed before hashing: a crop of a few pixels falls mostly in it
TRIM = 0.08
#: cells a side of the thumbnail; cells a side of a block the fine distance compares
THUMB = 64
BLOCK = 2
#: cells a side of a block of the ranking vector (8x8 blocks of 8x8 cells)
RANK_BLOCK = 8
#: a picture larger than this (a side) is reduced by a whole factor first: exact box means, and
#: a measure that costs the same whatever the file's size
WORK_SIDE = 320
#: how far a copy's frame may be from its original's: offset (a share of the side), scale
MAX_OFFSET = 0.06
SCALES = (0.9, 1.1)
#: two files whose sides differ by more than this share are at two scales (``rescaled``): a crop
#: of a few pixels leaves at most 5% (2-12 pixels of 240)
RESCALED = 0.06
#: z-scores are stored as bytes: z * QUANT + 128, clipped to 0-254 (255: no value)
QUANT = 24.0
NO_VALUE = 255


def grey_frame(im: Image.Image) -> Image.Image:
    """The frame ``im`` is at, in grey, transparency on white: what the check measures. Given to
    ``emomo.imaging.probe``, which decodes the first frame anyway (decoding it again here cost
    as much as the rest of the measure)."""
    if im.mode in ("L", "RGB") and "transparency" not in im.info:
        return im.convert("L")
    frame = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", frame.size, (255, 255, 255, 255)), frame).convert("L")


def first_frame_grey(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        return grey_frame(im)


def _dhash(grey: Image.Image) -> int:
    w, h = grey.size
    dx, dy = round(w * TRIM), round(h * TRIM)
    if w - 2 * dx >= 9 and h - 2 * dy >= 8:
        grey = grey.crop((dx, dy, w - dx, h - dy))
    pixels = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


def perceptual_hash(data: bytes) -> int:
    """The dHash of an image's first frame, as a signed 64-bit integer (what a BIGINT holds)."""
    return _dhash(first_frame_grey(data))


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


def hamming_many(hashes: np.ndarray, value: int) -> np.ndarray:
    """Bits between ``value`` and each of ``hashes`` (int64)."""
    return np.bitwise_count(np.bitwise_xor(hashes, np.int64(value)))


# --- the picture --------------------------------------------------------------------------


class _kept(Generic[T]):
    """``functools.cached_property`` without its lock: on Python 3.11 that lock is one for every
    instance, and the checks of many files run in threads at once (they queued on it). Two
    threads reading it first at once both compute it: the same value."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> T:
        if instance is None:  # read on the class (help(), inspect): the descriptor itself
            return self  # type: ignore[return-value]
        # Not a data descriptor: once kept in the instance's __dict__, that is read instead.
        value = instance.__dict__[self.name] = self.func(instance)
        return value


@dataclass(frozen=True)
class Picture:
    """What the near-duplicate check measures of a file, decoded once."""

    phash: int
    #: the grey first frame, reduced to WORK_SIDE
    pixels: np.ndarray
    #: its THUMB x THUMB thumbnail in its own frame: grey levels
    thumb: np.ndarray
    #: the file's own size (width, height), before any reduction: whether another file is of the
    #: same scale (``rescaled``)
    source: tuple[int, int] = (0, 0)

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]

    @_kept
    def profiles(self) -> tuple[tuple[np.ndarray, int], tuple[np.ndarray, int]]:
        """Per axis (columns, rows): the cumulative profile (mean grey level, from 0) and its
        length; all a frame fit reads of the picture."""
        h, w = self.pixels.shape
        columns = np.concatenate(([0.0], self.pixels.sum(axis=0, dtype=np.float64).cumsum() / h))
        rows = np.concatenate(([0.0], self.pixels.sum(axis=1, dtype=np.float64).cumsum() / w))
        return (columns, w), (rows, h)

    @_kept
    def zscores(self) -> np.ndarray:
        """The thumbnail's z-scores over all its cells (float32, flat): what the quick distance and
        the ranking vector read."""
        return zscored(self.thumb[None])[0]

    @_kept
    def coarse_framings(self) -> tuple[Framings, Framings]:
        """Per axis, the picture's profile under each frame of the coarse grid: computed once,
        however many references the picture is fitted to (they enter only in a product)."""
        (columns, w), (rows, h) = self.profiles
        # Both axes in one pass: the rows' profile laid after the columns' (a column position
        # never reaches past w, a row position never before w + 1).
        ours = np.diff(_interpolate(np.concatenate((columns, rows)),
                                    np.concatenate((_COARSE_AT * w, _COARSE_AT * h + (w + 1)))), axis=1)
        norms = _centred_norms(ours)
        n = len(_COARSE_AT)
        return (ours[:n], norms[:n]), (ours[n:], norms[n:])

    def stored_thumb(self) -> bytes:
        """The thumbnail as stored with the meme: grey bytes, compressed (about 1-3 KB)."""
        return zlib.compress(np.round(self.thumb).astype(np.uint8).tobytes(), 1)


@dataclass
class NearCheck:
    """What the near-duplicate check learnt of an item: kept with the meme it becomes (the
    picture's pixels are not: they are needed only while the item is checked)."""

    phash: int
    #: its thumbnail (grey levels), and as stored (compressed)
    thumb: np.ndarray
    stored_thumb: bytes
    #: its thumbnail's z-scores (Picture.zscores): an item in flight is compared by them
    zscores: np.ndarray
    #: its ranking vector, and as stored: in its series' frame (for a crop, not its own)
    vector: np.ndarray
    blocks: bytes
    #: out of its series' frame (a crop): a check against it puts the other picture in its frame
    shifted: bool = False
    #: the text OCR read on it, when something had to
    image_text: str | None = None
    #: the file's size (Picture.source)
    source: tuple[int, int] = (0, 0)

    @classmethod
    def of(cls, picture: Picture) -> NearCheck:
        vector = _ranking(picture.zscores)
        return cls(picture.phash, picture.thumb, picture.stored_thumb(), picture.zscores, vector,
                   encode_blocks(vector), source=picture.source)

    def out_of_frame(self, series_vector: np.ndarray) -> None:
        """The picture is out of its series' frame; ``series_vector`` ranks it in that frame
        (its own blocks where it does not reach)."""
        self.shifted = True
        self.vector = np.where(np.isnan(series_vector), self.vector, series_vector)
        self.blocks = encode_blocks(self.vector)


def measure(data: bytes, grey: Image.Image | None = None) -> Picture:
    """The file's picture; ``grey``: its first frame as ``grey_frame`` gave it, when it was
    decoded already."""
    return measure_grey(first_frame_grey(data) if grey is None else grey)


def measure_grey(grey: Image.Image) -> Picture:
    """The picture of a first frame as ``grey_frame`` gives it."""
    source = grey.size
    phash = _dhash(grey)
    factor = -(-max(grey.size) // WORK_SIDE)
    if factor > 1:
        grey = grey.reduce(factor)
    pixels = np.asarray(grey, dtype=np.uint8)
    h, w = pixels.shape
    thumb = np.asarray(_even_weights(h) @ pixels.astype(np.float32) @ _even_weights(w).T, dtype=np.float32)
    return Picture(phash, pixels, thumb, source)


def rescaled(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two files' sizes (width, height) say one is the other resized: a side differs by
    more than ``RESCALED``. An unknown size (0) says nothing."""
    if not all(a) or not all(b):
        return False
    return any(max(x, y) / min(x, y) - 1 > RESCALED for x, y in zip(a, b, strict=True))


#: how the larger of two files at two scales is brought to the smaller's size (``at_one_scale``):
#: copies resized by Lanczos, bicubic and bilinear filters then come within 0.27 of their
#: originals, a long caption one character apart no nearer than 0.33 (docs/near-duplicates.md)
ONE_SCALE_RESAMPLE = Image.Resampling.BICUBIC


def at_one_scale(a: Image.Image, b: Image.Image) -> tuple[Picture, Picture]:
    """Two first frames (``first_frame_grey``) at two scales, measured at one: the larger resized
    to the smaller's size. Resampled at one scale both, a resized copy and its original differ
    by little more than a re-encoding, which thumbnails made from two scales do not."""
    if a.width * a.height > b.width * b.height:
        a = a.resize(b.size, ONE_SCALE_RESAMPLE)
    else:
        b = b.resize(a.size, ONE_SCALE_RESAMPLE)
    return measure_grey(a), measure_grey(b)


def same_size(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two files are of one size (width and height): neither was resampled nor cropped
    from the other. An unknown size (0) says nothing."""
    return all(a) and a == b


def stored_thumb(data: bytes) -> np.ndarray:
    """A thumbnail as ``Picture.stored_thumb`` wrote it: grey levels."""
    return np.frombuffer(zlib.decompress(data), dtype=np.uint8).reshape(THUMB, THUMB).astype(np.float32)


def _weights(edges: np.ndarray, length: int) -> np.ndarray:
    """(cells, pixels): the share of each pixel in each cell between consecutive ``edges``, over
    the cell's width. A cell's mean is then one product: exact area means, fractions of a pixel
    included (a pixel is a square of one grey level)."""
    # How much of each pixel lies left of each edge; a cell's share is the difference of its two
    # edges'. In float32: the products it feeds are.
    left = np.clip(edges[:, None].astype(np.float32) - np.arange(length, dtype=np.float32), 0, 1)
    return np.asarray((left[1:] - left[:-1]) / np.maximum(np.diff(edges), 1e-9).astype(np.float32)[:, None])


@lru_cache(maxsize=64)
def _even_weights(length: int) -> np.ndarray:
    """``_weights`` of THUMB even cells over ``length`` pixels: the same for every file of a size."""
    return _weights(np.linspace(0, length, THUMB + 1), length)


def _cells(pixels: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The mean of each cell between consecutive edges ``xs`` x ``ys`` (pixel coordinates)."""
    h, w = pixels.shape
    # float32: a float64 copy of the pixels is large enough to be mapped afresh at each call
    rows = _weights(ys, h) @ pixels.astype(np.float32)
    return np.asarray(rows @ _weights(xs, w).T, dtype=np.float64)


def _zscores(cells: np.ndarray) -> np.ndarray:
    known = cells[~np.isnan(cells)]
    return (cells - known.mean()) / max(float(known.std()), 1.0)


def _block_means(cells: np.ndarray, size: int) -> np.ndarray:
    """Means of the size x size blocks of ``cells`` over the cells with a value; NaN for a
    block with fewer than half of its cells."""
    n = cells.shape[0] // size
    grid = cells.reshape(n, size, n, size).transpose(0, 2, 1, 3).reshape(n * n, size * size)
    known = ~np.isnan(grid)
    counts = known.sum(axis=1)
    means = np.where(known, grid, 0.0).sum(axis=1) / np.maximum(counts, 1)
    return np.where(counts * 2 >= size * size, means, np.nan)


# --- candidates: the ranking vector ------------------------------------------------------------


def rank_vector(thumb: np.ndarray) -> np.ndarray:
    """The block means of a thumbnail's z-scores: near for a copy, whatever its format."""
    return _ranking(zscored(thumb[None])[0])


def _ranking(zscores: np.ndarray) -> np.ndarray:
    """``rank_vector`` of a thumbnail already z-normalised (flat, as ``Picture.zscores``)."""
    return _block_means(zscores.reshape(THUMB, THUMB), RANK_BLOCK)


def encode_blocks(vector: np.ndarray) -> bytes:
    """A ranking vector as stored: one byte a block."""
    return np.clip(np.round(vector * QUANT + 128), 0, NO_VALUE - 1).astype(np.uint8).tobytes()


def nearest(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Indices of the (at most) ``k`` rows of ``vectors`` nearest ``query``, nearest first (on the
    blocks the query has: a picture in another's frame may not reach its edges)."""
    known = ~np.isnan(query)
    diff = vectors - query[None] if known.all() else vectors[:, known] - query[None, known]
    scores = np.einsum("ij,ij->i", diff, diff)
    if len(scores) > k:
        top = np.argpartition(scores, k)[:k]
        return top[np.argsort(scores[top])]
    return np.argsort(scores)


# --- the fine check --------------------------------------------------------------------------

_EDGES = np.arange(THUMB + 1) / THUMB
#: profiles are fitted on half the cells: the fit's precision is the grid's, not the cells'
_FIT = THUMB // 2
_FIT_EDGES = np.arange(_FIT + 1) / _FIT


def _grid(offsets: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o, s = np.meshgrid(offsets, scales)
    return o.ravel(), s.ravel()


_COARSE = _grid(np.linspace(-MAX_OFFSET, MAX_OFFSET, 13), np.linspace(*SCALES, 11))
_STEPS = _grid(np.linspace(-0.01, 0.01, 9), np.linspace(-0.02, 0.02, 9))
_FINER = _grid(np.linspace(-0.003, 0.003, 9), np.linspace(-0.006, 0.006, 9))
#: the cells inside the picture in every frame tried (the coarse grid and the steps around it):
#: where profiles are compared, and their edges
_INNER = slice(int(np.ceil((MAX_OFFSET + 0.01) * _FIT)), int((SCALES[0] - 0.02 - MAX_OFFSET - 0.01) * _FIT))
_INNER_EDGES = _FIT_EDGES[_INNER.start:_INNER.stop + 1]
#: the coarse grid's inner cell edges in each frame, as shares of the picture's side: the same
#: for every picture
_COARSE_AT = np.clip((_INNER_EDGES[None, :] - _COARSE[0][:, None]) / _COARSE[1][:, None], 0, 1)


#: a profile of the picture under each frame of a grid (frames x inner cells) and the norm of
#: each row centred. Its cells are sums over their width, not means: in one frame every inner
#: cell has the same width, and a correlation leaves a row's scale out.
Framings = tuple[np.ndarray, np.ndarray]


def _centred_norms(rows: np.ndarray) -> np.ndarray:
    """The norm of each row less its mean (a correlation's denominator, without centring the rows:
    the reference's profile is centred, so the product is the same)."""
    sums = rows.sum(axis=1)
    return np.asarray(np.sqrt(np.maximum(np.einsum("ij,ij->i", rows, rows) - sums * sums / rows.shape[1], 0.0)))


def _interpolate(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``values`` (at 0, 1, 2, ...) read at ``positions`` (within them), linearly: ``np.interp``
    with its grid known to be even (np.interp searches for each position: 13 times slower)."""
    at = np.minimum(positions.astype(np.intp), len(values) - 2)
    return np.asarray(values[at] + (positions - at) * (values[at + 1] - values[at]))


def _framings(cumulative: np.ndarray, length: int, offsets: np.ndarray, scales: np.ndarray) -> Framings:
    """The box sums of the picture's profile in each frame (offset, scale), on the cells inside
    every frame tried: what its correlation with any reference's profile reads."""
    x = np.clip((_INNER_EDGES[None, :] - offsets[:, None]) * (length / scales)[:, None], 0, length)
    ours = np.diff(_interpolate(cumulative, x), axis=1)
    return ours, _centred_norms(ours)


#: a reference's profile on the inner cells, centred, and its norm
Profile = tuple[np.ndarray, float]


def _profile_scores(framings: Framings, reference: Profile) -> np.ndarray:
    """For each frame, how well the picture's profile correlates with the reference's (1:
    perfectly); correlation leaves a copy's brightness and contrast out."""
    ours, norms = framings
    theirs, norm = reference
    return np.asarray((ours @ theirs) / (norms * norm + 1e-9))


def _best(framings: Framings, reference: Profile, offsets: np.ndarray, scales: np.ndarray) -> tuple[float, float]:
    best = int(np.argmax(_profile_scores(framings, reference)))
    return float(offsets[best]), float(scales[best])


def _fit_axis(reference: Profile, coarse: Framings, cumulative: np.ndarray, length: int,
              start: tuple[float, float] | None = None) -> tuple[float, float]:
    """The frame on one axis: the coarse grid (unless ``start`` is its answer), then finer ones
    around the best so far."""
    o, s = start or _best(coarse, reference, *_COARSE)
    for step in (_STEPS, _FINER):
        offsets, scales = o + step[0], s + step[1]
        o, s = _best(_framings(cumulative, length, offsets, scales), reference, offsets, scales)
    return o, s


def _reference_profiles(reference: np.ndarray) -> tuple[Profile, Profile]:
    """A reference thumbnail's column and row profiles at the fitting resolution (``Profile``)."""
    profiles = []
    for axis in (0, 1):
        # The mean of each column (row), then of each pair: the same as pairs of the 2x2 blocks'
        # means, at a third of the cost (numpy's mean over two axes of a reshaped array is slow).
        inner = reference.mean(axis=axis, dtype=np.float64).reshape(_FIT, 2).mean(axis=1)[_INNER]
        inner -= inner.mean()
        profiles.append((inner, float(np.sqrt(inner @ inner))))
    return profiles[0], profiles[1]


Frame = tuple[float, float, float, float]


#: the coarse frame that changes nothing, and how much better another must fit to be taken: the
#: share of the profiles it leaves unexplained, at least this many times smaller. Another caption
#: on the same face fits a little better somewhat off (2.7 times or less in 95 of 100); a crop of
#: a few pixels, against another caption of its series, 4.8 times in half of them, 1.4 in 95 of
#: 100 (docs/near-duplicates.md): a trade between the crops found and the work on the rest. A
#: caption taken out of the frame is put back by ``fits_frame``: 1.5 finds more crops than 2.0
#: (779 of 900 against 748) for a few more fits of other captions (35 of 800 against 26).
_IDENTITY = int(np.argmin(np.abs(_COARSE[0]) + np.abs(_COARSE[1] - 1)))
OUT_OF_FRAME = 1.5


def rough_frame(picture: Picture, reference: np.ndarray) -> Frame | None:
    """The frame on the coarse grid (a tenth of a cell in offset, 2% in scale) when the picture is
    out of the reference's frame (a crop of it, or it of the picture); None when the two are in
    one frame, as the members of a series and copies that are not cropped are."""
    frame: list[float] = []
    out = False
    for ref, framings in zip(_reference_profiles(reference), picture.coarse_framings, strict=True):
        scores = _profile_scores(framings, ref)
        best = int(np.argmax(scores))
        out = out or (1 - scores[_IDENTITY]) > OUT_OF_FRAME * max(1 - scores[best], 1e-9)
        frame += [float(_COARSE[0][best]), float(_COARSE[1][best])]
    return (frame[0], frame[1], frame[2], frame[3]) if out else None


def _frame(picture: Picture, reference: np.ndarray, start: Frame | None = None) -> Frame:
    """Offsets and scales that put the picture in the frame of ``reference``, per axis."""
    starts = [(start[0], start[1]), (start[2], start[3])] if start else [None, None]
    (ox, sx), (oy, sy) = (_fit_axis(ref, coarse, *profile, first) for ref, coarse, profile, first in zip(
        _reference_profiles(reference), picture.coarse_framings, picture.profiles, starts, strict=True))
    return ox, sx, oy, sy


def in_frame(picture: Picture, reference: np.ndarray, start: Frame | None = None) -> np.ndarray:
    """The picture's thumbnail in the frame of ``reference`` (another picture's thumbnail, grey
    levels): grey levels, NaN where the picture does not reach."""
    w, h = picture.size
    ox, sx, oy, sy = _frame(picture, reference, start)
    xs, ys = (_EDGES - ox) / sx * w, (_EDGES - oy) / sy * h
    inside_x = np.nonzero((xs[:-1] >= -1e-6) & (xs[1:] <= w + 1e-6))[0]
    inside_y = np.nonzero((ys[:-1] >= -1e-6) & (ys[1:] <= h + 1e-6))[0]
    cells = np.full((THUMB, THUMB), np.nan)
    if len(inside_x) and len(inside_y):
        x0, x1, y0, y1 = inside_x[0], inside_x[-1] + 1, inside_y[0], inside_y[-1] + 1
        cells[y0:y1, x0:x1] = _cells(picture.pixels, np.clip(xs[x0:x1 + 1], 0, w), np.clip(ys[y0:y1 + 1], 0, h))
    return cells


def _pair_sums(values: np.ndarray) -> np.ndarray:
    """Sums of the BLOCK x BLOCK-cell blocks of each of ``values`` (n, THUMB, THUMB): strided adds,
    a tenth of the time of numpy's reduction over two axes of a reshaped array."""
    return np.asarray(sum(values[:, i::BLOCK, j::BLOCK] for i in range(BLOCK) for j in range(BLOCK)))


def zscored(references: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Each of ``references`` (n, THUMB, THUMB) z-normalised over all its cells, or over those
    ``mask`` (flat, 1 or 0) keeps: (n, THUMB*THUMB) float32, as ``Picture.zscores``. In float32
    and in place: a float64 temporary of eight references is 256 KB, which the allocator maps and
    unmaps each time (five times slower, measured)."""
    n = len(references)
    flat = references.reshape(n, -1).astype(np.float32)
    if mask is None:
        count = float(flat.shape[1])
        total = flat.sum(axis=1, dtype=np.float64)
        squares = np.einsum("ij,ij->i", flat, flat, dtype=np.float64)
    else:
        count = float(mask.sum())
        total = np.einsum("ij,j->i", flat, mask, dtype=np.float64)
        squares = np.einsum("ij,ij,j->i", flat, flat, mask, dtype=np.float64)
    mean = total / count
    spread = squares / count - mean * mean
    std = np.maximum(np.sqrt(np.maximum(spread, 0.0)), 1.0)
    flat *= (1 / std).astype(np.float32)[:, None]
    flat -= (mean / std).astype(np.float32)[:, None]
    return flat


def quick_distances(zscores: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``fine_distance`` from a picture (its ``Picture.zscores``) to each of ``references`` (their
    z-scores, (n, THUMB*THUMB), worked on in place) without putting it in their frames: the same
    answer for a copy that is not cropped (re-encoded, resized, converted), at a small share of
    the cost, for all of them at once. With it, the differences of each block (n, blocks), for
    ``concentration``."""
    n = len(references)
    references -= zscores.reshape(1, -1)
    np.abs(references, out=references)
    blocks = _pair_sums(references.reshape(n, THUMB, THUMB)).reshape(n, -1)
    return np.asarray(blocks.max(axis=1) / (BLOCK * BLOCK), dtype=np.float64), blocks


def concentration(blocks: np.ndarray) -> np.ndarray:
    """How concentrated each row of differences (``quick_distances``) is: its largest block's over
    its 90th percentile (``SPREAD``)."""
    tenth = np.partition(blocks, int(0.9 * blocks.shape[1]), axis=1)[:, int(0.9 * blocks.shape[1])]
    return np.asarray(blocks.max(axis=1) / np.maximum(tenth, 1e-6), dtype=np.float64)


#: how concentrated the differences of a copy from its original can be (``quick_distances``): a
#: copy differs a little everywhere (resampling, compression: its largest block at most 11 times
#: the 90th percentile, in 895 resized, re-encoded, converted copies and first frames), another
#: caption on the same face where the caption is (53 times at least, in 90 captions that came
#: within 1.2 of a member of a 2,000-member series). Only the first is worth a frame fit.
SPREAD = 20.0


def framed_blocks(cells: np.ndarray, references: np.ndarray) -> np.ndarray:
    """The mean difference of each block from a picture already put in the references' frame
    (``in_frame``: grey cells, NaN where it does not reach) to each of ``references`` (n, THUMB,
    THUMB), each z-normalised over the cells the picture reaches: (n, blocks), -inf for a block
    it hardly reaches, inf everywhere when it reaches too little to say. In float32 with the
    cells it does not reach masked, as ``quick_distances`` (NaN-aware reductions cost four times
    as much)."""
    n = len(references)
    known = ~np.isnan(cells)
    if known.sum() < THUMB * THUMB // 2:
        return np.full((n, (THUMB // BLOCK) ** 2), np.inf)
    mask = known.ravel().astype(np.float32)
    flat = zscored(references, mask)
    flat -= np.where(known, _zscores(cells), 0.0).astype(np.float32).reshape(1, -1)
    np.abs(flat, out=flat)
    flat *= mask
    per_block = _pair_sums(known[None].astype(np.float32))[0]
    sums = _pair_sums(flat.reshape(n, THUMB, THUMB))
    return np.where(per_block * 2 >= BLOCK * BLOCK, sums / np.maximum(per_block, 1), -np.inf).reshape(n, -1)


def framed_distances(cells: np.ndarray, references: np.ndarray) -> np.ndarray:
    """``fine_distance`` from a picture already put in the references' frame to each of them at
    once: the largest of ``framed_blocks``."""
    return np.asarray(framed_blocks(cells, references).max(axis=1), dtype=np.float64)


#: how much farther in the reference's frame than in its own a picture may be and still be out of
#: that frame (``fits_frame``)
FRAME_SLACK = 1.25


def fits_frame(framed: np.ndarray, own: np.ndarray) -> bool:
    """Whether a picture is as near a reference in the reference's frame as in its own: the 75th
    percentile of its block differences (``framed_blocks``' row, ``quick_distances``' row) at
    most ``FRAME_SLACK`` times higher (the largest block is where captions differ: it says
    nothing of the frame). ``rough_frame`` takes some other captions of a series out of its
    frame (a caption's rows draw the row profile's fit a step off: 34 of 800 members against
    their nearest 8); put there they are farther (1.54 times at least). Crops by a few pixels
    are nearer (93%); the few that are not were put in the frame of another caption. Over 900
    crops, 748 found their original with this test, 750 without (docs/near-duplicates.md)."""
    known = framed[np.isfinite(framed)]
    if len(known) < len(framed) // 2:
        return False
    return bool(np.percentile(known, 75) < FRAME_SLACK * np.percentile(own, 75) / (BLOCK * BLOCK))


def framed_vector(cells: np.ndarray) -> np.ndarray:
    """The ranking vector of a picture put in another's frame (NaN for blocks it hardly reaches)."""
    return _block_means(_zscores(cells), RANK_BLOCK)


def fine_distance(picture: Picture, reference: np.ndarray, start: Frame | None = None) -> float:
    """How far the picture is from the one whose thumbnail is ``reference``: the largest mean
    difference of a 4x4-cell block, in the reference's frame, both z-normalised over the cells
    they share. inf when they share too little to say."""
    return float(framed_distances(in_frame(picture, reference, start), reference[None])[0])


# --- the text on the picture (what OCR read) ------------------------------------------------

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
