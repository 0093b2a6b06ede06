"""Side-by-side benchmarks: fhirgraph against the physical limit and against the older library.

One command runs, on the same data and the same server pair:

1. **baseline**: read the resources from the source by plain paging and post
   pre-built, already ordered transaction bundles of them (same bundle size and
   concurrency as fhirgraph, plain creates, ids mapped in memory) to an empty
   target: what any transfer must at least spend;
2. **fhirgraph** ``transfer`` of the same resources into an empty target, with
   the time of each stage and the peak RSS of the process;
3. **fhir-kindling 1.0.3** (the older library, in its own venv because it needs
   ``httpx<0.28``) on the scenarios it supports;
4. **staging at scale**: a generated graph of N resources with Synthea-like
   fan-out written into Neo4j and planned, without FHIR servers.

The target is emptied with ``$expunge`` (expungeEverything) before every
measured run, so every run starts from the same empty target.

    .venv/bin/python bench/run.py --sizes 1k,10k --repeat 3 --out bench/RESULTS.md
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import click

from fhirgraph import jsontext
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import LINKAGE_SYSTEM, key_tag, linkage_tag
from fhirgraph.load import parse_location
from fhirgraph.references import rewrite, strip_source_metadata
from fhirgraph.staging import entry_full_url, reset_transfer
from fhirgraph.testing import stack, synthea

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
KINDLING_VENV = ROOT / "bench" / ".venv-kindling"
SIZES = {"1k": 1_000, "10k": 10_000, "50k": 50_000}
POPULATION = 26  # Synthea patients (~2k resources each) generated once; sizes take a prefix of them
ANALYSIS_MARKER = "<!-- analysis: kept by bench/run.py -->"
STAGE_BATCH = 1000  # resources per staging write at scale (a FHIR page is 200-500)
SCALE_WARMUP = 20_000  # resources staged and planned, unrecorded, before the measured sizes
SEED = 20250101
CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
JSON = dict[str, Any]


CONFIG, SOURCE_URL, TARGET_URL, NEO4J = stack.CONFIG, stack.SOURCE_URL, stack.TARGET_URL, stack.NEO4J
ENV = {
    **os.environ,
    "NEO4J_URI": NEO4J.uri,
    "NEO4J_USER": NEO4J.user,
    "NEO4J_PASSWORD": NEO4J.password,
    "FHIRGRAPH_SOURCE_URL": SOURCE_URL,
    "FHIRGRAPH_TARGET_URL": TARGET_URL,
}


@dataclass
class Run:
    tool: str
    size: str
    resources: int
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    ok: bool = True
    note: str = ""
    #: resources fhirgraph loaded while its crawl went on (overlap)
    early: int = 0


# -- data ----------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """What is transferred: seeds for ``fhirgraph crawl`` plus its crawl and plan options."""

    name: str
    seeds: tuple[str, ...]
    crawl_options: tuple[str, ...] = ()
    plan_options: tuple[str, ...] = ()
    #: how fhir-kindling is asked for the same resources: (mode, argument)
    kindling: tuple[str, str] = ("conditions", "")


def synthea_scenario(source: FhirClient, size: str) -> Scenario:
    """The first Synthea patients whose bundles reach the size, by ``$everything`` (loaded once)."""
    ids = synthea.ensure_loaded(source, POPULATION, SEED, CACHE, echo=True)
    files = synthea.generate(POPULATION, SEED, CACHE)
    wanted, total, chosen = SIZES[size], 0, []
    for patient_id, path in zip(ids, files, strict=True):
        chosen.append(patient_id)
        total += len(json.loads(path.read_text())["entry"])
        if total >= wanted:
            break
    return Scenario(
        size,
        tuple(f"Patient/{pid}/$everything" for pid in chosen),
        kindling=("synthea", json.dumps(chosen)),
    )


#: fhir-kindling's own scenario: every Condition with its Patient, in one query with _include.
#: The same resources for every tool, so references from them to anything else (Encounter,
#: Practitioner) are dropped by fhirgraph and the baseline.
CONDITIONS = Scenario(
    "conditions",
    ("Condition?_include=Condition:subject",),
    crawl_options=("--no-get-missing",),
    plan_options=("--on-dangling", "drop-reference"),
)


#: A scenario fhir-kindling can complete: Conditions whose only reference is their Patient, and
#: Patients that reference nothing (its missing-reference lookup is not transitive). Generated,
#: 2,000 Patients with 4 Conditions each, loaded into the source once.
STANDALONE_CODE = "fhirgraph-bench-standalone"
STANDALONE_PATIENTS = 2000
STANDALONE_CONDITIONS_EACH = 4


def standalone_scenario(source: FhirClient) -> Scenario:
    expected = STANDALONE_PATIENTS * STANDALONE_CONDITIONS_EACH
    counted = source.get("Condition", {"code": STANDALONE_CODE, "_summary": "count"}).get("total", 0)
    if counted < expected:
        click.echo(f"loading {STANDALONE_PATIENTS} Patients with their Conditions into the source", err=True)
        for start in range(0, STANDALONE_PATIENTS, 100):
            resources: list[JSON] = []
            for i in range(start, min(start + 100, STANDALONE_PATIENTS)):
                patient = f"bench-sa-{i}"
                resources.append(
                    {
                        "resourceType": "Patient",
                        "id": patient,
                        "name": [{"family": f"Standalone{i}", "given": ["Bench"]}],
                        "gender": "female" if i % 2 else "male",
                        "birthDate": f"{1940 + i % 60}-0{1 + i % 9}-1{i % 10}",
                    }
                )
                resources.extend(
                    {
                        "resourceType": "Condition",
                        "id": f"{patient}-c{c}",
                        "clinicalStatus": {"coding": [{"system": CLINICAL_STATUS, "code": "active"}]},
                        "code": {"coding": [{"system": "urn:fhirgraph:bench", "code": STANDALONE_CODE}]},
                        "subject": {"reference": f"Patient/{patient}"},
                        "onsetDateTime": f"20{10 + c}-05-0{1 + c}",
                    }
                    for c in range(STANDALONE_CONDITIONS_EACH)
                )
            entries = [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in resources
            ]
            source.transaction(
                {"resourceType": "Bundle", "type": "transaction", "entry": entries}, retry=True
            )
    return Scenario(
        "standalone",
        (f"Condition?code={STANDALONE_CODE}&_include=Condition:subject",),
        kindling=("code", STANDALONE_CODE),
    )


def expunge(target: FhirClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [{"name": "expungeEverything", "valueBoolean": True}]}
    target.request("POST", "$expunge", body=body, retry=False)


# -- baseline --------------------------------------------------------------------


def prebuild(scenario: Scenario, bundle_size: int) -> Path:
    """Order and bundle the resources (untimed), using fhirgraph's plan, into a file."""
    # built anew by every run: the source may have changed since (the test suite adds resources)
    path = CACHE / f"prebuilt-{scenario.name}-b{bundle_size}.jsonl"
    name = f"bench-prebuild-{scenario.name}-{secrets.token_hex(4)}"
    fhirgraph = [sys.executable, "-m", "fhirgraph"]
    crawl = [
        *fhirgraph,
        "crawl",
        "--transfer",
        name,
        *scenario.seeds,
        *scenario.crawl_options,
        "--no-progress",
    ]
    plan = [*fhirgraph, "plan", "--transfer", name, "--bundle-size", str(bundle_size), *scenario.plan_options]
    subprocess.run(crawl, env=ENV, check=True, capture_output=True)
    subprocess.run(plan, env=ENV, check=True, capture_output=True)
    with Graph(NEO4J) as graph, open(path, "w") as out:
        rows = graph.query(
            "MATCH (n:Resource {transfer: $t}) WHERE n.bundle IS NOT NULL "
            "OPTIONAL MATCH (n)-[r:REFERENCES]->(m:Resource) "
            "RETURN n.bundle AS bundle, n.level AS level, n.key AS key, n.type AS type, n.json AS json, "
            "collect(CASE WHEN r IS NULL THEN null ELSE {path: r.path, to: m.key, deferred: r.deferred, "
            "dropped: r.dropped} END) AS refs "
            "ORDER BY bundle, key",
            t=name,
        )
        for number, group in groupby(rows, key=lambda r: r["bundle"]):
            members = list(group)
            refs = [[r for r in m["refs"] if r] for m in members]
            if any(r["deferred"] for rs in refs for r in rs):
                raise click.ClickException("the baseline does not handle deferred (cycle) references")
            entries = [
                {"key": m["key"], "type": m["type"], "json": m["json"], "refs": rs}
                for m, rs in zip(members, refs, strict=True)
            ]
            out.write(json.dumps({"number": number, "level": members[0]["level"], "entries": entries}) + "\n")
        reset_transfer(graph, name)
    return path


def baseline(
    source: FhirClient,
    target: FhirClient,
    scenario: Scenario,
    prebuilt: Path,
    concurrency: int,
    *,
    tagged: bool = False,
    conditional: bool = False,
) -> tuple[int, dict[str, float]]:
    """Read by plain paging, then post the ordered bundles.

    Returns the number of resources created and the seconds spent reading and writing.

    With ``tagged``, every resource carries the two tags fhirgraph adds (a unique linkage
    hash, a fingerprint shared by all); with ``conditional`` also every entry is a
    conditional create on its hash (``ifNoneExist``): the differences are what the tags
    and what idempotent creates cost the target.
    """
    salt = secrets.token_hex(8)
    started = time.monotonic()
    bundles = [json.loads(line) for line in prebuilt.read_text().splitlines()]
    read: set[str] = set()
    for seed in scenario.seeds:
        path, _, query = seed.partition("?")
        params = [(n, v) for n, _, v in (p.partition("=") for p in query.split("&") if p)] + [
            ("_count", "500")
        ]
        for page in source.pages(path, params, exact=True):
            read.update(
                f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in page.get("entry", [])
            )
    # what the seeds do not return but is referenced (Practitioners, Organizations, ...) is read
    # by _id, 100 at a time, as any transfer must
    rest: dict[str, list[str]] = {}
    for key in sorted({e["key"] for b in bundles for e in b["entries"]} - read):
        rtype, rid = key.split("/", 1)
        rest.setdefault(rtype, []).append(rid)
    for rtype, ids in rest.items():
        for start in range(0, len(ids), 100):
            batch = ids[start : start + 100]
            for _ in source.pages(rtype, {"_id": ",".join(batch), "_count": len(batch)}, exact=True):
                pass
    target_ids: dict[str, str] = {}

    def post(bundle: JSON) -> None:
        urls = {e["key"]: entry_full_url(e["key"]) for e in bundle["entries"]}
        entries = []
        for e in bundle["entries"]:
            rewrites = {
                r["path"]: None if r["dropped"] else urls.get(r["to"]) or target_ids[r["to"]]
                for r in e["refs"]
            }
            resource = strip_source_metadata(rewrite(jsontext.loads(e["json"]), rewrites))
            request = {"method": "POST", "url": e["type"]}
            if tagged or conditional:
                code = hashlib.sha256(f"{salt}|{e['key']}".encode()).hexdigest()
                resource.setdefault("meta", {})["tag"] = [linkage_tag(code), key_tag(salt)]
            if conditional:
                request["ifNoneExist"] = f"_tag={LINKAGE_SYSTEM}|{code}"
            entries.append({"fullUrl": urls[e["key"]], "resource": resource, "request": request})
        response = target.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        for e, result in zip(bundle["entries"], response["entry"], strict=True):
            rtype, rid, _ = parse_location(result["response"]["location"])
            target_ids[e["key"]] = f"{rtype}/{rid}"

    reading = time.monotonic() - started
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _, level in groupby(bundles, key=lambda b: b["level"]):
            list(pool.map(post, level))
    return len(target_ids), {"read": reading, "write": time.monotonic() - started - reading}


# -- fhirgraph -------------------------------------------------------------------


def fhirgraph_run(
    scenario: Scenario,
    bundle_size: int,
    concurrency: int,
    options: Sequence[str] = (),
    tool: str = "fhirgraph",
) -> Run:
    name = f"bench-{scenario.name}-{secrets.token_hex(4)}"
    env = {**ENV, "FHIRGRAPH_LINKAGE_KEY": secrets.token_hex(32)}
    command = [
        "/usr/bin/time", "-f", "%M", sys.executable, "-m", "fhirgraph", "transfer", "--transfer", name,
        *scenario.seeds, *scenario.crawl_options, *scenario.plan_options, *options,
        "--bundle-size", str(bundle_size), "--concurrency", str(concurrency), "--no-progress",
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    rss_kb = float(result.stderr.strip().splitlines()[-1])
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "fhirgraph", "status", "--transfer", name, "--json"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    loaded = sum(by.get("loaded", 0) for by in status["resources"].values())
    with Graph(NEO4J) as graph:
        reset_transfer(graph, name)
    return Run(
        tool,
        scenario.name,
        loaded,
        seconds,
        stages={k: float(v) for k, v in status["timings"].items()},
        peak_rss_mb=rss_kb / 1024,
        ok=result.returncode == 0,
        note="" if result.returncode == 0 else fhirgraph_error(result.stderr)[:200],
        early=int(early[1])
        if (early := re.search(r"(\d+) of them loaded while the crawl", result.stdout))
        else 0,
    )


def fhirgraph_error(stderr: str) -> str:
    """fhirgraph's one-line error, without the lines /usr/bin/time adds after it."""
    lines = [line for line in stderr.strip().splitlines()[:-1] if not line.startswith("Command exited with")]
    return lines[-1] if lines else "no error text"


# -- the older library -------------------------------------------------------------

KINDLING_SCRIPT = """
import json, sys, time, resource
from fhir_kindling import FhirServer
mode, source, target, arg = sys.argv[1:5]
src, tgt = FhirServer(source), FhirServer(target)
started = time.monotonic()
try:
    if mode == "conditions":
        query = src.query("Condition").include(resource="Condition", reference_param="subject")
        response = src.transfer(target_server=tgt, query=query)
    elif mode == "code":
        query = src.query("Condition").where(field="code", operator="eq", value=arg)
        query = query.include(resource="Condition", reference_param="subject")
        response = src.transfer(target_server=tgt, query=query)
    else:
        # fhir-kindling cannot express $everything or _revinclude=*: read each patient's
        # $everything by plain paging (timed, as the baseline's read is) and hand it the models
        import httpx
        from fhir.resources import construct_fhir_element
        resources = []
        with httpx.Client(timeout=600) as http:
            for pid in json.loads(arg):
                url = f"{source}/Patient/{pid}/$everything?_count=500"
                while url:
                    page = http.get(url).json()
                    for e in page.get("entry", []):
                        resources.append(construct_fhir_element(e["resource"]["resourceType"], e["resource"]))
                    url = next((l["url"] for l in page.get("link", []) if l["relation"] == "next"), None)
        response = src.transfer(target_server=tgt, resources=resources)
    ok, note = True, ""
except Exception as exc:  # the point is to record how it fails
    ok, note = False, f"{type(exc).__name__}: {str(exc)[:160]}"
seconds = time.monotonic() - started
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"ok": ok, "note": note, "seconds": seconds, "rss": rss}))
"""


def kindling_venv() -> Path:
    python = KINDLING_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(KINDLING_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "fhir-kindling==1.0.3", "httpx<0.28"], check=True
        )
    return python


def kindling_run(scenario: Scenario, resources: int) -> Run:
    mode, arg = scenario.kindling
    result = subprocess.run(
        [
            str(kindling_venv()),
            "-c",
            KINDLING_SCRIPT,
            mode,
            SOURCE_URL,
            TARGET_URL,
            arg,
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return Run(
            "fhir-kindling", scenario.name, resources, 0.0, ok=False, note=result.stderr.strip()[-200:]
        )
    return Run(
        "fhir-kindling",
        scenario.name,
        resources,
        report["seconds"],
        peak_rss_mb=report["rss"],
        ok=report["ok"],
        note=report["note"],
    )


# -- report ------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    ok = [r for r in runs if r.ok] or runs
    best = sorted(ok, key=lambda r: r.seconds)[len(ok) // 2]
    return best


def spread(runs: list[Run]) -> str:
    return spread_of([r.seconds for r in runs if r.ok])


def spread_of(times: Sequence[float]) -> str:
    """The range of the times as a share of their median."""
    if len(times) < 2:
        return "-"
    return f"{(max(times) - min(times)) / statistics.median(times) * 100:.0f} %"


def machine() -> str:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return f"{os.cpu_count()} cores, {mem_kb / 1024 / 1024:.0f} GiB, {platform.platform()}, Python {platform.python_version()}, {java}"


def database_name() -> str:
    """The HAPI servers' database as stack/config.env (or HAPI_DB in the environment) says."""
    return "PostgreSQL" if CONFIG.get("HAPI_DB") == "postgres" else "H2"


def write_results(
    out: Path,
    results: dict[str, dict[str, list[Run]]],
    args: dict[str, Any],
    scale_figures: dict[int, list[dict[str, float]]] | None = None,
) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"- machine: {machine()}",
        f"- servers: HAPI FHIR {CONFIG['HAPI_VERSION']} ({database_name()}, -Xmx{CONFIG['HAPI_HEAP']}, {CONFIG.get('HAPI_JAVA_OPTS', '')}), "
        f"Neo4j {CONFIG['NEO4J_VERSION']} (heap {CONFIG['NEO4J_HEAP']}, page cache {CONFIG['NEO4J_PAGECACHE']})",
        f"- command: `.venv/bin/python bench/run.py {' '.join(args['argv'])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; each cell is the median of the runs (up to {args['repeat']}; column runs)",
        "",
    ]
    for size, by_tool in results.items():
        base = median_run(by_tool["baseline"]).seconds if by_tool.get("baseline") else None
        old = by_tool.get("fhir-kindling")
        old_seconds = median_run(old).seconds if old and median_run(old).ok else None
        lines += [
            f"## {size}",
            "",
            "| tool | runs | resources | wall s (failed: until the failure) | resources/s | / baseline | vs fhir-kindling | stages (s) | peak RSS MB | spread | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for tool, runs in by_tool.items():
            run = median_run(runs)
            # a failed run's wall time is the time until it failed; it has no rate
            rate = f"{run.resources / run.seconds:.0f}" if run.seconds and run.ok else "-"
            ratio = f"{run.seconds / base:.2f}" if base and run.ok else "-"
            versus = (
                f"{old_seconds / run.seconds:.1f}x faster" if old_seconds and tool != "fhir-kindling" else "-"
            )
            stages = ", ".join(f"{k} {v:.1f}" for k, v in run.stages.items())
            rss = f"{run.peak_rss_mb:.0f}" if run.peak_rss_mb else "-"
            status = "" if run.ok else "FAILED: "
            lines.append(
                f"| {tool} | {len(runs)} | {run.resources} | {run.seconds:.1f} | {rate} | {ratio} | {versus} | {stages} | {rss} | "
                f"{spread(runs)} | {status}{run.note} |"
            )
        lines.append("")
    if scale_figures:
        lines += [
            "## Staging and planning at scale (no FHIR servers)",
            "",
            "| generated resources | references | bundles | runs | staged s | staged resources/s | spread | "
            "planned s | planned resources/s | spread |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for sized in filter(None, scale_figures.values()):  # a size not run yet has no row
            first = sized[0]
            staged = statistics.median(f["stage_s"] for f in sized)
            planned = statistics.median(f["plan_s"] for f in sized)
            lines.append(
                f"| {first['resources']:,.0f} | {first['references']:,.0f} | {first['bundles']:,.0f} | {len(sized)} | "
                f"{staged:.1f} | {first['resources'] / staged:,.0f} | {spread_of([f['stage_s'] for f in sized])} | "
                f"{planned:.1f} | {first['resources'] / planned:,.0f} | {spread_of([f['plan_s'] for f in sized])} |"
            )
        lines.append("")
    # a hand-written analysis after the marker survives a new run
    kept = out.read_text().partition(ANALYSIS_MARKER)[2] if out.exists() else ""
    out.write_text("\n".join(lines) + "\n" + (ANALYSIS_MARKER + kept if kept else ""))


def timed_crawl(options: Sequence[str], prefix: str = "bench") -> tuple[float, int]:
    """Time ``fhirgraph crawl OPTIONS`` into a new transfer; the seconds and the resources it
    staged. The transfer is deleted afterwards."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    fhirgraph = str(Path(sys.executable).with_name("fhirgraph"))
    args = [fhirgraph, "crawl", "--transfer", name, "--no-progress", *options]
    started = time.monotonic()
    result = subprocess.run(args, env=ENV, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise click.ClickException(f"fhirgraph crawl exited {result.returncode}: {result.stderr}")
    with Graph(NEO4J) as graph:
        staged = graph.query("MATCH (n:Resource {transfer: $t}) RETURN count(n) AS n", t=name)[0]["n"]
        reset_transfer(graph, name)
    return seconds, int(staged)


def write_section(out: Path, title: str, lines: list[str]) -> None:
    """Replace (or add) the section ``title`` (the first of ``lines``) in the part of ``out``
    after the analysis marker, which this script's own runs keep."""
    text = out.read_text() if out.exists() else ""
    head, marker, kept = text.partition(ANALYSIS_MARKER)
    if not marker:
        head, kept = text, ""
    section = "\n".join(lines).rstrip("\n") + "\n\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(kept):
        kept = pattern.sub(lambda _: section, kept)
    else:
        kept = kept.rstrip("\n") + "\n\n" + section
    out.write_text(head + ANALYSIS_MARKER + kept.rstrip("\n") + "\n")


# -- staging at scale ----------------------------------------------------------------


def generated_resources(n: int, patients_per_practitioner: int = 50) -> Iterator[JSON]:
    """Synthea-like fan-out: per patient encounters, observations, conditions, one Provenance hub."""
    per_patient = 40
    patients = max(1, n // per_patient)
    practitioners = max(1, patients // patients_per_practitioner)
    emitted = 0
    for d in range(practitioners):
        yield {"resourceType": "Practitioner", "id": f"d{d}"}
        emitted += 1
    for p in range(patients):
        pid = f"p{p}"
        doc = f"Practitioner/d{p % practitioners}"
        yield {"resourceType": "Patient", "id": pid, "generalPractitioner": [{"reference": doc}]}
        targets = [f"Patient/{pid}"]
        for e in range(5):
            eid = f"e{p}-{e}"
            yield {
                "resourceType": "Encounter",
                "id": eid,
                "subject": {"reference": f"Patient/{pid}"},
                "participant": [{"individual": {"reference": doc}}],
            }
            targets.append(f"Encounter/{eid}")
            for o in range(6):
                oid = f"o{p}-{e}-{o}"
                yield {
                    "resourceType": "Observation",
                    "id": oid,
                    "subject": {"reference": f"Patient/{pid}"},
                    "encounter": {"reference": f"Encounter/{eid}"},
                    "valueQuantity": {"value": jsontext.loads("120.00")},
                }
                targets.append(f"Observation/{oid}")
        for c in range(3):
            cid = f"c{p}-{c}"
            yield {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"}}
            targets.append(f"Condition/{cid}")
        yield {"resourceType": "Provenance", "id": f"prov{p}", "target": [{"reference": t} for t in targets]}
        emitted += 1 + 5 * 7 + 3 + 1
        if emitted >= n:
            return


def scale(n: int) -> dict[str, float]:
    from fhirgraph.crawl import Crawler
    from fhirgraph.plan import plan as plan_stage
    from fhirgraph.staging import finish_crawl, open_transfer

    name = f"bench-scale-{n}-{secrets.token_hex(3)}"
    source = FhirClient("http://generated.invalid/fhir", name="generated")
    with Graph(NEO4J) as graph:
        graph.ensure_schema()
        open_transfer(graph, name, source=source.base_url, target="", key_fingerprint=None)
        started = time.monotonic()
        batch: list[JSON] = []
        count = 0
        with Crawler(graph, source, name, get_missing=False) as crawler:
            for resource in generated_resources(n):
                batch.append(resource)
                if len(batch) >= STAGE_BATCH:
                    crawler.stage(batch, seed=True)
                    count += len(batch)
                    batch = []
            crawler.stage(batch, seed=True)
            count += len(batch)
        staged = time.monotonic() - started
        finish_crawl(graph, name, seconds=0.0, get_missing=False)
        started = time.monotonic()
        stats = plan_stage(graph, name, bundle_size=250)
        planned = time.monotonic() - started
        references = graph.query(
            "MATCH (:Resource {transfer: $t})-[r:REFERENCES]->() RETURN count(r) AS c", t=name
        )[0]["c"]
        reset_transfer(graph, name)
    figures = {
        "resources": count,
        "references": references,
        "stage_s": staged,
        "plan_s": planned,
        "bundles": stats.bundles,
    }
    click.echo(f"scale {figures}", err=True)
    return figures


def run_scenario(
    source: FhirClient,
    target: FhirClient,
    scenario: Scenario,
    *,
    repeat: int,
    bundle_size: int,
    concurrency: int,
    kindling: bool,
    conditional: bool,
    plain: bool,
    tagged: bool = False,
    sweep: Sequence[int] = (),
    on_round: Callable[[dict[str, list[Run]]], None],
) -> dict[str, list[Run]]:
    prebuilt = prebuild(scenario, bundle_size)
    baselines = [("baseline", False, False)]
    if tagged:
        baselines.append(("baseline, tagged", True, False))
    if conditional:
        baselines.append(("baseline, conditional creates", True, True))
    by_tool: dict[str, list[Run]] = {tool: [] for tool, _, _ in baselines}
    fhirgraphs: list[tuple[str, tuple[str, ...], int]] = [("fhirgraph", (), concurrency)]
    if plain:
        fhirgraphs.append(("fhirgraph --no-match-existing", ("--no-match-existing",), concurrency))
    fhirgraphs += [(f"fhirgraph --concurrency {n}", (), n) for n in sweep if n != concurrency]
    for tool, _, _ in fhirgraphs:
        by_tool[tool] = []
    if kindling:
        by_tool["fhir-kindling"] = []
    for i in range(repeat):
        # interleave the tools so drift on this shared machine hits all alike
        created = 0
        for tool, with_tags, conditional_creates in baselines:
            expunge(target)
            started = time.monotonic()
            created, stages = baseline(
                source,
                target,
                scenario,
                prebuilt,
                concurrency,
                tagged=with_tags,
                conditional=conditional_creates,
            )
            by_tool[tool].append(Run(tool, scenario.name, created, time.monotonic() - started, stages))
        for tool, options, tool_concurrency in fhirgraphs:
            expunge(target)
            by_tool[tool].append(fhirgraph_run(scenario, bundle_size, tool_concurrency, options, tool))
        if kindling:
            expunge(target)
            by_tool["fhir-kindling"].append(kindling_run(scenario, created))
        click.echo(
            f"{scenario.name} round {i + 1}: "
            + ", ".join(
                f"{t} {r[-1].seconds:.1f}s{'' if r[-1].ok else ' FAILED'}" for t, r in by_tool.items()
            ),
            err=True,
        )
        on_round(by_tool)
    return by_tool


def csv_option(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command()
@click.option(
    "--sizes",
    default="1k,10k,conditions",
    show_default=True,
    help="Comma-separated scenarios: 1k, 10k, 50k (Synthea patients), conditions, standalone.",
)
@click.option("--repeat", default=3, show_default=True)
@click.option("--bundle-size", default=250, show_default=True)
@click.option("--concurrency", default=2, show_default=True)
@click.option(
    "--kindling-in", default="1k,10k,conditions", show_default=True, help="Scenarios fhir-kindling runs in."
)
@click.option(
    "--conditional-in",
    default="1k,10k,conditions",
    show_default=True,
    help="Scenarios that also run the baseline with conditional creates.",
)
@click.option(
    "--tagged-in",
    default="",
    help="Scenarios that also run the baseline with fhirgraph's two tags on every resource (plain creates).",
)
@click.option(
    "--plain-in",
    default="1k,10k,conditions",
    show_default=True,
    help="Scenarios that also run fhirgraph --no-match-existing.",
)
@click.option(
    "--concurrency-sweep",
    "sweep",
    default="",
    help="Also run fhirgraph with each of these --concurrency values (comma-separated, e.g. 1,4).",
)
@click.option("--sweep-in", default="", help="Scenarios that run the --concurrency-sweep.")
@click.option(
    "--scale-resources",
    "scale_n",
    default="",
    help="Also stage and plan generated graphs of these sizes (comma-separated, e.g. 100000,1000000).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=ROOT / "bench" / "RESULTS.md",
    show_default=True,
)
def main(
    sizes: str,
    repeat: int,
    bundle_size: int,
    concurrency: int,
    kindling_in: str,
    conditional_in: str,
    tagged_in: str,
    plain_in: str,
    sweep: str,
    sweep_in: str,
    scale_n: str,
    out: Path,
) -> None:
    """Run the benchmarks and write bench/RESULTS.md (rewritten after each scenario)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[Run]]] = {}
    args = {"argv": sys.argv[1:], "repeat": repeat}
    for name in csv_option(sizes):
        if name not in SIZES and name not in (CONDITIONS.name, "standalone"):
            raise click.BadParameter(
                f"unknown scenario {name!r}; use 1k, 10k, 50k, conditions or standalone", param_hint="--sizes"
            )
    # staging at scale first: it needs only Neo4j, and its figures must not wait for the long runs
    figures: dict[int, list[dict[str, float]]] = {int(n): [] for n in csv_option(scale_n)}
    if figures:
        scale(SCALE_WARMUP)  # not recorded: a Neo4j just started ran the first size at half speed
    for _ in range(repeat):
        for n, runs in figures.items():  # sizes interleaved, so drift hits all alike
            runs.append(scale(n))
            write_results(out, results, args, figures)
    write_results(out, results, args, figures)
    with (
        FhirClient(SOURCE_URL, name="source", timeout=900.0) as source,
        FhirClient(TARGET_URL, name="target", timeout=900.0) as target,
    ):
        for name in csv_option(sizes):
            if name == CONDITIONS.name:
                synthea.ensure_loaded(source, POPULATION, SEED, CACHE, echo=True)
                scenario = CONDITIONS
            elif name == "standalone":
                scenario = standalone_scenario(source)
            else:
                scenario = synthea_scenario(source, name)

            def on_round(by_tool: dict[str, list[Run]], name: str = name) -> None:
                results[name] = by_tool
                write_results(out, results, args, figures)

            run_scenario(
                source,
                target,
                scenario,
                repeat=repeat,
                bundle_size=bundle_size,
                concurrency=concurrency,
                kindling=name in csv_option(kindling_in),
                conditional=name in csv_option(conditional_in),
                plain=name in csv_option(plain_in),
                tagged=name in csv_option(tagged_in),
                sweep=[int(n) for n in csv_option(sweep)] if name in csv_option(sweep_in) else [],
                on_round=on_round,
            )
    click.echo(out.read_text())


if __name__ == "__main__":
    main()
