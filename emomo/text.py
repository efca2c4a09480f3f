"""Text that comes from a source: file names that are not UTF-8, and tags, titles and
descriptions that may hold anything.

A name from the file system is a ``str`` with lone surrogates where its bytes are not
UTF-8 (Python's ``surrogateescape``); no database, log file or JSON encoder takes those.
``escape_name`` turns such a name into printable text that gives the bytes back
(``unescape_name``), so the source id stays stable and two names never share one.
Free text (a tag, a title, a description) is cleaned instead: control characters and
undecodable bytes removed, whitespace folded, the length bounded, so that it costs the
same on every backend and a hostile 300,000-character tag never reaches the embedder.
"""

from __future__ import annotations

import re
import unicodedata

_SURROGATE = re.compile(r"[\udc80-\udcff]")
_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")
_SPACES = re.compile(r"\s+")


def escape_name(name: str) -> str:
    """``name`` with each byte that is not UTF-8 as ``\\xNN`` and each backslash doubled."""
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", name.replace("\\", "\\\\"))


def unescape_name(text: str) -> str:
    """The name ``escape_name`` was given (with surrogates for its non-UTF-8 bytes)."""
    return _ESCAPED.sub(lambda m: "\\" if m.group(1) == "\\" else chr(0xDC00 + int(m.group(1)[1:], 16)), text)


def strip_undecodable(name: str) -> str:
    """``name`` without the bytes that were not UTF-8 (for tags, which are for reading)."""
    return _SURROGATE.sub("", name)


def _printable(ch: str) -> bool:
    # Cc: C0/C1 controls (NUL among them); Cs: lone surrogates (bytes that were not UTF-8).
    # Format characters (Cf) stay: emoji sequences need their zero-width joiners.
    return unicodedata.category(ch) not in ("Cc", "Cs")


def clean_text(text: str, max_chars: int) -> tuple[str, bool]:
    """``text`` on one line, without control characters, at most ``max_chars`` long;
    and whether it had to be cut."""
    folded = _SPACES.sub(" ", text)
    cleaned = "".join(ch for ch in folded if _printable(ch)).strip()
    if len(cleaned) > max_chars:
        return cleaned[:max_chars].rstrip(), True
    return cleaned, False


def clean_list(values: list[str], max_items: int, max_chars: int) -> tuple[list[str], bool]:
    """Each value cleaned and bounded, empty ones and repeats dropped, at most ``max_items``."""
    out: list[str] = []
    cut = False
    for value in values:
        text, truncated = clean_text(str(value), max_chars)
        cut = cut or truncated
        if text and text not in out:
            out.append(text)
    if len(out) > max_items:
        return out[:max_items], True
    return out, cut
