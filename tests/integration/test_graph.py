"""The staging graph on the real Neo4j: every Cypher file compiles; hostile strings are data."""

from __future__ import annotations

import re

import pytest

from fhirgraph.graph import Graph, cypher, cypher_names
from fhirgraph.staging import open_transfer, reset_transfer

PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


@pytest.mark.parametrize("name", cypher_names())
def test_every_cypher_file_compiles(graph: Graph, name: str) -> None:
    text = cypher(name)
    params = {p: None for p in PARAMETER.findall(text)}
    with graph._driver.session(database=graph.settings.database) as session:
        session.run("EXPLAIN " + text, params).consume()


def test_hostile_ids_are_stored_verbatim(graph: Graph, run_id: str) -> None:
    name = f"hostile-{run_id}"
    open_transfer(graph, name, source="http://s/fhir", target="", key_fingerprint=None)
    evil = "x'}) DETACH DELETE n //\"`"
    graph.execute(
        "crawl_add_seeds",
        rows=[{"uid": f"{name}|Patient/{evil}", "key": f"Patient/{evil}", "type": "Patient", "id": evil}],
        transfer=name,
    )
    with graph._driver.session(database=graph.settings.database) as session:
        row = session.run(
            "MATCH (n:Resource {transfer: $t}) RETURN n.source_id AS id, labels(n) AS labels", t=name
        ).single()
    assert row is not None and row["id"] == evil and "Patient" in row["labels"]
    assert reset_transfer(graph, name) == 1
