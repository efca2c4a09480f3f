"""The items of this crawl in the pipelines: who ingests each image, and who waits for it.

One item at a time holds an md5 in this crawl (its claim); another item of the same bytes (a
second name, a second manifest id) follows it and is linked to its meme once that is recorded.
Workers sharing a database (PostgreSQL) also claim the md5 there before paying for it; one
SQLite file serves one machine, where the in-memory claim suffices. The near-duplicate
signatures of the items in flight are here too: a copy read at the same moment as its original
waits for it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass

from emomo.ingest.near_dupes import NearInFlight
from emomo.ingest.state import ItemState
from emomo.repositories import MemeRepository

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Follower:
    """A source read while another item held its md5."""

    source_type: str
    source_id: str
    locator: str | None


class InFlight:
    def __init__(self, repo: MemeRepository, collection: str, shared: bool, claim_timeout: float) -> None:
        self.repo = repo
        self.collection = collection
        #: claims are also taken in the shared database (PostgreSQL)
        self.shared = shared
        self.claim_timeout = claim_timeout
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: md5 -> the item (its state) ingesting it in this crawl
        self._claims: dict[str, ItemState] = {}
        self._followers: dict[str, list[Follower]] = {}
        self.near = NearInFlight()

    def claim(self, state: ItemState) -> str | None:
        """Claim the item's md5 for this crawl; how the item already holding it is named, if any."""
        holder = self._claims.setdefault(state.md5, state)
        return None if holder is state else holder.source

    def claimed(self, md5: str) -> bool:
        return md5 in self._claims

    async def claim_shared(self, state: ItemState) -> str | None:
        """Claim the item's md5 among the workers sharing the database; the worker holding it, if
        another. Released when the item leaves (``leave``)."""
        if not self.shared:
            return None
        holder = await self.repo.claim(state.md5, self.collection, self.worker, self.claim_timeout)
        state.shared_claim = holder is None
        return holder

    def follow(self, md5: str, follower: Follower) -> None:
        self._followers.setdefault(md5, []).append(follower)

    def next_follower(self, md5: str) -> Follower | None:
        """One follower of ``md5`` at a time: one that arrives while the others are being linked
        (the linking awaits the database) is linked too."""
        waiting = self._followers.get(md5)
        if not waiting:
            self._followers.pop(md5, None)
            return None
        return waiting.pop(0)

    def forget_followers(self, md5: str) -> None:
        """The item holding ``md5`` failed: its followers are found new by their next run."""
        self._followers.pop(md5, None)

    def leave(self, state: ItemState) -> bool:
        """The item leaves: its own claim and in-flight entry go (two ids of a manifest may name
        one file: another item's are not touched). True when its shared claim is to be released."""
        if state.near is not None:
            self.near.leave(state.md5, state.near)
        if self._claims.get(state.md5) is state:
            del self._claims[state.md5]
        shared, state.shared_claim = state.shared_claim, False
        return shared

    async def release(self, md5: str) -> None:
        try:
            await self.repo.release(md5, self.collection, self.worker)
        except Exception as exc:  # the claim times out by itself
            logger.warning("Could not release the claim on %s: %s", md5, exc)

    async def clear(self, opened: bool) -> None:
        """Items still in flight at the close (cancelled by a forced stop) hold waits and claims:
        let them go, so nothing waits on them and another worker can take their images now."""
        self.near.clear()
        self._claims.clear()
        self._followers.clear()
        if self.shared and opened:
            try:
                await self.repo.release_all(self.collection, self.worker, self.claim_timeout)
            except Exception as exc:  # the claims time out by themselves
                logger.warning("Could not release this worker's claims: %s", exc)
