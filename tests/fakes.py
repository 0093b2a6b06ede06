"""What a fake FHIR server answers: replies built once for every test.

A reply is an ``httpx.Response``, the type an ``httpx.MockTransport`` handler
returns; the loopback stub servers (``tests/integration/stubs.py``) send the same
replies over a real socket, so unit and integration tests build them alike.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"

CAPABILITY = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "fhirVersion": "4.0.1",
    "kind": "instance",
}


def fhir(payload: dict[str, Any], status: int = 200, **headers: str) -> httpx.Response:
    """``payload`` as FHIR JSON."""
    return httpx.Response(status, json=payload, headers={"Content-Type": FHIR_JSON, **headers})


def outcome(status: int, diagnostics: str) -> httpx.Response:
    """An error answered with an OperationOutcome of one issue, as HAPI does."""
    return fhir(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": diagnostics}],
        },
        status,
    )


def raw(status: int, body: bytes, content_type: str = FHIR_JSON, **headers: str) -> httpx.Response:
    """``body`` byte for byte: malformed JSON, HTML, numbers whose exact text matters."""
    return httpx.Response(status, content=body, headers={"Content-Type": content_type, **headers})


def searchset(entries: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    """A page of search results holding ``entries``, linking to ``next_url`` if given."""
    links = [{"relation": "next", "url": next_url}] if next_url else []
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def export_manifest(outputs: list[tuple[str, str]], errors: list[str] | None = None) -> httpx.Response:
    """The 200 answer of a finished Bulk Data export job: ``outputs`` as (type, url) pairs."""
    return httpx.Response(
        200,
        json={
            "transactionTime": "2026-01-01T00:00:00Z",
            "request": "$export",
            "requiresAccessToken": True,
            "output": [{"type": rtype, "url": url} for rtype, url in outputs],
            "error": [{"type": "OperationOutcome", "url": url} for url in errors or []],
        },
        headers={"Content-Type": "application/json"},
    )


def export_running(progress: str = "Build in progress", retry_after: str = "120") -> httpx.Response:
    """The 202 answer of a running export job, as HAPI sends it."""
    return httpx.Response(202, headers={"X-Progress": progress, "Retry-After": retry_after})


def ndjson(lines: list[str]) -> httpx.Response:
    """An NDJSON export file holding ``lines`` (each a resource's JSON text)."""
    return raw(200, "".join(line + "\n" for line in lines).encode(), "application/fhir+ndjson")
