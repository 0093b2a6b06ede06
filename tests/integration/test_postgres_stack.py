"""HAPI servers on PostgreSQL (HAPI_DB=postgres): a production-like target.

The pair runs beside the everyday stack (its own STACK_DIR, PostgreSQL on 5434, HAPI on
8281/8282; the `postgres_pair` fixture starts it empty and stops it after the module).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph

from .conftest import CONFIG, postgres_pair_stack, run_cli, transfer_nodes


def sql(pair: dict[str, str], database: str, query: str) -> str:
    """One query over TCP as the stack's PostgreSQL user, with Debian's psql."""
    psql = f"/usr/lib/postgresql/{CONFIG['POSTGRES_VERSION']}/bin/psql"
    login = ["-h", "127.0.0.1", "-p", pair["POSTGRES_PORT"], "-U", CONFIG["POSTGRES_USER"], "-d", database]
    result = subprocess.run(
        [psql, "-X", "-q", "-t", "-A", *login, "-c", query],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PGPASSWORD": CONFIG["POSTGRES_PASSWORD"], "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return result.stdout.strip()


def resource_rows(pair: dict[str, str], database: str, rtype: str, fhir_id: str) -> int:
    """Current rows of one resource in HAPI's tables (HFJ_RESOURCE joined to its forced id)."""
    return int(
        sql(
            pair,
            database,
            f"SELECT count(*) FROM hfj_resource WHERE res_type = '{rtype}' AND fhir_id = '{fhir_id}'"
            " AND res_deleted_at IS NULL",
        )
    )


def create(client: FhirClient, resource: dict[str, Any], allow: tuple[int, ...] = ()) -> tuple[int, Any]:
    return client.request("POST", resource["resourceType"], body=resource, allow_status=allow)


def test_both_servers_answer_metadata_and_store_in_postgres(postgres_pair: dict[str, str]) -> None:
    status = postgres_pair_stack("status", "postgres", "source", "target")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count(" healthy") == 3, status.stdout
    for role, integrity in (("source", False), ("target", True)):
        with FhirClient(postgres_pair[role], name=role, timeout=120.0) as client:
            assert client.capability_statement()["fhirVersion"] == "4.0.1"
            code, created = create(client, {"resourceType": "Patient", "name": [{"family": f"pg-{role}"}]})
            assert code == 201
            # Each server writes to its own database (named after it), in HAPI's schema.
            assert resource_rows(postgres_pair, role, "Patient", created["id"]) == 1
            # The source accepts a dangling reference; the target enforces referential integrity.
            dangling = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "Patient/does-not-exist"},
            }
            code, _ = create(client, dangling, allow=(400, 404, 409, 412, 422))
            assert (code >= 400) is integrity, (role, code)


def test_data_survives_a_restart_of_the_hapi_server(postgres_pair: dict[str, str]) -> None:
    with FhirClient(postgres_pair["source"], name="source", timeout=120.0) as client:
        _, patient = create(client, {"resourceType": "Patient", "name": [{"family": "Restart"}]})
    down = postgres_pair_stack("down", "source", timeout=300)
    assert down.returncode == 0, down.stderr
    up = postgres_pair_stack("up", "source")
    assert up.returncode == 0, up.stderr or up.stdout
    assert "source is healthy after" in up.stdout  # it really started again
    with FhirClient(postgres_pair["source"], name="source", timeout=120.0) as client:
        code, again = client.read("Patient", patient["id"])
    assert code == 200
    assert again["name"] == [{"family": "Restart"}]
    assert again["meta"]["versionId"] == patient["meta"]["versionId"]


def small_record(p: str) -> list[dict[str, Any]]:
    patient = {"resourceType": "Patient", "id": f"{p}-pat", "name": [{"family": "Postgres"}]}
    encounter = {
        "resourceType": "Encounter",
        "id": f"{p}-enc",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{p}-pat"},
        "diagnosis": [{"condition": {"reference": f"Condition/{p}-cond"}}],
    }
    condition = {
        "resourceType": "Condition",
        "id": f"{p}-cond",
        "subject": {"reference": f"Patient/{p}-pat"},
        "encounter": {"reference": f"Encounter/{p}-enc"},  # a cycle with Encounter.diagnosis
        "code": {"text": "postgres"},
    }
    observation = {
        "resourceType": "Observation",
        "id": f"{p}-obs",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": f"Patient/{p}-pat"},
        "encounter": {"reference": f"Encounter/{p}-enc"},
        "valueQuantity": {"value": 120.00, "unit": "kg"},
    }
    return [patient, encounter, condition, observation]


def test_a_transfer_between_postgres_servers_verifies(
    postgres_pair: dict[str, str], graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"pg-{run_id}"
    resources = small_record(p)
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources
    ]
    with FhirClient(postgres_pair["source"], name="source", timeout=120.0) as source:
        source.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries}, retry=False)
    env = {"FHIRGRAPH_SOURCE_URL": postgres_pair["source"], "FHIRGRAPH_TARGET_URL": postgres_pair["target"]}
    name = f"postgres-{run_id}"
    run_cli("transfer", "--transfer", name, "--resource", f"Observation/{p}-obs", "--no-progress", env=env)
    nodes = transfer_nodes(graph, name)
    assert set(nodes) == {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert {n["status"] for n in nodes.values()} == {"loaded"}
    run_cli("verify", "--transfer", name, env=env)
    status = json.loads(run_cli("status", "--transfer", name, "--json", env=env).stdout)
    assert status["load_done"] is True
    # The copies are rows in the target's database.
    for key, node in nodes.items():
        assert resource_rows(postgres_pair, "target", node["type"], str(node["target_id"])) == 1, key
