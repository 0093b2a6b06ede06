"""Neo4j stops in the middle of a transfer: a clear error, then the same command finishes it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fhirgraph.graph import Graph, GraphSettings

from .conftest import CONFIG, run_cli
from .test_stack import private_stack, stack  # noqa: F401 - the fixture is used by name

FHIRGRAPH = str(Path(sys.executable).with_name("fhirgraph"))


def loaded_bundles(settings: GraphSettings, name: str) -> int:
    try:
        with Graph(settings) as graph:
            rows = graph.query(
                "MATCH (b:Bundle {transfer: $t, status: 'loaded'}) RETURN count(b) AS n", t=name
            )
        return int(rows[0]["n"]) if rows else 0
    except Exception:
        return 0


def test_neo4j_outage_is_reported_and_the_rerun_completes(
    private_stack: dict[str, str],  # noqa: F811
    synthea_patients: list[str],
    stack_env: dict[str, str],
    run_id: str,
) -> None:
    assert stack("up", private_stack, "neo4j").returncode == 0
    neo4j = GraphSettings(
        uri=f"bolt://127.0.0.1:{private_stack['NEO4J_BOLT_PORT']}",
        user=CONFIG["NEO4J_USER"],
        password=CONFIG["NEO4J_PASSWORD"],
    )
    env = {**os.environ, "NEO4J_URI": neo4j.uri}
    name = f"outage-{run_id}"
    args = [
        "transfer",
        "--transfer",
        name,
        f"Patient/{synthea_patients[0]}/$everything",
        "--bundle-size",
        "50",
        "--concurrency",
        "1",
        "--no-progress",
    ]
    running = subprocess.Popen(
        [FHIRGRAPH, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while loaded_bundles(neo4j, name) < 3 and running.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running.poll() is None, "the transfer finished before Neo4j could be stopped"
    assert stack("down", private_stack, "neo4j").returncode == 0

    code = running.wait(timeout=300)
    _, stderr = running.communicate()
    assert code == 1
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Neo4j" in lines[0] and "Traceback" not in stderr

    assert stack("up", private_stack, "neo4j").returncode == 0
    run_cli(*args, env={"NEO4J_URI": neo4j.uri})
    run_cli("verify", "--transfer", name, env={"NEO4J_URI": neo4j.uri})
