"""Table-driven tests of the reference walker, classifier and rewriter."""

from __future__ import annotations

import pytest

from fhirgraph.references import (
    ReferenceKind,
    classify,
    find_references,
    rewrite,
    strip_source_metadata,
)

SOURCE = "http://127.0.0.1:8081/fhir"


@pytest.mark.parametrize(
    ("reference", "kind", "key", "version"),
    [
        ("Patient/123", ReferenceKind.RELATIVE, "Patient/123", None),
        ("Patient/a-b.C", ReferenceKind.RELATIVE, "Patient/a-b.C", None),
        ("Patient/123/_history/4", ReferenceKind.VERSIONED, "Patient/123", "4"),
        ("http://127.0.0.1:8081/fhir/Patient/9", ReferenceKind.ABSOLUTE, "Patient/9", None),
        ("HTTP://127.0.0.1:8081/fhir/Patient/9", ReferenceKind.ABSOLUTE, "Patient/9", None),
        ("http://127.0.0.1:8081/fhir/Encounter/7/_history/2", ReferenceKind.ABSOLUTE, "Encounter/7", "2"),
        ("#med1", ReferenceKind.CONTAINED, None, None),
        ("urn:uuid:2b1149df-e8d7-437a-b676-011dc0551dde", ReferenceKind.URN, None, None),
        ("urn:oid:1.2.3", ReferenceKind.URN, None, None),
        ("Patient?identifier=http://x|123", ReferenceKind.CONDITIONAL, None, None),
        ("http://other.example.org/fhir/Patient/1", ReferenceKind.FOREIGN, None, None),
        ("http://127.0.0.1:8082/fhir/Patient/1", ReferenceKind.FOREIGN, None, None),
        ("Patients/1", ReferenceKind.INVALID, None, None),
        ("Patient/has space", ReferenceKind.INVALID, None, None),
        ("123", ReferenceKind.INVALID, None, None),
        ("", ReferenceKind.INVALID, None, None),
        ("Patient/" + "x" * 65, ReferenceKind.INVALID, None, None),
        ("ftp://host/Patient/1", ReferenceKind.INVALID, None, None),
        ("http://127.0.0.1:8081/fhir/metadata", ReferenceKind.INVALID, None, None),
        ("Foo?x=1", ReferenceKind.INVALID, None, None),
    ],
)
def test_classify(reference: str, kind: ReferenceKind, key: str | None, version: str | None) -> None:
    found = classify(reference, SOURCE)
    assert found.kind is kind
    assert found.resource_key == key
    assert found.version == version


def test_classify_without_source_base_treats_every_url_as_foreign() -> None:
    assert classify("http://127.0.0.1:8081/fhir/Patient/9").kind is ReferenceKind.FOREIGN


def test_invalid_reference_says_why() -> None:
    assert "unknown resource type Patients" in classify("Patients/1").detail
    assert "bare id" in classify("123").detail


ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "e1",
    "meta": {"versionId": "3", "lastUpdated": "2025-01-01T00:00:00Z", "source": "#x", "tag": [{"code": "t"}]},
    "subject": {"reference": "Patient/p1", "display": "Ann"},
    "participant": [
        {"individual": {"reference": "Practitioner/d1"}},
        {"individual": {"reference": "Practitioner/d2"}, "type": [{"text": "x"}]},
    ],
    "diagnosis": [{"condition": {"reference": "Condition/c1"}, "rank": 1}],
    "partOf": {"reference": "Encounter/e1"},
    "extension": [{"url": "http://ext", "valueReference": {"reference": "Location/l1"}}],
    "serviceProvider": {"identifier": {"system": "s", "value": "v"}},
    "contained": [
        {"resourceType": "Medication", "id": "m1", "manufacturer": {"reference": "Organization/o1"}},
    ],
    "basedOn": [{"reference": "#m1"}, {"display": "display only"}],
    "account": [{"reference": "http://other.example.org/fhir/Account/1"}],
}


def test_walker_finds_every_reference_with_its_path() -> None:
    found = {f.path: f.reference.reference for f in find_references(ENCOUNTER, SOURCE)}
    assert found == {
        "subject": "Patient/p1",
        "participant[0].individual": "Practitioner/d1",
        "participant[1].individual": "Practitioner/d2",
        "diagnosis[0].condition": "Condition/c1",
        "partOf": "Encounter/e1",
        "extension[0].valueReference": "Location/l1",
        "contained[0].manufacturer": "Organization/o1",
        "basedOn[0]": "#m1",
        "account[0]": "http://other.example.org/fhir/Account/1",
    }


def test_identifier_and_display_only_references_are_not_edges() -> None:
    paths = {f.path for f in find_references(ENCOUNTER)}
    assert "serviceProvider" not in paths
    assert "basedOn[1]" not in paths


def test_rewrite_replaces_by_path_and_leaves_the_input_alone() -> None:
    result = rewrite(
        ENCOUNTER,
        {"subject": "Patient/900", "participant[1].individual": "urn:uuid:abc", "partOf": "Encounter/5"},
    )
    assert result["subject"] == {"reference": "Patient/900", "display": "Ann"}
    assert result["participant"][1]["individual"]["reference"] == "urn:uuid:abc"
    assert result["participant"][0]["individual"]["reference"] == "Practitioner/d1"
    assert result["partOf"]["reference"] == "Encounter/5"
    assert ENCOUNTER["subject"]["reference"] == "Patient/p1"


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("subject", lambda r: r["subject"] == {"display": "Ann"}),
        ("partOf", lambda r: "partOf" not in r),
        (
            "participant[0].individual",
            lambda r: [p["individual"]["reference"] for p in r["participant"]] == ["Practitioner/d2"],
        ),
        ("diagnosis[0].condition", lambda r: r["diagnosis"] == [{"rank": 1}]),
        ("account[0]", lambda r: "account" not in r),
        # an extension without its value is empty (FHIR ext-1): it goes, and the list with it
        ("extension[0].valueReference", lambda r: "extension" not in r),
    ],
)
def test_rewrite_removes_references(path: str, check: object) -> None:
    result = rewrite(ENCOUNTER, {path: None})
    assert callable(check) and check(result), result


def test_removing_two_items_of_one_list_keeps_the_rest() -> None:
    resource = {
        "resourceType": "Group",
        "member": [{"entity": {"reference": f"Patient/{i}"}} for i in range(4)],
    }
    result = rewrite(resource, {"member[0].entity": None, "member[2].entity": None})
    assert result["member"] == [
        {"entity": {"reference": "Patient/1"}},
        {"entity": {"reference": "Patient/3"}},
    ]


def test_strip_source_metadata_keeps_tags_and_profiles() -> None:
    stripped = strip_source_metadata(ENCOUNTER)
    assert "id" not in stripped
    assert stripped["meta"] == {"tag": [{"code": "t"}]}
    assert stripped["contained"][0]["id"] == "m1"
    assert "meta" not in strip_source_metadata(
        {"resourceType": "Patient", "id": "1", "meta": {"versionId": "1"}}
    )
