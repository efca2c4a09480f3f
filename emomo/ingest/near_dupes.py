"""Find the recorded meme a new file is a near-duplicate of (emomo.near): the same picture
(perceptual hash within ``dedupe.near_distance`` bits) carrying the same text.

The hash is cheap; the text costs an OCR read (a few hundred ms of CPU), so it is read only when
a candidate turns up. On the embedded path the describer would read it anyway and takes it from
here; on the VLM path this read replaces a paid call when the file is a duplicate. A candidate
recorded by the VLM path has no text yet: it is read from its stored object once and kept.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emomo.imaging import CONTENT_TYPES
from emomo.near import band_keys, hamming, informative, perceptual_hash, probe_keys, same_text
from emomo.providers.ocr_describer import OCRDescriber, TextReader
from emomo.repositories import MemeFile, NearCandidate
from emomo.storage import storage_key

if TYPE_CHECKING:
    from itemadapter import ItemAdapter

    from emomo.ingest.runtime import IngestRuntime
    from emomo.ingest.state import ItemState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NearMatch:
    meme: NearCandidate
    distance: int


@dataclass
class NearCheck:
    """What the check learnt of an item: kept with the meme it becomes."""

    phash: int
    image_text: str | None = None

    @property
    def band_keys(self) -> list[int]:
        return band_keys(self.phash)


class NearInFlight:
    """The hashes of this crawl's items in flight: an item near one that came before it waits
    for that one to leave the pipelines, so that the second of two copies read at the same
    moment finds the first recorded instead of becoming a meme of its own. Only earlier items
    are waited for, so no two items wait for each other."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[int, asyncio.Event]] = {}

    def enter(self, md5: str, phash: int, max_distance: int) -> list[asyncio.Event]:
        earlier = [done for other, done in self._items.values() if hamming(phash, other) <= max_distance]
        self._items[md5] = (phash, asyncio.Event())
        return earlier

    def leave(self, md5: str) -> None:
        entry = self._items.pop(md5, None)
        if entry is not None:
            entry[1].set()


def text_reader(runtime: IngestRuntime) -> TextReader:
    """The local describer's OCR engines, or (on the VLM path) the process's shared engines,
    loaded at their first read."""
    if isinstance(runtime.describer, OCRDescriber):
        return runtime.describer.reader
    return TextReader(runtime.config.ingest)


async def find_near_duplicate(runtime: IngestRuntime, state: ItemState, body: bytes,
                              check: NearCheck) -> NearMatch | None:
    config = runtime.config.dedupe
    repo = runtime.repo
    if not informative(check.phash):
        return None  # a flat picture: every other flat picture would be "near" it
    earlier = runtime.near_in_flight.enter(state.md5, check.phash, config.near_distance)
    if earlier:
        await asyncio.gather(*(done.wait() for done in earlier))
    found = await repo.near_candidates(probe_keys(check.phash, config.near_distance))
    candidates = sorted(
        ((hamming(check.phash, c.phash), c) for c in found if c.file.md5_hash != state.md5),
        key=lambda pair: pair[0])
    candidates = [(d, c) for d, c in candidates if d <= config.near_distance]
    if not candidates or await repo.get_meme_by_md5(state.md5) is not None:
        return None  # nothing near; or this very file is recorded (reuse goes on with it)
    reader = text_reader(runtime)
    if check.image_text is None:
        check.image_text = await reader.read(body, state.source, runtime.should_stop)
    for distance, candidate in candidates:
        if not await repo.meme_indexed(candidate.meme_id, runtime.collection):
            continue  # not searchable in this collection: nothing to merge into here
        text = candidate.image_text
        if text is None:
            text = await reader.read(await runtime.store.get(candidate.file.storage_key), state.source,
                                     runtime.should_stop)
            await repo.set_image_text(candidate.meme_id, text)
        if same_text(check.image_text, text, config.near_text_similarity):
            return NearMatch(candidate, distance)
    return None


async def hash_item(body: bytes) -> NearCheck:
    return NearCheck(await asyncio.to_thread(perceptual_hash, body))


def better(file: MemeFile, than: MemeFile) -> bool:
    """Which file a meme should show: an animation over a still (a GIF's still is a lesser copy),
    then more pixels."""
    return (file.is_animated, file.width * file.height) > (than.is_animated, than.width * than.height)


async def keep_better_file(runtime: IngestRuntime, state: ItemState, adapter: ItemAdapter,
                           match: NearMatch) -> bool:
    """Make the item's file the meme's when it is the better copy: upload it, move the row, the
    vector rows and the hash to it, point the meme's points at it, then delete the old object.
    A failure before the end puts everything back; True when the meme now shows this file."""
    assert state.near is not None
    fmt = str(adapter["format"])
    new = MemeFile(state.md5, storage_key(state.md5, fmt), fmt, int(adapter["width"]), int(adapter["height"]),
                   int(adapter["file_size"]), bool(adapter["is_animated"]))
    meme_id, old = match.meme.meme_id, match.meme.file
    if not better(new, old):
        return False
    repo, store, index = runtime.repo, runtime.store, runtime.index
    uploaded = await store.put(new.storage_key, adapter["body"], CONTENT_TYPES.get(fmt, "application/octet-stream"))
    try:
        points = await repo.switch_file(meme_id, old.md5_hash, new, state.near.phash, state.near.band_keys)
        if points is None:  # another worker moved the meme first: its choice stands
            raise _Raced
        try:
            for collection, pid in points:
                await index.set_payload(collection, pid, _payload(runtime, new))
        except Exception:
            for collection, pid in points:
                await index.set_payload(collection, pid, _payload(runtime, old))
            await repo.switch_file(meme_id, new.md5_hash, old, match.meme.phash, band_keys(match.meme.phash))
            raise
    except BaseException as exc:
        if uploaded:
            await store.delete(new.storage_key)
        if isinstance(exc, _Raced):
            return False
        raise
    try:
        await store.delete(old.storage_key)
    except Exception as exc:  # an orphan object: `scrapy verify --repair` removes it
        logger.warning("Could not delete the replaced object %s: %s", old.storage_key, exc)
    return True


class _Raced(Exception):
    pass


def _payload(runtime: IngestRuntime, file: MemeFile) -> dict[str, object]:
    return {"md5": file.md5_hash, "storage_url": runtime.store.url(file.storage_key), "is_animated": file.is_animated}
