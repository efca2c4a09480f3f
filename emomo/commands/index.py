"""``scrapy index copy|build``: the vector index's own chores.

- ``copy --from SPEC [--to SPEC] [--collection NAME ...] [--batch N]``: copy collections
  between two indexes (emomo.index_copy); how a user converts an old local-mode folder,
  or moves from the embedded index to a Qdrant server when one machine is not enough.
- ``build [--embedding NAME]``: give a collection made before hybrid search its BM25 terms
  (emomo.repositories.text_index; from the payloads, no paid call), and build the embedded
  index's search graph now, whatever ``qdrant.build_after_points`` says (a crawl does it at
  its end).
"""

from __future__ import annotations

import argparse
import json

from scrapy.exceptions import UsageError

from emomo import clients
from emomo.cli import EmomoCommand
from emomo.config import EmomoConfig
from emomo.index_copy import SPEC_HELP, copy_indexes
from emomo.repositories.vector_index import BuildReport


async def build(config: EmomoConfig, embedding_name: str | None) -> tuple[BuildReport, int]:
    """The collection's BM25 terms added if it has none (made before hybrid search), then its
    search graph built; the report, and the points given terms."""
    # Every point waiting counts: the graph is built now, whatever build_after_points says.
    now = config.model_copy(update={"qdrant": config.qdrant.model_copy(update={"build_after_points": 1})})
    index = clients.build_index(now)
    collection = config.embedding(embedding_name).collection
    await index.open()
    try:
        added = await index.add_text(collection)
        return await index.build(collection), added
    finally:
        await index.close()


class Command(EmomoCommand):
    def syntax(self) -> str:
        return "copy --from SPEC [--to SPEC] [--collection NAME ...] | build [--embedding NAME]"

    def short_desc(self) -> str:
        return "Copy collections between vector indexes, or build the embedded index's search graph"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--from", dest="source", default="", metavar="SPEC", help=f"copy from: {SPEC_HELP}")
        parser.add_argument("--to", dest="target", default="config", metavar="SPEC",
                            help="copy into (else config, the configured index)")
        parser.add_argument("--collection", action="append", default=[], metavar="NAME",
                            help="a collection to copy (repeatable; else every one in the source)")
        parser.add_argument("--batch", type=int, default=256, metavar="N", help="points per request (default 256)")
        parser.add_argument("--embedding", default="", metavar="NAME",
                            help="build the collection of this embedding configuration")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if args == ["copy"]:
            self.copy(opts)
        elif args == ["build"]:
            report, added = self.call(build(self.config(), opts.embedding or None))
            if opts.json:
                print(json.dumps({"collection": report.collection, "built": report.built, "points": report.points,
                                  "unindexed_before": report.unindexed_before, "text_added": added,
                                  "seconds": round(report.seconds, 2)}))
            else:
                print(f"{report.collection}: {report.points} points, "
                      + (f"words indexed for search (BM25) on {added} points, " if added else "")
                      + (f"search graph built in {report.seconds:.1f} s" if report.built else "nothing to build"))
        else:
            raise UsageError("say what to do: scrapy index copy --from SPEC, or scrapy index build")

    def copy(self, opts: argparse.Namespace) -> None:
        if not opts.source:
            raise UsageError(f"copy needs --from ({SPEC_HELP})")
        if opts.batch <= 0:
            raise UsageError("--batch must be a positive number")
        report = self.call(copy_indexes(self.config(), opts.source, opts.target, opts.collection, opts.batch))
        if opts.json:
            print(json.dumps({"from": report.source, "to": report.target, "complete": report.complete,
                              "collections": [r.as_json() for r in report.results]}, ensure_ascii=False))
        else:
            print(f"{report.source} -> {report.target}")
            for r in report.results:
                state = "complete" if r.complete else "INCOMPLETE: run the copy again"
                print(f"  {r.collection}: {r.copied} points copied, {r.already} already there; "
                      f"source {r.source_points}, target {r.target_points} ({state}, {r.seconds:.1f} s)")
            if not report.results:
                print("  the source holds no collection")
        self.exitcode = 0 if report.complete else 1
