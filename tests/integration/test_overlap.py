"""Loading while the crawl goes on (``transfer`` under drop-reference or skip-resource).

The cohort: patients sharing a practitioner who is in no patient's compartment (so a missing
reference fetched while the seeds are read), each with encounters, observations, an
encounter/condition cycle, a self-referencing encounter and an observation referring to a
practitioner the source lacks. The seeds are the patients' ``$everything``, read one at a
time (``--read-concurrency 2``: one reader for seeds, one for missing references), and the
first seed's reader pauses after its seed until a bundle was written back, so rounds surely
run while the crawl is not over.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph

from .conftest import create_on_source, run_cli, transfer_nodes
from .test_workers import assert_exactly_once

PATIENTS = 4
#: the first seed's reader waits until a bundle is written back (at most 120 s)
PAUSE = {"FHIRGRAPH_PAUSE_AT": "seed_read:120:after_write_back"}
#: without overlap nothing is written back during the crawl: the same pause, 3 s long
SHORT_PAUSE = {"FHIRGRAPH_PAUSE_AT": "seed_read:3"}


def cohort(p: str) -> list[dict[str, Any]]:
    doc = {"reference": f"Practitioner/{p}-doc"}
    resources: list[dict[str, Any]] = [{"resourceType": "Practitioner", "id": f"{p}-doc"}]
    for i in range(PATIENTS):
        pat = f"{p}-pat{i}"
        subject = {"reference": f"Patient/{pat}"}
        resources += [
            {"resourceType": "Patient", "id": pat, "generalPractitioner": [doc]},
            {
                "resourceType": "Encounter",
                "id": f"{pat}-e0",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": subject,
                "participant": [{"individual": doc}],
                "partOf": {"reference": f"Encounter/{pat}-e0"},
            },
            {
                "resourceType": "Encounter",
                "id": f"{pat}-e1",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": subject,
                "diagnosis": [{"condition": {"reference": f"Condition/{pat}-c1"}}],
            },
            {
                "resourceType": "Condition",
                "id": f"{pat}-c1",
                "subject": subject,
                "encounter": {"reference": f"Encounter/{pat}-e1"},
            },
            {
                "resourceType": "Observation",
                "id": f"{pat}-ghost",
                "status": "final",
                "code": {"text": "seen by nobody the source knows"},
                "subject": subject,
                "performer": [{"reference": f"Practitioner/{p}-ghost"}],
            },
        ]
        resources += [
            {
                "resourceType": "Observation",
                "id": f"{pat}-o{o}",
                "status": "final",
                "code": {"text": f"obs {o}"},
                "subject": subject,
                "encounter": {"reference": f"Encounter/{pat}-e0"},
                "performer": [doc],
                "valueQuantity": {"value": 7.10},
            }
            for o in range(6)
        ]
    return resources


def seeds(p: str) -> list[str]:
    return [f"Patient/{p}-pat{i}/$everything" for i in range(PATIENTS)]


@pytest.fixture
def cohort_on_source(source: FhirClient, stack_env: dict[str, str], run_id: str) -> str:
    p = f"ov-{run_id}"
    create_on_source(source, cohort(p))
    return p


def transfer(name: str, p: str, *options: str, env: dict[str, str] | None = None, check: bool = True) -> Any:
    return run_cli(
        "transfer",
        "--transfer",
        name,
        "--read-concurrency",
        "2",
        "--bundle-size",
        "5",
        *options,
        *seeds(p),
        env=env,
        check=check,
    )


def loaded_while_crawling(stdout: str) -> int:
    for line in stdout.splitlines():
        if "loaded while the crawl went on" in line:
            return int(line.split()[0])
    return 0


def assert_transferred(target: FhirClient, graph: Graph, name: str, p: str) -> None:
    nodes = transfer_nodes(graph, name)
    ghosts = {k for k, n in nodes.items() if n["status"] == "dangling"}
    assert ghosts == {f"Practitioner/{p}-ghost"}
    loaded = {k: n for k, n in nodes.items() if k not in ghosts}
    assert len(loaded) == 1 + PATIENTS * 11
    assert_exactly_once(target, loaded)
    run_cli("verify", "--transfer", name)
    # the dangling reference was dropped; the self reference and the cycle were completed
    _, ghost = target.read("Observation", loaded[f"Observation/{p}-pat0-ghost"]["target_id"])
    assert ghost is not None and "performer" not in ghost
    e0 = loaded[f"Encounter/{p}-pat0-e0"]
    _, copy = target.read("Encounter", e0["target_id"])
    assert copy is not None and copy["partOf"]["reference"] == f"Encounter/{e0['target_id']}"


def test_ready_resources_are_loaded_while_the_crawl_goes_on(
    cohort_on_source: str, target: FhirClient, graph: Graph, run_id: str
) -> None:
    p, name = cohort_on_source, f"overlap-{run_id}"
    result = transfer(name, p, "--on-dangling", "drop-reference", env=PAUSE)
    # the first seed's reader was held until a bundle was written back: at least that one
    # bundle was loaded while the crawl went on
    assert loaded_while_crawling(result.stdout) >= 1, result.stdout
    # the target held no copies made with the key before the transfer: the load after the
    # crawl is not turned into conditional creates by the copies the rounds made
    assert "conditional creates for" not in result.stdout, result.stdout
    assert_transferred(target, graph, name, p)
    # the rounds put their bundles below the plan's: levels never go down in bundle order
    bundles = graph.query(
        "MATCH (b:Bundle {transfer: $t}) RETURN b.number AS number, b.level AS level ORDER BY number", t=name
    )
    levels = [b["level"] for b in bundles]
    assert levels == sorted(levels)


def test_no_overlap_loads_after_the_crawl(
    cohort_on_source: str, target: FhirClient, graph: Graph, run_id: str
) -> None:
    p, name = cohort_on_source, f"no-overlap-{run_id}"
    result = transfer(name, p, "--on-dangling", "drop-reference", "--no-overlap", env=SHORT_PAUSE)
    assert loaded_while_crawling(result.stdout) == 0, result.stdout
    assert_transferred(target, graph, name, p)


def test_under_fail_nothing_is_written_before_the_dangling_check(
    cohort_on_source: str, graph: Graph, run_id: str
) -> None:
    p, name = cohort_on_source, f"overlap-fail-{run_id}"
    result = transfer(name, p, env=SHORT_PAUSE, check=False)
    assert result.returncode == 1
    assert "dangling" in result.stderr.lower() or "missing" in result.stderr.lower(), result.stderr
    assert graph.query("MATCH (b:Bundle {transfer: $t}) RETURN b", t=name) == []
    assert all(n.get("target_id") is None for n in transfer_nodes(graph, name).values())
    assert "loaded while the crawl went on" not in result.stdout
    run_cli("reset", "--transfer", name, "--yes", check=False)


@pytest.mark.parametrize("point", ["overlap_placed", "before_post", "after_commit", "after_write_back"])
def test_a_transfer_killed_while_loading_during_the_crawl_resumes_exactly_once(
    cohort_on_source: str, target: FhirClient, graph: Graph, run_id: str, point: str
) -> None:
    p, name = cohort_on_source, f"overlap-kill-{point}-{run_id}"
    killed = transfer(
        name, p, "--on-dangling", "drop-reference", env={**PAUSE, "FHIRGRAPH_CRASH_AT": point}, check=False
    )
    assert killed.returncode == -9, killed.stderr
    state = graph.query("MATCH (t:Transfer {name: $t}) RETURN t {.*} AS t", t=name)[0]["t"]
    assert not state.get("crawl_done"), "the kill was meant to come while the crawl went on"
    transfer(name, p, "--on-dangling", "drop-reference")
    assert_transferred(target, graph, name, p)
    state = graph.query("MATCH (t:Transfer {name: $t}) RETURN t {.*} AS t", t=name)[0]["t"]
    assert state.get("load_done"), state
