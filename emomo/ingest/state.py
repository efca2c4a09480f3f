"""What the stages know about one item in flight, carried on the item itself.

The state is attached when the read stage has the item's md5 and removed when the item
leaves the pipelines (done, parked, dropped or failed), so a feed export never sees it
and nothing is kept by ``id(item)`` beside Scrapy.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emomo.near import NearCheck
from emomo.repositories import MemeRecord, SourceRecord

if TYPE_CHECKING:
    from PIL import Image

#: where the state rides: an attribute of an item object, or a key of a dict item
_KEY = "_emomo_state"


@dataclass
class ItemState:
    md5: str
    #: how log lines name the item (its file, URL or source id)
    source: str
    started: float = field(default_factory=time.monotonic)
    meme: MemeRecord | None = None
    had_vector: bool = False
    #: this worker holds the md5's claim in the shared database (released when the item leaves)
    shared_claim: bool = False
    #: why the describer or the embedder failed: the meme is parked, not undone
    deferred: str | None = None
    #: the status a parked meme is recorded with: pending (retry later) or failed
    park_status: str = "pending"
    #: the item's source as recorded before this crawl (None: a source new to us)
    source_record: SourceRecord | None = None
    #: the meme this source named before its content changed: it moves to the new one
    #: once that is complete, and the old one is retired if no other source holds it
    replaces: str | None = None
    #: the backend an index-stage write was talking to (for the circuit breaker's message)
    writing: str = "database"
    #: its first frame in grey, as the read stage decoded it (emomo.near.grey_frame), until the
    #: near-duplicate check has measured it
    first_frame: Image.Image | None = None
    #: its near-duplicate signature and the text read on it (emomo.near), kept with its meme
    near: NearCheck | None = None
    undo: list[tuple[str, Callable[[], Awaitable[None]]]] = field(default_factory=list)


def attach(item: Any, state: ItemState) -> ItemState:
    if isinstance(item, MutableMapping):
        item[_KEY] = state
    else:
        object.__setattr__(item, _KEY, state)
    return state


def peek(item: Any) -> ItemState | None:
    if isinstance(item, MutableMapping):
        found = item.get(_KEY)
    else:
        found = getattr(item, _KEY, None)
    return found if isinstance(found, ItemState) else None


def state_of(item: Any) -> ItemState:
    found = peek(item)
    if found is None:
        raise LookupError("the item has no ingest state: the read stage attaches it")
    return found


def detach(item: Any) -> ItemState | None:
    found = peek(item)
    if found is not None:
        if isinstance(item, MutableMapping):
            del item[_KEY]
        else:
            object.__delattr__(item, _KEY)
    return found
