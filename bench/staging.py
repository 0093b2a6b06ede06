"""Staging writes before and after, on the same generated data, interleaved.

``before`` is the write path fhirgraph had until two writes in flight, kept here to compare against: one page
written at a time (``crawl_stage_resources`` as it was at dab1582), the content hash over a
sorted copy of each resource. ``after`` is ``Crawler.stage`` as it is: two pages written at
once (``STAGE_WRITERS``), a resource already staged locked before its references are
replaced. Both stage ``bench.run.generated_resources(n)`` in pages of ``STAGE_BATCH`` through a
``Crawler`` (rows built on the caller's thread, written on background writers), so the
figures are ``bench.run.scale``'s staging figures. Deadlocks between the two writes in flight
are retried by the driver; their number is reported.

    PYTHONPATH=. .venv/bin/python bench/staging.py --sizes 100000,1000000 --repeat 1
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import secrets
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import neo4j

from bench.run import NEO4J, ROOT, STAGE_BATCH, generated_resources, write_section
from fhirgraph import jsontext
from fhirgraph.crawl import STAGE_WRITERS, Crawler, _edge_ends
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.jsontext import JSON
from fhirgraph.references import strip_source_metadata
from fhirgraph.staging import finish_crawl, open_transfer, reset_transfer, resource_uid

# cypher/crawl_stage_resources.cypher at dab1582
BEFORE_STAGE = """
// Stage a page of fetched resources ($rows) with their references ($edges) in one query.
// $targets: the other resources the page refers to, each once; unknown ones become
// placeholders (or dangling, with the reason). Each resource and target is merged once;
// an edge names its two ends by their position in $rows followed by $targets, so writing
// it looks nothing up again.
CALL () {
  UNWIND range(0, size($targets) - 1) AS i
  WITH i, $targets[i] AS target
  MERGE (b:Resource {uid: target.uid})
  ON CREATE SET b:$(target.type), b.transfer = $transfer, b.key = target.key, b.type = target.type,
                b.source_id = target.id, b.status = target.status, b.error = target.error
  WITH i, b ORDER BY i
  RETURN collect(b) AS targets
}
CALL () {
  UNWIND range(0, size($rows) - 1) AS i
  WITH i, $rows[i] AS row
  MERGE (n:Resource {uid: row.uid})
  ON CREATE SET n:$(row.type), n.transfer = $transfer, n.key = row.key, n.type = row.type, n.source_id = row.id
  WITH i, n, row
  // its references are written anew below, whatever its status
  CALL (n) {
    MATCH (n)-[old:REFERENCES]->()
    DELETE old
  }
  // a resource already planned or loaded keeps its staged JSON
  CALL (n, row) {
    WITH n, row
    WHERE n.status IS NULL OR n.status IN ['placeholder', 'dangling', 'crawled']
    SET n.json = row.json,
        n.version = row.version,
        n.content_hash = row.content_hash,
        n.status = 'crawled',
        n.error = null,
        n.seed = coalesce(n.seed, false) OR row.seed,
        n.crawled_at = datetime()
  }
  WITH i, n ORDER BY i
  RETURN collect(n) AS nodes
}
WITH nodes + targets AS ends
UNWIND $edges AS edge
WITH ends[edge.from] AS a, ends[edge.to] AS b, edge
CREATE (a)-[:REFERENCES {path: edge.path, reference: edge.reference, kind: edge.kind}]->(b)
"""


class BeforeCrawler(Crawler):
    """``Crawler.stage`` as it was before two writes in flight (one write at a time, the old hash and query)."""

    def __init__(self, graph: Graph, source: FhirClient, transfer: str, driver: neo4j.Driver) -> None:
        super().__init__(graph, source, transfer, get_missing=False, stage_writers=1)
        self.driver = driver

    def stage(self, resources: Sequence[JSON], *, seed: bool) -> None:
        if not resources:
            return
        rows: list[dict[str, Any]] = []
        references: list[list[dict[str, Any]]] = []
        for resource in resources:
            rtype, rid = resource["resourceType"], resource["id"]
            key = f"{rtype}/{rid}"
            uid = resource_uid(self.transfer, key)
            rows.append(
                {
                    "uid": uid,
                    "key": key,
                    "type": rtype,
                    "id": rid,
                    "version": (resource.get("meta") or {}).get("versionId"),
                    "content_hash": _before_content_hash(resource),
                    "json": jsontext.dumps(resource),
                    "seed": seed,
                }
            )
            references.append(list(self._edges(uid, resource)))
        targets, edges = _edge_ends(rows, references)
        with self._stats_lock:
            for row in rows:
                self.stats.by_type[row["type"]] += 1
            self.stats.staged += len(rows)
        self._writer.submit(lambda: self._write_before(rows, targets, edges))

    def _write_before(
        self, rows: list[dict[str, Any]], targets: list[dict[str, Any]], edges: list[dict[str, Any]]
    ) -> None:
        self.driver.execute_query(
            BEFORE_STAGE,
            parameters_={"rows": rows, "targets": targets, "edges": edges, "transfer": self.transfer},
            database_=NEO4J.database,
        )


def _before_content_hash(resource: JSON) -> str:
    canonical = jsontext.dumps(_sorted(strip_source_metadata(resource)))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


class _Retries(logging.Handler):
    """Counts the driver's retries of transactions (deadlocks between the writes in flight)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "will be retried" in record.getMessage():
            self.count += 1


RETRIES = _Retries()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stage_once(graph: Graph, driver: neo4j.Driver, path: str, n: int) -> dict[str, float]:
    name = f"bench-staging-{path}-{n}-{secrets.token_hex(3)}"
    source = FhirClient("http://generated.invalid/fhir", name="generated")
    open_transfer(graph, name, source=source.base_url, target="", key_fingerprint=None)
    crawler = (
        BeforeCrawler(graph, source, name, driver)
        if path == "before"
        else Crawler(graph, source, name, get_missing=False)
    )
    RETRIES.count = 0
    load = os.getloadavg()[0]
    started = time.monotonic()
    count = 0
    batch: list[JSON] = []
    with crawler:
        for resource in generated_resources(n):
            batch.append(resource)
            if len(batch) >= STAGE_BATCH:
                crawler.stage(batch, seed=True)
                count += len(batch)
                batch = []
        crawler.stage(batch, seed=True)
        count += len(batch)
    seconds = time.monotonic() - started
    rss = rss_mb()
    finish_crawl(graph, name, seconds=seconds, get_missing=False)
    shape = graph.query(
        "MATCH (n:Resource {transfer: $t}) OPTIONAL MATCH (n)-[r:REFERENCES]->() "
        "RETURN count(DISTINCT n) AS nodes, count(r) AS edges",
        t=name,
    )[0]
    reset_transfer(graph, name)
    figures = {
        "resources": count,
        "seconds": seconds,
        "nodes": shape["nodes"],
        "edges": shape["edges"],
        "rss_mb": rss,
        "retries": RETRIES.count,
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }
    click.echo(f"{path} {n}: {figures}", err=True)
    return figures


@click.command()
@click.option("--sizes", default="100000,1000000", show_default=True, help="Comma-separated sizes.")
@click.option("--repeat", default=1, show_default=True, help="Interleaved rounds (before, after) per size.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=ROOT / "bench" / "RESULTS.md",
    show_default=True,
)
def main(sizes: str, repeat: int, out: Path) -> None:
    """Stage the same generated resources with the write path before two writes in flight and the current one."""
    wanted = [int(s) for s in sizes.split(",") if s.strip()]
    runs: dict[tuple[int, str], list[dict[str, float]]] = {}
    started = datetime.now(UTC)
    logging.getLogger("neo4j").addHandler(RETRIES)
    with (
        Graph(NEO4J) as graph,
        neo4j.GraphDatabase.driver(
            NEO4J.uri,
            auth=(NEO4J.user, NEO4J.password),
            max_transaction_retry_time=30.0,
            notifications_min_severity="OFF",
        ) as driver,
    ):
        graph.ensure_schema()
        stage_once(graph, driver, "after", 20_000)  # warm-up, not recorded
        for _ in range(repeat):
            for n in wanted:
                for path in ("before", "after"):
                    runs.setdefault((n, path), []).append(stage_once(graph, driver, path, n))
    lines = [
        "## Staging writes: two in flight (#17)",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC, {platform.machine()} with {_cores()} cores, Neo4j "
        "5.26 Community (heap 512m, page cache 256m), other benchmarks running on the machine. "
        f"`PYTHONPATH=. .venv/bin/python bench/staging.py --sizes {sizes} --repeat {repeat}`: "
        f"`bench.run.generated_resources(n)` staged in pages of {STAGE_BATCH} through a `Crawler`, "
        "the write path before two writes in flight (`before`: one page written at a time) and after (`after`: "
        f"{STAGE_WRITERS} pages written at once) interleaved, after an unrecorded warm-up of 20,000. "
        "Medians; RSS of the benchmark process after the run; load: the 1-minute load average "
        "at the start and the end of each run; retries: transactions the driver retried "
        "(deadlocks between the writes in flight).",
        "",
        "| resources | path | runs | nodes | references | staged s | resources/s | runs s | load | retries "
        "| RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (_, path), results in sorted(runs.items()):
        seconds = statistics.median(r["seconds"] for r in results)
        each = ", ".join(f"{r['seconds']:.1f}" for r in results)
        loads = ", ".join(f"{r['load_before']:.1f}-{r['load_after']:.1f}" for r in results)
        first = results[0]
        lines.append(
            f"| {first['resources']:,.0f} | {path} | {len(results)} | {first['nodes']:,.0f} "
            f"| {first['edges']:,.0f} | {seconds:.1f} | {first['resources'] / seconds:,.0f} "
            f"| {each} | {loads} | {sum(int(r['retries']) for r in results)} "
            f"| {max(r['rss_mb'] for r in results):.0f} |"
        )
    write_section(out, lines[0], lines)
    click.echo("\n".join(lines))


def _cores() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
