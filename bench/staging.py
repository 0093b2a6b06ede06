"""Staging writes before and after #17, on the same generated data, interleaved.

``before`` is the write path fhirgraph had until #17, kept here to compare against: per page
three queries in one transaction (forget the referrers' edges, merge the resources, then per
reference match the referrer and merge the target again). ``after`` is ``Crawler.stage`` as it
is: one query per page, each resource and each distinct target merged once, edges between
nodes already in hand. Both stage ``bench.run.generated_resources(n)`` in pages of
``STAGE_BATCH`` through a ``Crawler`` (rows built on the caller's thread, written on the
background writer), so the figures are ``bench.run.scale``'s staging figures.

    PYTHONPATH=. .venv/bin/python bench/staging.py --sizes 100000,1000000 --repeat 1
"""

from __future__ import annotations

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
from fhirgraph.changes import content_hash
from fhirgraph.crawl import EDGE_BATCH, Crawler
from fhirgraph.faults import checkpoint
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.jsontext import JSON
from fhirgraph.staging import finish_crawl, open_transfer, reset_transfer, resource_uid

# the queries of the write path before #17 (cypher/crawl_*.cypher at c05da9f)
BEFORE_CLEAR = """
UNWIND $uids AS uid
MATCH (:Resource {uid: uid})-[r:REFERENCES]->()
DELETE r
"""
BEFORE_RESOURCES = """
UNWIND $rows AS row
MERGE (n:Resource {uid: row.uid})
ON CREATE SET n:$(row.type), n.transfer = $transfer, n.key = row.key, n.type = row.type, n.source_id = row.id
WITH n, row
WHERE n.status IS NULL OR n.status IN ['placeholder', 'dangling', 'crawled']
SET n.json = row.json,
    n.version = row.version,
    n.content_hash = row.content_hash,
    n.status = 'crawled',
    n.error = null,
    n.seed = coalesce(n.seed, false) OR row.seed,
    n.crawled_at = datetime()
"""
BEFORE_EDGES = """
UNWIND $rows AS row
MATCH (a:Resource {uid: row.from})
MERGE (b:Resource {uid: row.to})
ON CREATE SET b:$(row.to_type), b.transfer = $transfer, b.key = row.to_key, b.type = row.to_type,
              b.source_id = row.to_id, b.status = row.to_status, b.error = row.to_error
CREATE (a)-[:REFERENCES {path: row.path, reference: row.reference, kind: row.kind}]->(b)
"""


class BeforeCrawler(Crawler):
    """``Crawler.stage`` as it was before #17 (rows built the same way, three queries)."""

    driver: neo4j.Driver

    def stage(self, resources: Sequence[JSON], *, seed: bool) -> None:
        if not resources:
            return
        node_rows: list[dict[str, Any]] = []
        edge_rows: list[dict[str, Any]] = []
        for resource in resources:
            rtype, rid = resource["resourceType"], resource["id"]
            key = f"{rtype}/{rid}"
            uid = resource_uid(self.transfer, key)
            node_rows.append(
                {
                    "uid": uid,
                    "key": key,
                    "type": rtype,
                    "id": rid,
                    "version": (resource.get("meta") or {}).get("versionId"),
                    "content_hash": content_hash(resource),
                    "json": jsontext.dumps(resource),
                    "seed": seed,
                }
            )
            edge_rows.extend(self._edges(uid, resource))
        self.stats.staged += len(node_rows)
        self._writer.submit(lambda: self._write_before(node_rows, edge_rows))

    def _write_before(self, node_rows: list[dict[str, Any]], edge_rows: list[dict[str, Any]]) -> None:
        def work(tx: neo4j.ManagedTransaction) -> None:
            tx.run(BEFORE_CLEAR, uids=[row["uid"] for row in node_rows]).consume()
            tx.run(BEFORE_RESOURCES, rows=node_rows, transfer=self.transfer).consume()
            for start in range(0, len(edge_rows), EDGE_BATCH):
                tx.run(
                    BEFORE_EDGES, rows=edge_rows[start : start + EDGE_BATCH], transfer=self.transfer
                ).consume()

        with self.driver.session(database=NEO4J.database) as session:
            session.execute_write(work)
        checkpoint("crawl_staged")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stage_once(graph: Graph, driver: neo4j.Driver, path: str, n: int) -> dict[str, float]:
    name = f"bench-staging-{path}-{n}-{secrets.token_hex(3)}"
    source = FhirClient("http://generated.invalid/fhir", name="generated")
    open_transfer(graph, name, source=source.base_url, target="", key_fingerprint=None)
    crawler = Crawler(graph, source, name, get_missing=False)
    if path == "before":
        crawler = BeforeCrawler(graph, source, name, get_missing=False)
        crawler.driver = driver
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
    figures = {"resources": count, "seconds": seconds, "nodes": shape["nodes"], "edges": shape["edges"]}
    figures["rss_mb"] = rss
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
    """Stage the same generated resources with the write path before #17 and the current one."""
    wanted = [int(s) for s in sizes.split(",") if s.strip()]
    runs: dict[tuple[int, str], list[dict[str, float]]] = {}
    started = datetime.now(UTC)
    with (
        Graph(NEO4J) as graph,
        neo4j.GraphDatabase.driver(NEO4J.uri, auth=(NEO4J.user, NEO4J.password)) as driver,
    ):
        graph.ensure_schema()
        stage_once(graph, driver, "after", 20_000)  # warm-up, not recorded
        for _ in range(repeat):
            for n in wanted:
                for path in ("before", "after"):
                    runs.setdefault((n, path), []).append(stage_once(graph, driver, path, n))
    lines = [
        "## Staging writes (#17)",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC, {platform.machine()} with {_cores()} cores, Neo4j "
        "5.26 Community (heap 512m, page cache 256m), other benchmarks running on the machine. "
        f"`PYTHONPATH=. .venv/bin/python bench/staging.py --sizes {sizes} --repeat {repeat}`: "
        f"`bench.run.generated_resources(n)` staged in pages of {STAGE_BATCH} through a `Crawler`, "
        "the write path before #17 (`before`: three queries per page) and after (`after`: "
        "`crawl_stage_resources`) interleaved, after an unrecorded warm-up of 20,000. Medians; "
        "RSS of the benchmark process after the run.",
        "",
        "| resources | path | runs | nodes | references | staged s | resources/s | runs s | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (_, path), results in sorted(runs.items()):
        seconds = statistics.median(r["seconds"] for r in results)
        each = ", ".join(f"{r['seconds']:.1f}" for r in results)
        first = results[0]
        lines.append(
            f"| {first['resources']:,.0f} | {path} | {len(results)} | {first['nodes']:,.0f} "
            f"| {first['edges']:,.0f} | {seconds:.1f} | {first['resources'] / seconds:,.0f} "
            f"| {each} "
            f"| {max(r['rss_mb'] for r in results):.0f} |"
        )
    write_section(out, lines[0], lines)
    click.echo("\n".join(lines))


def _cores() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
