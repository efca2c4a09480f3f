"""Find the recorded meme a new file is a copy of (emomo.near), with bounded work per file.

* ``NearIndex`` keeps every recorded meme's coarse hash and ranking blocks in memory (about 72
  bytes a meme), loaded once and read on from the database as memes are recorded (by this
  crawl: at once; by other workers: every few seconds). A lookup filters by the hash with one
  vectorised pass and ranks what is left by the blocks: the nearest ``dedupe.near_candidates``,
  whether the series holds 10 memes or 10,000.
* those few are fetched in one query, with their thumbnails, text and whether this collection
  indexes them, and compared by the fine distance. The text (OCR) is read only for a candidate
  the fine distance cannot decide.
* ``NearInFlight``: a file waits for an earlier file of this crawl still in the pipelines only
  when it may be a copy of it (the same fine check), so that two copies read at the same moment
  make one meme, while the members of a series go through side by side.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from emomo.errors import Interrupted
from emomo.imaging import CONTENT_TYPES
from emomo.near import (
    SPREAD,
    NearCheck,
    Picture,
    at_one_scale,
    concentration,
    encode_blocks,
    fine_distance,
    first_frame_grey,
    fits_frame,
    framed_blocks,
    framed_vector,
    hamming_many,
    in_frame,
    informative,
    measure,
    nearest,
    quick_distances,
    rank_vector,
    rescaled,
    rough_frame,
    same_size,
    same_text,
    stored_thumb,
    zscored,
)
from emomo.providers.ocr_describer import OCRDescriber, TextReader
from emomo.repositories import MemeFile, MemeRepository, MemeSignature, NearCandidate
from emomo.storage import storage_key

if TYPE_CHECKING:
    from itemadapter import ItemAdapter
    from PIL import Image
    from scrapy.statscollectors import StatsCollector

    from emomo.config import DedupeConfig, EmomoConfig
    from emomo.ingest.state import ItemState
    from emomo.providers import Describer
    from emomo.repositories.vector_index import VectorIndex
    from emomo.storage import ObjectStore

logger = logging.getLogger(__name__)

T = TypeVar("T")



#: a picture in its series' frame is fitted to the candidates' frame only when its quick distance
#: is within this many times ``near_same``: a resized copy's resampling puts it as far as 1.14
#: (measured on 777 resized copies; 5 beyond 0.9) before the fit evens it out. Tried at 2.25:
#: the p95 of the check at 10,000 members of a series halved, and resized copies were lost.
FIT_WITHIN = 3.0


class Verdict(Enum):
    SAME = "same"
    MAYBE = "maybe"
    DIFFERENT = "different"


@dataclass
class Judgement:
    """Whether a picture is a copy of each candidate (nearest first), and, when it is out of
    their series' frame (a crop), its ranking vector in that frame: candidates ranked by that
    one may hold the original the first ranking missed."""

    verdicts: list[tuple[Verdict, float]]
    reframed: np.ndarray | None = None
    #: the picture in the series' frame (grey cells) when it is out of it: candidates ranked by
    #: ``reframed`` are members of the series too, and are judged in the same frame
    cells: np.ndarray | None = None
    #: the costly steps it took: looked for its frame in the series' (``rough_frame``), put in
    #: that frame, and fitted to one candidate of its own
    located: bool = False
    framed: bool = False
    refitted: bool = False


def judge(picture: Picture, references: Sequence[np.ndarray], shifted: Sequence[bool],
          config: DedupeConfig, series_cells: np.ndarray | None = None,
          zscores: Sequence[np.ndarray] | None = None, sizes: Sequence[tuple[int, int]] = ()) -> Judgement:
    """The quick distance (own frames) settles copies that are not cropped, for all candidates
    at once. Unless it did, the picture is put in the series' frame (that of the nearest
    candidate in it) and compared with all of them again: a crop needs it, and it costs a few
    times more, so only when the picture is out of that frame, or nearly alike already with its
    differences spread over the picture (a resize, whose resampling it evens out; another
    caption's sit where the caption is: ``SPREAD``). ``series_cells``: the picture already put
    there (by the judgement of the candidates ranked first). A candidate itself out of the frame (``shifted``:
    a crop recorded before its original) gets a fit of its own. ``zscores``: the references'
    (NearCheck.zscores), when they are known. ``sizes``: the references' files' (width, height):
    one at another scale or of the very same size is the same only when nearer (``same_bar``).
    A millisecond or so of numpy for ``near_candidates`` references: run on the loop (``measured``)."""
    if not references:
        return Judgement([])
    # The bar under which each candidate is the same picture.
    same = np.array([same_bar(config, picture.source, size) for size in sizes] if sizes
                    else [config.near_same] * len(references))
    stack: np.ndarray | None = None  # the thumbnails, stacked: for the framed distance too
    if zscores is None:
        stack = np.stack(references)
        theirs = zscored(stack)
    else:
        theirs = np.stack(zscores)
    distances, differences = quick_distances(picture.zscores, theirs)
    reframed, cells, located, framed, refitted = None, series_cells, False, False, False
    if (distances > same).all():
        # The series' frame: that of the candidate most alike, of those in it (none: the frame
        # of a crop, which the picture may be out of without being out of its series').
        inside = [i for i, s in enumerate(shifted) if not s]
        series = min(inside or range(len(references)), key=lambda i: distances[i])
        # Differences concentrated where a caption is put the picture in that frame already (a
        # crop's, off by a fraction of a cell, spread over the picture: SPREAD).
        located = cells is None and float(concentration(differences[series:series + 1])[0]) <= SPREAD
        frame = rough_frame(picture, references[series]) if located else None
        out = cells is not None or frame is not None
        # In the frame already, a fit helps only a copy a little off everywhere (a resize), not
        # another caption: its differences sit in one place.
        close = distances <= FIT_WITHIN * config.near_same
        if out or (close.any() and (concentration(differences[close]) <= SPREAD).any()):
            if cells is None:
                cells = in_frame(picture, references[series], frame)
                framed = True
            stack = np.stack(references) if stack is None else stack
            blocks = framed_blocks(cells, stack)
            distances = np.minimum(distances, blocks.max(axis=1))
            # Out of the series' frame only if nearer the series in it: the picture is then
            # ranked and recorded in that frame (``shifted``), and a copy of it in its own frame
            # would no longer find it among the nearest.
            if out and (series_cells is not None or (inside and fits_frame(blocks[series], differences[series]))):
                reframed = framed_vector(cells)
        # One candidate gets a fit of its own: the series' frame as fitted on another caption is a
        # little off for the original of a crop, and a crop recorded before its original is out
        # of the series' frame (``shifted``).
        others = [i for i in range(len(references)) if i != series and (out or shifted[i])]
        if others:
            best = min(others, key=lambda i: distances[i])
            if same[best] < distances[best]:
                refitted = True
                distances[best] = min(distances[best], fine_distance(picture, references[best],
                                                                     rough_frame(picture, references[best])))
    return Judgement([(Verdict.SAME if d <= bar else
                       Verdict.MAYBE if d < config.near_different else Verdict.DIFFERENT, float(d))
                      for d, bar in zip(distances, same, strict=True)],
                     reframed, cells if reframed is not None else None, located, framed, refitted)


def same_bar(config: DedupeConfig, a: tuple[int, int], b: tuple[int, int]) -> float:
    """The fine distance under which files of sizes ``a`` and ``b`` are one picture: stricter at
    one size (only the encoding differs) and at two scales (small strokes are lost) than within
    a few pixels of each other (a crop, which the frame fit leaves a little apart)."""
    if same_size(a, b):
        return config.near_same_same_size
    return config.near_same_rescaled if rescaled(a, b) else config.near_same


def judge_stored(picture: Picture, candidates: Sequence[NearCandidate], config: DedupeConfig,
                 series_cells: np.ndarray | None = None) -> Judgement:
    """``judge`` against recorded candidates, their thumbnails decompressed in the same call."""
    return judge(picture, [stored_thumb(c.thumb or b"") for c in candidates], [c.shifted for c in candidates],
                 config, series_cells, sizes=[(c.file.width, c.file.height) for c in candidates])


def measure_check(body: bytes, grey: Image.Image | None = None) -> tuple[Picture, NearCheck]:
    """The file measured (``grey``: its first frame, decoded already) and what the check keeps
    of it."""
    picture = measure(body, grey)
    return picture, NearCheck.of(picture)


@dataclass(frozen=True)
class NearMatch:
    meme: NearCandidate
    distance: float


class NearIndex:
    """Every recorded meme's coarse hash and ranking blocks, in memory (see the module)."""

    #: how often signatures recorded by other workers are read
    REFRESH_SECONDS = 2.0
    #: signatures read again at each refresh: on PostgreSQL a sequence number is taken when a
    #: row is written but seen when its transaction commits, so a late commit can land behind
    #: the newest number read
    OVERLAP = 500
    PAGE = 20_000

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._hashes = np.zeros(0, dtype=np.int64)
        self._blocks = np.zeros((0, 64), dtype=np.uint8)
        #: each row's squared norm: a distance is then one product with the query
        self._norms = np.zeros(0, dtype=np.float32)
        self._ranked = np.zeros(0, dtype=bool)
        self._seq = 0
        self._refreshed = -math.inf
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    async def refresh(self, repo: MemeRepository, *, force: bool = False) -> None:
        """Read the signatures recorded since the last read (all of them the first time)."""
        if not force and time.monotonic() - self._refreshed < self.REFRESH_SECONDS:
            return
        async with self._lock:
            if not force and time.monotonic() - self._refreshed < self.REFRESH_SECONDS:
                return
            self._refreshed = time.monotonic()
            after = max(0, self._seq - self.OVERLAP) if self._ids else 0
            while True:
                rows = await repo.near_signatures(after, self.PAGE)
                for row in rows:
                    self.add(row.meme_id, row.phash, row.blocks)
                if rows:
                    after = rows[-1].seq
                    self._seq = max(self._seq, after)
                if len(rows) < self.PAGE:
                    break

    def add(self, meme_id: str, phash: int, blocks: bytes | None) -> None:
        row = self._row.get(meme_id)
        if row is None:
            row = len(self._ids)
            if row == len(self._hashes):  # grow by half: amortised appends
                grow = max(1024, row // 2)
                self._hashes = np.concatenate((self._hashes, np.zeros(grow, dtype=np.int64)))
                self._blocks = np.concatenate((self._blocks, np.zeros((grow, 64), dtype=np.uint8)))
                self._norms = np.concatenate((self._norms, np.zeros(grow, dtype=np.float32)))
                self._ranked = np.concatenate((self._ranked, np.zeros(grow, dtype=bool)))
            self._ids.append(meme_id)
            self._row[meme_id] = row
        self._hashes[row] = phash
        self._ranked[row] = blocks is not None
        if blocks is not None:
            self._blocks[row] = np.frombuffer(blocks, dtype=np.uint8)
            self._norms[row] = np.square(self._blocks[row], dtype=np.float32).sum()

    def _distances(self, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
        """Squared distances (less a constant) of ``rows`` to ``vector``, on the stored bytes (what
        a query's z-scores quantise to): at 10,000 members of a series this is what counts."""
        known = ~np.isnan(vector)
        query = np.frombuffer(encode_blocks(np.where(known, vector, 0.0)), dtype=np.uint8).astype(np.float32)
        if not known.all():  # blocks the query has no value for (a crop in its series' frame): left out
            diff = self._blocks[rows].astype(np.float32)
            diff -= query
            diff[:, ~known] = 0.0
            return np.asarray(np.einsum("ij,ij->i", diff, diff))
        # |row|^2 - 2 row.query: one product. Over every row in order when the rows are most of
        # them (gathering them costs more than the product).
        if len(rows) * 4 >= len(self._ids):
            products = (self._blocks[:len(self._ids)].astype(np.float32) @ query)[rows]
        else:
            products = self._blocks[rows].astype(np.float32) @ query
        return np.asarray(self._norms[rows] - 2 * products)

    def candidates(self, phash: int, vector: np.ndarray, distance: int, k: int, by_hash: int = 0) -> list[str]:
        """The ``k`` memes within ``distance`` bits whose blocks are nearest ``vector``, nearest
        first; then up to ``k`` recorded before blocks were kept, nearest by the hash; then
        ``by_hash`` more of the nearest by the hash (in a series of hundreds, a re-encoded copy's
        blocks can sit farther from its original's than other members' do: measured at 2,000
        memes on five templates, 13 of 100 copies missed their original without them)."""
        n = len(self._ids)
        within = np.nonzero(hamming_many(self._hashes[:n], phash) <= distance)[0]
        if not len(within):
            return []
        ranked = within[self._ranked[within]]
        scores = self._distances(ranked, vector)
        top = np.argsort(scores) if len(scores) <= k else np.argpartition(scores, k)[:k]
        found = [self._ids[i] for i in ranked[top[np.argsort(scores[top], kind="stable")]]]
        older = within[~self._ranked[within]]
        if len(older):
            bits = hamming_many(self._hashes[older], phash)
            found += [self._ids[i] for i in older[np.argsort(bits, kind="stable")[:k]]]
        if by_hash:
            bits = hamming_many(self._hashes[ranked], phash)
            chosen = set(found)
            found += [m for m in (self._ids[i] for i in ranked[np.argsort(bits, kind="stable")[:by_hash + k]])
                      if m not in chosen][:by_hash]
        return found


@dataclass(eq=False)  # one item in flight: compared and kept in sets by identity
class _Flight:
    md5: str
    check: NearCheck
    done: asyncio.Event
    #: its own check found no meme it copies: it goes on to become one, and waits for no item now
    passed: bool = False


class NearInFlight:
    """The items of this crawl in the pipelines, for a file that may be a copy of one of them."""

    def __init__(self) -> None:
        self._items: dict[str, _Flight] = {}

    def enter(self, md5: str, check: NearCheck) -> list[_Flight]:
        """Register the item (once: entering again changes nothing); the items that came before
        it (it waits for none of the later)."""
        flights = list(self._items.values())
        mine = next((i for i, f in enumerate(flights) if f.check is check), None)
        if mine is not None:
            return flights[:mine]
        self._items[md5] = _Flight(md5, check, asyncio.Event())
        return flights

    def passed(self, md5: str, check: NearCheck) -> None:
        flight = self._items.get(md5)
        if flight is not None and flight.check is check:
            flight.passed = True

    def later_passed(self, check: NearCheck) -> list[_Flight]:
        """The items that came after the one with ``check`` and have passed their own check: an
        item may wait for those (they wait for no one any more), never for a later one still
        checking (two items waiting for each other)."""
        flights = list(self._items.values())
        mine = next((i for i, f in enumerate(flights) if f.check is check), len(flights))
        return [f for f in flights[mine + 1:] if f.passed]

    def leave(self, md5: str, check: NearCheck) -> None:
        """The item with ``check`` left: only its own entry goes (another item of the same md5
        may have entered since, and its waiters wait for it)."""
        flight = self._items.get(md5)
        if flight is not None and flight.check is check:
            del self._items[md5]
            flight.done.set()

    def clear(self) -> None:
        for flight in self._items.values():
            flight.done.set()
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def _possible_copies(picture: Picture, check: NearCheck, flights: Sequence[_Flight],
                     config: DedupeConfig) -> tuple[list[_Flight], list[Judgement]]:
    """Of the items in flight, those ``picture`` may be a copy of, and the judgements that said
    so. Out of its series' frame, ``check`` learns it."""
    hashes = np.fromiter((f.check.phash for f in flights), dtype=np.int64, count=len(flights))
    near = [flights[i] for i in np.flatnonzero(hamming_many(hashes, picture.phash) <= config.near_distance).tolist()]
    if not near:
        return [], []
    vectors = np.stack([f.check.vector for f in near])
    order = list(nearest(vectors, check.vector, config.near_candidates))

    def verdicts(order: list[int], series_cells: np.ndarray | None = None) -> Judgement:
        return judge(picture, [near[i].check.thumb for i in order], [near[i].check.shifted for i in order], config,
                     series_cells, [near[i].check.zscores for i in order], [near[i].check.source for i in order])

    judgements = [verdicts(order)]
    found = [near[i] for i, (verdict, _) in zip(order, judgements[0].verdicts, strict=True)
             if verdict is not Verdict.DIFFERENT]
    if judgements[0].reframed is not None:
        check.out_of_frame(judgements[0].reframed)
        if not found:  # the nearest in the series' frame
            first = set(order)
            order = [i for i in nearest(vectors, check.vector, config.near_candidates) if i not in first]
            judgements.append(verdicts(order, judgements[0].cells))
            found = [near[i] for i, (verdict, _) in zip(order, judgements[1].verdicts, strict=True)
                     if verdict is not Verdict.DIFFERENT]
    return found, judgements


async def in_flight_copies(runtime: IngestRuntime, picture: Picture, check: NearCheck,
                           flights: Sequence[_Flight]) -> list[_Flight]:
    """``_possible_copies``, its costly steps counted (``emomo/near/in_flight/*``)."""
    found, judgements = await measured(runtime, "in_flight", _possible_copies, picture, check, flights,
                                       runtime.config.dedupe)
    for judgement in judgements:
        count_steps(runtime, judgement, "emomo/near/in_flight")
    return found


def signature(check: NearCheck) -> MemeSignature:
    """What is recorded of the check with the meme it becomes."""
    return MemeSignature(check.phash, check.stored_thumb, check.blocks, check.shifted, check.image_text)


def count_steps(runtime: IngestRuntime, judgement: Judgement, prefix: str = "emomo/near") -> Judgement:
    runtime.stats.inc_value(f"{prefix}/located", judgement.located)
    runtime.stats.inc_value(f"{prefix}/framed", judgement.framed)
    runtime.stats.inc_value(f"{prefix}/refitted", judgement.refitted)
    return judgement


async def measured(runtime: IngestRuntime, part: str, work: Callable[..., T], *args: Any,
                   in_thread: bool = False) -> T:
    """``work(*args)``, its CPU time counted (``emomo/near/cpu_ms/<part>``: what the check costs a
    crawl, beside the stage's wall time).

    On the event loop unless ``in_thread``: the check's steps are a millisecond or so of numpy,
    which gives up the GIL around every operation; in a thread each call then took it back from
    the loop and the S3 and database threads 20-40 times, and the crawl spent about 15% more CPU
    a file than with the steps on the loop (docs/near-duplicates.md). Work whose size the file
    decides (decoding a stored object, measuring a large picture) goes to a thread."""

    def timed() -> tuple[T, float]:
        started = time.thread_time()
        result = work(*args)
        return result, time.thread_time() - started

    with wall_ms(runtime.stats, f"emomo/near/wall_ms/{part}"):
        result, seconds = await asyncio.to_thread(timed) if in_thread else timed()
    runtime.stats.inc_value(f"emomo/near/cpu_ms/{part}", round(seconds * 1000))
    return result


#: a first frame of more pixels than this is measured in a thread (``measure_item``): about 5 ms
#: of the loop at a million pixels, 17 ms at four million; memes are mostly a few hundred pixels
#: a side
MEASURE_ON_LOOP_PIXELS = 1_000_000


async def measure_item(runtime: IngestRuntime, body: bytes,
                       grey: Image.Image | None) -> tuple[Picture, NearCheck]:
    """``measure_check`` of an item's file, counted (``grey``: its first frame as the read stage
    decoded it; without it the file is decoded, in a thread)."""
    large = grey is None or grey.width * grey.height > MEASURE_ON_LOOP_PIXELS
    return await measured(runtime, "measure", measure_check, body, grey, in_thread=large)


@contextmanager
def wall_ms(stats: StatsCollector, key: str) -> Iterator[None]:
    """The block's wall time added to ``key`` in milliseconds (where a file's time goes)."""
    started = time.monotonic()
    try:
        yield
    finally:
        stats.inc_value(key, round((time.monotonic() - started) * 1000))


async def wait_for(flights: Sequence[_Flight], should_stop: Callable[[], bool], source: str) -> None:
    """Wait until the ``flights`` have left the pipelines; give up once the crawl stops."""
    for flight in flights:
        while not flight.done.is_set():
            if should_stop():
                raise Interrupted(f"{source}: the crawl is stopping")
            try:
                await asyncio.wait_for(flight.done.wait(), 0.5)
            except TimeoutError:
                pass


class IngestRuntime(Protocol):
    """What the check needs of the crawl's runtime (emomo.ingest.runtime.IngestRuntime, which
    imports this module: named here by shape, not imported back)."""

    config: EmomoConfig
    collection: str
    repo: MemeRepository
    store: ObjectStore
    index: VectorIndex
    describer: Describer
    stats: StatsCollector
    near_index: NearIndex

    @property
    def near_in_flight(self) -> NearInFlight: ...

    def should_stop(self) -> bool: ...


def text_reader(runtime: IngestRuntime) -> TextReader:
    """The local describer's OCR engines, or (on the VLM path) one engine of the process's,
    loaded at its first read: the check reads few files there (none of 880 on `bench/ingest.py`
    since resized copies are compared at one scale first), and a second engine cost another load
    (0.35 s of CPU and 114 MB) for no throughput."""
    if isinstance(runtime.describer, OCRDescriber):
        return runtime.describer.reader
    return TextReader(runtime.config.ingest, threads=1)


async def with_thumb(runtime: IngestRuntime, candidate: NearCandidate) -> NearCandidate:
    """The candidate with its thumbnail: one recorded before thumbnails were kept is measured
    from its object once, and the thumbnail kept."""
    if candidate.thumb is not None:
        return candidate
    picture = await measured(runtime, "measure", measure, await runtime.store.get(candidate.file.storage_key),
                             in_thread=True)
    check = NearCheck.of(picture)
    await runtime.repo.set_near_signature(candidate.meme_id, check.stored_thumb, check.blocks)
    runtime.near_index.add(candidate.meme_id, candidate.phash, check.blocks)
    return replace(candidate, thumb=check.stored_thumb)


async def find_near_duplicate(runtime: IngestRuntime, state: ItemState, body: bytes,
                              picture: Picture) -> NearMatch | None:
    repo, stats = runtime.repo, runtime.stats
    check = state.near
    assert check is not None
    if not informative(picture.phash):
        return None  # a flat picture: every other flat picture would be "near" it
    earlier = runtime.near_in_flight.enter(state.md5, check)
    # The earlier items judged as crops (out of the series' frame): one marked so later is
    # judged again before this one passes.
    judged_out = {f for f in earlier if f.check.shifted}
    copies = await in_flight_copies(runtime, picture, check, earlier) if earlier else []
    if copies:
        stats.inc_value("emomo/near/waited")
        with wall_ms(stats, "emomo/near/wait_ms"):
            await wait_for(copies, runtime.should_stop, state.source)
    match = await _recorded_copy(runtime, state, body, picture, copies)
    if match is None and check.shifted:
        match = await _after_later_copies(runtime, state, body, picture)
    if match is None:
        match = await _after_earlier_crops(runtime, state, body, picture, earlier, judged_out)
    if match is None:
        # No await since the last look at the earlier crops: a crop marked out of frame from
        # now on finds this item passed (``_after_later_copies``).
        runtime.near_in_flight.passed(state.md5, check)
        return None
    if await repo.get_meme_by_md5(state.md5) is not None:
        return None  # this very file is recorded (reuse goes on with it): asked only of a match
    return match


async def _after_later_copies(runtime: IngestRuntime, state: ItemState, body: bytes,
                              picture: Picture) -> NearMatch | None:
    """A picture out of its series' frame (a crop) beside its original in flight: when the
    original's check ran before this one had marked itself out of frame, the original compared
    it in the series' frame, took it for another caption and went on. The crop now waits for
    the originals that passed their check after it came, then looks among the recorded again."""
    assert state.near is not None
    later = runtime.near_in_flight.later_passed(state.near)
    return await _copy_in_flight(runtime, state, body, picture, later, "emomo/near/waited_later") if later else None


async def _after_earlier_crops(runtime: IngestRuntime, state: ItemState, body: bytes, picture: Picture,
                               earlier: Sequence[_Flight], judged_out: set[_Flight]) -> NearMatch | None:
    """The original of a crop in flight before it: this item's check compared the crop in the
    series' frame, as another caption, before the crop's own check had marked it out of that
    frame; and the crop, looking for the originals that passed their check after it came
    (``_after_later_copies``), did so before this one passed. Each earlier item marked out of
    frame since is judged again (in its frame, now), waited for if it may be the same picture,
    and looked for among the recorded."""
    while crops := [f for f in earlier if f.check.shifted and f not in judged_out]:
        judged_out.update(crops)
        match = await _copy_in_flight(runtime, state, body, picture, crops, "emomo/near/waited_earlier")
        if match is not None:
            return match
    return None


async def _copy_in_flight(runtime: IngestRuntime, state: ItemState, body: bytes, picture: Picture,
                          flights: Sequence[_Flight], waited: str) -> NearMatch | None:
    """Of ``flights``, those the picture may be a copy of, waited for (counted in ``waited``),
    then the recorded meme it copies, theirs first."""
    assert state.near is not None
    copies = await in_flight_copies(runtime, picture, state.near, flights)
    if not copies:
        return None
    runtime.stats.inc_value(waited)
    await wait_for(copies, runtime.should_stop, state.source)
    return await _recorded_copy(runtime, state, body, picture, copies)


async def _recorded_copy(runtime: IngestRuntime, state: ItemState, body: bytes, picture: Picture,
                         waited: Sequence[_Flight] = ()) -> NearMatch | None:
    """The recorded meme the picture is a copy of, among the nearest the index ranks now and the
    memes of the items in flight it ``waited`` for (judged possible copies already: the index
    may not rank them near, as a crop recorded in its series' frame is not for its original)."""
    config, stats, check = runtime.config.dedupe, runtime.stats, state.near
    assert check is not None
    with wall_ms(stats, "emomo/near/wall_ms/refresh"):
        await runtime.near_index.refresh(runtime.repo)
    ids = runtime.near_index.candidates(picture.phash, check.vector, config.near_distance, config.near_candidates)
    if waited:
        first = [meme.id for f in waited if (meme := await runtime.repo.get_meme_by_md5(f.md5)) is not None]
        ids = first + [i for i in ids if i not in first]
    if not ids:
        return None
    with wall_ms(stats, "emomo/near/wall_ms/nearest"):
        return await _nearest_copy(runtime, state, body, picture, ids)


async def ranked_candidates(repo: MemeRepository, ids: list[str], collection: str) -> list[NearCandidate]:
    """Those of ``ids`` (nearest first) that ``collection`` indexes, in that order, in one query."""
    rank = {meme_id: i for i, meme_id in enumerate(ids)}
    return sorted((c for c in await repo.near_candidates(ids, collection) if c.indexed),
                  key=lambda c: rank[c.meme_id])


async def _nearest_copy(runtime: IngestRuntime, state: ItemState, body: bytes, picture: Picture,
                        ids: list[str]) -> NearMatch | None:
    """The recorded meme among ``ids`` (nearest first) the picture is a copy of, if any."""
    config, repo, stats, index = runtime.config.dedupe, runtime.repo, runtime.stats, runtime.near_index
    check = state.near
    assert check is not None
    undecided: list[NearCandidate] = []
    seen: set[str] = set()
    series_cells = None
    for _round in range(2):  # the second only for a picture out of the series' frame
        seen.update(ids)
        found = await ranked_candidates(repo, ids, runtime.collection)
        stats.inc_value("emomo/near/candidates", len(found))
        found = [await with_thumb(runtime, candidate) for candidate in found]
        judgement = count_steps(runtime, await measured(runtime, "recorded", judge_stored, picture, found, config,
                                                        series_cells))
        same: list[NearMatch] = []
        for candidate, (verdict, distance) in zip(found, judgement.verdicts, strict=True):
            if verdict is Verdict.SAME:
                same.append(NearMatch(candidate, distance))
            elif verdict is Verdict.MAYBE:
                undecided.append(candidate)
        if same:
            # The nearest: a reduced copy can come within the bar of a reduced file of another
            # caption too, and its own meme nearer.
            return min(same, key=lambda match: match.distance)
        if judgement.reframed is None:
            break
        # Out of the series' frame (a crop): kept ranked in that frame, and the nearest there.
        check.out_of_frame(judgement.reframed)
        series_cells = judgement.cells
        if undecided:
            break
        stats.inc_value("emomo/near/reframed")
        ids = [i for i in index.candidates(picture.phash, check.vector, config.near_distance,
                                           config.near_candidates) if i not in seen]
        if not ids:
            break
    # Between the bars: a file at another scale is compared at one first (cheap, and OCR misreads
    # small captions), then the text decides.
    match = await _same_at_one_scale(runtime, body, [c for c in undecided
                                                     if rescaled(picture.source, (c.file.width, c.file.height))])
    if match is not None:
        return match
    for candidate in undecided:
        if await same_text_as(runtime, state, body, candidate):
            return NearMatch(candidate, math.nan)
    return None


def one_scale_distance(config: DedupeConfig, ours: Image.Image, stored: bytes) -> tuple[Verdict, float]:
    """``judge`` of a first frame (``first_frame_grey``) and a file at two scales, at one
    (``at_one_scale``): of one size then, they have the strictest bar, ``near_same_same_size``."""
    picture, theirs = at_one_scale(ours, first_frame_grey(stored))
    [verdict] = judge(picture, [theirs.thumb], [False], config, sizes=[theirs.source]).verdicts
    return verdict


async def _same_at_one_scale(runtime: IngestRuntime, body: bytes,
                             candidates: Sequence[NearCandidate]) -> NearMatch | None:
    """The first of ``candidates`` (files at another scale) the file is a resized copy of
    (``emomo/near/one_scale``: the files compared so; ``…/one_scale_same``: found so)."""
    if not candidates:
        return None
    ours = await measured(runtime, "one_scale", first_frame_grey, body, in_thread=True)  # once for all
    for candidate in candidates:
        runtime.stats.inc_value("emomo/near/one_scale")
        stored = await runtime.store.get(candidate.file.storage_key)
        verdict, distance = await measured(runtime, "one_scale", one_scale_distance, runtime.config.dedupe, ours,
                                           stored, in_thread=True)
        if verdict is Verdict.SAME:
            runtime.stats.inc_value("emomo/near/one_scale_same")
            return NearMatch(candidate, distance)
    return None


async def same_text_as(runtime: IngestRuntime, state: ItemState, body: bytes, candidate: NearCandidate) -> bool:
    """Whether the file carries the candidate's text: OCR on each, once (the candidate's is kept)."""
    assert state.near is not None
    reader = text_reader(runtime)
    if state.near.image_text is None:
        runtime.stats.inc_value("emomo/near/ocr_reads")
        state.near.image_text = await reader.read(body, state.source, runtime.should_stop)
    text = candidate.image_text
    if text is None:
        runtime.stats.inc_value("emomo/near/ocr_reads")
        text = await reader.read(await runtime.store.get(candidate.file.storage_key), state.source,
                                 runtime.should_stop)
        await runtime.repo.set_image_text(candidate.meme_id, text)
    return same_text(state.near.image_text, text, runtime.config.dedupe.near_text_similarity)


def better(file: MemeFile, than: MemeFile) -> bool:
    """Which file a meme should show: an animation over a still (a GIF's still is a lesser copy),
    then more pixels."""
    return (file.is_animated, file.width * file.height) > (than.is_animated, than.width * than.height)


async def keep_better_file(runtime: IngestRuntime, state: ItemState, adapter: ItemAdapter,
                           match: NearMatch) -> bool:
    """Make the item's file the meme's when it is the better copy: upload it, move the row, the
    vector rows and the signature to it, point the meme's points at it, then delete the old
    object. A failure before the end puts everything back; True when the meme now shows this file."""
    check = state.near
    assert check is not None
    fmt = str(adapter["format"])
    new = MemeFile(state.md5, storage_key(state.md5, fmt), fmt, int(adapter["width"]), int(adapter["height"]),
                   int(adapter["file_size"]), bool(adapter["is_animated"]))
    meme_id, old = match.meme.meme_id, match.meme.file
    if not better(new, old):
        return False
    repo, store, index = runtime.repo, runtime.store, runtime.index
    uploaded = await store.put(new.storage_key, adapter["body"], CONTENT_TYPES.get(fmt, "application/octet-stream"))
    try:
        points = await repo.switch_file(meme_id, old.md5_hash, new, check.phash, check.stored_thumb, check.blocks,
                                        check.shifted)
        if points is None:  # another worker moved the meme first: its choice stands
            raise _Raced
        try:
            for collection, pid in points:
                await index.set_payload(collection, pid, _payload(runtime, new))
        except Exception:
            for collection, pid in points:
                await index.set_payload(collection, pid, _payload(runtime, old))
            old_thumb = match.meme.thumb
            assert old_thumb is not None  # find_near_duplicate fills it in
            await repo.switch_file(meme_id, new.md5_hash, old, match.meme.phash, old_thumb,
                                   encode_blocks(rank_vector(stored_thumb(old_thumb))), match.meme.shifted)
            raise
    except BaseException as exc:
        if uploaded:
            await store.delete(new.storage_key)
        if isinstance(exc, _Raced):
            return False
        raise
    runtime.near_index.add(meme_id, check.phash, check.blocks)
    try:
        await store.delete(old.storage_key)
    except Exception as exc:  # an orphan object: `scrapy verify --repair` removes it
        logger.warning("Could not delete the replaced object %s: %s", old.storage_key, exc)
    return True


class _Raced(Exception):
    pass


def _payload(runtime: IngestRuntime, file: MemeFile) -> dict[str, object]:
    return {"md5": file.md5_hash, "storage_url": runtime.store.url(file.storage_key), "is_animated": file.is_animated}
