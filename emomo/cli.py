"""The base of our scrapy commands: config from settings, a clean exit on config errors.

It lives outside emomo.commands because Scrapy turns every command class
found in COMMANDS_MODULE into a command.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from emomo.config import EmomoConfig
from emomo.errors import ConfigError
from emomo.ingest.runtime import config_from_settings

T = TypeVar("T")


class EmomoCommand(ScrapyCommand):
    requires_project = True
    # The output is for people and scripts: Scrapy's start-up log would bury it.
    default_settings = {"LOG_LEVEL": "WARNING"}

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")

    def config(self) -> EmomoConfig:
        assert self.settings is not None
        try:
            return config_from_settings(self.settings)
        except ConfigError as exc:
            raise UsageError(str(exc), print_help=False) from None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return asyncio.run(coro)
        except ConfigError as exc:
            raise UsageError(str(exc), print_help=False) from None
