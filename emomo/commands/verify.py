"""``scrapy verify [--embedding NAME] [--json] [--repair]``: rows, objects and points checked
against each other; exit 1 when something is wrong (with --repair: when something is left)."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from emomo.cli import EmomoCommand
from emomo.verify import EXAMPLES, verify


class Command(EmomoCommand):
    def syntax(self) -> str:
        return "[--embedding NAME] [--json] [--repair]"

    def short_desc(self) -> str:
        return "Check memes, objects, vectors and points against each other (and mend with --repair)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--embedding", default="", metavar="NAME",
                            help="the collection of this embedding configuration (else the one marked is_default)")
        parser.add_argument("--repair", action="store_true",
                            help="re-upload lost objects from their source files, re-embed missing points, "
                                 "remove orphan points and objects")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        report = self.call(verify(self.config(), opts.embedding or None, opts.repair))
        if opts.json:
            print(json.dumps(report.as_json(opts.repair), ensure_ascii=False))
        else:
            by_kind = Counter(p.kind for p in report.problems)
            print(f"collection {report.collection}: {len(report.problems)} problems"
                  + (f" ({', '.join(f'{n} {k}' for k, n in sorted(by_kind.items()))})" if by_kind else ""))
            for problem in report.problems[:EXAMPLES]:
                print(f"  {problem.kind}: {problem.detail}")
            if opts.repair:
                print(f"repaired {len(report.repaired)}, left {len(report.left)}")
                for problem, why in report.left:
                    print(f"  left {problem.kind}: {problem.detail}: {why}")
        failed = report.left if opts.repair else report.problems
        self.exitcode = 1 if failed else 0
