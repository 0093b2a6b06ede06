"""Concurrent reads of the source (``--read-concurrency``) stage exactly the graph one reader stages."""

from __future__ import annotations

from typing import Any

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph

from .conftest import create_on_source, run_cli


def staged_graph(graph: Graph, name: str) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    nodes = graph.query(
        "MATCH (n:Resource {transfer: $t}) RETURN n.key AS key, n.status AS status, n.json AS json, "
        "n.seed AS seed, n.version AS version, n.content_hash AS hash, n.error AS error",
        t=name,
    )
    edges = graph.query(
        "MATCH (a:Resource {transfer: $t})-[r:REFERENCES]->(b) RETURN a.key AS a, r.path AS path, "
        "r.reference AS reference, r.kind AS kind, b.key AS b",
        t=name,
    )
    return {tuple(row.values()) for row in nodes}, {tuple(row.values()) for row in edges}


def test_concurrent_reads_stage_the_same_graph_as_one_reader(
    stack_env: dict[str, str], source: FhirClient, graph: Graph, run_id: str, synthea_patients: list[str]
) -> None:
    p = run_id
    # a seed per patient, their revincludes, references to fetch as missing, and a dangling one
    # (on a patient of its own: the Synthea patients are shared by other tests)
    create_on_source(
        source,
        [
            {"resourceType": "Patient", "id": f"{p}-pat"},
            {
                "resourceType": "Observation",
                "id": f"{p}-dangling",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "performer": [{"reference": f"Practitioner/{p}-nobody"}],
            },
        ],
    )
    seeds = [
        f"Patient?_id={pid}&_revinclude=Observation:subject&_revinclude=Encounter:subject"
        for pid in [*synthea_patients, f"{p}-pat"]
    ]
    graphs = []
    for readers in (1, 4):
        name = f"reads{readers}-{run_id}"
        run_cli("crawl", "--transfer", name, "--no-progress", "--read-concurrency", str(readers), *seeds)
        graphs.append(staged_graph(graph, name))
    (nodes_one, edges_one), (nodes_four, edges_four) = graphs
    assert len(nodes_one) > 2000 and len(edges_one) > 5000
    assert any(node[0] == f"Practitioner/{p}-nobody" and node[1] == "dangling" for node in nodes_one)
    assert nodes_four == nodes_one
    assert edges_four == edges_one
