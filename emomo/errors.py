"""Exceptions shared across the library.

Expected drops are DropItem subclasses so that Scrapy counts them by class
name under ``item_dropped_reasons_count/<Class>``.
"""

from __future__ import annotations

import errno

from scrapy.exceptions import DropItem


class ConfigError(Exception):
    """The configuration cannot work; the message names the key and the fix."""


class BackendUnavailable(ConfigError):
    """A backend could not be opened at start (locked folder, unreachable server)."""


class SourceUnreadable(Exception):
    """The source cannot be read at all (its folder or manifest): the crawl cannot go on."""


class IngestDrop(DropItem):
    """Base of our drops. The stage has logged the cause on its own line already,
    so Scrapy's own "Dropped:" line (with the whole item) goes to DEBUG."""

    def __init__(self, message: str) -> None:
        super().__init__(message, log_level="DEBUG")


class InvalidImage(IngestDrop):
    """The file is not an image we can ingest (empty, truncated, unknown format, too big)."""


class DuplicateMeme(IngestDrop):
    """The image already has a vector in this collection, or is in flight in this crawl."""


class Interrupted(IngestDrop):
    """The crawl is stopping and the item had cost nothing yet: dropped unwritten, for the next run."""


class StageFailed(IngestDrop):
    """A stage failed; what earlier stages wrote for the item has been undone."""


def error_text(exc: BaseException) -> str:
    """An exception as a log line or a stored reason may show it: its message, or its type when
    it has none (RapidOCR raises some without a word)."""
    message = str(exc).strip()
    return message if message else f"{type(exc).__name__} (no message)"


#: finish reason of a crawl stopped because a disk it writes to is full
DISK_FULL = "disk_full"
#: SQLite's result code for a full disk (SQLITE_FULL) and PostgreSQL's SQLSTATE (disk_full)
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def disk_full(exc: BaseException) -> bool:
    """The failure is a full disk (or quota), through whatever wrapped it: a condition no later
    item escapes, unlike a write that failed once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        # By code, never by words: an error that only says "no space" (a test's trigger, a
        # proxy's message) is a write that failed, for the write breaker to count.
        if getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == _PG_DISK_FULL:
            return True
        current = current.__cause__ or current.__context__
    return False


def backend_errors() -> tuple[type[BaseException], ...]:
    """What a backend raises when it is down, unreachable, full or damaged: a command says it in
    one line and the server answers 503 and goes on; anything else is a bug (its traceback).

    A client library's errors are named only once it is loaded (nothing else can raise them):
    importing qdrant-client takes a second, and every ``scrapy`` command loads this module."""
    import sqlite3
    import sys

    from emomo.providers.errors import ProviderError

    found: list[type[BaseException]] = [BackendUnavailable, ProviderError, OSError, TimeoutError,
                                        sqlite3.DatabaseError]
    for module, names in (("psycopg", ("OperationalError", "InterfaceError")),
                          ("qdrant_client.http.exceptions", ("ResponseHandlingException", "UnexpectedResponse"))):
        loaded = sys.modules.get(module)
        if loaded is not None:
            found += [getattr(loaded, name) for name in names]
    return tuple(found)
