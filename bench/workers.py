"""Load throughput with 1, 2 and 4 worker processes against the load in one process, side by side.

    .venv/bin/python bench/workers.py --rounds 2 [--workers 0,1,2,4] [--patients 3]

Puts ``--patients`` generated cohorts on the source once per run (a Patient, 40
Encounter/Condition cycles and 50 Observations per Encounter: about 2,100
resources each), then, round by round with the variants interleaved, runs
``fhirgraph transfer --workers N`` (0: the load in the transfer's own process,
``--concurrency 2``) into the target with a fresh linkage key, and measures the
load's wall time, the CPU seconds the fhirgraph processes spent (``getrusage``
of the children, workers included) and those the target's JVM spent
(``/proc/<pid>/stat``). Prints a Markdown table of medians.
"""

from __future__ import annotations

import os
import re
import resource
import secrets
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from fhirgraph.fhir.client import FhirClient
from fhirgraph.testing import stack

ROOT = Path(__file__).resolve().parents[1]
FHIRGRAPH = str(Path(sys.executable).with_name("fhirgraph"))
TICKS = os.sysconf("SC_CLK_TCK")


def cohort(p: str, encounters: int = 40, observations: int = 50) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = [{"resourceType": "Patient", "id": f"{p}-pat"}]
    for e in range(encounters):
        resources.append(
            {
                "resourceType": "Encounter",
                "id": f"{p}-e{e}",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "diagnosis": [{"condition": {"reference": f"Condition/{p}-c{e}"}}],
            }
        )
        resources.append(
            {
                "resourceType": "Condition",
                "id": f"{p}-c{e}",
                "subject": {"reference": f"Patient/{p}-pat"},
                "encounter": {"reference": f"Encounter/{p}-e{e}"},
            }
        )
        resources += [
            {
                "resourceType": "Observation",
                "id": f"{p}-e{e}-o{o}",
                "status": "final",
                "code": {"text": "bp"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "encounter": {"reference": f"Encounter/{p}-e{e}"},
                "valueQuantity": {"value": 120.5},
            }
            for o in range(observations)
        ]
    return resources


def target_cpu_seconds() -> float:
    pid = (ROOT / ".stack" / "run" / "target.pid").read_text().split()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(prefixes: list[str], workers: int) -> dict[str, float]:
    name = f"bench-workers-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "NEO4J_URI": stack.NEO4J.uri,
        "NEO4J_USER": stack.NEO4J.user,
        "NEO4J_PASSWORD": stack.NEO4J.password,
        "FHIRGRAPH_SOURCE_URL": stack.SOURCE_URL,
        "FHIRGRAPH_TARGET_URL": stack.TARGET_URL,
        "FHIRGRAPH_LINKAGE_KEY": secrets.token_hex(32),
    }
    seeds = [f"Observation?subject=Patient/{p}-pat" for p in prefixes]
    args = [FHIRGRAPH, "transfer", "--transfer", name, "--no-progress", *seeds]
    args += ["--workers", str(workers)] if workers else []
    cpu, target = children_cpu_seconds(), target_cpu_seconds()
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    cpu, target = children_cpu_seconds() - cpu, target_cpu_seconds() - target
    if result.returncode != 0:
        raise click.ClickException(f"fhirgraph exited {result.returncode}: {result.stdout}{result.stderr}")
    load = float(re.search(r"load ([0-9.]+)s", result.stdout)[1])  # type: ignore[index]
    created = int(re.search(r"created (\d+)", result.stdout)[1])  # type: ignore[index]
    subprocess.run(
        [FHIRGRAPH, "reset", "--transfer", name, "--yes"], env=env, capture_output=True, check=True
    )
    return {"load": load, "rate": created / load, "cpu": cpu, "target_cpu": target, "resources": created}


@click.command()
@click.option("--rounds", default=2, show_default=True)
@click.option("--workers", "variants", default="0,1,2,4", show_default=True)
@click.option(
    "--patients", default=3, show_default=True, help="Generated cohorts (about 2,100 resources each)."
)
def main(rounds: int, variants: str, patients: int) -> None:
    counts = [int(v) for v in variants.split(",")]
    prefixes = [f"bw-{uuid.uuid4().hex[:6]}-{i}" for i in range(patients)]
    with FhirClient(stack.SOURCE_URL, name="source", timeout=600.0) as source:
        for p in prefixes:
            entries = [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in cohort(p)
            ]
            source.transaction(
                {"resourceType": "Bundle", "type": "transaction", "entry": entries}, retry=False
            )
    results: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for round_number in range(rounds):
        for n in counts if round_number % 2 == 0 else list(reversed(counts)):
            results[n].append(run_once(prefixes, n))
            click.echo(f"round {round_number + 1} workers={n}: {results[n][-1]}", err=True)
    click.echo(
        "| workers | resources | load s | resources/s | fhirgraph CPU s | target CPU s | fhirgraph busy |"
    )
    click.echo("|---|---|---|---|---|---|---|")
    for n, runs in results.items():
        load = statistics.median(r["load"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        click.echo(
            f"| {n or 'in process'} | {int(runs[0]['resources'])} | {load:.1f} | "
            f"{statistics.median(r['rate'] for r in runs):.0f} | {cpu:.1f} | "
            f"{statistics.median(r['target_cpu'] for r in runs):.1f} | {cpu / load:.2f} cores |"
        )


if __name__ == "__main__":
    main()
