"""Resources a target refuses cost only themselves and what depends on them.

The refusals come from a real HAPI target that validates on write (``stack/up
validating``): the source holds Observations without the required ``status`` and a
Condition without its required ``subject``, which the validating target refuses
with 422 and an OperationOutcome. Everything else must arrive exactly once.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from fhirgraph import jsontext
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import copies_by_hash

from .conftest import create_on_source, run_cli, transfer_nodes

OBSERVATIONS = 250


def cohort(p: str, *, bad: int = 1) -> list[dict[str, Any]]:
    """A Patient, 250 Observations of it (the last ``bad`` of them without the required status)
    and a DiagnosticReport naming the first and the last Observation."""
    resources: list[dict[str, Any]] = [{"resourceType": "Patient", "id": f"{p}-pat"}]
    for i in range(OBSERVATIONS):
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{p}-o{i}",
            "status": "final",
            "code": {"text": f"measure {i}"},
            "subject": {"reference": f"Patient/{p}-pat"},
            "valueQuantity": {"value": 120.00, "unit": "mm[Hg]"},
        }
        if i >= OBSERVATIONS - bad:
            del observation["status"]
        resources.append(observation)
    resources.append(
        {
            "resourceType": "DiagnosticReport",
            "id": f"{p}-rep",
            "status": "final",
            "code": {"text": "panel"},
            "subject": {"reference": f"Patient/{p}-pat"},
            "result": [
                {"reference": f"Observation/{p}-o0"},
                {"reference": f"Observation/{p}-o{OBSERVATIONS - 1}"},
            ],
        }
    )
    return resources


def seeds(p: str) -> list[str]:
    return [
        f"Patient/{p}-pat",
        f"Observation?subject=Patient/{p}-pat",
        f"DiagnosticReport?subject=Patient/{p}-pat",
    ]


def transfer(name: str, target: FhirClient, p: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    args = ["transfer", "--transfer", name, "--target", target.base_url, "--no-progress"]
    resources = [a for s in seeds(p) if s.startswith("Patient/") for a in ("--resource", s)]
    searches = [s for s in seeds(p) if not s.startswith("Patient/")]
    return run_cli(*args, *resources, *searches, *extra, env=env, check=False)


def assert_loaded_exactly_once(target: FhirClient, nodes: dict[str, dict[str, Any]]) -> None:
    by_type: dict[str, list[str]] = {}
    for node in nodes.values():
        if node["status"] == "loaded":
            by_type.setdefault(node["type"], []).append(node["linkage_hash"])
    for rtype, hashes in by_type.items():
        copies = copies_by_hash(target, rtype, hashes, summary=True)
        assert {h: len(copies.get(h, [])) for h in hashes} == dict.fromkeys(hashes, 1), rtype


def statuses(nodes: dict[str, dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in nodes.values():
        counts[node["status"]] = counts.get(node["status"], 0) + 1
    return counts


@pytest.mark.usefixtures("stack_env")
def test_one_refused_resource_in_a_bundle_of_250_costs_only_itself_and_its_dependents(
    source: FhirClient, validating_target: FhirClient, graph: Graph, run_id: str
) -> None:
    p = f"rej1-{run_id}"
    create_on_source(source, cohort(p))
    name = f"refusals-{run_id}"
    result = transfer(name, validating_target, p, "--bundle-size", "250")

    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "refused 1 resource(s) and 1 more were not sent" in errors[0]
    assert "--retry-failed" in errors[0]
    nodes = transfer_nodes(graph, name)
    bad = nodes[f"Observation/{p}-o{OBSERVATIONS - 1}"]
    assert bad["status"] == "rejected"
    assert bad["error"].startswith("422: error") and "Observation.status" in bad["error"], bad["error"]
    report = nodes[f"DiagnosticReport/{p}-rep"]
    assert report["status"] == "blocked"
    assert report["error"].startswith(
        f"blocked: result[1] -> Observation/{p}-o{OBSERVATIONS - 1} (rejected: 422"
    )
    assert statuses(nodes) == {"loaded": OBSERVATIONS, "rejected": 1, "blocked": 1}
    assert_loaded_exactly_once(validating_target, nodes)
    assert f"REJECTED Observation/{p}-o{OBSERVATIONS - 1}" in result.stdout
    assert f"BLOCKED DiagnosticReport/{p}-rep" in result.stdout
    sends = int(re.search(r"(\d+) sends to isolate", result.stdout)[1])  # type: ignore[index]
    assert 2 <= sends <= 2 * math.ceil(math.log2(OBSERVATIONS)), result.stdout

    verify = run_cli("verify", "--transfer", name, "--target", validating_target.base_url, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    status = run_cli("status", "--transfer", name, "--json")
    refused = {r["key"]: r["status"] for r in __import__("json").loads(status.stdout)["refused"]}
    assert refused == {bad["key"]: "rejected", report["key"]: "blocked"}
    again = transfer(name, validating_target, p)
    assert again.returncode == 1 and statuses(transfer_nodes(graph, name)) == statuses(nodes)
    assert_loaded_exactly_once(validating_target, transfer_nodes(graph, name))

    # fixed on the source, then one command: it and what it blocked arrive, nothing twice
    create_on_source(source, [{**cohort(p)[OBSERVATIONS], "status": "amended"}])
    retried = run_cli(
        "load", "--transfer", name, "--target", validating_target.base_url, "--retry-failed", "--no-progress",
        check=False,
    )  # fmt: skip
    assert retried.returncode == 0, retried.stdout + retried.stderr
    after = transfer_nodes(graph, name)
    assert statuses(after) == {"loaded": OBSERVATIONS + 2}
    assert {k: n["target_id"] for k, n in after.items() if k in nodes and nodes[k]["status"] == "loaded"} == {
        k: n["target_id"] for k, n in nodes.items() if n["status"] == "loaded"
    }
    assert_loaded_exactly_once(validating_target, after)
    fixed = after[bad["key"]]
    copy = copies_by_hash(validating_target, "Observation", [fixed["linkage_hash"]])[fixed["linkage_hash"]]
    assert copy[0]["status"] == "amended" and jsontext.dumps(copy[0]["valueQuantity"]["value"]) == "120.0"
    verify = run_cli("verify", "--transfer", name, "--target", validating_target.base_url, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.usefixtures("stack_env")
def test_drop_reference_sends_the_dependents_without_the_refused_resource(
    source: FhirClient, validating_target: FhirClient, graph: Graph, run_id: str
) -> None:
    p = f"rej2-{run_id}"
    create_on_source(source, cohort(p))
    name = f"refusals-drop-{run_id}"
    result = transfer(name, validating_target, p, "--on-reject", "drop-reference")
    assert result.returncode == 1
    nodes = transfer_nodes(graph, name)
    assert statuses(nodes) == {"loaded": OBSERVATIONS + 1, "rejected": 1}
    report = nodes[f"DiagnosticReport/{p}-rep"]
    copy = copies_by_hash(validating_target, "DiagnosticReport", [report["linkage_hash"]])[
        report["linkage_hash"]
    ]
    first = nodes[f"Observation/{p}-o0"]
    assert copy[0]["result"] == [{"reference": f"Observation/{first['target_id']}"}]
    assert_loaded_exactly_once(validating_target, nodes)
    verify = run_cli("verify", "--transfer", name, "--target", validating_target.base_url, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.usefixtures("stack_env")
def test_stop_keeps_the_old_behaviour_the_bundle_fails_and_the_load_stops(
    source: FhirClient, validating_target: FhirClient, graph: Graph, run_id: str
) -> None:
    p = f"rej3-{run_id}"
    create_on_source(source, cohort(p))
    name = f"refusals-stop-{run_id}"
    result = transfer(name, validating_target, p, "--on-reject", "stop")
    assert result.returncode == 1
    assert "1 bundle(s) failed" in result.stderr
    counts = statuses(transfer_nodes(graph, name))
    assert counts == {"loaded": 1, "failed": OBSERVATIONS, "planned": 1}, counts


def cycle(p: str) -> list[dict[str, Any]]:
    """An Encounter <-> Condition cycle whose Condition lacks its required subject, an
    Observation of that Encounter, and a valid Encounter <-> Condition cycle with its own;
    one level up, an Observation without status, and a DiagnosticReport naming it."""
    resources: list[dict[str, Any]] = [{"resourceType": "Patient", "id": f"{p}-pat"}]
    for tag, valid in (("bad", False), ("ok", True)):
        condition: dict[str, Any] = {
            "resourceType": "Condition",
            "id": f"{p}-c-{tag}",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{p}-pat"},
            "encounter": {"reference": f"Encounter/{p}-e-{tag}"},
        }
        if not valid:
            del condition["subject"]
        resources += [
            {
                "resourceType": "Encounter",
                "id": f"{p}-e-{tag}",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "diagnosis": [{"condition": {"reference": f"Condition/{p}-c-{tag}"}}],
            },
            condition,
            {
                "resourceType": "Observation",
                "id": f"{p}-o-{tag}",
                "status": "final",
                "code": {"text": "y"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "encounter": {"reference": f"Encounter/{p}-e-{tag}"},
            },
        ]
    resources += [
        {
            "resourceType": "Observation",
            "id": f"{p}-o-nostatus",
            "code": {"text": "z"},
            "subject": {"reference": f"Patient/{p}-pat"},
            "encounter": {"reference": f"Encounter/{p}-e-ok"},
        },
        {
            "resourceType": "DiagnosticReport",
            "id": f"{p}-rep",
            "status": "final",
            "code": {"text": "panel"},
            "result": [{"reference": f"Observation/{p}-o-ok"}, {"reference": f"Observation/{p}-o-nostatus"}],
        },
    ]
    return resources


@pytest.mark.usefixtures("stack_env")
def test_refused_resources_on_several_levels_one_a_cycle_are_rejected_and_block_their_dependents(
    source: FhirClient, validating_target: FhirClient, graph: Graph, run_id: str
) -> None:
    p = f"rej4-{run_id}"
    create_on_source(source, cycle(p))
    name = f"refusals-cycle-{run_id}"
    result = run_cli(
        "transfer", "--transfer", name, "--target", validating_target.base_url, "--no-progress",
        "--resource", f"Observation/{p}-o-bad", "--resource", f"DiagnosticReport/{p}-rep", check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    nodes = transfer_nodes(graph, name)
    got = {key: node["status"] for key, node in nodes.items()}
    assert got == {
        f"Patient/{p}-pat": "loaded",
        f"Encounter/{p}-e-ok": "loaded",
        f"Condition/{p}-c-ok": "loaded",
        f"Observation/{p}-o-ok": "loaded",
        f"Encounter/{p}-e-bad": "rejected",
        f"Condition/{p}-c-bad": "rejected",
        f"Observation/{p}-o-bad": "blocked",
        f"Observation/{p}-o-nostatus": "rejected",
        f"DiagnosticReport/{p}-rep": "blocked",
    }
    levels = {nodes[f"Condition/{p}-c-bad"]["level"], nodes[f"Observation/{p}-o-nostatus"]["level"]}
    assert len(levels) == 2, "the refused resources are on two levels, so in two bundles"
    assert "Observation.status" in nodes[f"Observation/{p}-o-nostatus"]["error"]
    assert nodes[f"DiagnosticReport/{p}-rep"]["error"].startswith(
        f"blocked: result[1] -> Observation/{p}-o-nostatus (rejected: 422"
    )
    assert "Condition.subject" in nodes[f"Condition/{p}-c-bad"]["error"]
    assert nodes[f"Observation/{p}-o-bad"]["error"].startswith(f"blocked: encounter -> Encounter/{p}-e-bad")
    assert_loaded_exactly_once(validating_target, nodes)


@pytest.mark.usefixtures("stack_env")
def test_killed_while_isolating_then_resumed_everything_arrives_once(
    source: FhirClient, validating_target: FhirClient, graph: Graph, run_id: str
) -> None:
    p = f"rej5-{run_id}"
    create_on_source(source, cohort(p, bad=2))
    name = f"refusals-kill-{run_id}"
    killed = transfer(name, validating_target, p, env={"FHIRGRAPH_CRASH_AT": "after_isolated_part:2"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    part = statuses(transfer_nodes(graph, name))
    assert part.get("loaded", 0) > 1 and part.get("planned", 0) > 0, part  # some parts recorded, not all
    # the resume first looks for the copies of the interrupted send for up to the target timeout
    resumed = transfer(name, validating_target, p, env={"FHIRGRAPH_TARGET_TIMEOUT": "20"})
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    nodes = transfer_nodes(graph, name)
    assert statuses(nodes) == {"loaded": OBSERVATIONS - 1, "rejected": 2, "blocked": 1}
    assert_loaded_exactly_once(validating_target, nodes)
