"""``scrapy args SPIDER``: the arguments a spider takes (``-a name=value``), what each does."""

from __future__ import annotations

import argparse

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from scrapy.spiderloader import get_spider_loader

from emomo.spider import MemeSpider


class Command(ScrapyCommand):
    requires_project = True
    requires_crawler_process = False
    default_settings = {"LOG_LEVEL": "WARNING"}

    def syntax(self) -> str:
        return "SPIDER"

    def short_desc(self) -> str:
        return "List a spider's arguments (-a name=value) and what each does"

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("name one spider: scrapy args SPIDER (scrapy list shows them)", print_help=False)
        assert self.settings is not None
        try:
            spidercls = get_spider_loader(self.settings).load(args[0])
        except KeyError:
            raise UsageError(f"Spider not found: {args[0]}", print_help=False) from None
        print(f"scrapy crawl {args[0]} [-a name=value ...]: {purpose(spidercls)}")
        arguments = spidercls.arguments if issubclass(spidercls, MemeSpider) else ()
        width = max((len(a.name) + len(a.metavar) for a in arguments), default=0) + 1
        for argument in arguments:
            print(f"  -a {argument.name + '=' + argument.metavar:<{width}}  {argument.help}")


def purpose(spidercls: type) -> str:
    """The first line of a spider's docstring: what it is for."""
    doc = (spidercls.__doc__ or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else ""
