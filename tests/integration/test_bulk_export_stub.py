"""Crawls from a Bulk Data ``$export`` into the real Neo4j, the source being a loopback stub
that plays an export server: a job that runs for a while, then NDJSON files.

The stub makes what HAPI will not do on demand (a job that never ends, a job that fails, a
file on another host, a server that forgets a job) and counts every kick-off, poll and
``DELETE``; the real-HAPI tests are in ``test_bulk_export.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fhirgraph.graph import Graph
from tests.fakes import export_manifest, export_running, fhir, ndjson, outcome, searchset

from .conftest import interruptible, run_cli, transfer_nodes, transfer_properties
from .stubs import Request, StubServer, metadata_then, stub_server

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Export"}]}
OBSERVATIONS = [
    {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": "Patient/p1"},
        "performer": [{"reference": "Practitioner/d1"}],
    }
    for n in range(1, 4)
]
#: the exact text of a decimal must survive: 120.00, not 120.0
EXACT = '{"resourceType":"Observation","id":"o4","status":"final","code":{"text":"bp"},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":120.00}}'
PRACTITIONER = {"resourceType": "Practitioner", "id": "d1"}


@dataclass
class ExportSource:
    """An export server: each job answers 202 ``running_polls`` times, then its manifest."""

    running_polls: int = 2
    fail_with: str | None = None
    foreign_file: str | None = None
    #: the status a ``DELETE`` of a finished job gets (HAPI keeps its files: 404)
    release_status: int = 202
    kickoffs: list[Request] = field(default_factory=list)
    polls: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)
    base: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Request) -> httpx.Response:
        path, _, query = request.path.partition("?")
        with self.lock:
            if path.endswith("/$export"):
                self.kickoffs.append(request)
                job = f"job-{len(self.kickoffs)}"
                self.jobs[job] = self.running_polls
                return httpx.Response(
                    202, headers={"Content-Location": f"{self.base}/$export-poll-status?_jobId={job}"}
                )
            if path.endswith("/$export-poll-status"):
                job = query.partition("_jobId=")[2]
                if request.method == "DELETE":
                    self.deletes.append(job)
                    if self.jobs.get(job, 1) > 0:
                        self.jobs.pop(job, None)
                        return outcome(202, "cancelled")
                    if self.release_status == 202:
                        self.jobs.pop(job, None)
                    return outcome(self.release_status, f"release of {job}")
                self.polls.append(job)
                if job not in self.jobs:
                    return outcome(404, f"Unknown instance ID: {job}")
                if self.fail_with:
                    return outcome(500, self.fail_with)
                if self.jobs[job] > 0:
                    self.jobs[job] -= 1
                    return export_running(f"Build in progress ({job})", retry_after="1")
                files = [
                    ("Patient", f"{self.base}/Binary/f-patient"),
                    ("Observation", f"{self.base}/Binary/f-obs"),
                ]
                if self.foreign_file:
                    files.append(("Observation", self.foreign_file))
                return export_manifest(files)
        if path.endswith("/Binary/f-patient"):
            return ndjson([json.dumps(PATIENT)])
        if path.endswith("/Binary/f-obs"):
            return ndjson([json.dumps(o) for o in OBSERVATIONS] + [EXACT])
        if path.endswith("/Practitioner"):
            return fhir(searchset([{"resource": PRACTITIONER}]) if "d1" in query else searchset([]))
        if request.method == "GET" and "/" not in path.removeprefix("/fhir/"):
            return fhir(searchset([]))  # any other search (the clock read before a crawl)
        return outcome(404, f"not here: {request.path}")


@pytest.fixture
def exporter() -> Iterator[tuple[ExportSource, StubServer]]:
    source = ExportSource()
    server = StubServer(metadata_then(source)).start()
    source.base = server.base
    try:
        yield source, server
    finally:
        server.stop()


def crawl_args(name: str, base: str) -> list[str]:
    return ["crawl", "--transfer", name, "--source", base, "$export?_type=Patient,Observation"]


EXPECTED = {
    "Patient/p1",
    "Observation/o1",
    "Observation/o2",
    "Observation/o3",
    "Observation/o4",
    "Practitioner/d1",
}


def test_an_export_is_staged_with_what_it_references(
    exporter: tuple[ExportSource, StubServer], graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    source, server = exporter
    name = f"export-stub-{run_id}"
    result = run_cli(*crawl_args(name, server.base))
    assert "staged from 1 export job(s)" in result.stdout
    nodes = transfer_nodes(graph, name)
    assert set(nodes) == EXPECTED
    assert {k for k, n in nodes.items() if n["status"] == "crawled"} == EXPECTED
    # exported resources are seeds; the Practitioner was fetched as missing
    assert {k for k, n in nodes.items() if n["seed"]} == EXPECTED - {"Practitioner/d1"}
    assert nodes["Observation/o4"]["json"] == EXACT
    edges = graph.query(
        "MATCH (a:Resource {transfer: $t})-[r:REFERENCES]->(b) RETURN a.key AS a, r.path AS path, b.key AS b",
        t=name,
    )
    assert len(edges) == 4 + 3  # a subject each, a performer for o1-o3
    (kickoff,) = source.kickoffs
    assert kickoff.headers["Prefer"] == "respond-async" and kickoff.headers["Cache-Control"] == "no-cache"
    assert source.polls == ["job-1"] * 3
    assert "export_status_url" not in transfer_properties(graph, name)
    file_reads = [r for r in server.requests if "/Binary/" in r.path]
    assert {r.headers["Accept"] for r in file_reads} == {"application/fhir+ndjson"}
    # once every file was read the job was released, so the server may remove its files
    assert source.deletes == ["job-1"] and "job-1" not in source.jobs
    methods = [r.method for r in server.requests if "/Binary/" in r.path or "poll-status" in r.path]
    assert methods[-1] == "DELETE" and methods.count("DELETE") == 1
    assert "release" not in result.stderr  # nothing to say about it
    run_cli("reset", "--transfer", name, "--yes")


@pytest.mark.parametrize("status", [404, 500])
def test_a_job_the_server_will_not_release_changes_nothing(
    exporter: tuple[ExportSource, StubServer],
    graph: Graph,
    stack_env: dict[str, str],
    run_id: str,
    status: int,
) -> None:
    """HAPI keeps a finished job's files (404): said nowhere; a failed release (500) is a warning,
    and the crawl is whole either way."""
    source, server = exporter
    source.release_status = status
    name = f"export-keep-{status}-{run_id}"
    result = run_cli(*crawl_args(name, server.base))
    assert set(transfer_nodes(graph, name)) == EXPECTED
    assert source.deletes[0] == "job-1" and "job-1" in source.jobs
    warned = "did not take the release of its finished $export job" in result.stderr
    assert warned == (status == 500), result.stderr
    assert "Traceback" not in result.stderr
    run_cli("reset", "--transfer", name, "--yes")


def test_killed_while_polling_then_resumed_polls_the_same_job(
    exporter: tuple[ExportSource, StubServer], graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    source, server = exporter
    name = f"export-kill-{run_id}"
    killed = run_cli(
        *crawl_args(name, server.base), env={"FHIRGRAPH_CRASH_AT": "export_polling"}, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    status_url = transfer_properties(graph, name)["export_status_url"]
    assert status_url == f"{server.base}/$export-poll-status?_jobId=job-1"
    assert transfer_nodes(graph, name) == {}  # nothing is staged before the job has finished

    resumed = run_cli(*crawl_args(name, server.base))
    assert f"1 resumed after an interruption ({status_url})" in resumed.stdout
    assert len(source.kickoffs) == 1 and set(source.polls) == {"job-1"}
    assert source.deletes == ["job-1"]
    assert set(transfer_nodes(graph, name)) == EXPECTED
    counts = graph.query("MATCH (n:Resource {transfer: $t}) RETURN n.key AS key, count(*) AS n", t=name)
    assert all(row["n"] == 1 for row in counts)
    assert "export_status_url" not in transfer_properties(graph, name)
    run_cli("reset", "--transfer", name, "--yes")


def test_a_job_the_server_lost_is_started_again(
    exporter: tuple[ExportSource, StubServer], graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    source, server = exporter
    name = f"export-lost-{run_id}"
    killed = run_cli(
        *crawl_args(name, server.base), env={"FHIRGRAPH_CRASH_AT": "export_polling"}, check=False
    )
    assert killed.returncode == -signal.SIGKILL
    source.jobs.clear()  # the server restarted, or the job expired
    result = run_cli(*crawl_args(name, server.base))
    assert "resumed" not in result.stdout
    assert len(source.kickoffs) == 2 and source.polls[:2] == ["job-1", "job-1"]
    assert source.deletes == ["job-2"]  # the job it read, not the lost one
    assert set(transfer_nodes(graph, name)) == EXPECTED
    run_cli("reset", "--transfer", name, "--yes")


def test_ctrl_c_while_the_job_runs_cancels_it_and_stages_nothing(
    exporter: tuple[ExportSource, StubServer], graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    source, server = exporter
    source.running_polls = 1000
    name = f"export-cancel-{run_id}"
    command = [str(Path(sys.executable).with_name("fhirgraph")), *crawl_args(name, server.base)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible
    )
    deadline = time.monotonic() + 60
    while len(source.polls) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert len(source.polls) >= 2, "the crawl never polled the job"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert source.deletes == ["job-1"]
    assert transfer_nodes(graph, name) == {}
    assert "export_status_url" not in transfer_properties(graph, name)
    run_cli("reset", "--transfer", name, "--yes", check=False)


def test_a_failed_job_is_one_line_and_leaves_no_transfer(
    exporter: tuple[ExportSource, StubServer], graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    source, server = exporter
    source.fail_with = "HAPI-2040: the export job ran out of disk"
    name = f"export-fail-{run_id}"
    result = run_cli(*crawl_args(name, server.base), check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "Error: the source server's $export job failed (500): error processing: "
        "HAPI-2040: the export job ran out of disk"
    ], result.stderr
    assert transfer_properties(graph, name) == {}


def test_a_file_on_another_host_is_refused_before_anything_is_sent_to_it(
    exporter: tuple[ExportSource, StubServer], graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    source, server = exporter
    with stub_server(lambda r: ndjson([json.dumps(PATIENT)]), host="127.0.0.2") as elsewhere:
        source.foreign_file = f"{elsewhere.base}/Binary/stolen"
        name = f"export-foreign-{run_id}"
        result = run_cli(*crawl_args(name, server.base), check=False)
        assert result.returncode == 1
        assert "is not on the source base" in result.stderr and "127.0.0.2" in result.stderr
        assert elsewhere.requests == []
    assert not [r for r in server.requests if "/Binary/" in r.path]  # no file read at all
    assert transfer_nodes(graph, name) == {}
