"""Every configured secret masked in every log line, whichever component logs it.

A provider that echoes the request (some proxies put the Authorization header in
their error body) would otherwise put an API key in the crawl's log, and a scrapyd
job log is read by more people than the key's owner. The mask is a filter on the
root logger's handlers, so Scrapy's own lines (a stats dump, a traceback) pass
through it too. It also makes lines printable: a file name that is not UTF-8
would make a UTF-8 log file raise in the middle of a crawl.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"
#: shorter values are no secrets worth masking (and masking them would garble the log)
MIN_SECRET_LENGTH = 6


def dsn_password(dsn: str) -> str:
    """The password in a database URL or key=value DSN, or ''."""
    found = re.search(r"(?:^|\s)password=(\S+)", dsn)
    if found:
        return found.group(1)
    try:
        return urlsplit(dsn).password or ""
    except ValueError:
        return ""


def printable(text: str) -> str:
    """``text`` as a log file can write it: bytes that were not UTF-8 as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class SecretMask(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first: a key that contains another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        clean = printable(self.mask(message))
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = printable(self.mask(logging.Formatter().formatException(record.exc_info)))
        return True

    def install(self) -> SecretMask:
        """Put this mask on every handler of the root logger, in place of an earlier one."""
        for handler in logging.root.handlers:
            for old in [f for f in handler.filters if isinstance(f, SecretMask)]:
                handler.removeFilter(old)
            handler.addFilter(self)
        return self
