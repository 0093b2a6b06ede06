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
from fhirgraph.linkage import KEY_SYSTEM, LINKAGE_SYSTEM, LinkageKey
from fhirgraph.load import Loader, Member, target_resource
from fhirgraph.verify import comparable_source, comparable_target

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


KEY = LinkageKey(secret=b"k" * 32, origin="test")


def searchset(resources: list[dict[str, Any]]) -> httpx.Response:
    body = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}
    return httpx.Response(200, json=body, headers={"Content-Type": "application/fhir+json"})


def copy(linkage_hash: str) -> dict[str, Any]:
    """The target's copy of the entry with ``linkage_hash``."""
    tag = {"system": LINKAGE_SYSTEM, "code": linkage_hash}
    return {"resourceType": "Patient", "id": f"t-{linkage_hash}", "meta": {"versionId": "1", "tag": [tag]}}


def loader(
    responses: list[int],
    *,
    match_existing: bool,
    held: tuple[str, ...] = (),
    copies: tuple[str, ...] | None = None,
) -> tuple[Loader, list[dict[str, Any]], list[httpx.Request]]:
    """A loader whose target answers the transactions with the statuses in ``responses`` in turn
    (200: the transaction, 0: the connection drops without an answer), a search for copies made
    with the key with one for the types in ``held``, and a search for linkage hashes with the
    copies of those in ``copies`` (default: of every entry a transaction sent, as committed)."""
    sent: list[dict[str, Any]] = []
    searches: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/_search"):
            searches.append(request)
            asked = parse_qs(request.content.decode())["_tag"][0].split(",")
            if asked[0].startswith(KEY_SYSTEM):
                found = request.url.path.split("/")[-2] in held
                return searchset([{"resourceType": "Patient", "id": "1"}] if found else [])
            committed = (
                copies
                if copies is not None
                else [t["code"] for b in sent for e in b["entry"] for t in e["resource"]["meta"]["tag"]]
            )
            return searchset([copy(h) for h in committed if f"{LINKAGE_SYSTEM}|{h}" in asked])
        sent.append(json.loads(request.content))
        status = responses.pop(0)
        if status == 0:
            raise httpx.RemoteProtocolError("server disconnected without sending a response")
        return answer(request) if status == 200 else httpx.Response(status, text="busy")

    target = FhirClient(BASE, name="target", transport=httpx.MockTransport(handler), max_wait=0.01)
    # the graph and the source are not used to send a bundle
    send = Loader(None, target, "t", KEY, "", match_existing=match_existing)  # type: ignore[arg-type]
    send.settle_seconds = 0.05
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


def test_the_probe_asks_once_per_type_for_copies_made_with_the_key() -> None:
    send, _, searches = loader([], match_existing=True, held=("Practitioner",))
    assert send.probe_target(["Patient", "Practitioner"]) == {"Practitioner"}
    assert [r.url.path for r in searches] == ["/fhir/Patient/_search", "/fhir/Practitioner/_search"]
    for search in searches:
        assert parse_qs(search.content.decode())["_tag"] == [f"{KEY_SYSTEM}|{KEY.fingerprint}"]
        assert search.headers["Cache-Control"] == "no-cache"  # never a cached answer


def test_only_types_the_target_holds_are_sent_as_conditional_creates() -> None:
    send, sent, _ = loader([200], match_existing=True, held=("Practitioner",))
    send.probe_target(["Patient", "Practitioner"])
    bundle, rows = entries()
    bundle[1]["request"]["url"] = "Practitioner"
    send._post(bundle, rows, outcome_unknown=False)
    assert conditions(sent[0]) == [None, f"_tag={LINKAGE_SYSTEM}|h1", None]


def test_a_target_without_copies_gets_plain_creates() -> None:
    send, sent, _ = loader([200], match_existing=True)
    send.probe_target(["Patient"])
    send._post(*entries(), outcome_unknown=False)
    assert conditions(sent[0]) == [None, None, None]
    assert send.stats.resent_bundles == 0


@pytest.mark.parametrize("status", [0, 502, 504])
def test_a_send_with_unknown_outcome_that_committed_is_recorded_from_the_copies(status: int) -> None:
    send, sent, searches = loader([status], match_existing=True)
    response = send._post(*entries(), outcome_unknown=False)
    assert len(sent) == 1  # not sent again: the copies were found
    assert send.stats.resent_bundles == 0
    assert [e["response"]["location"] for e in response["entry"]] == [
        f"Patient/t-h{i}/_history/1" for i in range(3)
    ]
    assert searches[-1].headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("match_existing", [True, False])
@pytest.mark.parametrize("status", [0, 502, 504])
def test_a_send_with_unknown_outcome_and_no_copies_is_resent_as_conditional_creates(
    status: int, match_existing: bool
) -> None:
    send, sent, searches = loader([status, 200], match_existing=match_existing, copies=())
    send._post(*entries(), outcome_unknown=False)
    assert [conditions(b) for b in sent] == [[None] * 3, [f"_tag={LINKAGE_SYSTEM}|h{i}" for i in range(3)]]
    assert len(searches) >= 2  # looked again while the target might still be working on it
    assert send.stats.resent_bundles == 1


@pytest.mark.parametrize("status", [429, 503])
def test_a_refused_send_is_resent_as_conditional_creates_at_once(status: int) -> None:
    send, sent, searches = loader([status, 200], match_existing=False)
    send._post(*entries(), outcome_unknown=False)
    assert [conditions(b) for b in sent] == [[None] * 3, [f"_tag={LINKAGE_SYSTEM}|h{i}" for i in range(3)]]
    assert searches == []  # the target did not process it: nothing to look for
    assert send.stats.resent_bundles == 1


def test_a_bundle_left_sending_by_a_crash_is_resent_as_conditional_creates() -> None:
    send, sent, _ = loader([200], match_existing=True, copies=())
    send.probe_target(["Patient"])  # the target holds no copies made with the key: still conditional
    send._post(*entries(), outcome_unknown=True)
    assert conditions(sent[0]) == [f"_tag={LINKAGE_SYSTEM}|h{i}" for i in range(3)]
    assert send.stats.resent_bundles == 1


def test_a_bundle_left_sending_that_committed_is_not_sent_again() -> None:
    send, sent, _ = loader([], match_existing=True, copies=("h0", "h1", "h2"))
    response = send._post(*entries(), outcome_unknown=True)
    assert sent == []
    assert len(response["entry"]) == 3
    assert send.stats.resent_bundles == 0


def test_a_rejected_bundle_is_not_resent() -> None:
    send, sent, _ = loader([400, 200], match_existing=False)
    with pytest.raises(FhirError):
        send._post(*entries(), outcome_unknown=False)
    assert len(sent) == 1


def test_a_copy_is_tagged_with_its_hash_and_the_key_and_loses_the_tags_of_an_earlier_copy() -> None:
    source = {
        "resourceType": "Patient",
        "id": "1",
        "meta": {
            "versionId": "3",
            "tag": [
                {"system": "urn:site", "code": "keep"},
                {"system": LINKAGE_SYSTEM, "code": "old-hash"},
                {"system": KEY_SYSTEM, "code": "old-key"},
            ],
        },
    }
    member = Member("u", "Patient/1", "Patient", json.dumps(source), ())
    copy = target_resource(member, {}, "new-hash", KEY.fingerprint)
    assert "id" not in copy and "versionId" not in copy["meta"]
    assert copy["meta"]["tag"] == [
        {"system": "urn:site", "code": "keep"},
        {"system": LINKAGE_SYSTEM, "code": "new-hash"},
        {"system": KEY_SYSTEM, "code": KEY.fingerprint},
    ]
    # verify compares the two without the tags a transfer adds
    assert comparable_target(copy) == comparable_source(json.dumps(source), {})
