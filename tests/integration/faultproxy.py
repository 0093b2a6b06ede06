"""A fault-injecting HTTP proxy on loopback, put in front of a FHIR server in tests.

A share of the requests (``rate``) gets one of: 429 with Retry-After, 503, a
connection reset without an answer, an answer slower than the client's
timeout, a truncated body, or (for writes) the request forwarded and committed
upstream but the answer lost. Faults are drawn from a seeded generator and
counted, so a test can check that each kind happened.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

READ_FAULTS = ("429", "503", "reset", "slow", "truncated")
WRITE_FAULTS = (*READ_FAULTS, "lost_response")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        rate: float,
        slow_seconds: float = 0.0,
        seed: int = 7,
        lose_first_write: bool = False,
    ):
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.slow_seconds = slow_seconds
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.lose_next_write = lose_first_write
        self.http = httpx.Client(timeout=600.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self)

            do_POST = do_PUT = do_DELETE = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        path = httpx.URL(self.upstream).path
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()

    def _draw(self, method: str, path: str) -> str | None:
        # a search by POST (``[type]/_search``) reads; only other POSTs and PUTs write
        write = method != "GET" and not path.split("?", 1)[0].endswith("/_search")
        with self.lock:
            self.requests += 1
            if write and self.lose_next_write:
                self.lose_next_write = False
                self.faults["lost_response"] += 1
                return "lost_response"
            if self.random.random() >= self.rate:
                return None
            fault = self.random.choice(WRITE_FAULTS if write else READ_FAULTS)
            self.faults[fault] += 1
            return fault

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        fault = self._draw(handler.command, handler.path)
        if fault in ("429", "503"):
            status = int(fault)
            payload = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient"}]}'
            handler.send_response(status)
            handler.send_header("Content-Type", "application/fhir+json")
            handler.send_header("Content-Length", str(len(payload)))
            if status == 429:
                handler.send_header("Retry-After", "1")
            handler.end_headers()
            handler.wfile.write(payload)
            return
        if fault == "reset":
            self._reset(handler)
            return
        if fault == "slow":
            time.sleep(self.slow_seconds)
        upstream = self.http.request(
            handler.command,
            self.upstream_url(handler.path),
            content=body,
            headers={k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP},
        )
        if fault == "lost_response":
            self._reset(handler)  # the upstream committed; the client never hears of it
            return
        content = upstream.content
        try:
            handler.send_response(upstream.status_code)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            if fault == "truncated":
                handler.wfile.write(content[: len(content) // 2])
                self._reset(handler)
                return
            handler.wfile.write(content)
        except OSError:
            pass  # the client gave up (a slow answer): nothing to deliver

    def upstream_url(self, path: str) -> str:
        origin = httpx.URL(self.upstream)
        return f"{origin.scheme}://{origin.host}:{origin.port}{path}"

    @staticmethod
    def _reset(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        try:
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            handler.connection.close()
        except OSError:
            pass
