"""Exceptions shared across the library.

Expected drops are DropItem subclasses so that Scrapy counts them by class
name under ``item_dropped_reasons_count/<Class>``.
"""

from __future__ import annotations

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
