"""Several load workers share one planned transfer: exactly once, whatever happens to a worker."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import KEY_ENV, copies_by_hash
from fhirgraph.staging import bundles_open, claim_bundle

from .conftest import NEO4J, TARGET_URL, create_on_source, run_cli, transfer_nodes

FHIRGRAPH = str(Path(sys.executable).with_name("fhirgraph"))


def cohort(p: str, encounters: int = 8, observations: int = 15) -> list[dict[str, Any]]:
    """A patient with encounter/condition cycles and observations of each encounter."""
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": f"{p}-pat"},
        {"resourceType": "Practitioner", "id": f"{p}-doc"},
    ]
    for e in range(encounters):
        resources += [
            {
                "resourceType": "Encounter",
                "id": f"{p}-e{e}",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "participant": [{"individual": {"reference": f"Practitioner/{p}-doc"}}],
                "diagnosis": [{"condition": {"reference": f"Condition/{p}-c{e}"}}],
            },
            {
                "resourceType": "Condition",
                "id": f"{p}-c{e}",
                "subject": {"reference": f"Patient/{p}-pat"},
                "encounter": {"reference": f"Encounter/{p}-e{e}"},
            },
        ]
        resources += [
            {
                "resourceType": "Observation",
                "id": f"{p}-e{e}-o{o}",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "encounter": {"reference": f"Encounter/{p}-e{e}"},
                "valueQuantity": {"value": 7.10},
            }
            for o in range(observations)
        ]
    return resources


def seeds(p: str) -> list[str]:
    return [f"Observation?subject=Patient/{p}-pat", f"Condition?subject=Patient/{p}-pat"]


def assert_exactly_once(target: FhirClient, nodes: dict[str, dict[str, Any]]) -> None:
    by_type: dict[str, list[str]] = {}
    for node in nodes.values():
        assert node["status"] == "loaded", node["key"]
        by_type.setdefault(node["type"], []).append(node["linkage_hash"])
    for rtype, hashes in by_type.items():
        copies = copies_by_hash(target, rtype, hashes, summary=True)
        assert {h: len(copies.get(h, [])) for h in hashes} == dict.fromkeys(hashes, 1), rtype


def worker(name: str, env: dict[str, str], cwd: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [FHIRGRAPH, "load", "--worker", "--transfer", name, "--no-progress"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def staged(source: FhirClient, stack_env: dict[str, str], run_id: str) -> str:
    """The cohort on the source (once per test)."""
    p = f"wk-{run_id}"
    create_on_source(source, cohort(p))
    return p


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_workers_load_a_transfer_exactly_once(
    staged: str, target: FhirClient, graph: Graph, run_id: str, workers: int
) -> None:
    name = f"workers-{workers}-{run_id}"
    # each worker holds its first bundle 5 s, so the others (slower to start on a busy machine)
    # get some of the work whatever the timing
    pause = {"FHIRGRAPH_PAUSE_AT": "worker_claimed:5"} if workers > 1 else {}
    result = run_cli(
        "transfer",
        "--transfer",
        name,
        "--workers",
        str(workers),
        "--bundle-size",
        "10",
        "--no-progress",
        *seeds(staged),
        env=pause,
    )
    nodes = transfer_nodes(graph, name)
    assert len(nodes) == 2 + 8 * 2 + 8 * 15
    assert_exactly_once(target, nodes)
    assert run_cli("verify", "--transfer", name).returncode == 0
    status = json.loads(run_cli("status", "--transfer", name, "--json").stdout)
    assert len(status["workers"]) == workers and all(w["state"] == "done" for w in status["workers"])
    assert sum(w["loaded"] for w in status["workers"]) == len(nodes)
    if workers > 1:
        assert sum(1 for w in status["workers"] if w["bundles"]) >= 2, "the work was shared"
    assert f"created {len(nodes)}" in result.stdout


def test_a_killed_worker_s_bundle_is_taken_over_by_the_others_exactly_once(
    staged: str, target: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    name = f"workers-kill-{run_id}"
    run_cli("crawl", "--transfer", name, "--no-progress", *seeds(staged))
    run_cli("plan", "--transfer", name, "--bundle-size", "10")
    env = {**os.environ, "FHIRGRAPH_LEASE_SECONDS": "5"}
    doomed = worker(name, {**env, "FHIRGRAPH_CRASH_AT": "after_commit:2"})
    # the others hold their first bundle 5 s, so the doomed worker gets to its second bundle
    # whatever the timing on a busy machine
    others = [worker(name, {**env, "FHIRGRAPH_PAUSE_AT": "worker_claimed:5"}) for _ in range(2)]
    assert doomed.wait(timeout=600) == -signal.SIGKILL, doomed.communicate()
    for process in others:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out + err
    nodes = transfer_nodes(graph, name)
    assert_exactly_once(target, nodes)
    assert run_cli("verify", "--transfer", name).returncode == 0
    status = json.loads(run_cli("status", "--transfer", name, "--json").stdout)
    dead = [w for w in status["workers"] if w["state"] == "working"]
    assert len(dead) == 1 and dead[0]["taken_over"] == 1, status["workers"]
    assert dead[0]["seen_seconds_ago"] >= 5
    text = run_cli("status", "--transfer", name).stdout
    assert "1 bundle(s) taken over by others after its lease expired" in text


def test_a_worker_with_nothing_shared_but_neo4j_the_target_and_the_key_joins(
    staged: str, target: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str, tmp_path: Path
) -> None:
    name = f"workers-remote-{run_id}"
    run_cli("crawl", "--transfer", name, "--no-progress", *seeds(staged))
    run_cli("plan", "--transfer", name, "--bundle-size", "10")
    home = tmp_path / "other-machine"
    home.mkdir()
    elsewhere = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "NEO4J_URI": NEO4J.uri,
        "NEO4J_PASSWORD": NEO4J.password,
        "FHIRGRAPH_TARGET_URL": TARGET_URL,
        KEY_ENV: stack_env[KEY_ENV],
    }
    remote = worker(name, elsewhere, cwd=str(home))
    local = worker(name, {**os.environ})
    for process in (remote, local):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out + err
    nodes = transfer_nodes(graph, name)
    assert_exactly_once(target, nodes)
    status = json.loads(run_cli("status", "--transfer", name, "--json").stdout)
    assert len(status["workers"]) == 2
    assert not any(home.iterdir()), (
        "the worker wrote nothing into its home (the key came from the environment)"
    )


def test_a_worker_with_another_linkage_key_is_refused_before_it_sends_anything(
    staged: str, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    name = f"workers-key-{run_id}"
    run_cli("crawl", "--transfer", name, "--no-progress", *seeds(staged))
    run_cli("plan", "--transfer", name, "--bundle-size", "10")
    run_cli("load", "--transfer", name, "--worker", "--no-progress")  # the transfer's key is recorded
    graph.query("MATCH (b:Bundle {transfer: $t}) SET b.status = 'planned'", t=name)
    stranger = run_cli(
        "load",
        "--transfer",
        name,
        "--worker",
        "--no-progress",
        env={KEY_ENV: secrets.token_hex(32)},
        check=False,
    )
    assert stranger.returncode == 1 and "different linkage key" in stranger.stderr
    assert {
        row["status"]
        for row in graph.query("MATCH (b:Bundle {transfer: $t}) RETURN b.status AS status", t=name)
    } == {"planned"}


def test_staging_through_a_routing_uri(staged: str, target: FhirClient, graph: Graph, run_id: str) -> None:
    name = f"workers-routing-{run_id}"
    routing = NEO4J.uri.replace("bolt://", "neo4j://")
    run_cli(
        "transfer",
        "--transfer",
        name,
        "--neo4j-uri",
        routing,
        "--workers",
        "2",
        "--no-progress",
        *seeds(staged),
    )
    assert_exactly_once(target, transfer_nodes(graph, name))
    assert run_cli("verify", "--transfer", name, "--neo4j-uri", routing).returncode == 0


def test_a_load_without_workers_is_refused_while_workers_work(
    staged: str, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    name = f"workers-mixed-{run_id}"
    run_cli("crawl", "--transfer", name, "--no-progress", *seeds(staged))
    run_cli("plan", "--transfer", name, "--bundle-size", "10")
    graph.query(
        "CREATE (:Worker {uid: $uid, transfer: $t, state: 'working', last_seen: datetime(), started_at: datetime()})",
        t=name,
        uid=f"h:1:{run_id}",
    )
    refused = run_cli("load", "--transfer", name, "--no-progress", check=False)
    assert refused.returncode == 1 and "being loaded by 1 worker(s)" in refused.stderr
    assert "fhirgraph load --worker" in refused.stderr


def test_a_worker_that_finds_a_level_all_taken_keeps_on_while_the_next_level_is_open(
    graph: Graph, run_id: str
) -> None:
    """The race CI met: a worker's claim finds the lowest level's bundles all being sent by
    another worker, which finishes them before this worker counts what is left. The next
    level's planned bundles must keep it working (a count of bundles being sent alone found
    nothing, and the worker stopped while work was left)."""
    name = f"open-{run_id}"
    graph.query(
        "CREATE (:Transfer {name: $t}) "
        "CREATE (:Bundle {transfer: $t, uid: $t + '-1', number: 1, level: 0, status: 'sending', "
        "                 lease_owner: 'a', lease_until: datetime() + duration({seconds: 60})}) "
        "CREATE (:Bundle {transfer: $t, uid: $t + '-2', number: 2, level: 1, status: 'planned'}) "
        "CREATE (:Bundle {transfer: $t, uid: $t + '-3', number: 3, level: 1, status: 'planned'}) "
        # a Bundle resource staged in the transfer is not a bundle of the plan
        "CREATE (:Resource:Bundle {transfer: $t, uid: $t + '-r', key: 'Bundle/r', status: 'staged'})",
        t=name,
    )
    try:
        assert claim_bundle(graph, name, "b", lease_seconds=60, retry_failed=False) is None
        assert bundles_open(graph, name) == (0, 1)  # wait for worker a
        graph.query("MATCH (b:Bundle {uid: $u}) SET b.status = 'loaded'", u=f"{name}-1")
        assert bundles_open(graph, name) == (2, 0)  # level 1 is open: claim again, do not stop
        assert claim_bundle(graph, name, "b", lease_seconds=60, retry_failed=False) == (2, "planned")
        graph.query("MATCH (b:Bundle {transfer: $t, level: 1}) SET b.status = 'failed'", t=name)
        assert bundles_open(graph, name) == (0, 0)  # only failed bundles left: the workers stop
        assert claim_bundle(graph, name, "b", lease_seconds=60, retry_failed=True) == (2, "failed")
    finally:
        graph.query("MATCH (n {transfer: $t}) DETACH DELETE n", t=name)
        graph.query("MATCH (t:Transfer {name: $t}) DETACH DELETE t", t=name)
