"""What a refused resource costs: the same transfer, clean and with refused resources, side by side.

    .venv/bin/python bench/refusals.py --rounds 3 [--bad 0,1,5] [--size 250]

Each round puts a Patient and ``--size`` Observations of it on the source (the
last ``bad`` of them without the required ``status``), then runs
``fhirgraph transfer`` into the validating target (``stack/up validating``,
started and stopped here if it is not running) with one bundle of ``--size``,
interleaving the variants round by round. It prints a Markdown table: wall time,
load time, and the transactions posted (the bundles plus the sends that isolate
the refused resources), medians over the rounds.
"""

from __future__ import annotations

import os
import re
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from fhirgraph.fhir.client import FhirClient
from fhirgraph.testing import stack

ROOT = Path(__file__).resolve().parents[1]
FHIRGRAPH = str(Path(sys.executable).with_name("fhirgraph"))


def cohort(prefix: str, size: int, bad: int) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = [{"resourceType": "Patient", "id": f"{prefix}-pat"}]
    for i in range(size):
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{prefix}-o{i}",
            "status": "final",
            "code": {"text": f"measure {i}"},
            "subject": {"reference": f"Patient/{prefix}-pat"},
            "valueQuantity": {"value": 120, "unit": "mm[Hg]"},
        }
        if i >= size - bad:
            del observation["status"]
        resources.append(observation)
    return resources


def run_once(source: FhirClient, size: int, bad: int) -> dict[str, float]:
    prefix = f"bench-rej-{uuid.uuid4().hex[:8]}"
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in cohort(prefix, size, bad)
    ]
    source.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries}, retry=False)
    env = {
        **os.environ,
        "NEO4J_URI": stack.NEO4J.uri,
        "NEO4J_USER": stack.NEO4J.user,
        "NEO4J_PASSWORD": stack.NEO4J.password,
        "FHIRGRAPH_SOURCE_URL": stack.SOURCE_URL,
        "FHIRGRAPH_TARGET_URL": stack.VALIDATING_URL,
        "FHIRGRAPH_LINKAGE_KEY": secrets.token_hex(32),
    }
    args = [FHIRGRAPH, "transfer", "--transfer", prefix, "--bundle-size", str(size), "--no-progress"]
    args += ["--resource", f"Patient/{prefix}-pat", f"Observation?subject=Patient/{prefix}-pat"]
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.monotonic() - started
    if result.returncode != (1 if bad else 0):
        raise click.ClickException(f"fhirgraph exited {result.returncode}: {result.stdout}{result.stderr}")
    load = re.search(r"load ([0-9.]+)s", result.stdout)
    bundles = re.search(r"bundles (\d+),", result.stdout)
    isolation = re.search(r"(\d+) sends to isolate", result.stdout)
    subprocess.run(
        [FHIRGRAPH, "reset", "--transfer", prefix, "--yes"], env=env, capture_output=True, check=True
    )
    return {
        "wall": wall,
        "load": float(load[1]) if load else float("nan"),
        "posts": (int(bundles[1]) if bundles else 0) + (int(isolation[1]) if isolation else 0),
    }


@click.command()
@click.option("--rounds", default=3, show_default=True)
@click.option("--size", default=250, show_default=True, help="Observations in the bundle.")
@click.option("--bad", default="0,1,5", show_default=True, help="Refused Observations per variant.")
def main(rounds: int, size: int, bad: str) -> None:
    variants = [int(b) for b in bad.split(",")]
    up = subprocess.run([ROOT / "stack" / "up", "validating"], capture_output=True, text=True)
    if up.returncode != 0:
        raise click.ClickException(f"stack/up validating failed: {up.stderr or up.stdout}")
    started_here = "validating is healthy after" in up.stdout
    results: dict[int, list[dict[str, float]]] = {b: [] for b in variants}
    try:
        with FhirClient(stack.SOURCE_URL, name="source", timeout=300.0) as source:
            for round_number in range(rounds):
                order = variants if round_number % 2 == 0 else list(reversed(variants))
                for variant in order:
                    results[variant].append(run_once(source, size, variant))
                    click.echo(f"round {round_number + 1} bad={variant}: {results[variant][-1]}", err=True)
    finally:
        if started_here:
            subprocess.run([ROOT / "stack" / "down", "validating"], capture_output=True)
    click.echo("| refused of " + str(size) + " | wall s (median) | load s (median, range) | posts |")
    click.echo("|---|---|---|---|")
    for variant, runs in results.items():
        loads = [r["load"] for r in runs]
        click.echo(
            f"| {variant} | {statistics.median(r['wall'] for r in runs):.1f} | "
            f"{statistics.median(loads):.1f} ({min(loads):.1f}-{max(loads):.1f}) | "
            f"{'/'.join(sorted({str(int(r['posts'])) for r in runs}))} |"
        )


if __name__ == "__main__":
    main()
