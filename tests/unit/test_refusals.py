"""What the target refuses: isolating the refused resources of a refused transaction (the sender,
against a fake target) and holding back what refers to them (the builder, pure)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from fhirgraph.bundle import (
    Entry,
    Member,
    StagedReference,
    blocked_members,
    create_entries,
    without_held_back_references,
)
from fhirgraph.errors import FhirTerminalError
from fhirgraph.fhir.client import FhirClient
from fhirgraph.linkage import LinkageKey
from fhirgraph.sender import Sender, refused_for_content
from tests.fakes import fhir, outcome

KEY = LinkageKey(secret=b"k" * 32, origin="test")
SOURCE = "http://source.test/fhir"
BASE = "http://target.test/fhir"


def ref(
    path: str, key: str, status: str = "loaded", error: str | None = None, dropped: bool = False
) -> StagedReference:
    return StagedReference(
        path=path, kind="relative", deferred=False, dropped=dropped, uid=f"t|{key}", type=key.split("/")[0],
        target_id="9" if status == "loaded" else None, target_version=None, bundle=None, status=status,
        key=key, error=error,
    )  # fmt: skip


def member(key: str, *refs: StagedReference, scc: str | None = None, **resource: Any) -> Member:
    rtype, rid = key.split("/")
    body = {"resourceType": rtype, "id": rid, **resource}
    return Member(f"t|{key}", key, rtype, json.dumps(body), refs, None, scc)


# -- holding back what refers to a refused resource ---------------------------------


def test_a_member_referring_to_a_rejected_resource_is_blocked_with_the_chain() -> None:
    members = [
        member("DiagnosticReport/r", ref("result[0]", "Observation/ok"), ref("result[1]", "Observation/bad", "rejected", "422: error invalid: status missing")),
        member("Observation/fine", ref("subject", "Patient/p")),
    ]  # fmt: skip
    assert blocked_members(members) == {
        "t|DiagnosticReport/r": "blocked: result[1] -> Observation/bad (rejected: 422: error invalid: status missing)"
    }


def test_blocking_follows_references_inside_the_bundle_and_chains_through_blocked_ones() -> None:
    members = [
        member("Encounter/e", ref("serviceProvider", "Organization/o", "blocked", "blocked: endpoint[0] -> Endpoint/x (rejected: 400: bad)")),
        member("Condition/c", ref("encounter", "Encounter/e", "planned")),
        member("Observation/o", ref("hasMember[0]", "Observation/p", "planned")),
        member("Observation/p"),
    ]  # fmt: skip
    blocked = blocked_members(members)
    assert set(blocked) == {"t|Encounter/e", "t|Condition/c"}
    assert blocked["t|Condition/c"] == (
        "blocked: encounter -> Encounter/e (blocked: serviceProvider -> Organization/o "
        "(blocked: endpoint[0] -> Endpoint/x (rejected: 400: bad)))"
    )


def test_a_dropped_reference_blocks_nothing() -> None:
    members = [member("Observation/o", ref("subject", "Patient/bad", "rejected", "x", dropped=True))]
    assert blocked_members(members) == {}


def test_drop_reference_drops_exactly_the_references_to_refused_resources() -> None:
    members = [
        member("DiagnosticReport/r", ref("result[0]", "Observation/ok"), ref("result[1]", "Observation/bad", "rejected")),
        member("Observation/b", ref("subject", "Patient/p", "blocked")),
        member("Observation/c", ref("subject", "Patient/p")),
    ]  # fmt: skip
    kept, rows = without_held_back_references(members)
    assert rows == [
        {"uid": "t|DiagnosticReport/r", "path": "result[1]", "because": "rejected"},
        {"uid": "t|Observation/b", "path": "subject", "because": "blocked"},
    ]
    assert [[r["dropped"] for r in m.refs] for m in kept] == [[False, True], [True], [False]]
    assert [m.key for m in kept] == [m.key for m in members]


# -- isolating the refused resources of a refused transaction --------------------------


class RefusingTarget:
    """Refuses (``status``, with an OperationOutcome) every transaction holding a resource whose
    ``gender`` is ``bad``; creates everything else."""

    def __init__(self, status: int = 422) -> None:
        self.status = status
        self.sent: list[list[str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        bundle = json.loads(request.content)
        ids = [e["fullUrl"] for e in bundle["entry"]]
        self.sent.append(ids)
        bad = [e for e in bundle["entry"] if e["resource"].get("gender") == "bad"]
        assert all("ifNoneExist" in e["request"] for e in bundle["entry"]), (
            "every isolating send is conditional"
        )
        if bad:
            return outcome(self.status, f"{len(bad)} invalid: Patient.gender")
        return fhir(
            {
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [{"response": {"status": "201 Created", "location": f"Patient/n{i}/_history/1"}} for i, _ in enumerate(ids)],
            }
        )  # fmt: skip


def isolate(
    target: RefusingTarget, units: Sequence[Sequence[Entry]]
) -> tuple[list[str], list[tuple[list[str], str]]]:
    client = FhirClient(BASE, name="target", transport=httpx.MockTransport(target), max_wait=0.01)
    sender = Sender(client, KEY.fingerprint)
    first = [e for unit in units for e in unit]
    try:
        client.transaction(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [e.conditional_create() for e in first],
            },
            retry=False,
        )
    except FhirTerminalError as exc:
        refusal = exc
    else:
        raise AssertionError("the whole bundle should be refused")
    assert refused_for_content(refusal)
    accepted: list[str] = []
    rejected: list[tuple[list[str], str]] = []
    sender.isolate(
        units,
        refusal,
        accepted=lambda part, answer: accepted.extend(e.member.key for e in part),
        rejected=lambda unit, error: rejected.append(([e.member.key for e in unit], error.outcome or "")),
    )
    assert sender.isolation_sends == len(target.sent) - 1
    return accepted, rejected


def patients(n: int, bad: set[int]) -> list[Entry]:
    members = [member(f"Patient/p{i}", gender="bad" if i in bad else "female") for i in range(n)]
    return create_entries(members, key=KEY, source_base=SOURCE)


@pytest.mark.parametrize("bad_at", [0, 137, 249])
def test_one_refused_resource_among_250_costs_about_two_log2_n_sends(bad_at: int) -> None:
    target = RefusingTarget()
    entries = patients(250, {bad_at})
    accepted, rejected = isolate(target, [[e] for e in entries])
    assert rejected == [([f"Patient/p{bad_at}"], "error processing: 1 invalid: Patient.gender")]
    assert sorted(accepted) == sorted(f"Patient/p{i}" for i in range(250) if i != bad_at)
    assert len(target.sent) - 1 <= 2 * math.ceil(math.log2(250))


def test_several_refused_resources_are_each_isolated_and_nothing_is_sent_twice_once_accepted() -> None:
    target = RefusingTarget(status=400)
    bad = {3, 4, 90, 201}
    accepted, rejected = isolate(target, [[e] for e in patients(250, bad)])
    assert sorted(k for keys, _ in rejected for k in keys) == sorted(f"Patient/p{i}" for i in bad)
    assert len(accepted) == len(set(accepted)) == 246


def test_a_cycle_is_kept_whole_and_rejected_whole() -> None:
    target = RefusingTarget()
    entries = patients(10, {7})
    units = [[entries[0]], [entries[6], entries[7], entries[8]], [entries[1]], [entries[9]]]
    accepted, rejected = isolate(target, units)
    assert rejected == [
        (["Patient/p6", "Patient/p7", "Patient/p8"], "error processing: 1 invalid: Patient.gender")
    ]
    assert sorted(accepted) == ["Patient/p0", "Patient/p1", "Patient/p9"]
    cycle = {entries[i].bundle_entry["fullUrl"] for i in (6, 7, 8)}
    assert all(cycle <= set(sent) or cycle.isdisjoint(sent) for sent in target.sent), "a cycle was split"


@pytest.mark.parametrize(
    ("status", "isolated"),
    [
        (400, True),
        (409, True),
        (412, True),
        (413, True),
        (422, True),
        (401, False),
        (403, False),
        (404, False),
        (500, False),
    ],
)
def test_only_refusals_of_the_content_are_isolated(status: int, isolated: bool) -> None:
    error = FhirTerminalError("refused", status=status)
    assert refused_for_content(error) is isolated


def test_a_failure_that_is_not_about_the_content_stops_the_isolation() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return outcome(422, "bad") if len(calls) == 1 else outcome(403, "forbidden")

    client = FhirClient(BASE, name="target", transport=httpx.MockTransport(handler), max_wait=0.01)
    entries = patients(4, set())
    with pytest.raises(FhirTerminalError, match="403"):
        Sender(client, KEY.fingerprint).isolate(
            [[e] for e in entries], FhirTerminalError("refused", status=422),
            accepted=lambda part, answer: None, rejected=lambda unit, error: None,
        )  # fmt: skip
