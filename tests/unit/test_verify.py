"""The verify stage's pure parts: what a target copy names, and the comparison through the rewrite."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhirgraph.verify import comparable_source, comparable_target, first_difference, resources_named

TARGET = "http://target.test/fhir"
SOURCE = "http://source.test/fhir"


@pytest.mark.parametrize(
    ("resource", "named"),
    [
        # Reference objects: relative, versioned, absolute on the target's base
        ({"resourceType": "Observation", "subject": {"reference": "Patient/1"}}, {("Patient", "1")}),
        (
            {"resourceType": "Observation", "subject": {"reference": "Patient/1/_history/3"}},
            {("Patient", "1")},
        ),
        (
            {"resourceType": "Observation", "subject": {"reference": f"{TARGET}/Patient/2"}},
            {("Patient", "2")},
        ),
        # ... and what names nothing to look up on the target
        ({"resourceType": "Observation", "subject": {"reference": f"{SOURCE}/Patient/2"}}, set()),
        ({"resourceType": "Observation", "subject": {"reference": "#p1"}}, set()),
        ({"resourceType": "Observation", "subject": {"reference": "Patient?identifier=s|v"}}, set()),
        ({"resourceType": "Observation", "subject": {"display": "nobody"}}, set()),
        # relative canonicals
        (
            {"resourceType": "ActivityDefinition", "library": ["Library/7", "Library/8"]},
            {("Library", "7"), ("Library", "8")},
        ),
        (
            {"resourceType": "QuestionnaireResponse", "questionnaire": "Questionnaire/q"},
            {("Questionnaire", "q")},
        ),
        (
            {
                "resourceType": "PlanDefinition",
                "action": [{"action": [{"definitionCanonical": "ActivityDefinition/a"}]}],
            },
            {("ActivityDefinition", "a")},
        ),
        (
            {"resourceType": "Procedure", "instantiatesCanonical": [f"{TARGET}/PlanDefinition/9"]},
            {("PlanDefinition", "9")},
        ),
        (
            {"resourceType": "Patient", "extension": [{"url": "http://x", "valueCanonical": "Library/e"}]},
            {("Library", "e")},
        ),
        # canonicals that name no one resource on the target: kept as they are, never looked up
        ({"resourceType": "Measure", "library": ["Library/7|1.0"]}, set()),
        ({"resourceType": "Measure", "library": ["http://example.org/fhir/Library/x"]}, set()),
        ({"resourceType": "Measure", "library": [f"{SOURCE}/Library/7"]}, set()),
        (
            {
                "resourceType": "Observation",
                "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
            },
            set(),
        ),
        # Attachment urls naming a Binary on the target
        (
            {
                "resourceType": "DocumentReference",
                "content": [
                    {"attachment": {"url": "Binary/b1"}},
                    {"attachment": {"url": f"{TARGET}/Binary/b2"}},
                    {"attachment": {"contentType": "text/plain", "data": "aGk="}},
                    {"attachment": {"url": f"{SOURCE}/Binary/b3"}},
                    {"attachment": {"url": "Patient/p"}},  # not a Binary
                    {"attachment": {"url": "http://files.example.org/scan.pdf"}},
                ],
            },
            {("Binary", "b1"), ("Binary", "b2")},
        ),
        ({"resourceType": "Patient", "photo": [{"url": "Binary/ph"}]}, {("Binary", "ph")}),
        # a string where no canonical or Attachment belongs is not one
        ({"resourceType": "Observation", "valueString": "Library/7"}, set()),
        # all three in one resource, contained resources included
        (
            {
                "resourceType": "CarePlan",
                "subject": {"reference": "Patient/1"},
                "instantiatesCanonical": ["PlanDefinition/pd"],
                "contained": [{"resourceType": "Media", "id": "m", "content": {"url": "Binary/c"}}],
            },
            {("Patient", "1"), ("PlanDefinition", "pd"), ("Binary", "c")},
        ),
    ],
)
def test_resources_named_by_a_target_copy(resource: dict[str, Any], named: set[tuple[str, str]]) -> None:
    assert resources_named(resource, TARGET) == named


def test_the_base_decides_which_absolute_urls_are_on_the_target() -> None:
    resource = {"resourceType": "Measure", "library": [f"{TARGET}/Library/1"]}
    assert resources_named(resource, TARGET + "/") == {("Library", "1")}
    assert resources_named(resource, SOURCE) == set()


def test_canonicals_and_attachment_urls_compare_through_the_same_rewrite() -> None:
    source = {
        "resourceType": "DocumentReference",
        "id": "doc",
        "meta": {"versionId": "1"},
        "status": "current",
        "content": [
            {"attachment": {"url": "Binary/f006"}},
            {"attachment": {"url": f"{SOURCE}/Binary/f007"}},
            {"attachment": {"data": "aGk="}},
        ],
        "extension": [
            {"url": "http://x/a", "valueCanonical": "Library/lib"},
            {"url": "http://x/b", "valueCanonical": "Library/lib|1.0"},
            {"url": "http://x/c", "valueCanonical": "Library/gone"},
        ],
    }
    rewrites: dict[str, str | None] = {
        "content[0].attachment.url": "Binary/11",
        "content[1].attachment.url": "Binary/12",
        "extension[0].valueCanonical": "Library/13",
        "extension[2].valueCanonical": None,  # dropped: a dangling canonical
    }
    copy = {
        "resourceType": "DocumentReference",
        "id": "99",
        "meta": {"versionId": "1", "lastUpdated": "2025-01-01T00:00:00Z"},
        "status": "current",
        "content": [
            {"attachment": {"url": "Binary/11"}},
            {"attachment": {"url": "Binary/12"}},
            {"attachment": {"data": "aGk="}},
        ],
        "extension": [
            {"url": "http://x/a", "valueCanonical": "Library/13"},
            {"url": "http://x/b", "valueCanonical": "Library/lib|1.0"},
        ],  # the extension whose canonical was dropped is gone: it had nothing left
    }
    expected = comparable_source(json.dumps(source), rewrites)
    assert first_difference(expected, comparable_target(copy)) is None
    copy["content"][1]["attachment"]["url"] = f"{SOURCE}/Binary/f007"  # not rewritten on the target
    difference = first_difference(expected, comparable_target(copy))
    assert difference is not None and difference.startswith("content[1].attachment.url")
