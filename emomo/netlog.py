"""One line, not a traceback, for a network failure everyone expects (a name that does not
resolve, a refused or timed-out connection): Scrapy's robots.txt middleware logs its failure
with the whole stack. The stack is kept at DEBUG."""

from __future__ import annotations

import logging

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
)
from twisted.internet import error

EXPECTED = (CannotResolveHostError, DownloadConnectionRefusedError, DownloadFailedError, DownloadTimeoutError,
            error.DNSLookupError, error.ConnectError, error.TimeoutError, error.ConnectionLost)
#: the loggers that print a network failure with its traceback
LOGGERS = ("scrapy.downloadermiddlewares.robotstxt", "scrapy.core.scraper")


class NetworkFailureFilter(logging.Filter):
    def __init__(self, keep_tracebacks: bool) -> None:
        super().__init__()
        self.keep_tracebacks = keep_tracebacks

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.keep_tracebacks and record.exc_info and isinstance(record.exc_info[1], EXPECTED):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_network_tracebacks(log_level: str) -> None:
    """Install the filter once (the traceback stays when LOG_LEVEL is DEBUG)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, NetworkFailureFilter)]
        logger.addFilter(NetworkFailureFilter(keep_tracebacks=log_level == "DEBUG"))
