"""Two runs of one transfer at once, and locks left behind by runs that died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph

from .conftest import run_cli, transfer_nodes

FHIRGRAPH = str(Path(sys.executable).with_name("fhirgraph"))


def test_two_runs_of_one_transfer_do_not_duplicate(
    graph: Graph, target: FhirClient, synthea_patients: list[str], stack_env: dict[str, str], run_id: str
) -> None:
    name = f"twice-{run_id}"
    command = [
        FHIRGRAPH,
        "transfer",
        "--transfer",
        name,
        f"Patient/{synthea_patients[0]}/$everything",
        "--no-progress",
    ]
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
        for _ in range(2)
    ]
    results = [(run.wait(timeout=900), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, _, err in results if code == 1)
    winner = next(run.pid for run, (code, _, _) in zip(runs, results, strict=True) if code == 0)
    assert f"being worked on by process {winner}" in refused
    assert len(refused.strip().splitlines()) == 1
    run_cli("verify", "--transfer", name)  # every resource on the target exactly once


def test_a_killed_run_does_not_block_the_next(
    graph: Graph, synthea_patients: list[str], stack_env: dict[str, str], run_id: str
) -> None:
    name = f"stale-{run_id}"
    args = ("transfer", "--transfer", name, f"Patient/{synthea_patients[0]}/$everything", "--no-progress")
    killed = run_cli(*args, env={"FHIRGRAPH_CRASH_AT": "after_commit:1"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    owner = graph.query("MATCH (t:Transfer {name: $n}) RETURN t.lock_owner AS o", n=name)
    assert owner and owner[0]["o"]  # the dead run's lock is still there
    run_cli(*args)  # its process is gone on this host: the lock is taken over at once
    assert all(n["status"] == "loaded" for n in transfer_nodes(graph, name).values())


def test_a_lock_from_another_host_is_honoured_until_it_goes_stale(
    graph: Graph, source: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    name = f"foreign-lock-{run_id}"
    run_cli("crawl", "--transfer", name, "Patient?_count=1", "--limit", "1", "--no-progress")

    def set_lock(seconds_ago: int) -> None:
        graph.query(
            "MATCH (t:Transfer {name: $n}) SET t.lock_owner = 'elsewhere.example:4242:abcd', "
            "t.lock_heartbeat = datetime() - duration({seconds: $s})",
            n=name,
            s=seconds_ago,
        )

    set_lock(5)
    refused = run_cli("plan", "--transfer", name, check=False)
    assert refused.returncode == 1
    assert "process 4242 on elsewhere.example" in refused.stderr
    set_lock(300)  # no heartbeat for five minutes: stale
    run_cli("plan", "--transfer", name)
