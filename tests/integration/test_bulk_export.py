"""Bulk Data ``$export`` against the real stack: HAPI's export jobs, Neo4j, the target.

These need the source HAPI to support ``$export`` (stack/hapi: the bulk export provider).
Each test tags its own resources on the source and restricts the export to them with
``_typeFilter``, so what other tests put on the shared source does not matter. An export
crawl and a search crawl of the same resources must stage the same graph.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fhirgraph import jsontext
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph

from .conftest import create_on_source, interruptible, run_cli, transfer_nodes, transfer_properties
from .test_crashes import small_cohort

TAG_SYSTEM = "urn:fhirgraph:test-export"
EXPORTED_TYPES = ("Patient", "Encounter", "Condition", "Observation")


def tagged_cohort(p: str) -> list[dict[str, Any]]:
    """``small_cohort`` with every resource tagged ``p``; the Practitioner is left to get_missing
    (not of an exported type)."""
    resources = small_cohort(p)
    for resource in resources:
        resource["meta"] = {"tag": [{"system": TAG_SYSTEM, "code": p}]}
    return resources


def export_seed(path: str, p: str, types: tuple[str, ...] = EXPORTED_TYPES, since: str | None = None) -> str:
    filters = "&".join(f"_typeFilter={quote(f'{t}?_tag={TAG_SYSTEM}|{p}', safe='')}" for t in types)
    return f"{path}?_type={','.join(types)}&{filters}" + (f"&_since={since}" if since else "")


def search_seeds(p: str, types: tuple[str, ...] = EXPORTED_TYPES) -> list[str]:
    return [f"{t}?_tag={TAG_SYSTEM}|{p}" for t in types]


def staged_graph(graph: Graph, name: str) -> tuple[dict[str, Any], set[tuple[str, str, str]]]:
    """A transfer's nodes (key -> status, seed flag, parsed JSON) and edges, comparable across transfers."""
    nodes = {
        key: (n["status"], bool(n.get("seed")), jsontext.loads(n["json"]) if n.get("json") else None)
        for key, n in transfer_nodes(graph, name).items()
    }
    edges = graph.query(
        "MATCH (a:Resource {transfer: $t})-[r:REFERENCES]->(b) RETURN a.key AS a, r.path AS path, b.key AS b",
        t=name,
    )
    return nodes, {(e["a"], e["path"], e["b"]) for e in edges}


def crawl_both_ways(graph: Graph, run_id: str, export: str, searches: list[str]) -> None:
    exported, searched = f"export-{run_id}", f"search-{run_id}"
    result = run_cli("crawl", "--transfer", exported, export)
    assert "staged from 1 export job(s)" in result.stdout
    # HAPI keeps a finished job's files: the release afterwards (DELETE) gets 404, said nowhere
    assert "release" not in result.stderr, result.stderr
    run_cli("crawl", "--transfer", searched, *searches)
    assert staged_graph(graph, exported) == staged_graph(graph, searched)
    for name in (exported, searched):
        run_cli("reset", "--transfer", name, "--yes")


def test_an_export_by_type_stages_the_graph_a_search_crawl_stages(
    source: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"ex-{run_id}"
    create_on_source(source, tagged_cohort(p))
    crawl_both_ways(graph, run_id, export_seed("$export", p), search_seeds(p))


def test_a_patient_export_stages_the_graph_a_search_crawl_stages(
    source: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"pex-{run_id}"
    create_on_source(source, tagged_cohort(p))
    types = ("Patient", "Observation")
    crawl_both_ways(graph, run_id, export_seed("Patient/$export", p, types), search_seeds(p, types))


def test_an_export_of_named_patients_stages_only_their_compartments(
    source: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    # patient= is sent in a POST (HAPI refuses it in a GET); no _typeFilter: the other
    # cohort, of another patient, stays out because of patient= alone
    p, other = f"npx-{run_id}", f"npo-{run_id}"
    create_on_source(source, tagged_cohort(p) + tagged_cohort(other))
    seed = f"Patient/$export?_type={','.join(EXPORTED_TYPES)}&patient=Patient/{p}-pat"
    crawl_both_ways(graph, run_id, seed, search_seeds(p))


def test_an_export_transfer_verifies(
    source: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"exv-{run_id}"
    cohort = tagged_cohort(p)
    create_on_source(source, cohort)
    name = f"export-verify-{run_id}"
    run_cli("transfer", "--transfer", name, export_seed("$export", p))
    nodes = transfer_nodes(graph, name)
    assert {n["status"] for n in nodes.values()} == {"loaded"}
    assert set(nodes) == {f"{r['resourceType']}/{r['id']}" for r in cohort}
    verified = run_cli("verify", "--transfer", name)
    assert f"verified {len(cohort)} resources" in verified.stdout and "all match" in verified.stdout


def test_an_export_since_an_instant_stages_only_what_changed_after_it(
    source: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"exs-{run_id}"
    cohort = tagged_cohort(p)
    create_on_source(source, cohort)
    time.sleep(1.5)
    status, patient = source.read("Patient", f"{p}-pat")
    assert status == 200 and patient is not None
    # the source's clock, a second after it stored the cohort (one transaction, a few ms)
    created = datetime.fromisoformat(patient["meta"]["lastUpdated"])
    since = (created + timedelta(seconds=1)).isoformat(timespec="milliseconds")
    time.sleep(1.5)
    changed = [r for r in cohort if r["id"] in (f"{p}-o1", f"{p}-o2")]
    for resource in changed:
        resource["status"] = "amended"
    create_on_source(source, changed)
    name = f"export-since-{run_id}"
    run_cli("crawl", "--transfer", name, export_seed("$export", p, since=quote(since, safe="")))
    nodes = transfer_nodes(graph, name)
    assert {k for k, n in nodes.items() if n["seed"]} == {f"Observation/{p}-o1", f"Observation/{p}-o2"}
    assert all('"amended"' in nodes[f"Observation/{p}-o{i}"]["json"] for i in (1, 2))
    run_cli("reset", "--transfer", name, "--yes")


def test_killed_while_polling_then_resumed_on_the_same_job(
    source: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"exk-{run_id}"
    cohort = tagged_cohort(p)
    create_on_source(source, cohort)
    name = f"export-kill-{run_id}"
    seed = export_seed("$export", p)
    killed = run_cli(
        "crawl", "--transfer", name, seed, env={"FHIRGRAPH_CRASH_AT": "export_polling"}, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    status_url = transfer_properties(graph, name)["export_status_url"]
    assert status_url.startswith(source.base_url + "/")
    assert transfer_nodes(graph, name) == {}

    run_cli("transfer", "--transfer", name, seed)
    assert "export_status_url" not in transfer_properties(graph, name)
    nodes = transfer_nodes(graph, name)
    assert set(nodes) == {f"{r['resourceType']}/{r['id']}" for r in cohort}
    assert {n["status"] for n in nodes.values()} == {"loaded"}
    assert "all match" in run_cli("verify", "--transfer", name).stdout


def test_killed_while_polling_then_crawled_again_names_the_resumed_job(
    source: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"exr-{run_id}"
    create_on_source(source, tagged_cohort(p))
    name = f"export-resume-{run_id}"
    seed = export_seed("$export", p)
    killed = run_cli(
        "crawl", "--transfer", name, seed, env={"FHIRGRAPH_CRASH_AT": "export_polling"}, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    status_url = transfer_properties(graph, name)["export_status_url"]
    resumed = run_cli("crawl", "--transfer", name, seed)
    assert f"1 resumed after an interruption ({status_url})" in resumed.stdout
    counts = graph.query("MATCH (n:Resource {transfer: $t}) RETURN n.key AS key, count(*) AS n", t=name)
    assert counts and all(row["n"] == 1 for row in counts)
    run_cli("reset", "--transfer", name, "--yes")


def test_ctrl_c_while_the_job_runs_cancels_it_and_stages_nothing(
    source: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    """HAPI finishes a small job in about 2 s, and the DELETE of a finished job changes nothing
    (404), so Ctrl-C comes as soon as the crawl polls; a job that finished first anyway (the
    crawl says so) is tried again with new resources, at most three times."""
    for attempt in range(3):
        p = f"exc{attempt}-{run_id}"
        create_on_source(source, tagged_cohort(p))
        name = f"export-cancel-{attempt}-{run_id}"
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("fhirgraph")),
                "crawl",
                "--transfer",
                name,
                export_seed("$export", p),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
            env={**os.environ, "FHIRGRAPH_PAUSE_AT": "export_polling:120"},
        )
        deadline, status_url = time.monotonic() + 120, None
        while status_url is None and time.monotonic() < deadline and process.poll() is None:
            status_url = transfer_properties(graph, name).get("export_status_url")
            time.sleep(0.05)
        assert status_url is not None, "the crawl never started an export job"
        time.sleep(0.3)  # the kick-off's answer is recorded just before the first poll
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr
        assert transfer_nodes(graph, name) == {}
        assert "export_status_url" not in transfer_properties(graph, name)
        run_cli("reset", "--transfer", name, "--yes", check=False)
        if "had already finished" in stderr:
            continue
        assert "cancelled the source server's $export job" in stderr
        # HAPI answers a cancelled job's status URL with its state, or no longer knows it
        reply = source.exchange("GET", status_url, allow_status=(202, 404, 410))
        assert reply.status in (404, 410) or "CANCEL" in (reply.headers.get("X-Progress") or "").upper()
        return
    raise AssertionError("HAPI finished each of three export jobs before Ctrl-C reached the crawl")


def test_a_sync_runs_an_export_seed_again_for_what_changed_since(
    source: FhirClient, target: FhirClient, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    name, p = f"export-sync-{run_id}", run_id
    create_on_source(source, tagged_cohort(p))
    run_cli("transfer", "--transfer", name, export_seed("$export", p))
    newcomer = {
        "resourceType": "Observation",
        "id": f"{p}-new",
        "meta": {"tag": [{"system": TAG_SYSTEM, "code": p}]},
        "status": "final",
        "code": {"text": "new"},
        "subject": {"reference": f"Patient/{p}-pat"},
    }
    create_on_source(source, [newcomer])
    result = run_cli("sync", "--transfer", name, "--no-progress")
    assert "created 1, updated 0" in result.stdout, result.stdout
    node = transfer_nodes(graph, name)[f"Observation/{p}-new"]
    assert node["status"] == "loaded" and node["seed"] is True
    run_cli("verify", "--transfer", name)
