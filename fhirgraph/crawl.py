"""Crawl stage: fetch resources from the source and stage them as a reference graph.

Seeds come from a search or an explicit list. Every fetched resource becomes a
node; every reference an edge to the node of the referenced ``Type/id``
(a placeholder until fetched). With ``get_missing``, placeholders are fetched
in batches (``GET Type?_id=a,b,c``) from the source until none is left.
Pages are staged one at a time, so memory does not grow with the transfer: a
page is written to Neo4j (in one transaction, on a background thread) while the
next one is fetched and parsed, and at most one write is in flight.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fhirgraph import jsontext
from fhirgraph.errors import FhirTerminalError
from fhirgraph.faults import checkpoint
from fhirgraph.fhir.client import FhirClient, operation_outcome_text
from fhirgraph.graph import Graph
from fhirgraph.jsontext import JSON
from fhirgraph.references import ReferenceKind, find_references
from fhirgraph.resource_types import check_resource_type
from fhirgraph.seeds import ExplicitSeeds, SearchSeed, Seeds, seed_key, validate_resource
from fhirgraph.staging import finish_crawl, require_transfer, resource_uid

Progress = Callable[[str, int], None]

ID_BATCH = 100
EDGE_BATCH = 5000
UNRESOLVABLE_TYPE = "Unresolvable"


@dataclass
class CrawlStats:
    staged: int = 0
    fetched_missing: int = 0
    dangling: int = 0
    requests: int = 0
    seconds: float = 0.0
    by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class _BackgroundWriter:
    """One write in flight on a background thread; its error is raised by the next call."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fhirgraph-staging")
        self._pending: Future[None] | None = None

    def submit(self, work: Callable[[], None]) -> None:
        self.wait()
        self._pending = self._pool.submit(work)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


class Crawler:
    """Stages resources; use as a context manager (or call ``close``) so the last write lands."""

    def __init__(
        self,
        graph: Graph,
        source: FhirClient,
        transfer: str,
        *,
        get_missing: bool = True,
        progress: Progress | None = None,
    ):
        self.graph = graph
        self.source = source
        self.transfer = transfer
        self.get_missing = get_missing
        self.progress = progress or (lambda stage, n: None)
        self.stats = CrawlStats()
        self._writer = _BackgroundWriter()

    def __enter__(self) -> Crawler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Wait until everything staged so far is in Neo4j."""
        self._writer.wait()

    def close(self) -> None:
        self._writer.close()

    # -- staging -----------------------------------------------------------
    def stage(self, resources: Sequence[JSON], *, seed: bool) -> None:
        """Queue a batch of fetched resources and their reference edges for writing."""
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
                    "json": jsontext.dumps(resource),
                    "seed": seed,
                }
            )
            edge_rows.extend(self._edges(uid, resource))
            self.stats.by_type[rtype] += 1
        self.stats.staged += len(node_rows)
        self._writer.submit(lambda: self._write(node_rows, edge_rows))

    def _write(self, node_rows: list[dict[str, Any]], edge_rows: list[dict[str, Any]]) -> None:
        steps: list[tuple[str, dict[str, Any]]] = [
            ("crawl_clear_edges", {"uids": [row["uid"] for row in node_rows]}),
            ("crawl_write_resources", {"rows": node_rows, "transfer": self.transfer}),
        ]
        steps += [
            ("crawl_write_edges", {"rows": edge_rows[start : start + EDGE_BATCH], "transfer": self.transfer})
            for start in range(0, len(edge_rows), EDGE_BATCH)
        ]
        self.graph.execute_together(steps)
        self.progress("crawl", len(node_rows))
        checkpoint("crawl_staged")

    def _edges(self, uid: str, resource: JSON) -> Iterator[dict[str, Any]]:
        for found in find_references(resource, self.source.base_url):
            ref = found.reference
            if ref.kind in (ReferenceKind.CONTAINED, ReferenceKind.FOREIGN):
                continue  # stays inside the resource / points outside: never fetched or rewritten
            row: dict[str, Any] = {
                "from": uid,
                "path": found.path,
                "reference": ref.reference,
                "kind": str(ref.kind),
                "to_status": "placeholder",
                "to_error": None,
            }
            key = ref.resource_key
            if ref.kind is ReferenceKind.CONDITIONAL:
                key, detail = self._resolve_conditional(ref.reference)
                if key is None:
                    yield self._unresolvable(row, detail)
                    continue
            if key is None:
                detail = ref.detail or f"{ref.kind} reference cannot be resolved outside a bundle"
                yield self._unresolvable(row, f"invalid reference: {detail}")
                continue
            rtype, rid = key.split("/", 1)
            row.update(to=resource_uid(self.transfer, key), to_key=key, to_type=rtype, to_id=rid)
            yield row

    def _unresolvable(self, row: dict[str, Any], detail: str) -> dict[str, Any]:
        key = f"{UNRESOLVABLE_TYPE}/{row['reference']}"
        row.update(
            to=resource_uid(self.transfer, key),
            to_key=key,
            to_type=UNRESOLVABLE_TYPE,
            to_id=None,
            to_status="dangling",
            to_error=detail,
        )
        return row

    def _resolve_conditional(self, reference: str) -> tuple[str | None, str]:
        rtype, query = reference.split("?", 1)
        self.stats.requests += 1
        bundle = self.source.get(f"{rtype}?{query}", {"_count": 2, "_elements": "id"})
        ids = [
            e["resource"]["id"]
            for e in bundle.get("entry", [])
            if e.get("resource", {}).get("resourceType") == rtype
            and (e.get("search") or {}).get("mode", "match") == "match"
        ]
        if len(ids) == 1:
            return f"{rtype}/{ids[0]}", ""
        return (
            None,
            f"conditional reference matches {len(ids) if len(ids) < 2 else 'several'} resources on the source",
        )

    # -- seeds -------------------------------------------------------------
    def crawl_search(self, seed: SearchSeed) -> None:
        check_resource_type(seed.resource_type)
        params: list[tuple[str, str]] = list(seed.params)
        if not any(name == "_count" for name, _ in params):
            page = seed.page_size if seed.limit is None else min(seed.page_size, max(seed.limit, 1))
            params.append(("_count", str(page)))
        matched = 0
        for page_bundle in self.source.pages(seed.path or seed.resource_type, params, exact=True):
            self.stats.requests += 1
            batch: list[JSON] = []
            included: list[JSON] = []
            for entry in page_bundle.get("entry", []):
                resource = entry.get("resource")
                if not isinstance(resource, dict) or resource.get("resourceType") == "OperationOutcome":
                    continue
                mode = (entry.get("search") or {}).get("mode", "match")
                if mode == "match":
                    if seed.limit is not None and matched >= seed.limit:
                        continue
                    matched += 1
                    batch.append(validate_resource(resource, "a search result"))
                else:
                    included.append(validate_resource(resource, "an included search result"))
            self.stage(batch, seed=True)
            self.stage(included, seed=False)
            if seed.limit is not None and matched >= seed.limit:
                break

    def crawl_explicit(self, seeds: ExplicitSeeds) -> None:
        rows = []
        for reference in seeds.references:
            key = seed_key(reference, self.source.base_url)
            rtype, rid = key.split("/", 1)
            rows.append({"uid": resource_uid(self.transfer, key), "key": key, "type": rtype, "id": rid})
        if rows:
            self.flush()
            self.graph.write_batches("crawl_add_seeds", rows, transfer=self.transfer)

    # -- missing references ---------------------------------------------------
    def fetch_placeholders(self) -> None:
        """Fetch placeholders from the source until none is left (only seeds without get_missing)."""
        while True:
            self.flush()
            rows = self.graph.execute(
                "crawl_next_placeholders",
                transfer=self.transfer,
                seeds_only=not self.get_missing,
                limit=ID_BATCH * 5,
            )
            if not rows:
                return
            by_type: dict[str, list[str]] = defaultdict(list)
            for row in rows:
                by_type[row["type"]].append(row["id"])
            for rtype, ids in by_type.items():
                for start in range(0, len(ids), ID_BATCH):
                    self._fetch_ids(rtype, ids[start : start + ID_BATCH])

    def _fetch_ids(self, rtype: str, ids: list[str]) -> None:
        wanted = set(ids)
        found: list[JSON] = []
        for page_bundle in self.source.pages(rtype, {"_id": ",".join(ids), "_count": len(ids)}, exact=True):
            self.stats.requests += 1
            for entry in page_bundle.get("entry", []):
                resource = entry.get("resource")
                if (
                    isinstance(resource, dict)
                    and resource.get("resourceType") == rtype
                    and resource.get("id") in wanted
                ):
                    found.append(resource)
                    wanted.discard(resource["id"])
        self.stage(found, seed=False)
        self.stats.fetched_missing += len(found)
        if wanted:
            dangling = [
                {
                    "uid": resource_uid(self.transfer, f"{rtype}/{rid}"),
                    "detail": self._why_missing(rtype, rid),
                }
                for rid in sorted(wanted)
            ]
            self._writer.submit(lambda: self._mark_dangling(dangling))
            self.stats.dangling += len(dangling)

    def _mark_dangling(self, rows: list[dict[str, str]]) -> None:
        self.graph.execute("crawl_mark_dangling", rows=rows)

    def _why_missing(self, rtype: str, rid: str) -> str:
        """Read the one resource to report the server's own words (404 or 410 Gone)."""
        self.stats.requests += 1
        try:
            status, payload = self.source.read(rtype, rid)
        except FhirTerminalError as exc:
            return f"not readable on the source: {exc}"
        outcome = operation_outcome_text(payload)
        if status == 410:
            return f"410 Gone: deleted on the source{': ' + outcome if outcome else ''}"
        if status == 404:
            return f"404 Not Found on the source{': ' + outcome if outcome else ''}"
        return f"not returned by a search for _id={rid} (read answered {status})"


def crawl(
    graph: Graph,
    source: FhirClient,
    transfer: str,
    seeds: Iterable[Seeds],
    *,
    get_missing: bool = True,
    progress: Progress | None = None,
) -> CrawlStats:
    """Stage the seeds and (with ``get_missing``) everything they reference, transitively."""
    require_transfer(graph, transfer)
    started = time.monotonic()
    with Crawler(graph, source, transfer, get_missing=get_missing, progress=progress) as crawler:
        for seed in seeds:
            if isinstance(seed, SearchSeed):
                crawler.crawl_search(seed)
            else:
                crawler.crawl_explicit(seed)
        crawler.fetch_placeholders()
    crawler.stats.seconds = time.monotonic() - started
    finish_crawl(graph, transfer, seconds=crawler.stats.seconds, get_missing=get_missing)
    return crawler.stats
