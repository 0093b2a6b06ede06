"""Tiny loopback HTTP servers for behaviour the real stack cannot produce on demand.

A stub answers with whatever its handler returns (401/403/413, HTML, malformed
JSON, foreign ``next`` links) and records every request that reaches it, so a
test can also prove that *nothing* reached it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.fakes import CAPABILITY, fhir


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


#: a stub's answer to each request: a reply from ``tests.fakes``, sent as it is
Handler = Callable[[Request], httpx.Response]


def metadata_then(handler: Handler) -> Handler:
    """A FHIR server that answers ``/metadata``, finds nothing for a search by POST
    (``[type]/_search``: it holds nothing), and hands every other request to ``handler``."""

    def answer(request: Request) -> httpx.Response:
        path = request.path.split("?")[0]
        if request.method == "GET" and path.endswith("/metadata"):
            return fhir(CAPABILITY)
        if request.method == "POST" and path.endswith("/_search"):
            return fhir({"resourceType": "Bundle", "type": "searchset", "total": 0})
        return handler(request)

    return answer


class StubServer:
    """Listens on ``host`` (any loopback address, e.g. 127.0.0.2) and records each request."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1"):
        self.handler = handler
        self.host = host
        self.requests: list[Request] = []
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command,
                    self.path,
                    dict(self.headers.items()),
                    self.rfile.read(length) if length else b"",
                )
                stub.requests.append(request)
                reply = stub.handler(request)
                self.send_response(reply.status_code)
                for name, value in reply.headers.multi_items():
                    if name != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self._server.server_port}"

    @property
    def base(self) -> str:
        return f"{self.origin}/fhir"

    def writes(self) -> list[Request]:
        """Requests that may change something: not reads, not searches by POST."""
        return [
            r for r in self.requests if r.method != "GET" and not r.path.split("?")[0].endswith("/_search")
        ]

    def start(self) -> StubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def stub_server(handler: Handler, host: str = "127.0.0.1") -> Iterator[StubServer]:
    server = StubServer(handler, host).start()
    try:
        yield server
    finally:
        server.stop()
