"""``scrapy serve [--host 127.0.0.1] [--port 8080] [--embedding NAME]``"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from emomo.cli import EmomoCommand
from emomo.errors import ConfigError
from emomo.web.app import SearchService, build_app


class Command(EmomoCommand):
    json_output = False

    def syntax(self) -> str:
        return "[--host HOST] [--port PORT] [--embedding NAME]"

    def short_desc(self) -> str:
        return "Serve the search page and the JSON API over the index"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--host", default="", help="address to listen on (else server.host, 127.0.0.1)")
        parser.add_argument("--port", type=int, default=0, help="port (else server.port, 8080)")
        parser.add_argument("--embedding", default="", metavar="NAME",
                            help="embedding configuration searched by default (else the one marked is_default)")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        config = self.config()
        host = opts.host or config.server.host
        port = opts.port or config.server.port
        try:
            service = SearchService(config, opts.embedding or None)
        except ConfigError as exc:
            self.refuse(str(exc))
        self.call(serve(service, host, port))


async def serve(service: SearchService, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then close the backends."""
    runner = web.AppRunner(build_app(service), access_log=None)
    try:
        await runner.setup()  # opens the backends: a bad config fails here, before listening
        site = web.TCPSite(runner, host, port)
        await site.start()
        print(f"Serving the meme search on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
