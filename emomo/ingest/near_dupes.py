"""Find the recorded meme a new file is a near-duplicate of (emomo.near): the same picture
(perceptual hash within ``dedupe.near_distance`` bits) carrying the same text.

The hash is cheap; the text costs an OCR read (a few hundred ms of CPU), so it is read only when
a candidate turns up. On the embedded path the describer would read it anyway and takes it from
here; on the VLM path this read replaces a paid call when the file is a duplicate. A candidate
recorded by the VLM path has no text yet: it is read from its stored object once and kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emomo.near import band_keys, hamming, perceptual_hash, probe_keys, same_text
from emomo.providers.ocr_describer import OCRDescriber, TextReader

if TYPE_CHECKING:
    from emomo.ingest.runtime import IngestRuntime
    from emomo.ingest.state import ItemState


@dataclass(frozen=True)
class NearMatch:
    meme_id: str
    distance: int


@dataclass
class NearCheck:
    """What the check learnt of an item: kept with the meme it becomes."""

    phash: int
    image_text: str | None = None

    @property
    def band_keys(self) -> list[int]:
        return band_keys(self.phash)


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
    found = await repo.near_candidates(probe_keys(check.phash, config.near_distance))
    candidates = sorted(
        ((hamming(check.phash, c.phash), c) for c in found if c.md5_hash != state.md5),
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
            text = await reader.read(await runtime.store.get(candidate.storage_key), state.source,
                                     runtime.should_stop)
            await repo.set_image_text(candidate.meme_id, text)
        if same_text(check.image_text, text, config.near_text_similarity):
            return NearMatch(candidate.meme_id, distance)
    return None


async def hash_item(body: bytes) -> NearCheck:
    return NearCheck(await asyncio.to_thread(perceptual_hash, body))
