"""Loopback stand-ins with the seed's latencies, run as a process of their own.

- ``/v1/chat/completions`` (an OpenAI-compatible VLM): answers after ``--vlm-ms``; with
  ``--vlm-limit N``, a call beyond N in flight gets 429 with Retry-After: 1 at once.
- ``/v1/embeddings`` (Jina's wire format): answers a whole batch after ``--embed-ms``.
- an S3 front for moto: PUT after ``--s3-put-ms``, anything else after ``--s3-other-ms``.

Prints one JSON line with the ports, then serves until killed. Every address is 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import math
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COUNTS: Counter[str] = Counter()
IN_FLIGHT = [0, 0]  # now, peak
SIZES: list[int] = []
LOCK = threading.Lock()


def vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text`` (no model: the benchmark measures the pipeline)."""
    raw = b"".join(hashlib.sha256(f"{text}/{i}".encode()).digest() for i in range(math.ceil(dims * 4 / 32)))
    values = [v / 2**31 - 1 for v in struct.unpack(f"<{dims}I", raw[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def api_handler(vlm_s: float, embed_s: float, dims: int, vlm_limit: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return None

        def reply(self, body: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/stats":
                with LOCK:
                    self.reply({"counts": dict(COUNTS), "embed_batch_sizes": SIZES, "vlm_peak": IN_FLIGHT[1]})
                return
            self.send_error(404)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if self.path.endswith("/chat/completions"):
                with LOCK:
                    COUNTS["chat"] += 1
                    refused = 0 < vlm_limit <= IN_FLIGHT[0]
                    if refused:
                        COUNTS["chat_429"] += 1
                    else:
                        IN_FLIGHT[0] += 1
                        IN_FLIGHT[1] = max(IN_FLIGHT)
                if refused:
                    self.reply({"error": {"message": "rate limit: too many requests in flight"}}, status=429)
                    return
                try:
                    time.sleep(vlm_s)
                finally:
                    with LOCK:
                        IN_FLIGHT[0] -= 1
                digest = hashlib.md5(json.dumps(body["messages"][-1], sort_keys=True).encode()).hexdigest()[:8]
                self.reply({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                "role": "assistant", "content": f"图中文字是“测试{digest}”。一张表情包。"}}]})
            elif self.path.endswith("/embeddings"):
                texts = body["input"]
                with LOCK:
                    COUNTS["embeddings"] += 1
                    SIZES.append(len(texts))
                time.sleep(embed_s)
                self.reply({"object": "list", "model": body["model"], "usage": {"total_tokens": 1},
                            "data": [{"object": "embedding", "index": i, "embedding": vector(t, dims)}
                                     for i, t in enumerate(texts)]})
            else:
                self.send_error(404)

    return Handler


def s3_handler(moto_port: int, put_s: float, other_s: float) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return None

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length", 0) or 0)
            body = self.rfile.read(length) if length else None
            time.sleep(put_s if self.command == "PUT" else other_s)
            conn = http.client.HTTPConnection("127.0.0.1", moto_port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    return Proxy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vlm-ms", type=float, default=2000)
    ap.add_argument("--embed-ms", type=float, default=500)
    ap.add_argument("--s3-put-ms", type=float, default=500)
    ap.add_argument("--s3-other-ms", type=float, default=20)
    ap.add_argument("--moto-port", type=int, required=True)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--vlm-limit", type=int, default=0)
    a = ap.parse_args()
    api = Server(("127.0.0.1", 0), api_handler(a.vlm_ms / 1000, a.embed_ms / 1000, a.dims, a.vlm_limit))
    s3 = Server(("127.0.0.1", 0), s3_handler(a.moto_port, a.s3_put_ms / 1000, a.s3_other_ms / 1000))
    for server in (api, s3):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"api_port": api.server_address[1], "s3_port": s3.server_address[1]}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
