"""The official HL7 FHIR R4 examples, transferred whole: real-world data nobody here wrote.

``fhirgraph.testing.examples`` puts 735 examples of 140 resource types on the source
with their own ids (once per source database). The HAPI source refuses 64 of them, each
for a reason asserted below; the 671 it holds (130 types: clinical, financial, knowledge
artifacts, Binary, stored Bundles, conformance examples) are the seeds of one transfer
with ``--on-dangling drop-reference``: the examples reference about 330 resources the
package does not have (``List/long`` names 237 Patients) or the source refused.

What arrives: all 671 into a target that has never seen them; from the second run on, 660,
because the target already holds a CodeSystem, ValueSet or ConceptMap with the same
url and version (a copy made by an earlier run with another linkage key) and HAPI allows
only one: those 11 are listed as rejected with HAPI's OperationOutcome.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from fhirgraph import jsontext
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import copies_by_hash
from fhirgraph.testing import examples
from fhirgraph.testing.examples import ExamplesOnSource

from .conftest import run_cli, transfer_nodes

#: the source holds 671; a target that already holds the 11 terminology examples refuses them
LOADED_FLOOR = 655
#: Bundle types HAPI stores (others are only ever POSTed to the base)
STORED_BUNDLE_TYPES = {"document", "collection", "message"}
#: examples whose references name a type the element does not allow. The source enforces
#: reference target types (HAPI-0931): some examples are invalid FHIR (Observation.performer
#: cannot be an Encounter), others use absolute URLs that are not [base]/[type]/[id], which
#: FHIR allows and HAPI reads as a resource type (``.../oralhealthclaim/15476332402``).
WRONG_REFERENCE_TYPES = {
    "ClaimResponse/R3500": "'oralhealthclaim'",  # request: http://www.BenefitsInc.com/fhir/oralhealthclaim/...
    "CoverageEligibilityResponse/E2500": "'coverageeligibilityrequest'",
    "CoverageEligibilityResponse/E2501": "'coverageeligibilityresponse'",
    "CoverageEligibilityResponse/E2502": "'coverageeligibilityrequest'",
    "CoverageEligibilityResponse/E2503": "'coverageeligibilityresponse'",
    "DeviceMetric/example": "'DeviceDefinition'",  # parent: Reference(Device)
    "DeviceUseStatement/example": "'Procedure'",  # reasonReference: no Procedure in R4
    "EnrollmentResponse/ER2500": "'eligibility'",
    "MedicationRequest/medrx0301": "'Practitioner'",  # dispenseRequest.performer: Reference(Organization)
    "Observation/clinical-gender": "'Encounter'",  # performer
    "OrganizationAffiliation/orgrole1": "'Network'",  # not a resource type
    "PaymentReconciliation/ER2500": "'eligibility'",
}
#: HAPI allows one CodeSystem / ValueSet / ConceptMap per url and version
DUPLICATE_CANONICAL = re.compile(
    r"^422: .*HAPI-(0848|0841|0902): Can not create multiple (CodeSystem|ConceptMap|ValueSet) resources"
)


@pytest.fixture(scope="module")
def on_source(source: FhirClient) -> ExamplesOnSource:
    return examples.ensure_loaded(source)


def expected_source_refusals(selection: list[examples.Example]) -> dict[str, str]:
    expected: dict[str, str] = {}
    for example in selection:
        rid = example.key.split("/", 1)[1]
        if rid.isdigit():
            expected[example.key] = "HAPI-0960"  # clients may only assign ids with a non-digit
        elif example.key.startswith("Bundle/") and example.resource["type"] not in STORED_BUNDLE_TYPES:
            expected[example.key] = "HAPI-0522"
        elif example.key in WRONG_REFERENCE_TYPES:
            expected[example.key] = "HAPI-0931"
    return expected


def test_the_selection_is_varied_and_every_source_refusal_is_explained(on_source: ExamplesOnSource) -> None:
    selection = examples.select(examples.ensure_package())
    types = Counter(e.key.split("/", 1)[0] for e in selection)
    assert 700 <= len(selection) <= 760 and len(types) >= 130, (len(selection), len(types))
    wanted = {
        *("Claim", "ClaimResponse", "ExplanationOfBenefit", "Coverage", "Invoice", "Account"),
        *("Library", "PlanDefinition", "ActivityDefinition", "Measure", "Questionnaire"),
        *("QuestionnaireResponse", "Binary", "DocumentReference", "Bundle", "StructureDefinition"),
        *("ValueSet", "CodeSystem", "SearchParameter"),
    }
    assert wanted <= set(types), wanted - set(types)

    expected = expected_source_refusals(selection)
    codes = {key: re.search(r"HAPI-\d{4}", reason) for key, reason in on_source.refused.items()}
    assert {key: code[0] if code else on_source.refused[key] for key, code in codes.items()} == expected
    for key, fragment in WRONG_REFERENCE_TYPES.items():
        assert fragment in on_source.refused[key], on_source.refused[key]
    assert sorted(on_source.loaded) == sorted(e.key for e in selection if e.key not in expected)
    assert len(on_source.loaded) == 671 and len(on_source.by_type()) == 130


def decimals(value: Any) -> list[str]:
    """The text of every decimal in a JSON value read with ``jsontext``."""
    if jsontext.is_decimal(value):
        return [jsontext.decimal_text(value)]
    if isinstance(value, dict):
        return [d for v in value.values() for d in decimals(v)]
    if isinstance(value, list):
        return [d for v in value for d in decimals(v)]
    return []


@pytest.mark.usefixtures("stack_env")
@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["one-load", "two-workers"])
def test_the_hl7_examples_arrive_exactly_once_or_are_reported_and_verify_passes(
    on_source: ExamplesOnSource, target: FhirClient, graph: Graph, run_id: str, workers: tuple[str, ...]
) -> None:
    """With one load, and with the load shared by two worker processes that claim bundles in
    Neo4j (refusals isolated and reported by whichever worker sent the bundle)."""
    name = f"examples-{run_id}-{len(workers)}"
    seeds = [arg for key in on_source.loaded for arg in ("--resource", key)]
    args = [
        "transfer",
        "--transfer",
        name,
        "--on-dangling",
        "drop-reference",
        "--no-progress",
        *workers,
        *seeds,
    ]
    result = run_cli(*args, check=False)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    nodes = transfer_nodes(graph, name)
    status = Counter(node["status"] for node in nodes.values())
    seeded = {key: nodes[key] for key in on_source.loaded}
    rejected = {k: n for k, n in seeded.items() if n["status"] == "rejected"}
    blocked = {k: n for k, n in seeded.items() if n["status"] == "blocked"}
    loaded = {k: n for k, n in seeded.items() if n["status"] == "loaded"}
    summary = f"{dict(status)}\n{result.stdout[-3000:]}\n{result.stderr}"

    # every example: loaded, or refused by the target with its OperationOutcome, or blocked by one
    assert len(loaded) + len(rejected) + len(blocked) == len(seeded), summary
    assert len(loaded) >= LOADED_FLOOR, summary
    for key, node in rejected.items():
        assert DUPLICATE_CANONICAL.match(node["error"]), (key, node["error"])
        assert f"REJECTED {key}: {node['error'][:60]}" in result.stdout
    for key, node in blocked.items():
        blocker = node["error"].split(" -> ", 1)[1].split(" ", 1)[0]
        assert node["error"].startswith("blocked: ") and blocker in rejected, (key, node["error"])
        assert f"BLOCKED {key}" in result.stdout
    if rejected or blocked:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert result.returncode == 1 and len(errors) == 1, output
        assert f"refused {len(rejected)} resource(s) and {len(blocked)} more were not sent" in errors[0]
    else:
        assert result.returncode == 0, output
    # what else was staged is what the examples reference and the source lacks (404)
    others = {k: n for k, n in nodes.items() if k not in seeded}
    assert {n["status"] for n in others.values()} == {"dangling"}, summary
    assert all(
        n["error"].startswith(("404 Not Found on the source", "invalid reference")) for n in others.values()
    )
    assert 300 <= len(others) <= 340, len(others)

    # exactly one copy per linkage hash, with every decimal written as on the source
    by_type: dict[str, list[dict[str, Any]]] = {}
    for node in loaded.values():
        by_type.setdefault(node["type"], []).append(node)
    decimals_checked = trailing_zeros = 0
    for rtype, group in by_type.items():
        copies = copies_by_hash(target, rtype, [n["linkage_hash"] for n in group])
        for node in group:
            found = copies.get(node["linkage_hash"], [])
            assert [c["id"] for c in found] == [node["target_id"]], (node["key"], [c["id"] for c in found])
            source_decimals = decimals(jsontext.loads(node["json"]))
            assert sorted(decimals(found[0])) == sorted(source_decimals), node["key"]
            decimals_checked += len(source_decimals)
            trailing_zeros += sum(1 for d in source_decimals if "." in d and d.endswith("0"))
    assert decimals_checked > 500 and trailing_zeros > 100, (decimals_checked, trailing_zeros)
    # and text beyond ASCII (names, narratives, units such as µg), compared exactly by verify
    assert sum(1 for n in loaded.values() if not n["json"].isascii()) > 40

    # a stored Bundle is a snapshot: nothing inside its entries is fetched or rewritten
    bundles = [k for k in loaded if k.startswith("Bundle/")]
    assert len(bundles) == 20
    inside = graph.query(
        "MATCH (b:Resource {transfer: $t, type: 'Bundle'})-[e:REFERENCES]->() WHERE e.path STARTS WITH 'entry'"
        " RETURN count(e) AS n",
        t=name,
    )
    assert inside[0]["n"] == 0

    verify = run_cli("verify", "--transfer", name, check=False)
    assert verify.returncode == 0 and "Traceback" not in verify.stderr, verify.stdout + verify.stderr
    assert f"verified {len(loaded)} resources" in verify.stdout and "all match" in verify.stdout

    again = run_cli(*args, check=False)
    assert "Traceback" not in again.stdout + again.stderr
    assert again.returncode == result.returncode, again.stdout + again.stderr
    assert "bundles 0, created 0, matched existing 0" in again.stdout, again.stdout
    after = transfer_nodes(graph, name)
    assert {k: (n["status"], n.get("target_id")) for k, n in after.items()} == {
        k: (n["status"], n.get("target_id")) for k, n in nodes.items()
    }
    for rtype, group in by_type.items():
        hashes = [n["linkage_hash"] for n in group]
        copies = copies_by_hash(target, rtype, hashes, summary=True)
        assert {h: len(copies.get(h, [])) for h in hashes} == dict.fromkeys(hashes, 1), rtype
