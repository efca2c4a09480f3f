"""Search by picture: "where is this one, in its best copy?" for a meme a user holds (a
screenshot, a saved GIF, a re-encoded copy).

The meme this picture is comes first: the same bytes, or a near-duplicate by the checks the
crawl itself uses (emomo.near: the coarse hash within ``dedupe.near_distance``, then the
thumbnails compared block by block; a same-template picture with another caption is told
apart). Then the memes whose text holds the text read on the picture, then the nearest in
meaning (emomo.query's hybrid search of that text).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from emomo.config import EmomoConfig
from emomo.errors import ConfigError
from emomo.imaging import ImageError, probe
from emomo.ingest.near_dupes import NearIndex, Verdict, judge_stored, measure_check, ranked_candidates
from emomo.near import informative, same_text
from emomo.repositories import MemeRepository, NearCandidate


class NotAPicture(ConfigError):
    """What was sent to search by is no image we read (the message says why)."""


@dataclass(frozen=True)
class Same:
    """The recorded meme a picture is, and the text read on it when that was kept (then the
    picture need not be read again)."""

    meme_id: str
    image_text: str | None


async def same_meme(config: EmomoConfig, repo: MemeRepository, index: NearIndex, collection: str,
                    data: bytes, read_text: Callable[[bytes], Awaitable[str]]) -> Same | None:
    """The recorded meme (with its vector in ``collection``) that ``data`` is a copy of, or None.
    As in the crawl, a candidate the thumbnails cannot settle (a crop, a heavy re-encoding) is
    settled by the text: ``read_text`` reads the picture's (once) for the text kept with it."""
    limits = config.ingest
    try:
        info = await asyncio.to_thread(probe, data, limits.max_pixels, limits.max_frames, limits.max_frame_pixels)
    except ImageError as exc:
        raise NotAPicture(f"the picture cannot be searched by: {exc}") from None
    exact = await repo.get_meme_by_md5(info.md5)
    if exact is not None and exact.status == "active":
        known = await repo.near_candidates([exact.id], collection)
        return Same(exact.id, known[0].image_text if known else None)
    picture, check = await asyncio.to_thread(measure_check, data)
    if not informative(picture.phash):
        return None  # a flat picture is "near" every other flat one
    await index.refresh(repo)
    dedupe = config.dedupe
    undecided: list[NearCandidate] = []
    seen: set[str] = set()
    for _round in range(2):  # the second only for a picture out of its series' frame (a crop)
        # More than the crawl weighs, the nearest by the hash among them: a search is one picture.
        ids = [i for i in index.candidates(picture.phash, check.vector, dedupe.near_distance,
                                           dedupe.near_candidates, by_hash=4 * dedupe.near_candidates)
               if i not in seen]
        seen.update(ids)
        found = [c for c in await ranked_candidates(repo, ids, collection) if c.thumb]
        if not found:
            break
        judgement = await asyncio.to_thread(judge_stored, picture, found, dedupe)
        verdicts = list(zip(found, judgement.verdicts, strict=True))
        same = next((c for c, (verdict, _) in verdicts if verdict is Verdict.SAME), None)
        if same is not None:
            return Same(same.meme_id, same.image_text)
        undecided += [c for c, (verdict, _) in verdicts if verdict is Verdict.MAYBE and c.image_text is not None]
        if judgement.reframed is None or undecided:
            break
        # Ranked again in the series' frame, where a crop's original sits near it.
        check.out_of_frame(judgement.reframed)
    if not undecided:
        return None
    text = await read_text(data)
    return next((Same(c.meme_id, text) for c in undecided
                 if same_text(text, c.image_text or "", dedupe.near_text_similarity)), None)
