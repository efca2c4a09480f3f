"""``scrapy list``: Scrapy's (one name a line, which scrapyd reads to find a project's spiders);
``--long`` puts each spider's purpose beside its name."""

from __future__ import annotations

import argparse

from scrapy.commands.list import Command as ScrapyListCommand
from scrapy.spiderloader import get_spider_loader

from emomo.commands.args import purpose


class Command(ScrapyListCommand):
    def short_desc(self) -> str:
        return "List the spiders (--long: with what each is for)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("-l", "--long", action="store_true", help="each spider's purpose beside its name")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        loader = get_spider_loader(self.settings)
        for name in sorted(loader.list()):
            text = purpose(loader.load(name)) if opts.long else ""
            print(f"{name:<12} {text}" if text else name)
