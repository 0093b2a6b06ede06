"""How the load sends a bundle (fhirgraph.sender): the pre-check for copies the target holds,
plain or conditional creates, and the resend after an unknown outcome. The target is a fake
FHIR server behind an httpx ``MockTransport``; the entries come from the bundle builder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from fhirgraph.bundle import Entry, Member, create_entries, update_entries
from fhirgraph.errors import FhirError
from fhirgraph.fhir.client import FhirClient
from fhirgraph.linkage import KEY_SYSTEM, LINKAGE_SYSTEM, LinkageKey
from fhirgraph.sender import Sender, TargetProbe
from tests.fakes import fhir, searchset

BASE = "http://target.test/fhir"
SOURCE = "http://source.test/fhir"
KEY = LinkageKey(secret=b"k" * 32, origin="test")
JSON = dict[str, Any]


def answer(request: httpx.Request) -> httpx.Response:
    """The target's answer to a transaction: every entry created."""
    entries = json.loads(request.content)["entry"]
    return fhir(
        {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [
                {"response": {"status": "201 Created", "location": f"Patient/{i}/_history/1"}}
                for i in range(len(entries))
            ],
        }
    )


def copy(linkage_hash: str) -> JSON:
    """The target's copy of the entry with ``linkage_hash``."""
    tag = {"system": LINKAGE_SYSTEM, "code": linkage_hash}
    return {"resourceType": "Patient", "id": f"t-{linkage_hash}", "meta": {"versionId": "1", "tag": [tag]}}


@dataclass
class FakeTarget:
    """A target that answers the transactions with the statuses in ``responses`` in turn (200: the
    transaction, 0: the connection drops without an answer), a search for copies made with the key
    with one for the types in ``held``, and a search for linkage hashes with the copies of those in
    ``copies`` (default: of every entry a transaction sent, as committed)."""

    responses: list[int]
    held: tuple[str, ...] = ()
    copies: tuple[str, ...] | None = None
    #: the transaction bundles it received
    sent: list[JSON] = field(default_factory=list)
    #: the searches for copies made with the key (the probe)
    probes: list[httpx.Request] = field(default_factory=list)
    #: the searches for copies by linkage hash (looking for the outcome of a send)
    lookups: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/_search"):
            asked = parse_qs(request.content.decode())["_tag"][0].split(",")
            if asked[0].startswith(KEY_SYSTEM):
                self.probes.append(request)
                found = request.url.path.split("/")[-2] in self.held
                return fhir(
                    searchset([{"resource": {"resourceType": "Patient", "id": "1"}}] if found else [])
                )
            self.lookups.append(request)
            committed = (
                self.copies
                if self.copies is not None
                else [t["code"] for b in self.sent for e in b["entry"] for t in e["resource"]["meta"]["tag"]]
            )
            return fhir(
                searchset([{"resource": copy(h)} for h in committed if f"{LINKAGE_SYSTEM}|{h}" in asked])
            )
        self.sent.append(json.loads(request.content))
        status = self.responses.pop(0)
        if status == 0:
            raise httpx.RemoteProtocolError("server disconnected without sending a response")
        return answer(request) if status == 200 else httpx.Response(status, text="busy")

    def sender(self) -> Sender:
        client = FhirClient(BASE, name="target", transport=httpx.MockTransport(self), max_wait=0.01)
        return Sender(client, KEY.fingerprint, settle_seconds=0.05)


def entries(*types: str) -> list[Entry]:
    """A bundle's create entries for one resource of each type (three Patients by default)."""
    types = types or ("Patient",) * 3
    members = [
        Member(f"t|{rtype}/{i}", f"{rtype}/{i}", rtype, json.dumps({"resourceType": rtype, "id": str(i)}), ())
        for i, rtype in enumerate(types)
    ]
    return create_entries(members, key=KEY, source_base=SOURCE)


def conditions(bundle: JSON) -> list[str | None]:
    return [e["request"].get("ifNoneExist") for e in bundle["entry"]]


def on_tag(bundle: list[Entry]) -> list[str | None]:
    """What ``conditions`` gives for ``bundle`` sent with every entry a conditional create."""
    return [f"_tag={LINKAGE_SYSTEM}|{e.linkage_hash}" for e in bundle]


def test_the_probe_asks_once_per_type_for_copies_made_with_the_key() -> None:
    target = FakeTarget([], held=("Practitioner",))
    send = target.sender()
    assert send.probe_target(["Patient", "Practitioner"]) == {"Practitioner"}
    assert send.held_types == {"Practitioner"}
    assert [r.url.path for r in target.probes] == ["/fhir/Patient/_search", "/fhir/Practitioner/_search"]
    for search in target.probes:
        assert parse_qs(search.content.decode())["_tag"] == [f"{KEY_SYSTEM}|{KEY.fingerprint}"]
        assert search.headers["Cache-Control"] == "no-cache"  # never a cached answer
    assert target.lookups == []


def test_a_type_is_asked_about_once_and_a_later_sender_of_the_run_is_not_asked_again() -> None:
    target = FakeTarget([200, 200], held=("Practitioner",))
    first = target.sender()
    first.probe_target(["Patient", "Practitioner"])
    first.send(entries("Patient"), outcome_unknown=False)
    first.probe_target(["Patient", "Practitioner", "Organization"])  # only Organization is new
    assert [r.url.path.split("/")[-2] for r in target.probes] == ["Patient", "Practitioner", "Organization"]
    assert first.probe == TargetProbe(
        frozenset({"Patient", "Practitioner", "Organization"}), frozenset({"Practitioner"})
    )
    # the load after the crawl: the target now holds Patients copied with the key (sent above),
    # but what it held before this run sent anything is what counts
    target.held = ("Practitioner", "Patient")
    client = FhirClient(BASE, name="target", transport=httpx.MockTransport(target), max_wait=0.01)
    later = Sender(client, KEY.fingerprint, probe=first.probe)
    later.probe_target(["Patient", "Practitioner", "Device"])
    assert [r.url.path.split("/")[-2] for r in target.probes][3:] == ["Device"]
    later.send(entries("Patient", "Practitioner", "Device"), outcome_unknown=False)
    assert conditions(target.sent[-1])[0] is None and conditions(target.sent[-1])[1] is not None
    assert later.held_types == {"Practitioner"}


def test_a_target_that_cannot_search_by_tag_says_what_to_do() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text="unknown search parameter _tag")

    client = FhirClient(BASE, name="target", transport=httpx.MockTransport(refuse), max_wait=0.01)
    with pytest.raises(FhirError, match="cannot search by _tag needs match_existing off") as caught:
        Sender(client, KEY.fingerprint).probe_target(["Patient"])
    assert caught.value.status == 400
    assert caught.value.hint == "match_existing"  # the command line names its flag


def test_only_types_the_target_holds_are_sent_as_conditional_creates() -> None:
    target = FakeTarget([200], held=("Practitioner",))
    send = target.sender()
    send.probe_target(["Patient", "Practitioner"])
    bundle = entries("Patient", "Practitioner", "Patient")
    send.send(bundle, outcome_unknown=False)
    assert conditions(target.sent[0]) == [None, on_tag(bundle)[1], None]
    assert [e.bundle_entry["request"] for e in bundle] == [
        {"method": "POST", "url": rtype} for rtype in ("Patient", "Practitioner", "Patient")
    ]  # the entries built are not changed by sending them
    assert send.resent_bundles == 0


def test_a_bundle_of_held_types_only_is_sent_as_conditional_creates_and_retried() -> None:
    target = FakeTarget([503, 200], held=("Patient",))
    send = target.sender()
    send.probe_target(["Patient"])
    bundle = entries()
    send.send(bundle, outcome_unknown=False)
    assert [conditions(b) for b in target.sent] == [on_tag(bundle)] * 2
    assert target.lookups == []
    assert send.resent_bundles == 0  # retried as the same conditional send, not resent


def test_a_target_without_copies_gets_plain_creates() -> None:
    target = FakeTarget([200])
    send = target.sender()
    send.probe_target(["Patient"])
    send.send(entries(), outcome_unknown=False)
    assert conditions(target.sent[0]) == [None, None, None]
    assert send.resent_bundles == 0


@pytest.mark.parametrize("status", [0, 502, 504])
def test_a_send_with_unknown_outcome_that_committed_is_recorded_from_the_copies(status: int) -> None:
    target = FakeTarget([status])
    send = target.sender()
    bundle = entries()
    response = send.send(bundle, outcome_unknown=False)
    assert len(target.sent) == 1  # not sent again: the copies were found
    assert send.resent_bundles == 0
    assert [e["response"]["location"] for e in response["entry"]] == [
        f"Patient/t-{e.linkage_hash}/_history/1" for e in bundle
    ]
    assert target.lookups[-1].headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("match_existing", [True, False])
@pytest.mark.parametrize("status", [0, 502, 504])
def test_a_send_with_unknown_outcome_and_no_copies_is_resent_as_conditional_creates(
    status: int, match_existing: bool
) -> None:
    target = FakeTarget([status, 200], copies=())
    send = target.sender()
    if match_existing:
        send.probe_target(["Patient"])  # the target holds no copies made with the key
    bundle = entries()
    send.send(bundle, outcome_unknown=False)
    assert [conditions(b) for b in target.sent] == [[None] * 3, on_tag(bundle)]
    assert len(target.lookups) >= 2  # looked again while the target might still be working on it
    assert send.resent_bundles == 1


@pytest.mark.parametrize("status", [429, 503])
def test_a_refused_send_is_resent_as_conditional_creates_at_once(status: int) -> None:
    target = FakeTarget([status, 200])
    send = target.sender()
    bundle = entries()
    send.send(bundle, outcome_unknown=False)
    assert [conditions(b) for b in target.sent] == [[None] * 3, on_tag(bundle)]
    assert target.lookups == [] and target.probes == []  # the target did not process it: nothing to look for
    assert send.resent_bundles == 1


def test_a_bundle_left_sending_by_a_crash_is_resent_as_conditional_creates() -> None:
    target = FakeTarget([200], copies=())
    send = target.sender()
    send.probe_target(["Patient"])  # the target holds no copies made with the key: still conditional
    bundle = entries()
    send.send(bundle, outcome_unknown=True)
    assert conditions(target.sent[0]) == on_tag(bundle)
    assert send.resent_bundles == 1


def test_a_bundle_left_sending_that_committed_is_not_sent_again() -> None:
    bundle = entries()
    target = FakeTarget([], copies=tuple(e.linkage_hash for e in bundle))
    send = target.sender()
    response = send.send(bundle, outcome_unknown=True)
    assert target.sent == []
    assert len(response["entry"]) == 3
    assert send.resent_bundles == 0


@pytest.mark.parametrize(
    ("seconds_ago", "waited"),
    [(0.0, True), (60.0, True), (3600.0, False)],
)
def test_a_send_left_sending_long_ago_is_looked_for_once(
    seconds_ago: float, waited: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its sender would have waited for an answer (the read timeout, 60 s), then looked for its
    copies (settle_seconds): a send that began within that is waited for as before, one that began
    an hour ago is looked for once, then sent again, without a pause."""
    pauses: list[float] = []
    monkeypatch.setattr("fhirgraph.sender.time.sleep", pauses.append)
    target = FakeTarget([200], copies=())
    send = target.sender()
    send.settle_seconds = 0.05 if waited else 5.0  # a wait of 5 s would show in the pauses
    assert send.target.read_timeout == 60.0
    bundle = entries()
    send.send(bundle, outcome_unknown=True, sent_seconds_ago=seconds_ago)
    assert conditions(target.sent[0]) == on_tag(bundle)
    if waited:
        assert len(target.lookups) > 1 and pauses
    else:
        assert len(target.lookups) == 1 and pauses == []


def test_a_rejected_bundle_is_not_resent() -> None:
    target = FakeTarget([400, 200])
    send = target.sender()
    with pytest.raises(FhirError):
        send.send(entries(), outcome_unknown=False)
    assert len(target.sent) == 1
    assert send.resent_bundles == 0


def test_the_copies_on_the_target_are_found_by_linkage_hash_with_their_location() -> None:
    bundle = entries()
    target = FakeTarget([], copies=(bundle[0].linkage_hash, bundle[2].linkage_hash))
    found = target.sender().copies_on_target(bundle)
    assert found == {
        e.linkage_hash: {"status": "200 OK", "location": f"Patient/t-{e.linkage_hash}/_history/1"}
        for e in (bundle[0], bundle[2])
    }
    assert len(target.lookups) == 1  # one search per type


def test_updates_are_sent_as_built_and_retried() -> None:
    members = [
        Member(
            f"t|Patient/{i}", f"Patient/{i}", "Patient", json.dumps({"resourceType": "Patient"}), (), f"p{i}"
        )
        for i in range(2)
    ]
    updates = update_entries(members, key=KEY, source_base=SOURCE)
    target = FakeTarget([503, 200])
    send = target.sender()
    response = send.send_updates(updates)
    assert len(target.sent) == 2  # an update to a given id is safe to repeat
    assert target.sent[-1] == {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [e.bundle_entry for e in updates],
    }
    assert conditions(target.sent[-1]) == [None, None]
    assert len(response["entry"]) == 2
    assert send.resent_bundles == 0
