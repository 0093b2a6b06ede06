"""How the loader sends a bundle: the pre-check for copies the target holds, plain or conditional
creates, and the resend after an unknown outcome."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

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


def searchset(hashes: list[str]) -> httpx.Response:
    body = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": h,
                    "meta": {"tag": [{"system": LINKAGE_SYSTEM, "code": h}]},
                }
            }
            for h in hashes
        ],
    }
    return httpx.Response(200, json=body, headers={"Content-Type": "application/fhir+json"})


def loader(
    responses: list[int], *, match_existing: bool, held: tuple[str, ...] = ()
) -> tuple[Loader, list[dict[str, Any]], list[httpx.Request]]:
    """A loader whose target answers the transactions with the statuses in ``responses`` in turn
    (200: the transaction, 0: the connection drops without an answer), and a search for linkage
    tags with those of ``held`` among them."""
    sent: list[dict[str, Any]] = []
    searches: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/_search"):
            searches.append(request)
            asked = parse_qs(request.content.decode())["_tag"][0].split(",")
            return searchset([h for h in held if f"{LINKAGE_SYSTEM}|{h}" in asked])
        sent.append(json.loads(request.content))
        status = responses.pop(0)
        if status == 0:
            raise httpx.RemoteProtocolError("server disconnected without sending a response")
        return answer(request) if status == 200 else httpx.Response(status, text="busy")

    target = FhirClient(BASE, name="target", transport=httpx.MockTransport(handler), max_wait=0.01)
    # the graph, key and source are not used to send a bundle
    send = Loader(None, target, "t", None, "", match_existing=match_existing)  # type: ignore[arg-type]
    return send, sent, searches


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


def test_match_existing_makes_only_what_the_target_holds_conditional() -> None:
    send, sent, searches = loader([200], match_existing=True, held=("h1", "elsewhere"))
    send._post(*entries(), outcome_unknown=False)
    assert conditions(sent[0]) == [None, f"_tag={LINKAGE_SYSTEM}|h1", None]
    # one search for the bundle's Patients, by POST, never answered from the server's cache
    assert len(searches) == 1
    assert searches[0].url.path == "/fhir/Patient/_search"
    assert searches[0].headers["Cache-Control"] == "no-cache"
    assert parse_qs(searches[0].content.decode())["_tag"] == [
        ",".join(f"{LINKAGE_SYSTEM}|h{i}" for i in range(3))
    ]


def test_match_existing_on_an_empty_target_sends_plain_creates() -> None:
    send, sent, searches = loader([200], match_existing=True)
    send._post(*entries(), outcome_unknown=False)
    assert conditions(sent[0]) == [None, None, None]
    assert len(searches) == 1


def test_match_existing_searches_once_per_resource_type() -> None:
    send, _, searches = loader([200], match_existing=True)
    bundle, rows = entries()
    bundle[2]["request"]["url"] = "Practitioner"
    send._post(bundle, rows, outcome_unknown=False)
    assert sorted(r.url.path for r in searches) == ["/fhir/Patient/_search", "/fhir/Practitioner/_search"]


def test_without_match_existing_creates_are_plain_and_nothing_is_searched() -> None:
    send, sent, searches = loader([200], match_existing=False)
    send._post(*entries(), outcome_unknown=False)
    assert conditions(sent[0]) == [None, None, None]
    assert searches == []
    assert send.stats.resent_bundles == 0


@pytest.mark.parametrize("match_existing", [True, False])
@pytest.mark.parametrize("status", [0, 502, 503, 504])
def test_a_send_with_unknown_outcome_is_resent_as_conditional_creates(
    status: int, match_existing: bool
) -> None:
    send, sent, _ = loader([status, 200], match_existing=match_existing)
    send._post(*entries(), outcome_unknown=False)
    assert [conditions(b) for b in sent] == [[None] * 3, [f"_tag={LINKAGE_SYSTEM}|h{i}" for i in range(3)]]
    assert send.stats.resent_bundles == 1


def test_a_bundle_left_sending_by_a_crash_is_resent_as_conditional_creates() -> None:
    send, sent, searches = loader([200], match_existing=True)
    send._post(*entries(), outcome_unknown=True)
    assert conditions(sent[0]) == [f"_tag={LINKAGE_SYSTEM}|h{i}" for i in range(3)]
    assert searches == []  # a search could miss a commit still under way; the conditional create cannot


def test_a_rejected_bundle_is_not_resent() -> None:
    send, sent, _ = loader([400, 200], match_existing=False)
    with pytest.raises(FhirError):
        send._post(*entries(), outcome_unknown=False)
    assert len(sent) == 1
