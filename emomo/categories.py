"""A category as a user reads it, and the categories a user's word names.

Categories are kept as their source names them: ChineseBQB's folders (``001Funny_滑稽大佬😏BQB``,
``020TATAN🤷‍♂️BQB``), fabiaoqing's own names. A person says ``滑稽大佬`` or ``狗``: the display
name is the folder's Chinese name (else its English one), and a filter accepts either form.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from emomo.sources.chinesebqb import category_names

#: a ChineseBQB category folder: a number first, or BQB last
_BQB_FOLDER = re.compile(r"^\d{3}|BQB\W*$")


def display_name(category: str) -> str:
    """``001Funny_滑稽大佬😏BQB`` -> ``滑稽大佬``; a name that is no ChineseBQB folder stays."""
    if not _BQB_FOLDER.search(category):
        return category
    names = category_names(category)
    return names[0] if names else category


def _key(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold().strip()


def resolve(asked: str, known: Iterable[str]) -> list[str]:
    """The stored categories ``asked`` names: itself, or those whose display name it is."""
    known = list(known)
    if asked in known:
        return [asked]
    key = _key(asked)
    return [c for c in known if _key(c) == key or _key(display_name(c)) == key]
