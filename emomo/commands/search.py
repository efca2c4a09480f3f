"""``scrapy search "QUERY" [--embedding NAME] [--top K] [--json]``"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scrapy.exceptions import UsageError

from emomo import query as queries
from emomo.cli import EmomoCommand
from emomo.repositories.vector_index import SearchFilter


class Command(EmomoCommand):
    def syntax(self) -> str:
        return ('"QUERY" | --image FILE  [--embedding NAME] [--top K] [--category C] [--animated yes|no] '
                '[--source S] [--json]')

    def short_desc(self) -> str:
        return "Search the meme index by the words on the memes and their meaning"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--embedding", default="", metavar="NAME",
                            help="embedding configuration to search (else the one marked is_default)")
        parser.add_argument("--top", type=int, default=10, metavar="K", help="number of hits (default 10)")
        parser.add_argument("--category", default=None, metavar="C",
                            help="only memes of this category: its name (滑稽大佬) or its folder")
        parser.add_argument("--animated", choices=("yes", "no"), default=None, help="only animated memes, or none")
        parser.add_argument("--image", default="", metavar="FILE",
                            help="search by a picture: the meme it is first, then memes with its text")
        parser.add_argument("--source", default=None, metavar="S",
                            help="only memes from this source (chinesebqb, fabiaoqing, staging)")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        text = " ".join(args).strip()
        if not text and not opts.image:
            raise UsageError("give a query: scrapy search \"我太难了\" (or a picture: --image FILE)")
        if text and opts.image:
            raise UsageError("give a query or --image FILE, not both")
        if opts.top <= 0:
            raise UsageError("--top must be a positive number")
        where = SearchFilter(category=opts.category, source_type=opts.source,
                             is_animated=None if opts.animated is None else opts.animated == "yes")
        if opts.image:
            try:
                data = Path(opts.image).read_bytes()
            except OSError as exc:
                self.refuse(f"--image {opts.image}: {exc.strerror or exc}")
            hits = self.call(queries.search_picture(self.config(), data, opts.embedding or None, opts.top, where))
        else:
            hits = self.call(queries.search(self.config(), text, opts.embedding or None, opts.top, where))
        if opts.json:
            print(json.dumps(hits, ensure_ascii=False))
            return
        if not hits:
            print("no memes found (is the index empty? run scrapy crawl chinesebqb first)")
        elif opts.image and hits[0]["match"] != queries.PICTURE:
            print("no meme is this picture; memes with its text, then the nearest in meaning:")
        elif not opts.image and all(hit["match"] != queries.TEXT for hit in hits):
            print("no meme has these words on it; the nearest in meaning:")
        for rank, hit in enumerate(hits, start=1):
            tags = "、".join(hit["tags"])
            print(f"{rank:2d}. {hit['score']:.3f} {hit['match']:<7}  {hit['description']}")
            print(f"    {hit['source_type']}:{hit['source_id']}  [{tags}]")
            print(f"    {hit['storage_url']}")
