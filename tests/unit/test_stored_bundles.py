"""A Bundle stored as a resource is a snapshot: what its entries reference is resolved within it.

Found in the official HL7 R4 examples (tests/integration/test_examples.py): the document
``Bundle/father`` and collections such as ``Bundle/ghp`` reference ``Patient/pat2``,
``Observation/o1-3`` etc. from entries whose fullUrl is on ``https://example.com/base``;
fetched from the source and rewritten to target ids (or dropped as dangling), the copy
pointed its entries at unrelated resources of the target.
"""

from __future__ import annotations

from typing import Any

from fhirgraph.references import IN_BUNDLE, ReferenceKind, find_references, rewrite

SOURCE = "http://127.0.0.1:8081/fhir"

DOCUMENT: dict[str, Any] = {
    "resourceType": "Bundle",
    "id": "doc",
    "type": "document",
    "entry": [
        {
            "fullUrl": "http://example.org/fhir/Composition/c",
            "resource": {
                "resourceType": "Composition",
                "subject": {"reference": "Patient/p"},
                "author": [{"reference": SOURCE + "/Practitioner/a"}],
                "section": [{"entry": [{"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}]}],
                "contained": [{"resourceType": "Organization", "id": "o"}],
                "custodian": {"reference": "#o"},
            },
        },
        {
            "fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
            "resource": {
                "resourceType": "DocumentReference",
                "content": [{"attachment": {"url": "Binary/b"}}],
                "relatesTo": [{"code": "appends", "target": {"reference": "DocumentReference/d"}}],
            },
        },
        {
            "fullUrl": "http://example.org/fhir/Measure/m",
            "resource": {"resourceType": "Measure", "library": ["Library/l"]},
        },
    ],
    "signature": {"who": {"reference": "Practitioner/signer"}},
}


def test_everything_inside_the_entries_of_a_stored_bundle_is_foreign_except_contained() -> None:
    found = {f.path: f.reference for f in find_references(DOCUMENT, SOURCE)}
    inside = {path: ref.kind for path, ref in found.items() if path.startswith("entry")}
    assert inside == {
        "entry[0].resource.subject": ReferenceKind.FOREIGN,
        "entry[0].resource.author[0]": ReferenceKind.FOREIGN,
        "entry[0].resource.section[0].entry[0]": ReferenceKind.FOREIGN,
        "entry[0].resource.custodian": ReferenceKind.CONTAINED,
        "entry[1].resource.content[0].attachment.url": ReferenceKind.FOREIGN,
        "entry[1].resource.relatesTo[0].target": ReferenceKind.FOREIGN,
        "entry[2].resource.library[0]": ReferenceKind.FOREIGN,
    }
    assert found["entry[0].resource.subject"].detail == IN_BUNDLE
    assert found["entry[0].resource.subject"].resource_key is None


def test_the_bundles_own_references_still_point_at_the_server() -> None:
    found = {f.path: f.reference for f in find_references(DOCUMENT, SOURCE)}
    assert found["signature.who"].kind is ReferenceKind.RELATIVE
    assert found["signature.who"].resource_key == "Practitioner/signer"


def test_a_bundle_inside_another_resource_is_a_snapshot_too() -> None:
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "doc", "resource": DOCUMENT}]}
    kinds = {f.path: f.reference.kind for f in find_references(parameters, SOURCE)}
    assert kinds["parameter[0].resource.entry[0].resource.subject"] is ReferenceKind.FOREIGN
    assert kinds["parameter[0].resource.signature.who"] is ReferenceKind.RELATIVE


def test_resources_in_other_lists_named_entry_are_not_affected() -> None:
    listing = {"resourceType": "List", "entry": [{"item": {"reference": "Observation/o"}}]}
    (found,) = find_references(listing, SOURCE)
    assert found.reference.kind is ReferenceKind.RELATIVE


def test_rewriting_by_path_still_reaches_inside_bundle_entries() -> None:
    rewritten = rewrite(DOCUMENT, {"entry[0].resource.subject": "Patient/9"})
    assert rewritten["entry"][0]["resource"]["subject"] == {"reference": "Patient/9"}
