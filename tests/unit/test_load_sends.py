"""How the loader sends a bundle: plain or conditional creates, and the resend after an unknown outcome."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fhirgraph.errors import FhirError
from fhirgraph.fhir.client import FhirClient
from fhirgraph.linkage import LINKAGE_SYSTEM
from fhirgraph.load import Loader

BASE = "http://target.test/fhir"


def answer(request: httpx.Request) -> httpx.Response:
    entries = json.loads(request.content)["entry"]
    body = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "201 Created", "location": f"Patient/{i}/_history/1"}}
            for i in range(len(entries))
        ],
    }
    return httpx.Response(200, json=body, headers={"Content-Type": "application/fhir+json"})


def loader(responses: list[int], *, match_existing: bool) -> tuple[Loader, list[dict[str, Any]]]:
    """A loader whose target answers the statuses in ``responses`` in turn (200: the transaction,
    0: the connection drops without an answer)."""
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        status = responses.pop(0)
        if status == 0:
            raise httpx.RemoteProtocolError("server disconnected without sending a response")
        return answer(request) if status == 200 else httpx.Response(status, text="busy")

    target = FhirClient(BASE, name="target", transport=httpx.MockTransport(handler), max_wait=0.01)
    # the graph, key and source are not used to send a bundle
    return Loader(None, target, "t", None, "", match_existing=match_existing), sent  # type: ignore[arg-type]


def entries() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    resources = [
        {"resourceType": "Patient", "meta": {"tag": [{"system": LINKAGE_SYSTEM, "code": f"h{i}"}]}}
        for i in range(3)
    ]
    return (
        [
            {"fullUrl": f"urn:uuid:{i}", "resource": r, "request": {"method": "POST", "url": "Patient"}}
            for i, r in enumerate(resources)
        ],
        [{"uid": f"u{i}", "linkage_hash": f"h{i}"} for i in range(3)],
    )


def conditions(bundle: dict[str, Any]) -> list[str | None]:
    return [e["request"].get("ifNoneExist") for e in bundle["entry"]]


def test_match_existing_makes_every_create_conditional() -> None:
    send, sent = loader([200], match_existing=True)
    send._post(*entries(), outcome_unknown=False)
    assert conditions(sent[0]) == [f"_tag={LINKAGE_SYSTEM}|h{i}" for i in range(3)]


def test_without_match_existing_creates_are_plain() -> None:
    send, sent = loader([200], match_existing=False)
    send._post(*entries(), outcome_unknown=False)
    assert conditions(sent[0]) == [None, None, None]
    assert send.stats.resent_bundles == 0


@pytest.mark.parametrize("status", [0, 502, 503, 504])
def test_a_send_with_unknown_outcome_is_resent_as_conditional_creates(status: int) -> None:
    send, sent = loader([status, 200], match_existing=False)
    send._post(*entries(), outcome_unknown=False)
    assert [conditions(b) for b in sent] == [[None] * 3, [f"_tag={LINKAGE_SYSTEM}|h{i}" for i in range(3)]]
    assert send.stats.resent_bundles == 1


def test_a_bundle_left_sending_by_a_crash_is_resent_as_conditional_creates() -> None:
    send, sent = loader([200], match_existing=False)
    send._post(*entries(), outcome_unknown=True)
    assert conditions(sent[0]) == [f"_tag={LINKAGE_SYSTEM}|h{i}" for i in range(3)]


def test_a_rejected_bundle_is_not_resent() -> None:
    send, sent = loader([400, 200], match_existing=False)
    with pytest.raises(FhirError):
        send._post(*entries(), outcome_unknown=False)
    assert len(sent) == 1
