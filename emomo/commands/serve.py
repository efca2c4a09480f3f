"""``scrapy serve [--host 127.0.0.1] [--port 8080] [--embedding NAME]``"""

from __future__ import annotations

import argparse
import asyncio
import resource
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


#: descriptors kept for the backends (database pool, index files, store) below the process's limit
RESERVED_DESCRIPTORS = 64


_BUSY = b'{"error": "too many connections"}'


class _Refused(asyncio.Protocol):
    """A connection over the cap: a 503 and closed at once, holding nothing."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY))
        transport.close()


def connection_cap(configured: int) -> int:
    """Connections held at once: the configured cap, within what the descriptor limit leaves."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - RESERVED_DESCRIPTORS))


async def serve(service: SearchService, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then close the backends."""
    config = service.config.server
    # aiohttp closes a connection idle for keepalive_timeout, counted from its opening too: a
    # silent socket or one that sends its headers a byte a minute is let go of.
    runner = web.AppRunner(build_app(service), access_log=None, keepalive_timeout=config.idle_timeout)
    cap = connection_cap(config.max_connections)
    listening: asyncio.Server | None = None
    try:
        await runner.setup()  # opens the backends: a bad config fails here, before listening
        server = runner.server
        assert server is not None

        def accept() -> asyncio.Protocol:
            return server() if len(server.connections) < cap else _Refused()

        loop = asyncio.get_running_loop()
        listening = await loop.create_server(accept, host, port, reuse_address=True)
        print(f"Serving the meme search on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if listening is not None:
            listening.close()
        await runner.cleanup()
