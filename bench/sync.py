"""A sync against the first transfer of the same cohort, side by side: nothing changed, 1 %, 10 %.

    .venv/bin/python -m bench.sync --size 10k --rounds 3 [--changed 0.01,0.1] [--out bench/RESULTS.md]

Each round, on the Synthea scenario of ``bench/run.py`` (the first patients whose
bundles reach the size, seeded by ``$everything``, loaded into the source once):
the target is emptied (``$expunge``), ``fhirgraph transfer`` copies the cohort
(timed), ``fhirgraph sync`` runs with nothing changed on the source (timed), then for
each share in ``--changed``, that share of the cohort's Observations gets a new note
on the source and ``fhirgraph sync`` runs again (timed, and checked: it must have
updated exactly those). Prints a Markdown table of medians and, with ``--out``, writes it as the
section "Keeping a copy current (sync)" of the results file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from bench.run import ENV, SEED, expunge, machine, synthea_scenario, write_section
from fhirgraph import jsontext
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.staging import reset_transfer
from fhirgraph.testing import stack

FHIRGRAPH = str(Path(sys.executable).with_name("fhirgraph"))
SECTION = "## Keeping a copy current (sync)"


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    result = subprocess.run([FHIRGRAPH, *args, "--no-progress"], env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise click.ClickException(
            f"fhirgraph {args[0]} exited {result.returncode}: {result.stdout}{result.stderr}"
        )
    return seconds, result.stdout


def counted(summary: str, what: str) -> int:
    return int(re.search(rf"{what} (\d+)", summary)[1])  # type: ignore[index]


def change_observations(source: FhirClient, graph: Graph, name: str, share: float) -> int:
    """Give ``share`` of the transfer's Observations a new value on the source; how many."""
    rows = graph.query(
        "MATCH (n:Resource {transfer: $t, type: 'Observation', status: 'loaded'}) RETURN n.json AS json",
        t=name,
    )
    observations = [jsontext.loads(row["json"]) for row in rows]
    step = max(1, round(1 / share))
    chosen = observations[::step]
    entries = []
    for observation in chosen:
        observation.pop("meta", None)
        note = observation.setdefault("note", [])
        note.append({"text": f"sync bench {secrets.token_hex(4)}"})
        entries.append(
            {"resource": observation, "request": {"method": "PUT", "url": f"Observation/{observation['id']}"}}
        )
    source.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries}, retry=False)
    return len(chosen)


def run_round(scenario_seeds: tuple[str, ...], shares: list[float]) -> dict[str, Any]:
    name = f"bench-sync-{secrets.token_hex(4)}"
    env = {**ENV, "FHIRGRAPH_LINKAGE_KEY": secrets.token_hex(32)}
    with (
        FhirClient(stack.TARGET_URL, name="target", timeout=600.0) as target,
        FhirClient(stack.SOURCE_URL, name="source", timeout=600.0) as source,
        Graph(stack.NEO4J) as graph,
    ):
        expunge(target)
        first, out = timed(["transfer", "--transfer", name, *scenario_seeds], env)
        resources = counted(out, "created")
        unchanged, out = timed(["sync", "--transfer", name], env)
        assert counted(out, "updated") == 0 and counted(out, "created") == 0, out
        partial: dict[str, Any] = {}
        for share in shares:
            changed = change_observations(source, graph, name, share)
            seconds, out = timed(["sync", "--transfer", name], env)
            if counted(out, "updated") != changed:
                raise click.ClickException(
                    f"sync updated {counted(out, 'updated')}, not the {changed} changed: {out}"
                )
            partial[f"{share:g}"] = {"changed": changed, "seconds": seconds}
        reset_transfer(graph, name)
    return {"resources": resources, "first": first, "unchanged": unchanged, "partial": partial}


def table(runs: list[dict[str, Any]]) -> list[str]:
    first = statistics.median(float(r["first"]) for r in runs)
    rows = [
        ("first transfer", [float(r["first"]) for r in runs], f"{runs[0]['resources']} created"),
        ("sync, nothing changed", [float(r["unchanged"]) for r in runs], "nothing"),
    ]
    for share, measured in runs[0]["partial"].items():
        rows.append(
            (
                f"sync, {float(share) * 100:g} % of the Observations changed",
                [float(r["partial"][share]["seconds"]) for r in runs],
                f"{measured['changed']} updated in place",
            )
        )
    lines = [
        "| run | rounds | wall s (median) | spread | / first transfer | faster | sent |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, values, sent in rows:
        seconds = statistics.median(values)
        lines.append(
            f"| {label} | {len(values)} | {seconds:.1f} | {min(values):.1f} to {max(values):.1f} | "
            f"{seconds / first:.2f} | {first / seconds:.1f}x | {sent} |"
        )
    return lines


@click.command()
@click.option("--size", default="10k", show_default=True, type=click.Choice(["1k", "10k", "50k"]))
@click.option("--rounds", default=3, show_default=True)
@click.option(
    "--changed", "shares", default="0.01,0.1", show_default=True, help="Shares of the Observations changed."
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the section into this file."
)
def main(size: str, rounds: int, shares: str, out: Path | None) -> None:
    with FhirClient(stack.SOURCE_URL, name="source", timeout=600.0) as source:
        scenario = synthea_scenario(source, size)
    runs = []
    for number in range(rounds):
        runs.append(run_round(scenario.seeds, [float(x) for x in shares.split(",")]))
        click.echo(f"round {number + 1}: {json.dumps(runs[-1])}", err=True)
    lines = [
        SECTION,
        "",
        f"- machine: {machine()}",
        f"- command: `.venv/bin/python -m bench.sync --size {size} --rounds {rounds} --changed {shares}`",
        f"- scenario: Synthea {size} (seed {SEED}, `Patient/<id>/$everything` seeds), "
        f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        *table(runs),
        "",
    ]
    click.echo("\n".join(lines))
    if out is not None:
        write_section(out, SECTION, lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
