"""The bundle builder (fhirgraph.bundle): a bundle's transaction from its staged members, pure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from fhirgraph.bundle import (
    Entry,
    Member,
    Phase,
    StagedReference,
    build_entry,
    create_entries,
    parse_location,
    target_resource,
    transaction,
    update_entries,
)
from fhirgraph.errors import FhirError, TransferStateError
from fhirgraph.linkage import KEY_SYSTEM, LINKAGE_SYSTEM, LinkageKey
from fhirgraph.staging import entry_full_url
from fhirgraph.verify import comparable_source, comparable_target

KEY = LinkageKey(secret=b"k" * 32, origin="test")
SOURCE = "http://source.test/fhir"
JSON = dict[str, Any]


def ref(
    path: str,
    key: str,
    *,
    kind: str = "relative",
    target_id: str | None = None,
    target_version: str | None = None,
    deferred: bool = False,
    dropped: bool = False,
    status: str = "planned",
) -> StagedReference:
    """A reference at ``path`` to the staged resource ``key`` (``Type/id``), as the load reads it."""
    return StagedReference(
        path=path,
        kind=kind,
        deferred=deferred,
        dropped=dropped,
        uid=f"t|{key}",
        type=key.split("/")[0],
        target_id=target_id,
        target_version=target_version,
        bundle=None,
        status=status,
    )


def member(key: str, resource: JSON, *refs: StagedReference, target_id: str | None = None) -> Member:
    rtype, rid = key.split("/")
    return Member(
        f"t|{key}", key, rtype, json.dumps({"resourceType": rtype, "id": rid, **resource}), refs, target_id
    )


ENCOUNTER = member("Encounter/e1", {"status": "finished"})
OBSERVATION = member(
    "Observation/o1",
    {
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/e1"},
        "performer": [
            {"reference": "Practitioner/d1", "display": "Dr. One"},
            {"reference": "Practitioner/d2"},
        ],
    },
    ref("subject", "Patient/p1", target_id="900"),
    ref("encounter", "Encounter/e1"),
    ref("performer[0]", "Practitioner/d1", dropped=True, status="dangling"),
    ref("performer[1]", "Practitioner/d2", target_id="901"),
)


def test_create_entries_post_each_member_under_its_urn_uuid() -> None:
    built = create_entries([ENCOUNTER, OBSERVATION], key=KEY, source_base=SOURCE)
    assert [e.member for e in built] == [ENCOUNTER, OBSERVATION]
    for entry in built:
        assert entry.linkage_hash == KEY.hash(SOURCE, entry.member.key)
        assert entry.resource_type == entry.member.type
        assert entry.pending_update is False
        assert entry.bundle_entry["fullUrl"] == entry_full_url(entry.member.uid)
        assert entry.bundle_entry["request"] == {"method": "POST", "url": entry.member.type}
        resource = entry.bundle_entry["resource"]
        assert "id" not in resource
        assert resource["meta"]["tag"] == [
            {"system": LINKAGE_SYSTEM, "code": entry.linkage_hash},
            {"system": KEY_SYSTEM, "code": KEY.fingerprint},
        ]
    assert built[1].bundle_entry["resource"] == {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": "Patient/900"},  # created by an earlier bundle: its target id
        "encounter": {"reference": entry_full_url("t|Encounter/e1")},  # in this bundle: its urn:uuid
        "performer": [{"display": "Dr. One"}, {"reference": "Practitioner/901"}],  # dropped: display kept
        "meta": built[1].bundle_entry["resource"]["meta"],
    }


@dataclass(frozen=True)
class Case:
    name: str
    reference: StagedReference
    #: where the reference points in the create, with the other member ``Encounter/e1`` in the bundle
    create: str | None
    #: whether the create leaves out a deferred reference
    pending_update: bool
    #: where it points in the update (no bundle: every target id is known)
    update: str | None


CASES = [
    Case(
        "in the bundle",
        ref("encounter", "Encounter/e1", target_id="700"),
        entry_full_url("t|Encounter/e1"),
        False,
        "Encounter/700",
    ),
    Case(
        "an earlier bundle",
        ref("encounter", "Encounter/e2", target_id="701"),
        "Encounter/701",
        False,
        "Encounter/701",
    ),
    Case(
        "versioned, to the version written",
        ref("encounter", "Encounter/e2", kind="versioned", target_id="701", target_version="3"),
        "Encounter/701/_history/3",
        False,
        "Encounter/701/_history/3",
    ),
    Case(
        "versioned, no version known",
        ref("encounter", "Encounter/e2", kind="versioned", target_id="701"),
        "Encounter/701",
        False,
        "Encounter/701",
    ),
    Case(
        "relative, never versioned",
        ref("encounter", "Encounter/e2", target_id="701", target_version="3"),
        "Encounter/701",
        False,
        "Encounter/701",
    ),
    Case(
        "deferred, in the bundle",
        ref("encounter", "Encounter/e1", target_id="700", deferred=True),
        None,
        True,
        "Encounter/700",
    ),
    Case(
        "deferred, an earlier bundle",
        ref("encounter", "Encounter/e2", target_id="701", deferred=True),
        None,
        True,
        "Encounter/701",
    ),
    Case("dropped", ref("encounter", "Encounter/e2", dropped=True, status="dangling"), None, False, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("phase", ["create", "update"])
def test_where_a_reference_points(case: Case, phase: Phase) -> None:
    condition = member(
        "Condition/c1", {"encounter": {"reference": "Encounter/x"}}, case.reference, target_id="800"
    )
    in_bundle = {m.uid: entry_full_url(m.uid) for m in (ENCOUNTER, condition)} if phase == "create" else {}
    entry = build_entry(condition, key=KEY, source_base=SOURCE, in_bundle=in_bundle, phase=phase)
    expected = case.create if phase == "create" else case.update
    resource = entry.bundle_entry["resource"]
    if expected is None:
        assert "encounter" not in resource  # a reference object left empty goes
    else:
        assert resource["encounter"] == {"reference": expected}
    assert entry.pending_update is (case.pending_update and phase == "create")


def test_update_entries_put_each_member_to_its_target_id() -> None:
    patient = member(
        "Patient/p1",
        {"link": [{"other": {"reference": "Patient/p2"}, "type": "seealso"}]},
        ref("link[0].other", "Patient/p2", target_id="901", deferred=True),
        target_id="900",
    )
    [create] = create_entries([patient], key=KEY, source_base=SOURCE)
    [update] = update_entries([patient], key=KEY, source_base=SOURCE)
    assert create.pending_update is True
    assert create.bundle_entry["resource"]["link"] == [{"type": "seealso"}]
    assert update == Entry(
        patient,
        KEY.hash(SOURCE, "Patient/p1"),
        False,
        {
            "resource": {
                "resourceType": "Patient",
                "link": [{"other": {"reference": "Patient/901"}, "type": "seealso"}],
                "meta": {
                    "tag": [
                        {"system": LINKAGE_SYSTEM, "code": KEY.hash(SOURCE, "Patient/p1")},
                        {"system": KEY_SYSTEM, "code": KEY.fingerprint},
                    ]
                },
                "id": "900",
            },
            "request": {"method": "PUT", "url": "Patient/900"},
        },
    )
    # the update carries the same copy as the create, with the deferred reference back
    same = {k: v for k, v in update.bundle_entry["resource"].items() if k not in ("id", "link")}
    assert same == {k: v for k, v in create.bundle_entry["resource"].items() if k != "link"}


@pytest.mark.parametrize("phase", ["create", "update"])
def test_a_reference_to_a_resource_not_on_the_target_stops_the_build(phase: Phase) -> None:
    observation = member(
        "Observation/o1",
        {"subject": {"reference": "Patient/p9"}},
        ref("subject", "Patient/p9", status="skipped"),
    )
    with pytest.raises(
        TransferStateError,
        match=r"Observation/o1 subject refers to Patient/p9, which is not on the target \(status skipped\); run `fhirgraph plan` again",
    ):
        build_entry(observation, key=KEY, source_base=SOURCE, in_bundle={}, phase=phase)


def test_a_conditional_create_matches_on_the_linkage_tag_and_leaves_the_entry_as_built() -> None:
    [entry] = create_entries([ENCOUNTER], key=KEY, source_base=SOURCE)
    built = json.loads(json.dumps(entry.bundle_entry))
    conditional = entry.conditional_create()
    assert conditional == {
        **built,
        "request": {
            "method": "POST",
            "url": "Encounter",
            "ifNoneExist": f"_tag={LINKAGE_SYSTEM}|{entry.linkage_hash}",
        },
    }
    assert entry.bundle_entry == built


def test_an_update_cannot_be_conditional() -> None:
    [entry] = update_entries([member("Encounter/e1", {}, target_id="700")], key=KEY, source_base=SOURCE)
    with pytest.raises(ValueError, match="PUT"):
        entry.conditional_create()


def test_a_transaction_holds_the_entries_in_order() -> None:
    built = create_entries([ENCOUNTER, OBSERVATION], key=KEY, source_base=SOURCE)
    assert transaction(e.bundle_entry for e in built) == {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [built[0].bundle_entry, built[1].bundle_entry],
    }


@pytest.mark.parametrize(
    ("location", "parsed"),
    [
        ("Patient/12/_history/1", ("Patient", "12", "1")),
        ("Patient/12", ("Patient", "12", None)),
        ("Patient/12/", ("Patient", "12", None)),
        ("http://target.test/fhir/Observation/a-b.c/_history/7", ("Observation", "a-b.c", "7")),
        ("Patient/12/_history/1?_format=json", ("Patient", "12", "1")),
    ],
)
def test_a_location_gives_type_id_and_version(location: str, parsed: tuple[str, str, str | None]) -> None:
    assert parse_location(location) == parsed


@pytest.mark.parametrize("location", ["", "Patient", "patient/12", "Patient/" + "x" * 65])
def test_an_unreadable_location_is_an_error(location: str) -> None:
    with pytest.raises(FhirError, match="unreadable location"):
        parse_location(location)


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
