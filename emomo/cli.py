"""The base of our scrapy commands: config from settings, a clean exit on config errors.

It lives outside emomo.commands because Scrapy turns every command class
found in COMMANDS_MODULE into a command.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

from scrapy.commands import ScrapyCommand

from emomo.addon import setting_defaults
from emomo.config import EmomoConfig
from emomo.errors import ConfigError, backend_errors, error_text
from emomo.ingest.runtime import config_from_settings
from emomo.logmask import SecretMask, printable

T = TypeVar("T")


class EmomoCommand(ScrapyCommand):
    requires_project = True
    # Our commands run their own event loop: no crawler process, so no reactor and no start-up log.
    requires_crawler_process = False
    # The output is for people and scripts: Scrapy's start-up log would bury it.
    default_settings = {"LOG_LEVEL": "WARNING"}

    #: whether the command prints a result that --json can give as JSON
    json_output = True

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        if self.json_output:
            parser.add_argument("--json", action="store_true", help="print JSON instead of text")

    mask: SecretMask = SecretMask(())

    def config(self) -> EmomoConfig:
        assert self.settings is not None
        setting_defaults(self.settings)
        try:
            config = config_from_settings(self.settings)
        except ConfigError as exc:
            self.refuse(str(exc))
        self.mask = SecretMask(config.secrets()).install()
        return config

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return asyncio.run(coro)
        except ConfigError as exc:
            self.refuse(str(exc))
        except backend_errors() as exc:
            # A database that is damaged or on a full disk, a server that is down: one line.
            sys.stderr.write(f"scrapy: error: {printable(self.mask.mask(f'{type(exc).__name__}: {error_text(exc)}'))}"
                             "\n")
            raise SystemExit(1) from None

    def refuse(self, message: str) -> NoReturn:
        """Exit 2 with one line on stderr: the cause, naming the key and the fix (argparse's
        ``parser.error`` would print a usage block before it), never a secret."""
        sys.stderr.write(f"scrapy: error: {printable(self.mask.mask(message))}\n")
        raise SystemExit(2)
