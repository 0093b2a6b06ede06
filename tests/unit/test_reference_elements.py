"""Table-driven tests of canonicals and Attachment urls as references (typed by the R4 definitions)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhirgraph import r4_elements
from fhirgraph.references import (
    FoundReference,
    ReferenceKind,
    classify,
    find_references,
    rewrite,
    walk,
)

SOURCE = "http://127.0.0.1:8081/fhir"
RELATIVE, ABSOLUTE, CONTAINED, FOREIGN = (
    ReferenceKind.RELATIVE,
    ReferenceKind.ABSOLUTE,
    ReferenceKind.CONTAINED,
    ReferenceKind.FOREIGN,
)


@pytest.mark.parametrize(
    ("value", "kind", "key"),
    [
        ("Library/abc", RELATIVE, "Library/abc"),
        ("ValueSet/vs-1.2", RELATIVE, "ValueSet/vs-1.2"),
        ("http://127.0.0.1:8081/fhir/Library/abc", ABSOLUTE, "Library/abc"),
        ("HTTP://127.0.0.1:8081/fhir/Questionnaire/q1", ABSOLUTE, "Questionnaire/q1"),
        ("#vs1", CONTAINED, None),
        ("Library/abc|1.0", FOREIGN, None),
        ("http://127.0.0.1:8081/fhir/Library/abc|1.0", FOREIGN, None),
        ("Library/abc/_history/2", FOREIGN, None),
        ("http://127.0.0.1:8081/fhir/Library/abc/_history/2", FOREIGN, None),
        ("http://other.example.org/fhir/Library/abc", FOREIGN, None),
        ("http://127.0.0.1:8082/fhir/Library/abc", FOREIGN, None),
        ("http://hl7.org/fhir/StructureDefinition/Patient", FOREIGN, None),
        ("http://hl7.org/fhir/ValueSet/example|4.0.1", FOREIGN, None),
        ("http://127.0.0.1:8081/fhir/metadata", FOREIGN, None),
        ("urn:uuid:2b1149df-e8d7-437a-b676-011dc0551dde", FOREIGN, None),
        ("urn:oid:1.2.3", FOREIGN, None),
        ("Library?url=http://x", FOREIGN, None),
        ("Libraries/abc", FOREIGN, None),
        ("abc", FOREIGN, None),
        ("", FOREIGN, None),
    ],
)
def test_classify_canonical(value: str, kind: ReferenceKind, key: str | None) -> None:
    found = classify(value, SOURCE, element="canonical")
    assert (found.kind, found.resource_key) == (kind, key)
    assert found.reference == value


@pytest.mark.parametrize(
    ("value", "kind", "key"),
    [
        ("Binary/f006", RELATIVE, "Binary/f006"),
        ("http://127.0.0.1:8081/fhir/Binary/f006", ABSOLUTE, "Binary/f006"),
        ("http://127.0.0.1:8081/fhir/Binary/f006/", ABSOLUTE, "Binary/f006"),
        ("#bin1", CONTAINED, None),
        ("Binary/f006/_history/1", FOREIGN, None),
        ("http://other.example.org/fhir/Binary/f006", FOREIGN, None),
        ("https://example.org/files/report.pdf", FOREIGN, None),
        ("http://127.0.0.1:8081/fhir/Patient/1", FOREIGN, None),
        ("Patient/1", FOREIGN, None),
        ("DocumentReference/d1", FOREIGN, None),
        ("report.pdf", FOREIGN, None),
        ("urn:uuid:2b1149df-e8d7-437a-b676-011dc0551dde", FOREIGN, None),
    ],
)
def test_classify_attachment_url(value: str, kind: ReferenceKind, key: str | None) -> None:
    found = classify(value, SOURCE, element="attachment")
    assert (found.kind, found.resource_key) == (kind, key)


def test_without_a_source_base_only_relative_canonicals_and_urls_resolve() -> None:
    assert classify("http://127.0.0.1:8081/fhir/Library/a", element="canonical").kind is FOREIGN
    assert classify("http://127.0.0.1:8081/fhir/Binary/b", element="attachment").kind is FOREIGN
    assert classify("Library/a", element="canonical").resource_key == "Library/a"
    assert classify("Binary/b", element="attachment").resource_key == "Binary/b"


def test_foreign_canonicals_and_urls_say_why() -> None:
    assert "version" in classify("Library/abc|1.0", SOURCE, element="canonical").detail
    assert "source base" in classify("http://hl7.org/fhir/x", SOURCE, element="canonical").detail
    assert "Binary" in classify("Patient/1", SOURCE, element="attachment").detail


# -- where canonicals and Attachments are found: (resource, {path: (element, value)}) --------

FOUND_CASES: list[tuple[str, dict[str, Any], dict[str, tuple[str, str]]]] = [
    (
        "ActivityDefinition.library (list), relatedArtifact.resource, transform",
        {
            "resourceType": "ActivityDefinition",
            "library": ["Library/a", "Library/b"],
            "relatedArtifact": [
                {"type": "depends-on", "resource": "Library/c"},
                {"type": "documentation", "document": {"url": "Binary/doc", "title": "t"}},
            ],
            "transform": "StructureMap/m",
        },
        {
            "library[0]": ("canonical", "Library/a"),
            "library[1]": ("canonical", "Library/b"),
            "relatedArtifact[0].resource": ("canonical", "Library/c"),
            "relatedArtifact[1].document.url": ("attachment", "Binary/doc"),
            "transform": ("canonical", "StructureMap/m"),
        },
    ),
    (
        "Procedure.instantiatesCanonical and a Reference next to it",
        {
            "resourceType": "Procedure",
            "instantiatesCanonical": ["PlanDefinition/p1"],
            "instantiatesUri": ["http://example.org/protocol"],
            "subject": {"reference": "Patient/1"},
        },
        {
            "instantiatesCanonical[0]": ("canonical", "PlanDefinition/p1"),
            "subject": ("reference", "Patient/1"),
        },
    ),
    (
        "PlanDefinition.action.definitionCanonical, nested action.action, documentation, trigger, input",
        {
            "resourceType": "PlanDefinition",
            "library": ["Library/l"],
            "action": [
                {
                    "definitionCanonical": "ActivityDefinition/a1",
                    "documentation": [{"type": "citation", "resource": "Library/doc"}],
                    "trigger": [
                        {
                            "type": "data-added",
                            "data": [{"type": "Observation", "profile": ["StructureDefinition/sd"]}],
                        }
                    ],
                    "input": [{"type": "Patient", "codeFilter": [{"valueSet": "ValueSet/vs"}]}],
                    "action": [{"definitionCanonical": "Questionnaire/q"}],
                },
                {"definitionUri": "http://example.org/not-a-canonical"},
            ],
        },
        {
            "library[0]": ("canonical", "Library/l"),
            "action[0].definitionCanonical": ("canonical", "ActivityDefinition/a1"),
            "action[0].documentation[0].resource": ("canonical", "Library/doc"),
            "action[0].trigger[0].data[0].profile[0]": ("canonical", "StructureDefinition/sd"),
            "action[0].input[0].codeFilter[0].valueSet": ("canonical", "ValueSet/vs"),
            "action[0].action[0].definitionCanonical": ("canonical", "Questionnaire/q"),
        },
    ),
    (
        "QuestionnaireResponse.questionnaire (single) and answer.valueAttachment in nested items",
        {
            "resourceType": "QuestionnaireResponse",
            "questionnaire": "Questionnaire/q1",
            "item": [
                {
                    "linkId": "1",
                    "answer": [
                        {
                            "valueAttachment": {"url": "Binary/scan", "contentType": "image/png"},
                            "item": [{"linkId": "1.1", "answer": [{"valueAttachment": {"url": "Binary/x"}}]}],
                        }
                    ],
                }
            ],
        },
        {
            "questionnaire": ("canonical", "Questionnaire/q1"),
            "item[0].answer[0].valueAttachment.url": ("attachment", "Binary/scan"),
            "item[0].answer[0].item[0].answer[0].valueAttachment.url": ("attachment", "Binary/x"),
        },
    ),
    (
        "CarePlan.instantiatesCanonical, also in activity.detail",
        {
            "resourceType": "CarePlan",
            "instantiatesCanonical": ["PlanDefinition/p"],
            "activity": [{"detail": {"instantiatesCanonical": ["ActivityDefinition/a"], "status": "x"}}],
        },
        {
            "instantiatesCanonical[0]": ("canonical", "PlanDefinition/p"),
            "activity[0].detail.instantiatesCanonical[0]": ("canonical", "ActivityDefinition/a"),
        },
    ),
    (
        "Measure.library",
        {"resourceType": "Measure", "library": ["Library/m", "http://127.0.0.1:8081/fhir/Library/n"]},
        {"library[0]": ("canonical", "Library/m"), "library[1]": ("canonical", SOURCE + "/Library/n")},
    ),
    (
        "extension valueCanonical / valueAttachment at any depth, modifierExtension, primitive _element",
        {
            "resourceType": "Patient",
            "extension": [
                {"url": "http://e/1", "valueCanonical": "Questionnaire/q"},
                {"url": "http://e/2", "extension": [{"url": "inner", "valueCanonical": "Library/inner"}]},
                {"url": "http://e/3", "valueAttachment": {"url": "Binary/b1"}},
                {"url": "http://e/4", "valueUri": "Library/not-a-canonical"},
            ],
            "modifierExtension": [{"url": "http://e/5", "valueCanonical": "PlanDefinition/m"}],
            "name": [{"family": "F", "extension": [{"url": "http://e/6", "valueCanonical": "Library/n"}]}],
            "_birthDate": {"extension": [{"url": "http://e/7", "valueCanonical": "Library/bd"}]},
        },
        {
            "extension[0].valueCanonical": ("canonical", "Questionnaire/q"),
            "extension[1].extension[0].valueCanonical": ("canonical", "Library/inner"),
            "extension[2].valueAttachment.url": ("attachment", "Binary/b1"),
            "modifierExtension[0].valueCanonical": ("canonical", "PlanDefinition/m"),
            "name[0].extension[0].valueCanonical": ("canonical", "Library/n"),
            "_birthDate.extension[0].valueCanonical": ("canonical", "Library/bd"),
        },
    ),
    (
        "contained resources use their own resourceType's table; meta.profile is a canonical",
        {
            "resourceType": "Questionnaire",
            "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/cqf-questionnaire"]},
            "contained": [
                {
                    "resourceType": "ValueSet",
                    "id": "vs1",
                    "compose": {"include": [{"valueSet": ["ValueSet/x"]}]},
                },
                {"resourceType": "ActivityDefinition", "id": "ad", "library": ["Library/c"]},
                {"resourceType": "QuestionnaireResponse", "id": "qr", "questionnaire": "Questionnaire/q"},
            ],
            "item": [
                {
                    "linkId": "1",
                    "answerValueSet": "#vs1",
                    "item": [{"linkId": "2", "answerValueSet": "ValueSet/y"}],
                }
            ],
            # a Questionnaire has no library element: not a canonical here
            "library": ["Library/ignored"],
        },
        {
            "meta.profile[0]": ("canonical", "http://hl7.org/fhir/StructureDefinition/cqf-questionnaire"),
            "contained[0].compose.include[0].valueSet[0]": ("canonical", "ValueSet/x"),
            "contained[1].library[0]": ("canonical", "Library/c"),
            "contained[2].questionnaire": ("canonical", "Questionnaire/q"),
            "item[0].answerValueSet": ("canonical", "#vs1"),
            "item[0].item[0].answerValueSet": ("canonical", "ValueSet/y"),
        },
    ),
    (
        "DocumentReference.content.attachment: relative, absolute, foreign, inline data",
        {
            "resourceType": "DocumentReference",
            "subject": {"reference": "Patient/1"},
            "content": [
                {"attachment": {"contentType": "application/pdf", "url": "Binary/f006"}},
                {"attachment": {"url": "http://127.0.0.1:8081/fhir/Binary/f007", "title": "abs"}},
                {"attachment": {"url": "http://other.example.org/fhir/Binary/f008"}},
                {"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}},
            ],
        },
        {
            "subject": ("reference", "Patient/1"),
            "content[0].attachment.url": ("attachment", "Binary/f006"),
            "content[1].attachment.url": ("attachment", SOURCE + "/Binary/f007"),
            "content[2].attachment.url": ("attachment", "http://other.example.org/fhir/Binary/f008"),
        },
    ),
    (
        "Patient.photo, DiagnosticReport.presentedForm, Media.content (url is typed only on an Attachment)",
        {
            "resourceType": "DiagnosticReport",
            "presentedForm": [{"url": "Binary/r1"}],
            "code": {"text": "x", "url": "Binary/not-an-attachment"},
            "contained": [
                {"resourceType": "Patient", "id": "p", "photo": [{"url": "Binary/ph"}]},
                {"resourceType": "Media", "id": "m", "content": {"url": "Binary/md"}},
            ],
        },
        {
            "presentedForm[0].url": ("attachment", "Binary/r1"),
            "contained[0].photo[0].url": ("attachment", "Binary/ph"),
            "contained[1].content.url": ("attachment", "Binary/md"),
        },
    ),
    (
        "resources inside a Bundle and a Parameters are typed by their resourceType",
        {
            "resourceType": "Bundle",
            "entry": [
                {"resource": {"resourceType": "Measure", "library": ["Library/b"]}},
                {
                    "resource": {
                        "resourceType": "Parameters",
                        "parameter": [
                            {"name": "a", "valueCanonical": "Library/p"},
                            {"name": "b", "part": [{"name": "c", "valueAttachment": {"url": "Binary/q"}}]},
                            {
                                "name": "r",
                                "resource": {"resourceType": "Procedure", "instantiatesCanonical": ["X/1"]},
                            },
                        ],
                    }
                },
            ],
        },
        {
            "entry[0].resource.library[0]": ("canonical", "Library/b"),
            "entry[1].resource.parameter[0].valueCanonical": ("canonical", "Library/p"),
            "entry[1].resource.parameter[1].part[0].valueAttachment.url": ("attachment", "Binary/q"),
            "entry[1].resource.parameter[2].resource.instantiatesCanonical[0]": ("canonical", "X/1"),
        },
    ),
]


@pytest.mark.parametrize(
    ("resource", "expected"), [case[1:] for case in FOUND_CASES], ids=[c[0] for c in FOUND_CASES]
)
def test_finds_canonicals_and_attachment_urls_with_their_paths(
    resource: dict[str, Any], expected: dict[str, tuple[str, str]]
) -> None:
    found = {f.path: (f.element, f.reference.reference) for f in find_references(resource, SOURCE)}
    assert found == expected


def test_canonicals_classify_against_the_source_base() -> None:
    resource = {
        "resourceType": "Measure",
        "library": [
            "Library/a",
            "http://127.0.0.1:8081/fhir/Library/b",
            "http://other.example.org/fhir/Library/c",
            "Library/d|1.0",
            "http://hl7.org/fhir/Library/e",
        ],
    }
    found = [(f.reference.kind, f.reference.resource_key) for f in find_references(resource, SOURCE)]
    assert found == [
        (RELATIVE, "Library/a"),
        (ABSOLUTE, "Library/b"),
        (FOREIGN, None),
        (FOREIGN, None),
        (FOREIGN, None),
    ]


def test_a_reference_object_where_a_canonical_belongs_is_still_a_reference() -> None:
    resource = {"resourceType": "Measure", "library": [{"reference": "Library/x"}, "Library/y"]}
    found = [(f.path, f.element) for f in find_references(resource)]
    assert found == [("library[0]", "reference"), ("library[1]", "canonical")]


def test_walk_still_yields_reference_objects_only() -> None:
    resource = {
        "resourceType": "Procedure",
        "instantiatesCanonical": ["PlanDefinition/p"],
        "subject": {"reference": "Patient/1"},
    }
    assert [path for path, _ in walk(resource)] == ["subject"]


def test_found_reference_defaults_to_a_reference_element() -> None:
    assert FoundReference("subject", classify("Patient/1")).element == "reference"


# -- rewriting -----------------------------------------------------------------------------

ACTIVITY = {
    "resourceType": "ActivityDefinition",
    "library": ["Library/a", "Library/b", "Library/c|2"],
    "_library": [None, {"extension": [{"url": "http://e", "valueString": "about b"}]}, None],
    "relatedArtifact": [{"type": "depends-on", "resource": "Library/d", "display": "D"}],
    "transform": "StructureMap/m",
    "extension": [{"url": "http://e", "valueCanonical": "Questionnaire/q"}],
}

EXTENDED = {
    "resourceType": "ActivityDefinition",
    "extension": [
        {"url": "http://e/simple", "valueCanonical": "Library/a"},
        {"url": "http://e/complex", "extension": [{"url": "a", "valueCanonical": "Library/b"}]},
        {
            "url": "http://e/complex2",
            "extension": [{"url": "a", "valueCanonical": "Library/c"}, {"url": "b", "valueString": "kept"}],
        },
        {"url": "http://e/ref", "valueReference": {"reference": "Library/d", "display": "D"}},
        {"id": "x", "url": "http://e/ref2", "valueReference": {"reference": "Library/e"}},
    ],
    "modifierExtension": [{"url": "http://e/mod", "valueCanonical": "Library/f"}],
}

DOCUMENT = {
    "resourceType": "DocumentReference",
    "content": [
        {"attachment": {"contentType": "application/pdf", "url": "Binary/f006", "title": "T"}},
        {"attachment": {"url": "Binary/f007"}, "format": {"code": "x"}},
        {"attachment": {"url": "Binary/f008"}},
    ],
}


@pytest.mark.parametrize(
    ("resource", "rewrites", "check"),
    [
        (ACTIVITY, {"library[0]": "Library/900"}, lambda r: r["library"][0] == "Library/900"),
        (ACTIVITY, {"library[1]": "urn:uuid:abc"}, lambda r: r["library"][1] == "urn:uuid:abc"),
        (ACTIVITY, {"transform": "StructureMap/9"}, lambda r: r["transform"] == "StructureMap/9"),
        (
            ACTIVITY,
            {"relatedArtifact[0].resource": "Library/7"},
            lambda r: (
                r["relatedArtifact"] == [{"type": "depends-on", "resource": "Library/7", "display": "D"}]
            ),
        ),
        (
            ACTIVITY,
            {"extension[0].valueCanonical": "Questionnaire/5"},
            lambda r: r["extension"][0]["valueCanonical"] == "Questionnaire/5",
        ),
        (
            DOCUMENT,
            {"content[0].attachment.url": "Binary/1"},
            lambda r: (
                r["content"][0]["attachment"]
                == {"contentType": "application/pdf", "url": "Binary/1", "title": "T"}
            ),
        ),
    ],
)
def test_rewrite_replaces_canonicals_and_urls_by_path(
    resource: dict[str, Any], rewrites: dict[str, str | None], check: Any
) -> None:
    before = repr(resource)
    result = rewrite(resource, rewrites)
    assert check(result), result
    assert repr(resource) == before  # the input is left alone
    parsed = json.loads(json.dumps(resource))
    changed = rewrite(parsed, rewrites, in_place=True)  # what the load does with a staged resource
    assert changed is parsed and changed == result


@pytest.mark.parametrize(
    ("resource", "removed", "check"),
    [
        # canonical in a list: the string goes, its _library entry too (lists stay aligned)
        (
            ACTIVITY,
            ["library[1]"],
            lambda r: r["library"] == ["Library/a", "Library/c|2"] and "_library" not in r,
        ),
        (
            ACTIVITY,
            ["library[0]"],
            lambda r: r["library"] == ["Library/b", "Library/c|2"] and r["_library"][0] is not None,
        ),
        (
            ACTIVITY,
            ["library[0]", "library[2]"],
            lambda r: r["library"] == ["Library/b"] and len(r["_library"]) == 1,
        ),
        # every item removed: the list goes
        (
            ACTIVITY,
            ["library[0]", "library[1]", "library[2]"],
            lambda r: "library" not in r and "_library" not in r,
        ),
        (ACTIVITY, ["transform"], lambda r: "transform" not in r and r["library"] == ACTIVITY["library"]),
        (
            ACTIVITY,
            ["relatedArtifact[0].resource"],
            lambda r: r["relatedArtifact"] == [{"type": "depends-on", "display": "D"}],
        ),
        # an extension without its value is empty (FHIR ext-1): it goes, and the list with it
        (ACTIVITY, ["extension[0].valueCanonical"], lambda r: "extension" not in r),
        (
            EXTENDED,
            ["extension[0].valueCanonical"],
            lambda r: (
                r["extension"] == EXTENDED["extension"][1:]
                and r["modifierExtension"] == EXTENDED["modifierExtension"]
            ),
        ),
        # a complex extension goes when its last part goes; one with parts left stays
        (
            EXTENDED,
            ["extension[1].extension[0].valueCanonical"],
            lambda r: r["extension"] == [EXTENDED["extension"][0], *EXTENDED["extension"][2:]],
        ),
        (
            EXTENDED,
            ["extension[2].extension[0].valueCanonical"],
            lambda r: (
                r["extension"][2]
                == {"url": "http://e/complex2", "extension": [{"url": "b", "valueString": "kept"}]}
            ),
        ),
        (EXTENDED, ["modifierExtension[0].valueCanonical"], lambda r: "modifierExtension" not in r),
        # a reference whose display stays keeps its extension
        (
            EXTENDED,
            ["extension[3].valueReference"],
            lambda r: r["extension"][3] == {"url": "http://e/ref", "valueReference": {"display": "D"}},
        ),
        (EXTENDED, ["extension[4].valueReference"], lambda r: len(r["extension"]) == 4),
        # an attachment keeps its other members; one left empty goes, and so does a list left empty
        (
            DOCUMENT,
            ["content[0].attachment.url"],
            lambda r: r["content"][0] == {"attachment": {"contentType": "application/pdf", "title": "T"}},
        ),
        (DOCUMENT, ["content[1].attachment.url"], lambda r: r["content"][1] == {"format": {"code": "x"}}),
        (
            DOCUMENT,
            ["content[1].attachment.url", "content[2].attachment.url"],
            lambda r: r["content"] == [DOCUMENT["content"][0], {"format": {"code": "x"}}],
        ),
    ],
)
def test_rewrite_removes_canonicals_and_urls(
    resource: dict[str, Any], removed: list[str], check: Any
) -> None:
    result = rewrite(resource, dict.fromkeys(removed))
    assert check(result), result
    parsed = json.loads(json.dumps(resource))
    assert rewrite(parsed, dict.fromkeys(removed), in_place=True) is parsed and parsed == result


def test_removing_the_only_attachment_url_removes_the_empty_attachment_and_list() -> None:
    resource = {"resourceType": "DiagnosticReport", "status": "final", "presentedForm": [{"url": "Binary/r"}]}
    assert rewrite(resource, {"presentedForm[0].url": None}) == {
        "resourceType": "DiagnosticReport",
        "status": "final",
    }


@pytest.mark.parametrize(
    ("resource", "expected"), [case[1:] for case in FOUND_CASES], ids=[c[0] for c in FOUND_CASES]
)
def test_round_trip_find_then_rewrite_every_path(
    resource: dict[str, Any], expected: dict[str, tuple[str, str]]
) -> None:
    found = find_references(resource, SOURCE)
    rewrites: dict[str, str | None] = {f.path: f"urn:uuid:{index}" for index, f in enumerate(found)}
    result = rewrite(resource, rewrites)
    again = find_references(result, SOURCE)
    assert [(f.path, f.element) for f in again] == [(f.path, f.element) for f in found]
    assert [f.reference.reference for f in again] == [rewrites[f.path] for f in found]


def test_round_trip_only_resolvable_ones_change() -> None:
    resource = {
        "resourceType": "PlanDefinition",
        "library": ["Library/a", "Library/b|1", "http://127.0.0.1:8081/fhir/Library/c"],
        "action": [{"definitionCanonical": "http://hl7.org/fhir/ActivityDefinition/x"}],
        "relatedArtifact": [{"type": "documentation", "document": {"url": "Binary/d"}}],
    }
    rewrites: dict[str, str | None] = {
        f.path: f"{f.reference.resource_type}/new-{index}"
        for index, f in enumerate(find_references(resource, SOURCE))
        if f.reference.resource_key
    }
    assert rewrites == {
        "library[0]": "Library/new-0",
        "library[2]": "Library/new-2",
        "relatedArtifact[0].document.url": "Binary/new-4",
    }
    result = rewrite(resource, rewrites)
    assert result["library"] == ["Library/new-0", "Library/b|1", "Library/new-2"]
    assert result["action"] == resource["action"]
    assert result["relatedArtifact"][0]["document"] == {"url": "Binary/new-4"}


# -- the generated table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "path", "type_name"),
    [
        ("ActivityDefinition", "library", "canonical"),
        ("Procedure", "instantiatesCanonical", "canonical"),
        ("PlanDefinition", "action.definitionCanonical", "canonical"),
        ("PlanDefinition", "action.action", "#action"),
        ("QuestionnaireResponse", "questionnaire", "canonical"),
        ("Measure", "library", "canonical"),
        ("CarePlan", "instantiatesCanonical", "canonical"),
        ("DocumentReference", "content.attachment", "Attachment"),
        ("Patient", "photo", "Attachment"),
        ("Media", "content", "Attachment"),
        ("DiagnosticReport", "presentedForm", "Attachment"),
        ("Communication", "payload.contentAttachment", "Attachment"),
        ("Bundle", "entry.resource", "Resource"),
    ],
)
def test_generated_table_lists_the_r4_elements(resource_type: str, path: str, type_name: str) -> None:
    assert r4_elements.RESOURCES[resource_type][path] == type_name


def test_generated_table_covers_datatypes_and_extensions() -> None:
    assert r4_elements.FHIR_VERSION == "4.0.1"
    assert r4_elements.DATATYPES["RelatedArtifact"] == {"document": "Attachment", "resource": "canonical"}
    assert r4_elements.DATATYPES["Meta"] == {"profile": "canonical"}
    assert r4_elements.DATATYPES["Extension"]["valueCanonical"] == "canonical"
    assert r4_elements.DATATYPES["Extension"]["valueAttachment"] == "Attachment"
    assert r4_elements.BASES["DomainResource"] == {"contained": "Resource"}
    names = {*r4_elements.DATATYPES, "canonical", "Attachment", "Resource"}
    for table in [*r4_elements.DATATYPES.values(), *r4_elements.RESOURCES.values()]:
        for type_name in table.values():
            assert type_name in names or type_name.startswith("#")
