"""``scrapy stats [--json]``: memes by status, points and vectors per collection."""

from __future__ import annotations

import argparse
import json

from emomo import query as queries
from emomo.cli import EmomoCommand


class Command(EmomoCommand):
    def syntax(self) -> str:
        return "[--json]"

    def short_desc(self) -> str:
        return "Count memes by status and points / vectors per collection"

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        counts = self.call(queries.stats(self.config()))
        if opts.json:
            print(json.dumps(counts, ensure_ascii=False))
            return
        memes = counts["memes"]
        print("memes: " + ", ".join(f"{n} {status}" for status, n in memes.items()))
        sources = counts["sources"]
        print(f"sources: {sources['total']} ({sources['near_duplicate']} near-duplicate files of another)")
        for name, c in counts["collections"].items():
            flag = "" if c["points"] == c["vectors"] else "  (points and vectors differ: run the crawl again)"
            print(f"collection {name}: {c['points']} points, {c['vectors']} vectors{flag}")
