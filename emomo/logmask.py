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
from urllib.parse import parse_qs, quote, unquote, urlsplit

MASK = "***"
#: shorter secrets are masked only as a whole word (masking every "pw" would garble the log)
MIN_SECRET_LENGTH = 6
#: a libpq keyword/value password: spaces around "=" are allowed, a quoted value may hold spaces
#: and backslash escapes
_KEYWORD_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'?|\S+)")
#: control characters (C0, DEL, C1) and the Unicode line and paragraph separators; tab stays
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7f, 0xa0)] if c != 0x09}
_CONTROLS.update({0x0a: "\\n", 0x0d: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def dsn_passwords(dsn: str) -> list[str]:
    """The password in a database URL or libpq keyword/value DSN, in every form a message may
    show it (as written, unquoted, percent-decoded): what a mask hides."""
    found: list[str] = []
    for match in _KEYWORD_PASSWORD.finditer(dsn):
        value = match.group(1)
        found.append(value)
        if value.startswith("'"):
            found.append(re.sub(r"\\(.)", r"\1", value.strip("'")))
    try:
        parts = urlsplit(dsn)
        if parts.scheme and parts.netloc:
            if parts.password:
                found += [parts.password, unquote(parts.password)]
            found += [v for values in parse_qs(parts.query).get("password", []) for v in (values, quote(values))]
    except ValueError:
        pass
    return list(dict.fromkeys(v for v in found if v and v != "''"))


def escaped(text: str) -> str:
    """``text`` on one line: a newline, carriage return or escape sequence in a file name shown as
    ``\\n``, ``\\r``, ``\\x1b`` (a name cannot write its own log line or recolour a terminal)."""
    return text.translate(_CONTROLS)


def printable(text: str) -> str:
    """``text`` as a log file can write it: bytes that were not UTF-8 as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _one_line(arg: object) -> object:
    """A log argument with its control characters escaped: text and errors (which carry file
    names); anything else (an item, a number) as it is."""
    if isinstance(arg, str):
        return escaped(arg)
    if isinstance(arg, BaseException):
        return escaped(str(arg) or type(arg).__name__)
    return arg


class SecretMask(logging.Filter):
    """Masks every secret in a line; also escapes control characters in the line's arguments,
    where names from a source go (a message's own text may span lines: Scrapy's stats dump)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        values = {s for s in secrets if s}
        # Longest first: a key that contains another is masked whole.
        self.secrets = sorted((s for s in values if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)
        short = sorted((s for s in values if len(s) < MIN_SECRET_LENGTH), key=len, reverse=True)
        self.words = re.compile("|".join(rf"(?<![\w]){re.escape(s)}(?![\w])" for s in short)) if short else None

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if self.words is not None:
            text = self.words.sub(MASK, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_one_line(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _one_line(v) for k, v in record.args.items()}
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
