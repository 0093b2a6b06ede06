"""Tiny loopback HTTP servers for behaviour the real stack cannot produce on demand.

A stub answers with whatever its handler returns (401/403/413, HTML, malformed
JSON, foreign ``next`` links) and records every request that reaches it, so a
test can also prove that *nothing* reached it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/fhir+json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Reply]


def fhir(payload: dict[str, Any], status: int = 200) -> Reply:
    return Reply(status, json.dumps(payload).encode())


def outcome(status: int, diagnostics: str) -> Reply:
    return fhir(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": diagnostics}],
        },
        status,
    )


CAPABILITY = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "fhirVersion": "4.0.1",
    "kind": "instance",
}


def metadata_then(handler: Handler) -> Handler:
    """A FHIR server that answers ``/metadata``, finds nothing for a search by POST
    (``[type]/_search``: it holds nothing), and hands every other request to ``handler``."""

    def answer(request: Request) -> Reply:
        path = request.path.split("?")[0]
        if request.method == "GET" and path.endswith("/metadata"):
            return fhir(CAPABILITY)
        if request.method == "POST" and path.endswith("/_search"):
            return fhir({"resourceType": "Bundle", "type": "searchset", "total": 0})
        return handler(request)

    return answer


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

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
