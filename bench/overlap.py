"""End to end against the baseline, with and without loading while the crawl goes on.

    .venv/bin/python -m bench.overlap --sizes 10k,50k --rounds 3 [--out bench/RESULTS.md]

On ``bench/run.py``'s Synthea scenarios (``$everything`` seeds, loaded into the source once),
each round runs, into an emptied target and in an order that turns from round to round:
the **baseline** (plain paging by one reader, then pre-built ordered bundles, as in
``bench/run.py``), **fhirgraph** with its defaults (``--on-dangling fail``: nothing is
written before the crawl ends), and fhirgraph under ``--on-dangling drop-reference`` with
the load overlapping the crawl and with ``--no-overlap``. Prints a Markdown table of medians
and ratios to the baseline and, with ``--out``, writes it as the section "End to end, overlap
(LABEL)" of the results file. The servers are the stack's (``stack/config.env``; a
PostgreSQL pair with ``HAPI_DB=postgres``).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path

import click

from bench.run import (
    Run,
    database_name,
    expunge,
    fhirgraph_run,
    machine,
    prebuild,
    synthea_scenario,
    write_section,
)
from bench.run import (
    baseline as baseline_run,
)
from fhirgraph.fhir.client import FhirClient
from fhirgraph.testing import stack

VARIANTS: dict[str, tuple[str, ...]] = {
    "fhirgraph (defaults: fail, no overlap)": (),
    "fhirgraph drop-reference, overlap": ("--on-dangling", "drop-reference"),
    "fhirgraph drop-reference, --no-overlap": ("--on-dangling", "drop-reference", "--no-overlap"),
}


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[0]


def _processes(*needles: str) -> list[int]:
    """The processes whose command line holds every one of ``needles``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in line for n in needles):
            found.append(int(proc.name))
    return found


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` (threads started later inherit it) runs on ``cpus`` only."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def pin_target() -> str:
    """Give the target's JVM the last core to itself and everything else of the stack (source,
    Neo4j, PostgreSQL, this process and what it starts) the others: a stand-in for a target on
    a machine of its own. Returns what was pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise click.ClickException("--own-core needs at least 2 cores")
    mine, rest = {cpus[-1]}, set(cpus[:-1])
    target_port = stack.TARGET_URL.split(":")[2].split("/")[0]
    source_port = stack.SOURCE_URL.split(":")[2].split("/")[0]
    targets = _processes("java", f"--server.port={target_port}")
    if len(targets) != 1:
        raise click.ClickException(f"--own-core: found {len(targets)} target JVMs on port {target_port}")
    others = [
        *_processes("java", f"--server.port={source_port}"),
        *_processes("java", "org.neo4j"),
        *_processes("postgres"),
    ]
    _pin(targets[0], mine)
    for pid in others:
        _pin(pid, rest)
    os.sched_setaffinity(0, rest)
    return f"target JVM on core {cpus[-1]}, source, Neo4j, PostgreSQL and the tools on {sorted(rest)}"


def unpin() -> None:
    """Undo :func:`pin_target`: every process of the stack may run on every core again."""
    cpus = set(range(os.cpu_count() or 1))
    for pid in [
        *_processes("java", "--server.port="),
        *_processes("java", "org.neo4j"),
        *_processes("postgres"),
    ]:
        with contextlib.suppress(OSError):
            _pin(pid, cpus)


@click.command()
@click.option("--sizes", default="10k,50k", show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--bundle-size", default=250, show_default=True)
@click.option("--concurrency", default=2, show_default=True)
@click.option(
    "--label",
    default=database_name,
    show_default="HAPI_DB's: H2 or PostgreSQL",
    help="The servers' database, for the title.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--own-core",
    is_flag=True,
    help="Pin the target's JVM to the last core and the rest of the stack to the others "
    "(a target on a machine of its own); undone at the end.",
)
def main(
    sizes: str, rounds: int, bundle_size: int, concurrency: int, label: str, out: Path | None, own_core: bool
) -> None:
    pinned = pin_target() if own_core else ""
    try:
        run(sizes, rounds, bundle_size, concurrency, label, out, pinned)
    finally:
        if own_core:
            unpin()


def run(
    sizes: str, rounds: int, bundle_size: int, concurrency: int, label: str, out: Path | None, pinned: str
) -> None:
    command = [
        ".venv/bin/python -m bench.overlap",
        "--sizes",
        sizes,
        "--rounds",
        str(rounds),
        "--label",
        label,
    ]
    if pinned:
        command.append("--own-core")
    lines = [
        f"## End to end, overlap ({label}{', target on a core of its own' if pinned else ''})",
        "",
        f"`{' '.join(command)}`, "
        f"{time.strftime('%Y-%m-%d')}, {machine()}; bundle size {bundle_size}, concurrency {concurrency}, "
        f"read concurrency default; medians of {rounds} interleaved rounds (order turning each round), "
        "target emptied before each run." + (f" Pinned: {pinned}." if pinned else ""),
        "",
        "| size | run | seconds | x baseline | crawl | plan | load | loaded while crawling | peak RSS MB | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with (
        FhirClient(stack.SOURCE_URL, name="source", timeout=900.0) as source,
        FhirClient(stack.TARGET_URL, name="target", timeout=900.0) as target,
    ):
        for size in sizes.split(","):
            scenario = synthea_scenario(source, size)
            prebuilt = prebuild(scenario, bundle_size)
            names = ["baseline", *VARIANTS]
            runs: dict[str, list[Run]] = {name: [] for name in names}
            loads: dict[str, list[float]] = {name: [] for name in names}
            for i in range(rounds):
                for name in names[i % len(names) :] + names[: i % len(names)]:
                    expunge(target)
                    loads[name].append(float(load_average()))
                    if name == "baseline":
                        started = time.monotonic()
                        created, stages = baseline_run(source, target, scenario, prebuilt, concurrency)
                        runs[name].append(Run(name, size, created, time.monotonic() - started, stages))
                    else:
                        run = fhirgraph_run(scenario, bundle_size, concurrency, VARIANTS[name], name)
                        if not run.ok:
                            raise click.ClickException(f"{name} failed: {run.note}")
                        runs[name].append(run)
                    click.echo(f"{size} round {i + 1}: {name} {runs[name][-1].seconds:.1f}s", err=True)
            base = statistics.median(r.seconds for r in runs["baseline"])
            for name in names:
                rs = runs[name]
                seconds = statistics.median(r.seconds for r in rs)

                def stage(key: str, rs: list[Run] = rs) -> str:
                    values = [r.stages.get(key) for r in rs if r.stages.get(key) is not None]
                    return f"{statistics.median(values):.1f}" if values else "-"  # type: ignore[type-var]

                rss = [r.peak_rss_mb for r in rs if r.peak_rss_mb]
                lines.append(
                    f"| {size} | {name} | {seconds:.1f} | {seconds / base:.2f} | "
                    + (
                        f"{stage('read')} (read) | - | {stage('write')} (write) | - | - |"
                        if name == "baseline"
                        else f"{stage('crawl')} | {stage('plan')} | {stage('load')} | "
                        f"{statistics.median(r.early for r in rs):.0f} of {rs[0].resources} | "
                        f"{statistics.median(rss):.0f} |"
                    )
                    + f" {statistics.median(loads[name]):.1f} |"
                )
    click.echo("\n".join(lines))
    if out:
        write_section(out, lines[0], lines)


if __name__ == "__main__":
    main()
