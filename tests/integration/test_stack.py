"""The local stack itself: real Neo4j with Browser, two independent HAPI servers, the scripts."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhirgraph.errors import FhirError
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from tests.fakes import free_port

from .conftest import CONFIG, ROOT


def test_bolt_query_and_browser_page(graph: Graph) -> None:
    assert graph.query("RETURN 40 + 2 AS answer") == [{"answer": 42}]
    page = httpx.get(f"http://127.0.0.1:{CONFIG['NEO4J_HTTP_PORT']}/browser/", timeout=30)
    assert page.status_code == 200 and "Neo4j Browser" in page.text


def test_neo4j_runs_with_the_configured_transaction_log_retention(graph: Graph) -> None:
    rows = graph.query(
        "SHOW SETTINGS YIELD name, value WHERE name = 'db.tx_log.rotation.retention_policy' RETURN value"
    )
    assert rows == [{"value": CONFIG["NEO4J_TX_LOG_RETENTION"]}]


@pytest.mark.parametrize("server", ["source", "target"])
def test_server_assigns_ids_and_rewrites_transaction_references(
    server: str, request: pytest.FixtureRequest
) -> None:
    client: FhirClient = request.getfixturevalue(server)
    _, created = client.request("POST", "Patient", body={"resourceType": "Patient", "id": "client-chosen"})
    assert created is not None and created["id"] != "client-chosen" and created["id"]
    patient_url, encounter_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    response = client.transaction(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": patient_url,
                    "resource": {"resourceType": "Patient"},
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "fullUrl": encounter_url,
                    "resource": {
                        "resourceType": "Encounter",
                        "status": "finished",
                        "class": {"code": "AMB"},
                        "subject": {"reference": patient_url},
                    },
                    "request": {"method": "POST", "url": "Encounter"},
                },
            ],
        }
    )
    patient_location, encounter_location = (e["response"]["location"] for e in response["entry"])
    encounter = client.get(encounter_location.split("/_history")[0])
    assert encounter["subject"]["reference"] == patient_location.split("/_history")[0]


DANGLING_OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "x"},
    "subject": {"reference": "Patient/does-not-exist"},
}


def test_target_enforces_referential_integrity(target: FhirClient) -> None:
    with pytest.raises(FhirError) as caught:
        target.request("POST", "Observation", body=DANGLING_OBSERVATION)
    assert caught.value.status is not None and 400 <= caught.value.status < 500
    assert "does-not-exist" in str(caught.value)  # the OperationOutcome's diagnostics


def test_source_accepts_dangling_references(source: FhirClient) -> None:
    status, created = source.request("POST", "Observation", body=DANGLING_OBSERVATION)
    assert status == 201 and created is not None
    assert created["subject"]["reference"] == "Patient/does-not-exist"


def test_source_and_target_are_independent(source: FhirClient, target: FhirClient) -> None:
    marker = uuid.uuid4().hex
    source.request(
        "POST",
        "Patient",
        body={"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": marker}]},
    )
    assert source.get("Patient", {"identifier": f"urn:t|{marker}"}).get("entry")
    assert not target.get("Patient", {"identifier": f"urn:t|{marker}"}).get("entry")


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for a second, private Neo4j (own ports and directory) to exercise the scripts."""
    env = {
        **os.environ,
        "STACK_DIR": str(tmp_path / "stack"),
        "NEO4J_BOLT_PORT": str(free_port()),
        "NEO4J_HTTP_PORT": str(free_port()),
        "HAPI_SOURCE_PORT": str(free_port()),
        "HAPI_TARGET_PORT": str(free_port()),
    }
    yield env
    subprocess.run([ROOT / "stack" / "down"], env=env, capture_output=True, timeout=120)


def stack(command: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ROOT / "stack" / command, *args], env=env, capture_output=True, text=True, timeout=600
    )


def java_processes(stack_dir: str) -> list[str]:
    result = subprocess.run(["pgrep", "-f", stack_dir], capture_output=True, text=True)
    return result.stdout.split()


def test_up_is_idempotent_and_down_leaves_nothing(private_stack: dict[str, str]) -> None:
    first = stack("up", private_stack, "neo4j")
    assert first.returncode == 0, first.stderr
    pids = java_processes(private_stack["STACK_DIR"])
    assert len(pids) == 1
    second = stack("up", private_stack, "neo4j")
    assert second.returncode == 0, second.stderr
    assert java_processes(private_stack["STACK_DIR"]) == pids
    status = stack("status", private_stack, "neo4j")
    assert status.returncode == 0 and "healthy" in status.stdout
    down = stack("down", private_stack)
    assert down.returncode == 0, down.stderr
    assert java_processes(private_stack["STACK_DIR"]) == []
    assert stack("down", private_stack).returncode == 0


def test_up_refuses_a_taken_port_and_leaves_nothing_running(private_stack: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(private_stack["NEO4J_HTTP_PORT"])))
        blocker.listen()
        result = stack("up", private_stack, "neo4j")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"port {private_stack['NEO4J_HTTP_PORT']} is already in use" in lines[0]
    assert java_processes(private_stack["STACK_DIR"]) == []


def test_up_without_java_says_so(private_stack: dict[str, str], tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "basename", "mkdir", "cat", "sed", "head", "cut", "env", "id"):
        found = subprocess.run(
            ["bash", "-c", f"command -v {tool}"], capture_output=True, text=True
        ).stdout.strip()
        if found:
            (bin_dir / tool).symlink_to(found)
    result = stack("up", {**private_stack, "PATH": str(bin_dir)}, "neo4j")
    assert result.returncode != 0
    assert "java not found" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_up_without_maven_says_so(private_stack: dict[str, str], tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin-no-mvn"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(directory).iterdir():
            link = bin_dir / tool.name
            if tool.name != "mvn" and not link.exists():
                link.symlink_to(tool)
    result = stack("up", {**private_stack, "PATH": str(bin_dir)}, "neo4j")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "mvn not found" in lines[0] and "apt-get install maven" in lines[0]
    assert java_processes(private_stack["STACK_DIR"]) == []


def test_failed_build_names_its_log(private_stack: dict[str, str]) -> None:
    result = stack("up", {**private_stack, "NEO4J_VERSION": "0.0.0-no-such-version"}, "neo4j")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "failed; see" in lines[0] and "neo4j-build.log" in lines[0]
    assert java_processes(private_stack["STACK_DIR"]) == []
