"""The crawl from the source's Bulk Data ``$export`` against the paging crawl of the same resources.

    .venv/bin/python -m bench.export --size 10k --rounds 3 [--out bench/RESULTS.md]

The resources are the Synthea patients of ``bench/run.py``'s scenario of that size. The paging
crawl is that scenario (``Patient/<id>/$everything`` seeds, then the missing references); the
export crawl asks for the same patients' compartments in one job, ``Group/<id>/$export`` of a
Group whose members are those patients (put on the source once), then fetches the missing
references the same way; the patient export crawl does the same with ``Patient/$export`` and
``patient`` = those patients (HAPI then loads no ``_include`` of every type, which its Group
export does). Each round runs all three into fresh transfers, the order alternating
between rounds, and times the whole ``fhirgraph crawl`` command (kick-off, polling, files and
missing references for the export); the staged transfers are then deleted. Prints a Markdown
table of medians and, with ``--out``, writes it as the section "Bulk Data export" of the
results file.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import click

from bench.run import SEED, machine, synthea_scenario, timed_crawl, write_section
from fhirgraph.fhir import bulk
from fhirgraph.fhir.client import FhirClient
from fhirgraph.testing import stack

SECTION = "## Bulk Data export"
METHODS = ("paging", "export", "patient export")
#: the patient-compartment types of the Synthea data: a Group export without ``_type`` makes
#: HAPI search every compartment type for every member (80 s instead of 32 s at 10k)
COMPARTMENT_TYPES = (
    "Patient,Observation,Procedure,Condition,Encounter,Claim,ExplanationOfBenefit,DocumentReference,"
    "DiagnosticReport,Immunization,SupplyDelivery,MedicationRequest,CareTeam,CarePlan,Device,"
    "MedicationAdministration,Coverage,ImagingStudy,Goal,AllergyIntolerance,Provenance"
)


def put_group(source: FhirClient, size: str, patient_seeds: tuple[str, ...]) -> str:
    """A Group on the source whose members are the scenario's patients; its id."""
    group_id = f"fhirgraph-bench-export-{size}"
    members = [{"entity": {"reference": seed.removesuffix("/$everything")}} for seed in patient_seeds]
    group = {"resourceType": "Group", "id": group_id, "type": "person", "actual": True, "member": members}
    source.request("PUT", f"Group/{group_id}", body=group, retry=True)
    return group_id


def job_seconds(source: FhirClient, group_id: str) -> float:
    """The export job alone on the server: kick-off to manifest, polled every half second."""
    started = time.monotonic()
    status_url = bulk.kick_off(source, f"Group/{group_id}/$export", [("_type", COMPARTMENT_TYPES)])
    bulk.poll(source, status_url, sleep=lambda seconds: time.sleep(min(seconds, 0.5)))
    return time.monotonic() - started


@click.command()
@click.option("--size", default="10k", show_default=True, type=click.Choice(["1k", "10k", "50k"]))
@click.option("--rounds", default=3, show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the section into this file."
)
def main(size: str, rounds: int, out: Path | None) -> None:
    with FhirClient(stack.SOURCE_URL, name="source", timeout=600.0) as source:
        scenario = synthea_scenario(source, size)
        group_id = put_group(source, size, scenario.seeds)
    export_seed = f"Group/{group_id}/$export?_type={COMPARTMENT_TYPES}"
    patients = ",".join(seed.removesuffix("/$everything") for seed in scenario.seeds)
    patient_seed = f"Patient/$export?_type={COMPARTMENT_TYPES}&patient={patients}"
    seeds = {"paging": scenario.seeds, "export": (export_seed,), "patient export": (patient_seed,)}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    jobs: list[float] = []
    staged: dict[str, int] = {}
    for number in range(rounds):
        for method in METHODS if number % 2 == 0 else tuple(reversed(METHODS)):
            seconds, staged[method] = timed_crawl(seeds[method], "bench-export")
            times[method].append(seconds)
            click.echo(f"round {number + 1} {method}: {seconds:.1f}s {staged[method]} staged", err=True)
        with FhirClient(stack.SOURCE_URL, name="source", timeout=600.0) as source:
            jobs.append(job_seconds(source, group_id))
        click.echo(f"round {number + 1} the export job alone: {jobs[-1]:.1f}s", err=True)
    paging = statistics.median(times["paging"])
    lines = [
        f"{SECTION} ({size})",
        "",
        f"- machine: {machine()}",
        f"- command: `.venv/bin/python -m bench.export --size {size} --rounds {rounds}`",
        f"- what: `fhirgraph crawl` of the Synthea {size} scenario (seed {SEED}, {len(scenario.seeds)} "
        f"patients): paging = `Patient/<id>/$everything` seeds, export = `Group/{group_id}/$export` "
        "of the same patients with `_type` = the Synthea types of the patient compartment, patient "
        "export = `Patient/$export` with the same `_type` and `patient` = those patients (kicked off "
        "by POST); all then fetch the missing references; rounds interleaved, "
        f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| crawl | rounds | staged | seconds (median) | spread | resources/s | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        seconds = statistics.median(times[method])
        lines.append(
            f"| {method} | {len(times[method])} | {staged[method]} | {seconds:.1f} | "
            f"{min(times[method]):.1f} to {max(times[method]):.1f} | {staged[method] / seconds:.0f} | "
            f"{paging / seconds:.2f}x |"
        )
    job = statistics.median(jobs)
    lines += [
        "",
        f"The export job alone on the server (kick-off to manifest, polled every 0.5 s, no files read): "
        f"median {job:.1f} s ({min(jobs):.1f} to {max(jobs):.1f}), "
        f"{job / statistics.median(times['export']):.0%} of the export crawl.",
        "",
    ]
    click.echo("\n".join(lines))
    click.echo(json.dumps(times), err=True)
    if out is not None:
        write_section(out, f"{SECTION} ({size})", lines)


if __name__ == "__main__":
    main()
