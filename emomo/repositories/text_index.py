"""What is written on a meme, searched by its words: Qdrant's BM25 beside the dense vector.

Each point of a collection carries a sparse vector named ``text`` (BM25 term frequencies of its
description and tags, made by Qdrant's own ``Bm25`` with its multilingual tokenizer, which cuts
Chinese into characters); the collection weighs the terms by their rarity (the IDF modifier). A
search sends the query both ways, as the dense vector and as BM25 terms, and Qdrant fuses the two
rankings (prefetch + reciprocal rank fusion) in one query. Both index implementations make the
terms here, from the payload, so ``scrapy index copy`` carries them without a paid call.

A hit *matches by text* when every word of the query is written in it (compared without case,
width, spaces or punctuation): what lets a page say honestly that nothing matched, where scores
alone cannot (an off-topic query's best cosine sits among the right answers' on e5-small).
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Any

#: the sparse vector's name in every collection
TEXT_VECTOR = "text"


@functools.cache
def _bm25() -> Any:
    import qdrant_edge as edge

    return edge.Bm25(edge.Bm25Config(tokenizer=edge.TokenizerType.Multilingual))


def searchable_text(payload: dict[str, Any]) -> str:
    """The words of a point: its description (the text read on the meme, or the VLM's) and tags."""
    tags = payload.get("tags") or []
    return " ".join([str(payload.get("vlm_description") or ""), *(str(t) for t in tags)])


def document_terms(payload: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The BM25 terms of a point (indices, term-frequency weights)."""
    vector = _bm25().embed_document(searchable_text(payload))
    return list(vector.indices), list(vector.values)


def query_terms(text: str) -> tuple[list[int], list[float]]:
    vector = _bm25().embed_query(text)
    return list(vector.indices), list(vector.values)


def query_words(query: str) -> list[str]:
    """A text's words: runs of letters and digits (spaces and punctuation part them), folded."""
    folded = unicodedata.normalize("NFKC", query).casefold()
    words, word = [], []
    for ch in folded + " ":
        if unicodedata.category(ch)[0] in "LN":
            word.append(ch)
        elif word:
            words.append("".join(word))
            word = []
    return words


def matches_text(query: str, payload: dict[str, Any]) -> bool:
    """Every word of ``query`` is written in the point's text."""
    words = query_words(query)
    if not words:
        return False
    text = "".join(query_words(searchable_text(payload)))  # letters and digits only, folded
    return all(word in text for word in words)
