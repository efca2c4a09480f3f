"""``scrapy list``: Scrapy's, with each spider's purpose beside its name."""

from __future__ import annotations

import argparse

from scrapy.commands.list import Command as ScrapyListCommand
from scrapy.spiderloader import get_spider_loader

from emomo.commands.args import purpose


class Command(ScrapyListCommand):
    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        loader = get_spider_loader(self.settings)
        for name in sorted(loader.list()):
            text = purpose(loader.load(name))
            print(f"{name:<12} {text}" if text else name)
