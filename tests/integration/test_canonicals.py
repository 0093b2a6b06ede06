"""Relative canonicals and Binary attachment URLs move with the graph, through the real CLI.

HAPI treats a relative canonical (``ActivityDefinition.library = ["Library/abc"]``) as
a local reference and the target enforces it; an Attachment's ``url = "Binary/f006"``
names a Binary on the same server. Both must point at the target's copies after a
transfer, whether they cross bundles (``Type/<target id>``) or sit inside one
(``urn:uuid:``, which only a cycle gives: the plan puts levels in separate bundles).
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest

from fhirgraph import commands
from fhirgraph.config import Settings
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import KEY_ENV, copies_by_hash

from .conftest import NEO4J, SOURCE_URL, create_on_source, run_cli, transfer_nodes

FOREIGN_CANONICAL = "http://example.org/fhir/Library/x"
INLINE = {"contentType": "text/plain", "data": base64.b64encode(b"inline, no url").decode()}


def knowledge_artifacts(p: str) -> list[dict[str, Any]]:
    """Artifacts linked by canonicals and a document linked to Binaries, with two cycles:
    ``Library.relatedArtifact.resource`` <-> ``ActivityDefinition.library`` and
    ``Binary.securityContext`` <-> ``DocumentReference.content.attachment.url``."""
    return [
        {
            "resourceType": "Patient",
            "id": f"{p}-pat",
            "photo": [{"contentType": "text/plain", "url": f"Binary/{p}-bin"}],
        },
        {
            "resourceType": "Library",
            "id": f"{p}-lib",
            "status": "active",
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/library-type", "code": "logic-library"}
                ]
            },
            "relatedArtifact": [{"type": "documentation", "resource": f"ActivityDefinition/{p}-ad"}],
        },
        {
            "resourceType": "ActivityDefinition",
            "id": f"{p}-ad",
            "status": "active",
            "library": [f"Library/{p}-lib"],
        },
        {"resourceType": "Questionnaire", "id": f"{p}-q", "status": "active"},
        {
            "resourceType": "PlanDefinition",
            "id": f"{p}-pd",
            "status": "active",
            "action": [
                {"title": "do", "definitionCanonical": f"ActivityDefinition/{p}-ad"},
                {"title": "ask", "definitionCanonical": f"Questionnaire/{p}-q"},
            ],
        },
        {
            "resourceType": "Procedure",
            "id": f"{p}-proc",
            "status": "completed",
            "subject": {"reference": f"Patient/{p}-pat"},
            "instantiatesCanonical": [f"PlanDefinition/{p}-pd"],
        },
        {
            "resourceType": "CarePlan",
            "id": f"{p}-cp",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": f"Patient/{p}-pat"},
            "instantiatesCanonical": [f"PlanDefinition/{p}-pd"],
        },
        {
            "resourceType": "QuestionnaireResponse",
            "id": f"{p}-qr",
            "status": "completed",
            "subject": {"reference": f"Patient/{p}-pat"},
            "questionnaire": f"Questionnaire/{p}-q",
        },
        {
            "resourceType": "Measure",
            "id": f"{p}-measure",
            "status": "active",
            # relative, absolute on the source base, foreign: the last is kept as it is
            "library": [f"Library/{p}-lib", f"{SOURCE_URL}/Library/{p}-lib", FOREIGN_CANONICAL],
            # a canonical with a version names no one resource: kept (HAPI does not index this one)
            "extension": [
                {
                    "url": "http://example.org/fhir/StructureDefinition/pinned",
                    "valueCanonical": f"Library/{p}-lib|1.0",
                }
            ],
        },
        {
            "resourceType": "Binary",
            "id": f"{p}-bin",
            "contentType": "text/plain",
            "securityContext": {"reference": f"DocumentReference/{p}-doc"},
            "data": base64.b64encode(b"first").decode(),
        },
        {
            "resourceType": "Binary",
            "id": f"{p}-bin2",
            "contentType": "text/plain",
            "data": base64.b64encode(b"second").decode(),
        },
        {
            "resourceType": "DocumentReference",
            "id": f"{p}-doc",
            "status": "current",
            "subject": {"reference": f"Patient/{p}-pat"},
            "content": [
                {"attachment": {"contentType": "text/plain", "url": f"Binary/{p}-bin"}},
                {"attachment": {"contentType": "text/plain", "url": f"{SOURCE_URL}/Binary/{p}-bin2"}},
                {"attachment": INLINE},
            ],
        },
    ]


def seeds(p: str) -> list[str]:
    """The referrers only: everything they name is fetched as missing."""
    keys = (
        "Procedure/proc",
        "CarePlan/cp",
        "QuestionnaireResponse/qr",
        "Measure/measure",
        "DocumentReference/doc",
    )
    args: list[str] = []
    for key in keys:
        rtype, suffix = key.split("/")
        args += ["--resource", f"{rtype}/{p}-{suffix}"]
    return args


def target_copy(target: FhirClient, node: dict[str, Any]) -> dict[str, Any]:
    copies = copies_by_hash(target, node["type"], [node["linkage_hash"]]).get(node["linkage_hash"], [])
    assert len(copies) == 1, f"{node['key']} has {len(copies)} copies on the target"
    assert copies[0]["id"] == node["target_id"]
    return copies[0]


def verify_report(transfer: str) -> Any:
    return commands.verify(Settings(source=None, target=None, neo4j=NEO4J, transfer=transfer)).report


@pytest.mark.parametrize("bundle_size", [1, 250], ids=["across-bundles", "one-bundle"])
def test_canonicals_and_attachment_urls_point_at_the_target_copies(
    graph: Graph,
    source: FhirClient,
    target: FhirClient,
    stack_env: dict[str, str],
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
    bundle_size: int,
) -> None:
    p = f"canon-{bundle_size}-{run_id}"
    resources = knowledge_artifacts(p)
    create_on_source(source, resources)
    monkeypatch.setenv(KEY_ENV, secrets.token_hex(32))  # copies of this run only
    name = f"canonicals-{bundle_size}-{run_id}"
    run_cli("transfer", "--transfer", name, *seeds(p), "--bundle-size", str(bundle_size), "--no-progress")

    nodes = transfer_nodes(graph, name)
    keys = {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert set(nodes) == keys  # the foreign and the versioned canonical were never fetched
    assert {n["status"] for n in nodes.values()} == {"loaded"}
    copy = {key: target_copy(target, nodes[key]) for key in keys}  # exactly one copy each
    tid = {key: f"{n['type']}/{n['target_id']}" for key, n in nodes.items()}
    if bundle_size == 1:
        assert len({nodes[k]["bundle"] for k in keys}) == len(keys)  # cycles: create, then update
    else:  # each cycle in one bundle: its canonical / url went as urn:uuid
        assert nodes[f"Library/{p}-lib"]["bundle"] == nodes[f"ActivityDefinition/{p}-ad"]["bundle"]
        assert nodes[f"Binary/{p}-bin"]["bundle"] == nodes[f"DocumentReference/{p}-doc"]["bundle"]

    assert copy[f"ActivityDefinition/{p}-ad"]["library"] == [tid[f"Library/{p}-lib"]]
    assert copy[f"Library/{p}-lib"]["relatedArtifact"][0]["resource"] == tid[f"ActivityDefinition/{p}-ad"]
    assert [a["definitionCanonical"] for a in copy[f"PlanDefinition/{p}-pd"]["action"]] == [
        tid[f"ActivityDefinition/{p}-ad"],
        tid[f"Questionnaire/{p}-q"],
    ]
    for referrer in (f"Procedure/{p}-proc", f"CarePlan/{p}-cp"):
        assert copy[referrer]["instantiatesCanonical"] == [tid[f"PlanDefinition/{p}-pd"]]
        assert copy[referrer]["subject"]["reference"] == tid[f"Patient/{p}-pat"]
    assert copy[f"QuestionnaireResponse/{p}-qr"]["questionnaire"] == tid[f"Questionnaire/{p}-q"]
    measure = copy[f"Measure/{p}-measure"]
    assert measure["library"] == [tid[f"Library/{p}-lib"], tid[f"Library/{p}-lib"], FOREIGN_CANONICAL]
    assert measure["extension"][0]["valueCanonical"] == f"Library/{p}-lib|1.0"
    doc = copy[f"DocumentReference/{p}-doc"]
    assert [c["attachment"].get("url") for c in doc["content"]] == [
        tid[f"Binary/{p}-bin"],
        tid[f"Binary/{p}-bin2"],
        None,
    ]
    assert doc["content"][2]["attachment"] == INLINE
    assert copy[f"Binary/{p}-bin"]["securityContext"]["reference"] == tid[f"DocumentReference/{p}-doc"]
    assert copy[f"Binary/{p}-bin"]["data"] == base64.b64encode(b"first").decode()
    assert copy[f"Patient/{p}-pat"]["photo"][0]["url"] == tid[f"Binary/{p}-bin"]

    run_cli("verify", "--transfer", name)
    report = verify_report(name)
    assert report.ok, report.problems[:5]
    # every resource a copy names was looked up: Patient, DocumentReference, Library,
    # ActivityDefinition, Questionnaire, PlanDefinition and two Binaries (not the foreign Library)
    assert report.references_checked == 8

    # a canonical and an attachment url that name nothing on the target are found by verify
    # (HAPI enforces neither an extension's canonical nor an Attachment url)
    missing = f"{p}-nowhere"
    doc["content"][0]["attachment"]["url"] = f"Binary/{missing}"
    measure["extension"].append(
        {"url": "http://example.org/fhir/StructureDefinition/x", "valueCanonical": f"Library/{missing}"}
    )
    for broken in (doc, measure):
        target.request("PUT", f"{broken['resourceType']}/{broken['id']}", body=broken)
    report = verify_report(name)
    assert not report.ok
    assert f"reference Binary/{missing} on the target does not resolve" in report.problems
    assert f"reference Library/{missing} on the target does not resolve" in report.problems


def test_a_dangling_canonical_is_reported_and_can_be_dropped(
    graph: Graph, source: FhirClient, target: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"canon-dangle-{run_id}"
    resources = [
        {"resourceType": "Patient", "id": f"{p}-pat"},
        {"resourceType": "Library", "id": f"{p}-lib", "status": "active", "type": {"text": "logic"}},
        {
            "resourceType": "ActivityDefinition",
            "id": f"{p}-ad",
            "status": "active",
            "library": [f"Library/{p}-gone", f"Library/{p}-lib"],
        },
        {
            "resourceType": "Procedure",
            "id": f"{p}-proc",
            "status": "completed",
            "subject": {"reference": f"Patient/{p}-pat"},
            "instantiatesCanonical": [f"ActivityDefinition/{p}-ad"],
        },
    ]
    create_on_source(source, resources)
    args = ("--resource", f"Procedure/{p}-proc", "--no-progress")

    name = f"canon-dangle-fail-{run_id}"
    result = run_cli("transfer", "--transfer", name, *args, check=False)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "1 dangling reference" in errors[0] and "nothing was written to the target" in errors[0]
    assert f"ActivityDefinition/{p}-ad library[0] -> Library/{p}-gone" in errors[0]
    nodes = transfer_nodes(graph, name)
    assert nodes[f"Library/{p}-gone"]["status"] == "dangling"
    assert all(n.get("target_id") is None for n in nodes.values())

    name = f"canon-dangle-drop-{run_id}"
    run_cli("transfer", "--transfer", name, *args, "--on-dangling", "drop-reference")
    nodes = transfer_nodes(graph, name)
    arrived = {k for k, n in nodes.items() if n["status"] == "loaded"}
    assert arrived == {f"{r['resourceType']}/{r['id']}" for r in resources}
    ad = target_copy(target, nodes[f"ActivityDefinition/{p}-ad"])
    assert ad["library"] == [f"Library/{nodes[f'Library/{p}-lib']['target_id']}"]
    proc = target_copy(target, nodes[f"Procedure/{p}-proc"])
    assert proc["instantiatesCanonical"] == [
        f"ActivityDefinition/{nodes[f'ActivityDefinition/{p}-ad']['target_id']}"
    ]
    run_cli("verify", "--transfer", name)


def test_a_dropped_dangling_canonical_in_an_extension_takes_the_extension_with_it(
    graph: Graph, source: FhirClient, target: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"canon-ext-{run_id}"
    pinned = "http://example.org/fhir/StructureDefinition/pinned"
    resources = [
        {
            "resourceType": "Questionnaire",
            "id": f"{p}-q",
            "status": "active",
            "extension": [
                {"url": pinned, "valueCanonical": f"Library/{p}-gone"},
                {"url": "http://example.org/fhir/StructureDefinition/note", "valueString": "kept"},
            ],
        }
    ]
    create_on_source(source, resources)
    name = f"canon-ext-{run_id}"
    run_cli(
        "transfer", "--transfer", name, "--resource", f"Questionnaire/{p}-q", "--on-dangling", "drop-reference",
        "--no-progress",
    )  # fmt: skip
    nodes = transfer_nodes(graph, name)
    questionnaire = target_copy(target, nodes[f"Questionnaire/{p}-q"])
    assert [e["url"] for e in questionnaire["extension"]] == [
        "http://example.org/fhir/StructureDefinition/note"
    ]
    run_cli("verify", "--transfer", name)
