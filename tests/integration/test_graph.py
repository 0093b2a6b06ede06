"""The staging graph on the real Neo4j: every Cypher file compiles; hostile strings are data."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fhirgraph.crawl import Crawler
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph, cypher, cypher_names
from fhirgraph.plan import REFERENCES_PER_ENTRY, place_ready, plan
from fhirgraph.staging import finish_crawl, open_transfer, reset_transfer

from .conftest import run_cli

PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def stage_crawled(graph: Graph, name: str, resources: list[dict[str, Any]]) -> None:
    """Stage generated resources as the seeds of a new transfer whose crawl is done."""
    source = FhirClient("http://generated.invalid/fhir", name="generated")
    open_transfer(graph, name, source=source.base_url, target="", key_fingerprint=None)
    with Crawler(graph, source, name, get_missing=False) as crawler:
        crawler.stage(resources, seed=True)
    finish_crawl(graph, name, seconds=0.0, get_missing=False)


@pytest.mark.parametrize("name", cypher_names())
def test_every_cypher_file_compiles(graph: Graph, name: str) -> None:
    text = cypher(name)
    params = {p: None for p in PARAMETER.findall(text)}
    graph.query("EXPLAIN " + text, **params)


def test_hostile_ids_are_stored_verbatim(graph: Graph, run_id: str) -> None:
    name = f"hostile-{run_id}"
    open_transfer(graph, name, source="http://s/fhir", target="", key_fingerprint=None)
    evil = "x'}) DETACH DELETE n //\"`"
    graph.execute(
        "crawl_add_seeds",
        rows=[{"uid": f"{name}|Patient/{evil}", "key": f"Patient/{evil}", "type": "Patient", "id": evil}],
        transfer=name,
    )
    rows = graph.query(
        "MATCH (n:Resource {transfer: $t}) RETURN n.source_id AS id, labels(n) AS labels", t=name
    )
    assert rows and rows[0]["id"] == evil and "Patient" in rows[0]["labels"]
    assert reset_transfer(graph, name) == 1


def test_reset_deletes_a_transfer_with_a_hub_in_batches(graph: Graph, run_id: str) -> None:
    """25,000 references to one resource: more than one delete batch, all gone, nothing else touched."""
    name = f"hub-{run_id}"
    other = f"hub-other-{run_id}"
    source = FhirClient("http://generated.invalid/fhir", name="generated")
    for transfer, count in ((name, 25_000), (other, 3)):
        open_transfer(graph, transfer, source=source.base_url, target="", key_fingerprint=None)
        with Crawler(graph, source, transfer, get_missing=False) as crawler:
            crawler.stage([{"resourceType": "Organization", "id": "hub"}], seed=True)
            for start in range(0, count, 5000):
                crawler.stage(
                    [
                        {
                            "resourceType": "Patient",
                            "id": f"p{i}",
                            "managingOrganization": {"reference": "Organization/hub"},
                        }
                        for i in range(start, min(count, start + 5000))
                    ],
                    seed=True,
                )
    assert reset_transfer(graph, name) == 25_001
    left = graph.query("MATCH (n) WHERE n.transfer = $t OR n.name = $t RETURN count(n) AS c", t=name)
    kept = graph.query("MATCH (:Resource {transfer: $t})-[r:REFERENCES]->() RETURN count(r) AS c", t=other)
    assert left == [{"c": 0}]
    assert kept == [{"c": 3}]
    reset_transfer(graph, other)


def test_bundles_are_sized_by_references_too(graph: Graph, run_id: str) -> None:
    """Provenance hubs naming 150 resources each: with room for 200 references, one per bundle."""
    name = f"refsize-{run_id}"
    patients = [{"resourceType": "Patient", "id": f"p{i}"} for i in range(150)]
    hubs = [
        {
            "resourceType": "Provenance",
            "id": f"prov{i}",
            "target": [{"reference": f"Patient/p{j}"} for j in range(150)],
        }
        for i in range(3)
    ]
    stage_crawled(graph, name, [*patients, *hubs])
    bundle_size = 200 // REFERENCES_PER_ENTRY
    stats = plan(graph, name, bundle_size=bundle_size)
    rows = graph.query(
        "MATCH (n:Resource {transfer: $t}) RETURN n.type AS type, n.bundle AS bundle, count(*) AS n", t=name
    )
    provenance_bundles = sorted(r["n"] for r in rows if r["type"] == "Provenance")
    patient_bundles = [r["n"] for r in rows if r["type"] == "Patient"]
    assert provenance_bundles == [1, 1, 1]  # 300 references would not fit in one bundle
    assert len(patient_bundles) == 150 // bundle_size and set(patient_bundles) == {bundle_size}
    assert stats.bundles == 150 // bundle_size + 3
    reset_transfer(graph, name)


def test_a_level_written_in_many_concurrent_batches_is_planned_whole(
    graph: Graph, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 7 written by concurrent writers: every resource placed once, bundles full."""
    monkeypatch.setattr("fhirgraph.plan.WRITE_BATCH", 7)
    name = f"writers-{run_id}"
    patients = [{"resourceType": "Patient", "id": f"p{i}"} for i in range(60)]
    observations = [
        {"resourceType": "Observation", "id": f"o{i}", "subject": {"reference": f"Patient/p{i % 60}"}}
        for i in range(180)
    ]
    stage_crawled(graph, name, [*observations, *patients])
    stats = plan(graph, name, bundle_size=10)
    rows = graph.query(
        "MATCH (n:Resource {transfer: $t}) "
        "RETURN n.type AS type, n.status AS status, n.level AS level, n.bundle AS bundle, count(*) AS n",
        t=name,
    )
    bundles = graph.query(
        "MATCH (b:Bundle {transfer: $t}) RETURN b.number AS number, b.level AS level, b.size AS size", t=name
    )
    assert {r["status"] for r in rows} == {"planned"}
    assert {(r["type"], r["level"]) for r in rows} == {("Patient", 0), ("Observation", 1)}
    per_bundle = {r["bundle"]: r["n"] for r in rows}
    assert len(per_bundle) == len(rows)  # a bundle holds one type here: one level each
    assert sorted(per_bundle.values()) == [10] * 24
    assert stats.planned == 240 and stats.bundles == 24
    assert sorted((b["number"], b["size"]) for b in bundles) == sorted(per_bundle.items())
    reset_transfer(graph, name)


def test_a_self_reference_staged_during_an_overlap_round_waits_until_it_is_deferred(
    graph: Graph, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crawl stages a self-referencing Encounter after the round deferred self references and
    before it placed what is ready: the round leaves it, the next places it with the reference
    deferred (a create naming its own entry makes HAPI answer 500, StackOverflowError)."""
    name = f"selfref-{run_id}"
    source = FhirClient("http://generated.invalid/fhir", name="generated")
    open_transfer(graph, name, source=source.base_url, target="", key_fingerprint=None)
    encounter = {
        "resourceType": "Encounter",
        "id": "e0",
        "subject": {"reference": "Patient/p0"},
        "partOf": {"reference": "Encounter/e0"},
    }
    with Crawler(graph, source, name, get_missing=False) as crawler:
        crawler.stage([{"resourceType": "Patient", "id": "p0"}], seed=True)
        crawler.flush()
        single = graph.single

        def staged_meanwhile(query: str, /, **parameters: Any) -> dict[str, Any] | None:
            row = single(query, **parameters)
            if query == "plan_defer_self_references" and parameters["transfer"] == name:
                monkeypatch.setattr(graph, "single", single)
                crawler.stage([encounter], seed=True)
                crawler.flush()
            return row

        monkeypatch.setattr(graph, "single", staged_meanwhile)
        placed, level = place_ready(graph, name, bundle_size=10, first_level=0)
        assert (placed, level) == (1, 1)  # the Patient; the Encounter waits
        assert place_ready(graph, name, bundle_size=10, first_level=level) == (1, 2)
    rows = graph.query(
        "MATCH (n:Resource {transfer: $t})-[r:REFERENCES]->(m) "
        "RETURN n.key AS key, m.key AS to, n.level AS level, r.deferred AS deferred",
        t=name,
    )
    assert sorted((r["key"], r["to"], r["level"], r["deferred"]) for r in rows) == [
        ("Encounter/e0", "Encounter/e0", 1, True),
        ("Encounter/e0", "Patient/p0", 1, None),
    ]
    reset_transfer(graph, name)


def test_revincluded_resources_beyond_the_servers_include_cap_are_all_staged(
    stack_env: dict[str, str], source: FhirClient, graph: Graph, run_id: str, synthea_patients: list[str]
) -> None:
    # HAPI includes at most 1,000 resources in one page and drops the rest without a word;
    # two Synthea patients have about 2,800 Observations and Conditions
    name = f"revinclude-{run_id}"
    patients = ",".join(synthea_patients)
    run_cli(
        "crawl",
        "--transfer",
        name,
        "--no-progress",
        "--no-get-missing",
        f"Patient?_id={patients}&_revinclude=Observation:subject&_revinclude=Condition:subject",
    )
    subjects = ",".join(f"Patient/{pid}" for pid in synthea_patients)
    staged = {
        row["type"]: row["count"]
        for row in graph.query(
            "MATCH (n:Resource {transfer: $t, status: 'crawled'}) RETURN n.type AS type, count(n) AS count",
            t=name,
        )
    }
    expected = {
        rtype: int(source.get(rtype, {"subject": subjects, "_summary": "count"})["total"])
        for rtype in ("Observation", "Condition")
    }
    assert expected["Observation"] + expected["Condition"] > 1000
    assert staged == {"Patient": len(synthea_patients), **expected}
