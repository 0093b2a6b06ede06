"""A bundle the target rejects: its OperationOutcome reaches the user and the graph, whether the
load stops at it (``--on-reject stop``) or isolates the refused resource (the default)."""

from __future__ import annotations

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph

from .conftest import run_cli, stage_observation_of_a_patient_the_target_lacks, transfer_nodes


def test_a_refused_resource_is_isolated_rejected_and_reported_with_the_operation_outcome(
    graph: Graph, source: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"reject-default-{run_id}"
    name = stage_observation_of_a_patient_the_target_lacks(graph, source, p)
    result = run_cli("load", "--transfer", name, "--no-progress", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the target refused 1 resource(s)" in result.stderr
    assert f"REJECTED Observation/{p}-obs: 400: error" in result.stdout
    assert "Patient/no-such-patient" in result.stdout  # the target's own diagnostics
    observation = transfer_nodes(graph, name)[f"Observation/{p}-obs"]
    assert observation["status"] == "rejected" and "no-such-patient" in observation["error"]
    status = run_cli("status", "--transfer", name)
    assert "rejected" in status.stdout and "no-such-patient" in status.stdout
    again = run_cli("load", "--transfer", name, "--no-progress", check=False)
    assert again.returncode == 1 and "--retry-failed" in again.stderr


def test_rejected_bundle_shows_and_stores_the_operation_outcome(
    graph: Graph, source: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"reject-{run_id}"
    name = stage_observation_of_a_patient_the_target_lacks(graph, source, p)
    result = run_cli("load", "--transfer", name, "--no-progress", "--on-reject", "stop", check=False)
    assert result.returncode == 1
    assert "Patient/no-such-patient" in result.stderr  # the target's own diagnostics
    assert "Traceback" not in result.stderr
    observation = transfer_nodes(graph, name)[f"Observation/{p}-obs"]
    assert observation["status"] == "failed"
    assert "no-such-patient" in observation["error"]
    status = run_cli("status", "--transfer", name)
    assert "failed" in status.stdout and "no-such-patient" in status.stdout
    again = run_cli("load", "--transfer", name, "--no-progress", "--on-reject", "stop", check=False)
    assert again.returncode == 1 and "--retry-failed" in again.stderr
    other_key = run_cli("load", "--transfer", name, env={"FHIRGRAPH_LINKAGE_KEY": "x" * 40}, check=False)
    assert other_key.returncode == 1 and "different linkage key" in other_key.stderr
