"""Saved Browser queries, `status --json` and `report` on finished, half-finished and failed transfers.

Every number the commands print is checked against what Neo4j holds, read with
plain Cypher here rather than with the queries under test.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from fhirgraph import FhirServer
from fhirgraph.browse import editor_text, saved_query, saved_query_names
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph

from .conftest import (
    CONFIG,
    SOURCE_URL,
    TARGET_URL,
    create_on_source,
    run_cli,
    stage_observation_of_a_patient_the_target_lacks,
)


def truth(graph: Graph, transfer: str) -> dict[str, Any]:
    """The transfer's numbers as Neo4j holds them."""
    resources: dict[str, dict[str, int]] = defaultdict(dict)
    for row in graph.query(
        "MATCH (n:Resource {transfer: $t}) RETURN n.type AS type, n.status AS status, count(*) AS c",
        t=transfer,
    ):
        resources[row["type"]][row["status"]] = row["c"]
    bundles = {
        row["s"]: row["c"]
        for row in graph.query(
            "MATCH (b:Bundle {transfer: $t}) RETURN b.status AS s, count(*) AS c", t=transfer
        )
    }
    node = graph.query("MATCH (t:Transfer {name: $t}) RETURN t {.*} AS t", t=transfer)[0]["t"]
    return {"resources": dict(resources), "bundles": bundles, "transfer": node}


def status_json(transfer: str) -> dict[str, Any]:
    return dict(json.loads(run_cli("status", "--transfer", transfer, "--json").stdout))


def check_status_against_neo4j(graph: Graph, transfer: str) -> dict[str, Any]:
    status = status_json(transfer)
    real = truth(graph, transfer)
    assert status["transfer"] == transfer
    assert status["resources"] == real["resources"]
    totals: dict[str, int] = defaultdict(int)
    for by_status in real["resources"].values():
        for s, n in by_status.items():
            totals[s] += n
    assert status["totals"] == dict(totals)
    bundles = status["bundles"]
    assert bundles["total"] == sum(real["bundles"].values())
    assert bundles["done"] == real["bundles"].get("loaded", 0)
    assert bundles["left"] == bundles["total"] - bundles["done"]
    assert {k: v for k, v in bundles["by_status"].items() if v} == real["bundles"]
    node = real["transfer"]
    assert status["stages"] == {
        "crawl": bool(node.get("crawl_done")),
        "plan": bool(node.get("plan_done")),
        "load": bool(node.get("load_done")),
    }
    assert [status[f"{stage}_done"] for stage in ("crawl", "plan", "load")] == list(status["stages"].values())
    assert status["timings"] == pytest.approx(
        {k.removeprefix("seconds_"): v for k, v in node.items() if k.startswith("seconds_")}
    )
    return status


def report_html(transfer: str, tmp_path: Path) -> str:
    out = tmp_path / f"{transfer}.html"
    result = run_cli("report", "--transfer", transfer, "--out", str(out))
    assert str(out) in result.stdout
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # self-contained: nothing loaded from elsewhere
    assert not re.search(r"<script|<link|<img|@import|url\(|src=|href=", text, re.IGNORECASE)
    assert not list(tmp_path.glob(f".{out.name}.*"))  # no temporary file left behind
    return text


def cell_count(html: str, row_label: str) -> list[int]:
    """The numbers in the report's per-type table row for ``row_label``."""
    match = re.search(rf"<tr><td>{re.escape(row_label)}</td>((?:<td class=\"n\">\d+</td>)+)</tr>", html)
    assert match, f"no row {row_label} in the report"
    return [int(n) for n in re.findall(r">(\d+)<", match.group(1))]


def run_browse_query(graph: Graph, name: str, **params: Any) -> list[dict[str, Any]]:
    return graph.execute(f"browse/{name}", **params)


@pytest.fixture
def finished(graph: Graph, source: FhirClient, stack_env: dict[str, str], run_id: str) -> tuple[str, str]:
    """A loaded transfer with a dangling reference (dropped), a self reference, a pair and a triangle."""
    p = f"insp-{run_id}"
    create_on_source(
        source,
        [
            {"resourceType": "Patient", "id": f"{p}-pat"},
            {
                "resourceType": "Encounter",
                "id": f"{p}-enc",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "diagnosis": [{"condition": {"reference": f"Condition/{p}-cond"}}],
                "partOf": {"reference": f"Encounter/{p}-enc"},
            },
            {
                "resourceType": "Condition",
                "id": f"{p}-cond",
                "subject": {"reference": f"Patient/{p}-pat"},
                "encounter": {"reference": f"Encounter/{p}-enc"},
            },
            {
                "resourceType": "Observation",
                "id": f"{p}-obs",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "encounter": {"reference": f"Encounter/{p}-enc"},
                "performer": [{"reference": f"Practitioner/{p}-gone", "display": "Dr Gone"}],
            },
            {
                "resourceType": "Organization",
                "id": f"{p}-o1",
                "partOf": {"reference": f"Organization/{p}-o2"},
            },
            {
                "resourceType": "Organization",
                "id": f"{p}-o2",
                "partOf": {"reference": f"Organization/{p}-o3"},
            },
            {
                "resourceType": "Organization",
                "id": f"{p}-o3",
                "partOf": {"reference": f"Organization/{p}-o1"},
            },
        ],
    )
    name = f"insp-done-{run_id}"
    response = FhirServer(SOURCE_URL).transfer(
        target_server=FhirServer(TARGET_URL),
        resources=[
            {"resourceType": "Observation", "id": f"{p}-obs"},
            {"resourceType": "Organization", "id": f"{p}-o1"},
        ],
        transfer_name=name,
        on_dangling="drop-reference",
        bundle_size=3,
    )
    assert response.ok
    return name, p


def test_every_saved_query_finds_what_it_promises(graph: Graph, finished: tuple[str, str]) -> None:
    name, p = finished
    assert set(saved_query_names()) >= {"patient", "dangling", "cycles", "failed", "bundles", "unfinished"}

    rows = run_browse_query(graph, "patient", transfer=name, key=f"Patient/{p}-pat")
    # record.data() turns a path into [node, (start, type, end), node, ...]
    keys = {item["key"] for row in rows for item in row["path"] if isinstance(item, dict)}
    assert {f"Patient/{p}-pat", f"Encounter/{p}-enc", f"Condition/{p}-cond", f"Observation/{p}-obs"} <= keys
    assert not any(k.startswith("Organization/") for k in keys)  # not within two hops of the patient

    rows = run_browse_query(graph, "dangling", transfer=name)
    assert [(r["referrer"], r["path"], r["missing"]) for r in rows] == [
        (f"Observation/{p}-obs", "performer[0]", f"Practitioner/{p}-gone")
    ]
    assert rows[0]["detail"]  # the source's 404

    rows = run_browse_query(graph, "cycles", transfer=name)
    found = {(r["key"], r["hops"]) for r in rows}
    assert (f"Encounter/{p}-enc", 1) in found  # self reference
    assert {(f"Encounter/{p}-enc", 2), (f"Condition/{p}-cond", 2)} <= found  # a pair
    assert {(f"Organization/{p}-o{i}", 3) for i in (1, 2, 3)} <= found  # a triangle
    assert all(r["key"] != f"Patient/{p}-pat" for r in rows)

    assert run_browse_query(graph, "failed", transfer=name) == []

    rows = run_browse_query(graph, "bundles", transfer=name)
    real = graph.query("MATCH (b:Bundle {transfer: $t}) RETURN b.number AS n ORDER BY n", t=name)
    assert [r["number"] for r in rows] == [r["n"] for r in real]
    assert all(r["status"] == "loaded" and r["loaded_at"] and r["size"] > 0 for r in rows)
    assert sum(r["size"] for r in rows) == 7

    rows = run_browse_query(graph, "unfinished", transfer=name)
    assert [(r["what"], r["status"], r["type"], r["count"]) for r in rows] == [
        ("resource", "dangling", "Practitioner", 1)
    ]

    # each query also runs in the form the Browser link carries (values written in as literals)
    for query_name in saved_query_names():
        query = saved_query(query_name)
        text = editor_text(query, {"transfer": name, "key": f"Patient/{p}-pat"})
        assert "$" not in text.split("\n", 2)[2]
        graph.query(text)


def test_status_and_report_of_a_finished_transfer(
    graph: Graph, finished: tuple[str, str], tmp_path: Path
) -> None:
    name, p = finished
    status = check_status_against_neo4j(graph, name)
    assert status["stages"] == {"crawl": True, "plan": True, "load": True}
    assert status["bundles"]["left"] == 0 and status["bundles"]["done"] >= 3
    assert status["bundles"]["resources_loaded"] == 7
    assert status["failures"] == [] and status["last_error"] is None
    assert status["dangling"] == [
        {
            "referrer": f"Observation/{p}-obs",
            "path": "performer[0]",
            "missing": f"Practitioner/{p}-gone",
            "detail": status["dangling"][0]["detail"],
        }
    ]
    text_status = run_cli("status", "--transfer", name).stdout
    assert re.search(r"Organization\s+\.\s+3\s+3\n", text_status), text_status
    assert f"bundles: {status['bundles']['done']} done, 0 left" in text_status

    html = report_html(name, tmp_path)
    real = truth(graph, name)
    assert f"Transfer {name}" in html
    assert cell_count(html, "Organization") == [0, 3, 3]  # dangling, loaded, total
    assert cell_count(html, "Practitioner") == [1, 0, 1]
    assert cell_count(html, "all") == [1, 7, 8]
    for stage in ("crawl", "plan", "load"):
        seconds = real["transfer"][f"seconds_{stage}"]
        assert f'<td>{stage}</td><td>done</td><td class="n">{seconds:.1f}</td>' in html
    assert "<svg" in html and "<polyline" in html  # the throughput chart
    assert f"Practitioner/{p}-gone" in html
    assert 'Failures</h2>\n<p class="ok">None.</p>' in html


def test_status_and_report_of_half_finished_transfers(
    graph: Graph, source: FhirClient, stack_env: dict[str, str], run_id: str, tmp_path: Path
) -> None:
    p = f"half-{run_id}"
    create_on_source(
        source,
        [
            {"resourceType": "Patient", "id": f"{p}-pat"},
            *(
                {
                    "resourceType": "Observation",
                    "id": f"{p}-obs{i}",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": f"Patient/{p}-pat"},
                }
                for i in range(4)
            ),
        ],
    )
    resources = [arg for i in range(4) for arg in ("--resource", f"Observation/{p}-obs{i}")]

    # crawl + plan only
    name = f"half-plan-{run_id}"
    run_cli("crawl", "--transfer", name, *resources, "--no-progress")
    run_cli("plan", "--transfer", name, "--bundle-size", "1")
    status = check_status_against_neo4j(graph, name)
    assert status["stages"] == {"crawl": True, "plan": True, "load": False}
    assert status["totals"] == {"planned": 5}
    assert status["bundles"] == {
        "total": 5,
        "done": 0,
        "left": 5,
        "by_status": {"planned": 5, "sending": 0, "loaded": 0, "failed": 0},
        "resources_loaded": 0,
    }
    html = report_html(name, tmp_path)
    assert cell_count(html, "Observation") == [4, 4] and cell_count(html, "all") == [5, 5]
    assert "No bundle has been loaded yet." in html
    assert '<td>load</td><td>open</td><td class="n">-</td>' in html
    rows = run_browse_query(graph, "unfinished", transfer=name)
    assert {(r["what"], r["status"], r["type"]): r["count"] for r in rows} == {
        ("resource", "planned", "Observation"): 4,
        ("resource", "planned", "Patient"): 1,
        ("bundle", "planned", None): 5,
    }

    # a load killed after the target committed its second bundle, before the write-back
    name = f"half-kill-{run_id}"
    run_cli("crawl", "--transfer", name, *resources, "--no-progress")
    run_cli("plan", "--transfer", name, "--bundle-size", "1")
    killed = run_cli(
        "load",
        "--transfer",
        name,
        "--concurrency",
        "1",
        "--no-progress",
        env={"FHIRGRAPH_CRASH_AT": "after_commit:2"},
        check=False,
    )
    assert killed.returncode != 0
    status = check_status_against_neo4j(graph, name)
    assert status["stages"]["load"] is False
    assert status["bundles"]["by_status"] == {"planned": 3, "sending": 1, "loaded": 1, "failed": 0}
    assert status["bundles"]["done"] == 1 and status["bundles"]["left"] == 4
    assert status["totals"] == {"loaded": 1, "planned": 4}
    html = report_html(name, tmp_path)
    assert cell_count(html, "all") == [4, 1, 5]  # planned, loaded, total
    assert "1 of 5 loaded, 4 left (planned 3, sending 1, loaded 1)" in html
    assert "<polyline" in html
    rows = run_browse_query(graph, "unfinished", transfer=name)
    assert ("bundle", "sending", None, 1) in {(r["what"], r["status"], r["type"], r["count"]) for r in rows}


def test_status_and_report_of_a_failed_transfer(
    graph: Graph, source: FhirClient, stack_env: dict[str, str], run_id: str, tmp_path: Path
) -> None:
    p = f"insp-fail-{run_id}"
    name = stage_observation_of_a_patient_the_target_lacks(graph, source, p)
    load = run_cli("load", "--transfer", name, "--no-progress", "--on-reject", "stop", check=False)
    assert load.returncode == 1

    rows = run_browse_query(graph, "failed", transfer=name)
    assert [r["key"] for r in rows] == [f"Observation/{p}-obs"]
    assert "no-such-patient" in rows[0]["error"]

    status = check_status_against_neo4j(graph, name)
    assert status["bundles"]["by_status"]["failed"] == 1
    assert [f["key"] for f in status["failures"]] == [f"Observation/{p}-obs"]
    assert "no-such-patient" in status["last_error"] and status["last_error"].startswith("bundle ")
    text_status = run_cli("status", "--transfer", name).stdout
    assert "last error: bundle" in text_status and "no-such-patient" in text_status

    html = report_html(name, tmp_path)
    assert cell_count(html, "Observation") == [0, 1, 1]  # loaded, failed, total
    failures = html.split("Failures</h2>", 1)[1]
    assert "HAPI-1094" in failures and "Patient/no-such-patient" in failures
    assert f"Observation/{p}-obs" in failures


def test_report_to_an_unwritable_path_is_one_line(
    graph: Graph, finished: tuple[str, str], tmp_path: Path
) -> None:
    name, _ = finished
    result = run_cli("report", "--transfer", name, "--out", str(tmp_path / "missing" / "r.html"), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot write report") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_browse_lists_queries_and_prints_a_link(stack_env: dict[str, str], run_id: str) -> None:
    listing = run_cli("browse").stdout.splitlines()
    assert [line.split()[0] for line in listing] == saved_query_names()
    assert all(len(line.split(None, 1)) == 2 for line in listing)  # each with its comment
    url = run_cli(
        "browse", "dangling", "--transfer", f"a&b#{run_id}", env={"NEO4J_BROWSER_URL": "http://h:1/browser"}
    ).stdout.strip()
    bolt = CONFIG["NEO4J_BOLT_PORT"]  # the stack's, which may not be the default 7687
    assert url.startswith(
        f"http://h:1/browser/?dbms=bolt%3A%2F%2Fneo4j%40127.0.0.1%3A{bolt}&db=neo4j&cmd=edit&arg="
    )
    assert "%5Cu0026b%5Cu0023" in url  # & and # as Cypher escapes, which Browser's URL parsing keeps
    missing = run_cli("browse", "patient", check=False)
    assert missing.returncode == 1 and "--param key=" in missing.stderr
    unknown = run_cli("browse", "nope", check=False)
    assert unknown.returncode == 1 and "known: bundles" in unknown.stderr
    style = run_cli("browse", "--style")
    assert "node.Patient {" in style.stdout and ":style" in style.stderr
