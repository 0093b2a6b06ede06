"""The crawl with 1, 2, 4 and 8 concurrent readers of the source, side by side.

    .venv/bin/python -m bench.reads --size 10k --rounds 3 [--readers 1,2,4,8] [--out bench/RESULTS.md]

Each round runs ``fhirgraph crawl --read-concurrency N`` of the Synthea scenario of
``bench/run.py`` (``$everything`` seeds, then the missing references) into a fresh
transfer for every N, the order alternating between rounds, and times it; the staged
transfer is then deleted. Prints a Markdown table of medians and, with ``--out``,
writes it as the section "Concurrent reads" of the results file.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import click

from bench.run import SEED, machine, synthea_scenario, timed_crawl, write_section
from fhirgraph.fhir.client import FhirClient
from fhirgraph.testing import stack

SECTION = "## Concurrent reads"


@click.command()
@click.option("--size", default="10k", show_default=True, type=click.Choice(["1k", "10k", "50k"]))
@click.option("--rounds", default=3, show_default=True)
@click.option("--readers", default="1,2,4,8", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the section into this file."
)
def main(size: str, rounds: int, readers: str, out: Path | None) -> None:
    counts = [int(n) for n in readers.split(",")]
    with FhirClient(stack.SOURCE_URL, name="source", timeout=600.0) as source:
        scenario = synthea_scenario(source, size)
    times: dict[int, list[float]] = {n: [] for n in counts}
    staged: dict[int, int] = {}
    for number in range(rounds):
        for n in counts if number % 2 == 0 else list(reversed(counts)):
            seconds, staged[n] = timed_crawl(["--read-concurrency", str(n), *scenario.seeds], "bench-reads")
            times[n].append(seconds)
            click.echo(f"round {number + 1} readers={n}: {seconds:.1f}s {staged[n]} staged", err=True)
    one = statistics.median(times[counts[0]])
    lines = [
        SECTION,
        "",
        f"- machine: {machine()}",
        f"- command: `.venv/bin/python -m bench.reads --size {size} --rounds {rounds} --readers {readers}`",
        f"- what: `fhirgraph crawl` of the Synthea {size} scenario (seed {SEED}, {len(scenario.seeds)} "
        f"`$everything` seeds, then the missing references), date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| readers | rounds | staged | crawl s (median) | spread | resources/s | / one reader |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in counts:
        seconds = statistics.median(times[n])
        lines.append(
            f"| {n} | {len(times[n])} | {staged[n]} | {seconds:.1f} | {min(times[n]):.1f} to {max(times[n]):.1f} | "
            f"{staged[n] / seconds:.0f} | {seconds / one:.2f} |"
        )
    lines.append("")
    click.echo("\n".join(lines))
    click.echo(json.dumps(times), err=True)
    if out is not None:
        write_section(out, SECTION, lines)


if __name__ == "__main__":
    main()
