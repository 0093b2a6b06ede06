"""Staging with two writes in flight gives the graph that one writer gives (crawl_stage_resources)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fhirgraph import jsontext
from fhirgraph.crawl import Crawler
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.jsontext import JSON
from fhirgraph.staging import open_transfer, reset_transfer

SOURCE = FhirClient("http://generated.invalid/fhir", name="generated")
#: properties that name the transfer or the moment of the write
VARYING = {"uid", "transfer", "crawled_at"}


def observation(i: int, value: str = "7.10") -> JSON:
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "subject": {"reference": f"Patient/p{i % 7}"},
        "performer": [{"reference": "Practitioner/hub"}, {"reference": f"Practitioner/d{i % 3}"}],
        "hasMember": [{"reference": f"Observation/o{(i + 1) % 90}"}, {"reference": "Patient/"}],
        "valueQuantity": {"value": jsontext.loads(value)},
    }


def crawl(graph: Graph, crawler: Crawler) -> None:
    """Placeholders first, then fetched; the same resources staged again and again in
    small pages (in both orders, so pages written at once lock them in opposite orders);
    a resource planned meanwhile, staged once more with other content."""
    crawler.stage(
        [{"resourceType": "List", "id": "all", "entry": [{"item": {"reference": "Patient/p1"}}]}], seed=True
    )
    resources = [observation(i) for i in range(90)]
    for round_ in range(6):
        ordered = resources if round_ % 2 else resources[::-1]
        for start in range(0, len(ordered), 15):
            crawler.stage(ordered[start : start + 15], seed=round_ == 0)
    crawler.stage([{"resourceType": "Patient", "id": f"p{i}"} for i in range(4)], seed=False)
    crawler.stage([{"resourceType": "Practitioner", "id": "hub"}], seed=False)
    crawler.flush()
    graph.query(
        "MATCH (n:Resource {uid: $uid}) SET n.status = 'planned'", uid=f"{crawler.transfer}|Observation/o5"
    )
    changed = observation(5, "7.1") | {"subject": {"reference": "Patient/p6"}}
    crawler.stage([changed, observation(6, "8")], seed=False)


def staged_graph(graph: Graph, transfer: str) -> tuple[list[Any], list[Any]]:
    nodes = graph.query(
        "MATCH (n:Resource {transfer: $t}) RETURN labels(n) AS labels, properties(n) AS properties",
        t=transfer,
    )
    edges = graph.query(
        "MATCH (a:Resource {transfer: $t})-[r:REFERENCES]->(b) "
        "RETURN a.key AS from, b.key AS to, properties(r) AS properties",
        t=transfer,
    )
    return (
        sorted(
            (sorted(n["labels"]), sorted((k, v) for k, v in n["properties"].items() if k not in VARYING))
            for n in nodes
        ),
        sorted((e["from"], e["to"], sorted(e["properties"].items())) for e in edges),
    )


def staged_with(graph: Graph, name: str, writers: int, stage: Callable[[Graph, Crawler], None]) -> Any:
    open_transfer(graph, name, source=SOURCE.base_url, target="", key_fingerprint=None)
    try:
        with Crawler(graph, SOURCE, name, get_missing=False, stage_writers=writers) as crawler:
            stage(graph, crawler)
        return staged_graph(graph, name)
    finally:
        reset_transfer(graph, name)


@pytest.mark.parametrize("writers", [2, 3])
def test_concurrent_writes_stage_what_one_writer_stages(graph: Graph, run_id: str, writers: int) -> None:
    one = staged_with(graph, f"writers-1-{run_id}", 1, crawl)
    many = staged_with(graph, f"writers-{writers}-{run_id}", writers, crawl)
    assert many == one
    nodes, edges = one
    keys = [dict(properties)["key"] for _, properties in nodes]
    # observations, patients, practitioners, the list, the unresolvable reference
    assert len(keys) == len(set(keys)) == 90 + 7 + 4 + 1 + 1
    by_key = {dict(properties)["key"]: dict(properties) for _, properties in nodes}
    assert by_key["Observation/o5"]["status"] == "planned"
    assert '"value":7.10' in by_key["Observation/o5"]["json"]  # a planned resource keeps its JSON
    assert '"value":8' in by_key["Observation/o6"]["json"]
    assert by_key["Patient/p1"]["status"] == "crawled" and by_key["Patient/p5"]["status"] == "placeholder"
    assert by_key["Unresolvable/Patient/"]["status"] == "dangling"
    # one set of edges per resource, however often and however concurrently it was staged
    assert len([e for e in edges if e[0] == "Observation/o7"]) == 5
    # ... and the references read from that JSON (the new content's Patient/p6 is not referred to)
    assert ("Observation/o5", "Patient/p5") in {(e[0], e[1]) for e in edges}
    assert ("Observation/o5", "Patient/p6") not in {(e[0], e[1]) for e in edges}
    assert len(edges) == 1 + 90 * 5
