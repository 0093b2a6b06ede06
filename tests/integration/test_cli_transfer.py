"""The CLI on realistic data: Synthea patients, resume after a kill, linkage stability."""

from __future__ import annotations

import json
import signal

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import copies_by_hash

from .conftest import leaks_in_neo4j, run_cli, transfer_nodes


def everything_seeds(patients: list[str]) -> list[str]:
    return [f"Patient/{pid}/$everything" for pid in patients]


def source_everything(source: FhirClient, patient: str) -> set[str]:
    keys = set()
    for page in source.pages(f"Patient/{patient}/$everything", {"_count": 500}):
        keys.update(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in page.get("entry", []))
    return keys


def test_synthea_patients_transfer_exactly_once_and_verify(
    graph: Graph,
    source: FhirClient,
    target: FhirClient,
    synthea_patients: list[str],
    stack_env: dict[str, str],
    run_id: str,
) -> None:
    name = f"synthea-{run_id}"
    result = run_cli("transfer", "--transfer", name, *everything_seeds(synthea_patients), "--no-progress")
    assert f"transfer {name}" in result.stdout
    nodes = transfer_nodes(graph, name)
    expected = set().union(*(source_everything(source, pid) for pid in synthea_patients))
    loaded = {k for k, n in nodes.items() if n["status"] == "loaded"}
    assert expected <= loaded
    assert {"Practitioner", "Organization", "Location"} <= {k.split("/")[0] for k in loaded}
    # shared resources were staged once although both patients reference them
    assert len(loaded) == len(nodes)
    run_cli("verify", "--transfer", name)
    status = json.loads(run_cli("status", "--transfer", name, "--json").stdout)
    assert status["load_done"] is True
    assert sum(by.get("loaded", 0) for by in status["resources"].values()) == len(loaded)


def test_killed_load_resumes_without_duplicates(
    graph: Graph, target: FhirClient, synthea_patients: list[str], stack_env: dict[str, str], run_id: str
) -> None:
    name = f"resume-{run_id}"
    seeds = everything_seeds(synthea_patients[:1])
    args = (
        "transfer",
        "--transfer",
        name,
        *seeds,
        "--bundle-size",
        "100",
        "--concurrency",
        "1",
        "--no-progress",
    )
    killed = run_cli(*args, env={"FHIRGRAPH_CRASH_AT": "after_commit:3"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    nodes = transfer_nodes(graph, name)
    assert 0 < sum(n["status"] == "loaded" for n in nodes.values()) < len(nodes)
    # one bundle under way at the kill (concurrency 1), committed by the target
    (committed,) = graph.query(
        "MATCH (b:Bundle&!Resource {transfer: $t, status: 'sending'}) RETURN b.size AS size", t=name
    )

    resumed = run_cli(*args)
    # the bundle committed before the kill was matched, not duplicated
    assert f"matched existing {committed['size']}" in resumed.stdout, resumed.stdout
    nodes = transfer_nodes(graph, name)
    assert all(n["status"] == "loaded" for n in nodes.values())
    run_cli("verify", "--transfer", name)  # verify also fails on any duplicate


def test_linkage_is_stable_keyed_and_never_stored(
    graph: Graph,
    source: FhirClient,
    target: FhirClient,
    synthea_patients: list[str],
    stack_env: dict[str, str],
    run_id: str,
) -> None:
    seed = f"Patient?_id={synthea_patients[0]}"
    run_cli("transfer", "--transfer", f"link-a-{run_id}", seed, "--no-progress")
    run_cli("transfer", "--transfer", f"link-b-{run_id}", seed, "--no-progress")
    other_key = {"FHIRGRAPH_LINKAGE_KEY": "another-key-of-sufficient-length-0123456789"}
    run_cli("transfer", "--transfer", f"link-c-{run_id}", seed, "--no-progress", env=other_key)

    def hashes(name: str) -> dict[str, str]:
        return {
            k: n["linkage_hash"] for k, n in transfer_nodes(graph, name).items() if n["status"] == "loaded"
        }

    a, b, c = hashes(f"link-a-{run_id}"), hashes(f"link-b-{run_id}"), hashes(f"link-c-{run_id}")
    assert a and a == b
    assert set(a) == set(c) and all(a[k] != c[k] for k in a)

    exported = run_cli("linkage", "export", "--transfer", f"link-a-{run_id}", "--format", "json").stdout
    mapping = json.loads(exported)
    assert set(mapping) == set(a.values())
    for key, linkage_hash in a.items():
        rtype = key.split("/")[0]
        assert mapping[linkage_hash].startswith(f"{rtype}/")
        assert linkage_hash in copies_by_hash(target, rtype, [linkage_hash], summary=True)  # a copy is there

    # the shared scan reads list properties too (a transfer keeps its seeds in one)
    assert (
        leaks_in_neo4j(graph, [stack_env["FHIRGRAPH_LINKAGE_KEY"], other_key["FHIRGRAPH_LINKAGE_KEY"]]) == []
    )
