"""Fixtures for tests against the real local stack (Neo4j and two HAPI FHIR servers).

`make test` starts the stack first. If it is not running these tests fail with a
message saying so: they are never skipped.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import KEY_ENV
from fhirgraph.testing import stack, synthea

ROOT = Path(__file__).resolve().parents[2]


CONFIG, SOURCE_URL, TARGET_URL, NEO4J = stack.CONFIG, stack.SOURCE_URL, stack.TARGET_URL, stack.NEO4J
VALIDATING_URL = stack.VALIDATING_URL


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def source() -> Iterator[FhirClient]:
    with FhirClient(SOURCE_URL, name="source", timeout=300.0) as client:
        try:
            client.capability_statement()
        except Exception as exc:
            pytest.fail(f"the source FHIR server is not running ({exc}); start the stack with stack/up")
        yield client


@pytest.fixture(scope="session")
def target() -> Iterator[FhirClient]:
    with FhirClient(TARGET_URL, name="target", timeout=300.0) as client:
        try:
            client.capability_statement()
        except Exception as exc:
            pytest.fail(f"the target FHIR server is not running ({exc}); start the stack with stack/up")
        yield client


@pytest.fixture(scope="module")
def validating_target() -> Iterator[FhirClient]:
    """A third HAPI server: a target that validates every request body (422 on errors).

    Not part of the everyday stack: this runs `stack/up validating` (a no-op if it is
    already running) and, after the module's tests, `stack/down validating` if it was this fixture that
    started it (stack/up reports "validating is healthy after ..." only for what it started).
    """
    up = subprocess.run([ROOT / "stack" / "up", "validating"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        pytest.fail(f"stack/up validating failed: {(up.stderr or up.stdout).strip()}")
    started = "validating is healthy after" in up.stdout
    try:
        with FhirClient(VALIDATING_URL, name="validating", timeout=300.0) as client:
            client.capability_statement()
            yield client
    finally:
        if started:
            subprocess.run([ROOT / "stack" / "down", "validating"], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def protected_stack() -> Iterator[stack.ProtectedStack]:
    """Keycloak (realm fhirgraph) and two HAPI servers that need its tokens (SMART Backend Services).

    Not part of the everyday stack: this runs `stack/up protected` (a no-op for what already
    runs) and, after the module's tests, `stack/down` of what this fixture started.
    """
    up = subprocess.run([ROOT / "stack" / "up", "protected"], capture_output=True, text=True, timeout=1200)
    if up.returncode != 0:
        pytest.fail(f"stack/up protected failed: {(up.stderr or up.stdout).strip()}")
    names = ("keycloak", "protected-source", "protected-target")
    started = [name for name in names if f"stack/up: {name} is healthy after" in up.stdout]
    try:
        yield stack.protected_stack()
    finally:
        if started:
            subprocess.run([ROOT / "stack" / "down", *started], capture_output=True, timeout=300)


# A HAPI source/target pair on PostgreSQL (HAPI_DB=postgres), in a STACK_DIR of its own and on
# ports of its own, so that the everyday stack (H2, 8081/8082) is never touched.
POSTGRES_PAIR_ENV = {
    "STACK_DIR": str(ROOT / ".stack" / "postgres-pair"),
    "HAPI_DB": "postgres",
    "POSTGRES_PORT": "5434",
    "HAPI_SOURCE_PORT": "8281",
    "HAPI_TARGET_PORT": "8282",
}


def postgres_pair_stack(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run stack/up, stack/down or stack/status (args[0]) for the PostgreSQL-backed pair only."""
    return subprocess.run(
        [ROOT / "stack" / args[0], *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **POSTGRES_PAIR_ENV},
    )


@pytest.fixture(scope="module")
def postgres_pair() -> Iterator[dict[str, str]]:
    """PostgreSQL and a HAPI source and target storing in it, started empty for the module.

    Runs `stack/up source target` with POSTGRES_PAIR_ENV (a cluster of its own under
    .stack/postgres-pair, PostgreSQL on 5434, HAPI on 8281/8282) after clearing what an earlier
    run left there, and `stack/down` of that STACK_DIR (only its processes) after the module.
    Yields POSTGRES_PAIR_ENV with the two FHIR bases added.
    """
    postgres_pair_stack("down", timeout=300)
    stack_dir = Path(POSTGRES_PAIR_ENV["STACK_DIR"])
    subprocess.run(["rm", "-rf", "--", str(stack_dir / "data")], check=True)
    try:
        up = postgres_pair_stack("up", "source", "target")
        if up.returncode != 0:
            pytest.fail(
                f"stack/up source target with HAPI_DB=postgres failed: {(up.stderr or up.stdout).strip()}"
            )
        yield {
            **POSTGRES_PAIR_ENV,
            "source": f"http://127.0.0.1:{POSTGRES_PAIR_ENV['HAPI_SOURCE_PORT']}/fhir",
            "target": f"http://127.0.0.1:{POSTGRES_PAIR_ENV['HAPI_TARGET_PORT']}/fhir",
        }
    finally:
        postgres_pair_stack("down", timeout=300)


@pytest.fixture(scope="session")
def graph() -> Iterator[Graph]:
    with Graph(NEO4J) as g:
        try:
            g.check()
        except Exception as exc:
            pytest.fail(f"Neo4j is not running ({exc}); start the stack with stack/up")
        g.ensure_schema()
        yield g


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def linkage_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh linkage key per test, so hashes (and conditional matches) never cross tests."""
    key = secrets.token_hex(32)
    monkeypatch.setenv(KEY_ENV, key)
    return key


@pytest.fixture
def stack_env(monkeypatch: pytest.MonkeyPatch, linkage_key: str) -> dict[str, str]:
    env = {
        "NEO4J_URI": NEO4J.uri,
        "NEO4J_USER": NEO4J.user,
        "NEO4J_PASSWORD": NEO4J.password,
        "FHIRGRAPH_SOURCE_URL": SOURCE_URL,
        "FHIRGRAPH_TARGET_URL": TARGET_URL,
        KEY_ENV: linkage_key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real `fhirgraph` command in a subprocess."""
    command = [str(Path(sys.executable).with_name("fhirgraph")), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=1800
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"fhirgraph {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def create_on_source(source: FhirClient, resources: list[dict[str, Any]]) -> None:
    """PUT resources with client-assigned ids in one transaction (the source accepts dangling references)."""
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources
    ]
    source.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries}, retry=False)


def transfer_nodes(graph: Graph, transfer: str) -> dict[str, dict[str, Any]]:
    rows = graph.query("MATCH (n:Resource {transfer: $t}) RETURN n {.*} AS n", t=transfer)
    return {row["n"]["key"]: row["n"] for row in rows}


def transfer_properties(graph: Graph, transfer: str) -> dict[str, Any]:
    """The properties of a transfer's ``(:Transfer)`` node ({} if there is none)."""
    rows = graph.query("MATCH (t:Transfer {name: $t}) RETURN t {.*} AS t", t=transfer)
    return dict(rows[0]["t"]) if rows else {}


@pytest.fixture(scope="session")
def synthea_patients(source: FhirClient) -> list[str]:
    """Two Synthea patients on the source (loaded once per source database); their source ids."""
    return synthea.ensure_loaded(source, 2, 7, ROOT / ".stack" / "synthea")


def patient_with_observation(prefix: str, **observation: Any) -> list[dict[str, Any]]:
    """A Patient ``{prefix}-pat`` and an Observation ``{prefix}-obs`` about it (extra fields merged in)."""
    return [
        {"resourceType": "Patient", "id": f"{prefix}-pat"},
        {
            "resourceType": "Observation",
            "id": f"{prefix}-obs",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{prefix}-pat"},
            **observation,
        },
    ]


def leaks_in_neo4j(graph: Graph, secrets: list[str]) -> list[dict[str, Any]]:
    """Every node or relationship property, anywhere in the database, that contains a secret."""
    contains = (
        "any(s IN $secrets WHERE coalesce(toStringOrNull(x[k]), '') CONTAINS s "
        "OR (x[k] IS :: LIST<ANY> AND any(v IN x[k] WHERE coalesce(toStringOrNull(v), '') CONTAINS s)))"
    )
    nodes = graph.query(
        f"MATCH (x) UNWIND keys(x) AS k WITH x, k WHERE {contains} RETURN labels(x) AS what, k",
        secrets=secrets,
    )
    rels = graph.query(
        f"MATCH ()-[x]->() UNWIND keys(x) AS k WITH x, k WHERE {contains} RETURN type(x) AS what, k",
        secrets=secrets,
    )
    return nodes + rels


def stage_observation_of_a_patient_the_target_lacks(graph: Graph, source: FhirClient, p: str) -> str:
    """Transfer ``p`` crawled and planned (bundles of 1) with its Patient recorded as loaded under an
    id the target lacks, so that the target's referential integrity refuses the Observation."""
    create_on_source(source, patient_with_observation(p))
    name = p
    run_cli("crawl", "--transfer", name, "--resource", f"Observation/{p}-obs", "--no-progress")
    run_cli("plan", "--transfer", name, "--bundle-size", "1")
    # Pretend the Patient went to the target under an id the target does not have:
    # the target's referential integrity must then refuse the Observation.
    graph.query(
        "MATCH (n:Resource {transfer: $t, key: $k}) SET n.status = 'loaded', n.target_id = 'no-such-patient' "
        "WITH n MATCH (b:Bundle {transfer: $t, number: n.bundle}) SET b.status = 'loaded'",
        t=name,
        k=f"Patient/{p}-pat",
    )
    return name


def interruptible() -> None:
    """``preexec_fn`` of a command the test interrupts with SIGINT: the default handling of
    SIGINT, which a suite started in the background (``cmd &``) inherits as ignored, and Python
    then never turns into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
