"""Crawl stage: fetch resources from the source and stage them as a reference graph.

Seeds come from a search or an explicit list. Every fetched resource becomes a
node; every reference an edge to the node of the referenced ``Type/id``
(a placeholder until fetched). With ``get_missing``, placeholders are fetched
in batches (``GET Type?_id=a,b,c``) from the source until none is left.
Pages are staged as they come, so memory does not grow with the transfer: a
page is written to Neo4j (in one transaction, on a background thread) while the
next one is fetched and parsed, and at most ``STAGE_WRITERS`` writes are in
flight (two: one write at a time keeps Neo4j to about one core). Two pages
written at once may touch the same nodes (a shared Practitioner, a resource
staged twice): a resource already in the graph is locked before its references
are replaced, and a deadlock between the two is retried by the driver (the write
is idempotent). Up to ``read_concurrency`` searches read the source at once (the
seeds, then the batches of missing references); they all stage through the same
writers, which keeps the memory bounded. Other writes (dangling placeholders, a
sync's changes) run alone, after the writes in flight.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fhirgraph import jsontext
from fhirgraph.changes import HistoryEntry, content_hash, history_entries
from fhirgraph.errors import ConfigError, FhirTerminalError
from fhirgraph.faults import checkpoint
from fhirgraph.fhir import bulk
from fhirgraph.fhir.client import FhirClient, operation_outcome_text
from fhirgraph.graph import Graph
from fhirgraph.jsontext import JSON
from fhirgraph.references import ReferenceKind, find_references
from fhirgraph.resource_types import check_resource_type
from fhirgraph.seeds import (
    ExplicitSeeds,
    ExportSeed,
    SearchSeed,
    Seeds,
    seed_key,
    seed_to_json,
    validate_resource,
)
from fhirgraph.staging import (
    finish_crawl,
    forget_export_job,
    get_transfer,
    record_export_job,
    require_transfer,
    resource_uid,
)

Progress = Callable[[str, int], None]

ID_BATCH = 100
#: how long the early fetch of missing references waits when there are none (see ``crawl``)
PLACEHOLDER_PAUSE = 0.2
#: exported resources staged per write (one page of a search holds at most 500)
EXPORT_PAGE = 1000
EDGE_BATCH = 5000
#: staged pages written at once
STAGE_WRITERS = 2
UNRESOLVABLE_TYPE = "Unresolvable"
HISTORY_PAGE = 500
#: how far before the source's clock a sync looks for changes: a write committed a little
#: after the instant it was stamped with (a large transaction) is still seen
CLOCK_MARGIN = timedelta(seconds=10)
#: statuses of resources that never reached the target: a change on the source may fix them
REOPENED_WHEN_CHANGED = frozenset({"dangling", "rejected", "blocked", "skipped"})


@dataclass
class ChangeStats:
    """What a sync found in the source's history of the resources a transfer holds."""

    #: staged resources with a newer version or a deletion in the history
    history: int = 0
    #: loaded resources whose content changed: their target copies are to be updated
    changed: int = 0
    #: resources that never reached the target, changed on the source: read and planned again
    reopened: int = 0
    deleted_keys: list[str] = field(default_factory=list)
    #: resources not staged before that refer to the resource of an operation seed
    #: (``Patient/1/$everything``): new members of its compartment
    new_members: int = 0
    #: changed resources that a seed search had matched (do they still match?)
    changed_seeds: list[str] = field(default_factory=list)


@dataclass
class CrawlStats:
    staged: int = 0
    fetched_missing: int = 0
    dangling: int = 0
    requests: int = 0
    seconds: float = 0.0
    by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: status URLs of the export jobs whose files were staged
    export_jobs: list[str] = field(default_factory=list)
    #: of those, the jobs an earlier, interrupted crawl had started
    resumed_export_jobs: list[str] = field(default_factory=list)


class _BackgroundWriter:
    """Up to ``in_flight`` writes at once on background threads; an error is raised by the next
    call once the writes in flight have ended."""

    def __init__(self, in_flight: int = 1) -> None:
        self._in_flight = in_flight
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="fhirgraph-staging")
        self._pending: deque[Future[None]] = deque()
        self._alone: Future[None] | None = None
        # concurrent readers stage through one writer: a reader waits while the writes are full
        self._lock = threading.RLock()

    def submit(self, work: Callable[[], None], *, alone: bool = False) -> None:
        """Queue ``work``; with ``alone``, it runs after the writes in flight and before the next."""
        with self._lock:
            if alone or self._alone is not None:
                self.wait()
            elif len(self._pending) >= self._in_flight:
                self._wait_oldest()
            future = self._pool.submit(work)
            self._pending.append(future)
            if alone:
                self._alone = future

    def _wait_oldest(self) -> None:
        try:
            self._pending.popleft().result()
        except BaseException:
            self.wait()
            raise

    def wait(self) -> None:
        with self._lock:
            pending, self._pending, self._alone = self._pending, deque(), None
            error: BaseException | None = None
            for future in pending:
                try:
                    future.result()
                except BaseException as exc:
                    error = error or exc
            if error is not None:
                raise error

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


class _SharedPage:
    """Resources from several readers, staged :data:`EXPORT_PAGE` at a time whichever reader
    found them. An export's files can be small (HAPI writes one per type per work chunk of its
    job: 375 files for 45,000 resources), and a write to Neo4j costs about as much for a few
    resources as for a full page, so the files' resources are pooled before they are written."""

    def __init__(self, stage: Callable[[list[JSON]], None]) -> None:
        self._stage = stage
        self._lock = threading.Lock()
        self._page: list[JSON] = []

    def add(self, resource: JSON) -> None:
        with self._lock:
            self._page.append(resource)
            if len(self._page) < EXPORT_PAGE:
                return
            page, self._page = self._page, []
        self._stage(page)

    def flush(self) -> None:
        """Stage what is left (once every reader is done)."""
        with self._lock:
            page, self._page = self._page, []
        self._stage(page)


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
        track_matches: bool = False,
        read_concurrency: int = 1,
        stage_writers: int = STAGE_WRITERS,
    ):
        self.graph = graph
        self.source = source
        self.transfer = transfer
        self.get_missing = get_missing
        self.read_concurrency = read_concurrency
        self._stats_lock = threading.Lock()
        self.progress = progress or (lambda stage, n: None)
        self.stats = CrawlStats()
        #: with ``track_matches``, the ``Type/id`` of every seed match (sync: which still match)
        self.matched: set[str] | None = set() if track_matches else None
        self._writer = _BackgroundWriter(stage_writers)

    def __enter__(self) -> Crawler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Wait until everything staged so far is in Neo4j."""
        self._writer.wait()

    def close(self) -> None:
        self._writer.close()

    def _count(self, **counts: int) -> None:
        with self._stats_lock:
            for name, n in counts.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def concurrently(self, reads: Sequence[Callable[[], None]], at_once: int | None = None) -> None:
        """Run ``reads`` (each a search of the source, staging what it finds), ``at_once``
        (default ``read_concurrency``) at a time; the first error is raised once the reads under
        way have stopped."""
        at_once = at_once or self.read_concurrency
        if at_once == 1 or len(reads) <= 1:
            for read in reads:
                read()
            return
        workers = min(at_once, len(reads))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fhirgraph-read") as pool:
            futures = [pool.submit(read) for read in reads]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    # -- staging -----------------------------------------------------------
    def stage(self, resources: Sequence[JSON], *, seed: bool) -> None:
        """Queue a batch of fetched resources and their reference edges for writing."""
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
                    "content_hash": content_hash(resource),
                    "json": jsontext.dumps(resource),
                    "seed": seed,
                }
            )
            references.append(list(self._edges(uid, resource)))
        targets, edges = _edge_ends(rows, references)
        with self._stats_lock:
            for row in rows:
                self.stats.by_type[row["type"]] += 1
                if seed and self.matched is not None:
                    self.matched.add(row["key"])
            self.stats.staged += len(rows)
        self._writer.submit(lambda: self._write_staged(rows, targets, edges))

    def _write_staged(
        self, rows: list[dict[str, Any]], targets: list[dict[str, Any]], edges: list[dict[str, Any]]
    ) -> None:
        self.graph.execute(
            "crawl_stage_resources", rows=rows, targets=targets, edges=edges, transfer=self.transfer
        )
        self.progress("crawl", len(rows))
        checkpoint("crawl_staged")

    def _write(
        self,
        node_rows: list[dict[str, Any]],
        edge_rows: list[dict[str, Any]],
        nodes: tuple[str, dict[str, Any]],
    ) -> None:
        """Write ``nodes`` (a named query over ``node_rows``) and replace the outgoing edges of
        ``node_rows`` with ``edge_rows``, in one transaction (sync: changed resources)."""
        steps: list[tuple[str, dict[str, Any]]] = [
            ("crawl_clear_edges", {"uids": [row["uid"] for row in node_rows]}),
            nodes,
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
        self._count(requests=1)
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

    # -- what changed on the source (sync) ---------------------------------------
    def crawl_changes(
        self,
        types: Iterable[str],
        since: str | None,
        generation: int,
        compartments: frozenset[str] = frozenset(),
    ) -> ChangeStats:
        """Read the source's history since ``since`` (all of it, type by type, for ``types``
        without it) and stage what changed of the resources this transfer holds.

        A loaded resource whose content changed gets its new JSON and references, and an
        update to send (``sync_pending``); one whose new version has the same content only its
        version. A loaded resource deleted on the source is marked to be deleted. A resource
        that never reached the target (dangling, rejected, blocked, skipped) and changed is read
        again, planned and sent like a new one. Of the resources the transfer does not hold,
        those that refer to one of ``compartments`` (``Patient/1`` of a ``Patient/1/$everything``
        seed, whose operation cannot be asked for changes only) are new matches; other new
        ones come from the seed searches and the references of what changed.
        """
        changes = ChangeStats()
        streams: list[tuple[str, dict[str, str | int]]]
        if since:
            streams = [("_history", {"_since": since, "_count": HISTORY_PAGE})]
        else:
            streams = [(f"{rtype}/_history", {"_count": HISTORY_PAGE}) for rtype in sorted(types)]
        for path, params in streams:
            seen: set[str] = set()
            for page in self.source.pages(path, params, exact=True):
                self._count(requests=1)
                latest = []
                for entry in history_entries(page, self.source.base_url):
                    if entry.key not in seen:  # newest first: the first is the latest version
                        seen.add(entry.key)
                        latest.append(entry)
                self._stage_changes(latest, generation, changes, compartments)
        self.flush()
        return changes

    def _stage_changes(
        self,
        entries: Sequence[HistoryEntry],
        generation: int,
        changes: ChangeStats,
        compartments: frozenset[str],
    ) -> None:
        if not entries:
            return
        self.flush()  # the staged versions read next must include what was just written
        staged = {
            row["key"]: row
            for row in self.graph.execute(
                "sync_staged_versions", transfer=self.transfer, keys=[e.key for e in entries]
            )
        }
        changed: list[dict[str, Any]] = []
        edge_rows: list[dict[str, Any]] = []
        versions: list[dict[str, Any]] = []
        deleted: list[dict[str, Any]] = []
        reopened: list[str] = []
        members: list[JSON] = []
        for entry in entries:
            row = staged.get(entry.key)
            if row is None:
                if (
                    entry.resource is not None
                    and compartments
                    and self._in_compartment(entry.resource, compartments)
                ):
                    members.append(validate_resource(entry.resource, "a resource in the source's history"))
                continue
            changes.history += 1
            if entry.resource is None:
                if row["status"] == "loaded":
                    deleted.append({"uid": row["uid"], "reason": "deleted on the source"})
                    changes.deleted_keys.append(entry.key)
                continue
            if row["status"] in REOPENED_WHEN_CHANGED:
                reopened.append(row["uid"])
                continue
            if row["status"] != "loaded":
                continue
            new_hash = content_hash(entry.resource)
            old_hash = row["content_hash"] or (row["json"] and content_hash(jsontext.loads(row["json"])))
            if new_hash == old_hash:
                if row["version"] != entry.version:
                    versions.append({"uid": row["uid"], "version": entry.version, "content_hash": new_hash})
                continue
            changed.append(
                {
                    "uid": row["uid"],
                    "json": jsontext.dumps(entry.resource),
                    "version": entry.version,
                    "content_hash": new_hash,
                }
            )
            edge_rows.extend(self._edges(row["uid"], entry.resource))
            if row["seed"]:
                changes.changed_seeds.append(entry.key)
        changes.changed += len(changed)
        changes.reopened += len(reopened)
        changes.new_members += len(members)
        self.stage(members, seed=True)
        if changed:
            nodes = ("sync_restage_changed", {"rows": changed, "generation": generation})
            self._writer.submit(lambda: self._write(changed, edge_rows, nodes), alone=True)
        if versions:
            self.graph.execute("sync_record_versions", rows=versions)
        if deleted:
            self.graph.execute("sync_mark_source_deleted", rows=deleted, generation=generation)
        if reopened:
            self.graph.execute("sync_reopen_changed", uids=reopened)

    def _in_compartment(self, resource: JSON, compartments: frozenset[str]) -> bool:
        return any(
            found.reference.resource_key in compartments
            for found in find_references(resource, self.source.base_url)
        )

    # -- seeds -------------------------------------------------------------
    def crawl_search(self, seed: SearchSeed, *, since: str | None = None) -> None:
        """Stage what ``seed`` matches and includes (with ``since``: only what changed from then on).

        Its ``_revinclude`` parameters become searches of their own: HAPI caps the resources a
        page may include (1,000 by default) and drops the rest without a word, and restricted
        by ``_lastUpdated`` a search would drop what its unchanged matches revinclude (a new
        Observation of a Patient that did not change). So the matches are searched without
        them, and for each ``_revinclude`` what refers to the matches is searched and paged
        like any search (``Observation?subject=Patient/1,Patient/2,...``), a hundred matches
        at a time.
        """
        if seed.path:  # an operation ($everything) takes _since itself and pages its own result
            self._search(since_seed(seed, since))
            return

        def expanded(name: str, value: str) -> bool:
            # _revinclude=* names no search parameter to expand: the server resolves it
            return name.split(":")[0] == "_revinclude" and value != "*"

        revincludes = [value for name, value in seed.params if expanded(name, value)]
        own = dataclasses.replace(seed, params=tuple((n, v) for n, v in seed.params if not expanded(n, v)))
        keys = self._search(since_seed(own, since))
        if not revincludes:
            return
        if since is not None:
            keys = self._match_keys(own)  # what refers to an unchanged match may have changed
        for spec in revincludes:
            rtype, _, rest = spec.partition(":")
            param = rest.partition(":")[0]
            if not param:
                raise ConfigError(
                    f"_revinclude={spec} is not TYPE:PARAM; name what to include, e.g. Observation:subject",
                    hint="seeds",
                )
            for start in range(0, len(keys), ID_BATCH):
                restriction = (("_lastUpdated", f"ge{since}"),) if since else ()
                referrers = (
                    ("_count", str(seed.page_size)),
                    (param, ",".join(keys[start : start + ID_BATCH])),
                )
                self._search(SearchSeed(rtype, referrers + restriction), matches_are_seeds=False)

    def _search(self, seed: SearchSeed, *, matches_are_seeds: bool = True) -> list[str]:
        """Stage the pages of one search; the ``Type/id`` of its matches."""
        check_resource_type(seed.resource_type)
        params: list[tuple[str, str]] = list(seed.params)
        if not any(name == "_count" for name, _ in params):
            page = seed.page_size if seed.limit is None else min(seed.page_size, max(seed.limit, 1))
            params.append(("_count", str(page)))
        keys: list[str] = []
        for page_bundle in self.source.pages(seed.path or seed.resource_type, params, exact=True):
            self._count(requests=1)
            batch: list[JSON] = []
            included: list[JSON] = []
            for entry in page_bundle.get("entry", []):
                resource = entry.get("resource")
                if not isinstance(resource, dict) or resource.get("resourceType") == "OperationOutcome":
                    continue
                mode = (entry.get("search") or {}).get("mode", "match")
                if mode == "match":
                    if seed.limit is not None and len(keys) >= seed.limit:
                        continue
                    batch.append(validate_resource(resource, "a search result"))
                    keys.append(f"{resource['resourceType']}/{resource['id']}")
                else:
                    included.append(validate_resource(resource, "an included search result"))
            self.stage(batch, seed=matches_are_seeds)
            self.stage(included, seed=False)
            if seed.limit is not None and len(keys) >= seed.limit:
                break
        return keys

    def _match_keys(self, seed: SearchSeed) -> list[str]:
        """``Type/id`` of every match of ``seed`` (ids only, without includes)."""
        params = [
            (n, v) for n, v in seed.params if n.split(":")[0] not in ("_include", "_count", "_elements")
        ]
        params += [("_elements", "id"), ("_count", str(seed.page_size))]
        keys: list[str] = []
        for page_bundle in self.source.pages(seed.resource_type, params):
            self._count(requests=1)
            for entry in page_bundle.get("entry", []):
                resource = entry.get("resource") or {}
                if (entry.get("search") or {}).get("mode", "match") == "match" and resource.get("id"):
                    if seed.limit is not None and len(keys) >= seed.limit:
                        return keys
                    keys.append(f"{resource.get('resourceType')}/{resource['id']}")
        return keys

    def crawl_export(self, seed: ExportSeed, *, notify: bulk.Notify | None = None) -> None:
        """Stage the resources of a Bulk Data export of the source (see ``fhirgraph.fhir.bulk``).

        The job's status URL is kept on the transfer before it is polled, so a crawl killed
        while the job runs polls the same job again; a job the server no longer knows is
        started anew. Nothing is staged before the job has finished: Ctrl-C while it runs
        cancels it (``DELETE``) with nothing staged. Once the job has finished its files are
        staged page by page as they are read; an interrupted crawl stages them again from the
        same job (staging the same resource twice writes one node). Once all is staged the
        job is released (``DELETE`` again: the server may remove its files). ``get_missing``
        then fetches what the export does not hold: an export by type does not follow
        references.
        """
        key = seed_to_json(seed)
        record = get_transfer(self.graph, self.transfer)
        status_url = (
            record.export_job[1] if record and record.export_job and record.export_job[0] == key else None
        )
        manifest = self._await_export(status_url, notify) if status_url else None
        if manifest is not None and status_url is not None:
            self.stats.resumed_export_jobs.append(status_url)
        else:
            if status_url is not None:  # the server no longer has it
                forget_export_job(self.graph, self.transfer, status_url=status_url)
            status_url = bulk.kick_off(self.source, seed.path, seed.params)
            self._count(requests=1)
            record_export_job(self.graph, self.transfer, seed=key, status_url=status_url)
            manifest = self._await_export(status_url, notify)
            if manifest is None:
                forget_export_job(self.graph, self.transfer, status_url=status_url)
                raise FhirTerminalError(
                    f"the {self.source.name} server lost the export job it had just started ({status_url})"
                )
        errors = bulk.error_texts(self.source, manifest)
        if errors:
            raise FhirTerminalError(
                f"the {self.source.name} server's $export job could not export everything "
                f"({len(errors)} error(s)): {errors[0]}"
            )
        # the files are independent: read_concurrency of them are read at once, into one page
        page = _SharedPage(functools.partial(self.stage, seed=True))
        self.concurrently([functools.partial(self._stage_export_file, file, page) for file in manifest.files])
        page.flush()
        self.flush()
        forget_export_job(self.graph, self.transfer, status_url=status_url)
        self.stats.export_jobs.append(status_url)
        checkpoint("export_staged")
        bulk.release(self.source, status_url)
        self._count(requests=1)

    def _stage_export_file(self, file: bulk.ExportFile, page: _SharedPage) -> None:
        self._count(requests=1)
        for resource in bulk.resources(self.source, file):
            validate_resource(resource, f"a resource of the export file {file.url}")
            if file.type and resource["resourceType"] != file.type:
                raise FhirTerminalError(
                    f"the export file {file.url} of {file.type} resources holds a "
                    f"{resource['resourceType']}; the {self.source.name} server's export is not usable"
                )
            page.add(resource)

    def _await_export(self, status_url: str, notify: bulk.Notify | None) -> bulk.ExportManifest | None:
        """Poll the job to its end (None: the server does not know it); forget a job that failed
        or that Ctrl-C cancelled."""

        def polled() -> None:
            self._count(requests=1)
            checkpoint("export_polling")

        try:
            return bulk.poll(self.source, status_url, notify=notify, on_wait=polled)
        except KeyboardInterrupt:
            forget_export_job(self.graph, self.transfer, status_url=status_url)
            raise
        except bulk.ExportFailedError:
            forget_export_job(self.graph, self.transfer, status_url=status_url)
            raise

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
                limit=ID_BATCH * 5 * self.read_concurrency,
            )
            if not rows:
                return
            by_type: dict[str, list[str]] = defaultdict(list)
            for row in rows:
                by_type[row["type"]].append(row["id"])
            self.concurrently(
                [
                    functools.partial(self._fetch_ids, rtype, ids[start : start + ID_BATCH])
                    for rtype, ids in by_type.items()
                    for start in range(0, len(ids), ID_BATCH)
                ]
            )

    def fetch_placeholders_until(self, done: threading.Event) -> None:
        """While the seeds are read (until ``done``), fetch the placeholders staged so far, one
        batch at a time: what the seeds refer to is staged early, so the load can start early
        (overlap). The seeds' own pages may hold some of them again: staging twice writes once."""
        while not done.is_set():
            self.flush()
            rows = self.graph.execute(
                "crawl_next_placeholders",
                transfer=self.transfer,
                seeds_only=not self.get_missing,
                limit=ID_BATCH,
            )
            by_type: dict[str, list[str]] = defaultdict(list)
            for row in rows:
                by_type[row["type"]].append(row["id"])
            for rtype, ids in by_type.items():
                self._fetch_ids(rtype, ids)
            if not rows:
                done.wait(PLACEHOLDER_PAUSE)

    def _fetch_ids(self, rtype: str, ids: list[str]) -> None:
        wanted = set(ids)
        found: list[JSON] = []
        for page_bundle in self.source.pages(rtype, {"_id": ",".join(ids), "_count": len(ids)}, exact=True):
            self._count(requests=1)
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
        self._count(fetched_missing=len(found))
        if wanted:
            dangling = [
                {
                    "uid": resource_uid(self.transfer, f"{rtype}/{rid}"),
                    "detail": self._why_missing(rtype, rid),
                }
                for rid in sorted(wanted)
            ]
            self._writer.submit(lambda: self._mark_dangling(dangling), alone=True)
            self._count(dangling=len(dangling))

    def _mark_dangling(self, rows: list[dict[str, str]]) -> None:
        self.graph.execute("crawl_mark_dangling", rows=rows)

    def _why_missing(self, rtype: str, rid: str) -> str:
        """Read the one resource to report the server's own words (404 or 410 Gone)."""
        self._count(requests=1)
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


def _edge_ends(
    rows: Sequence[dict[str, Any]], references: Sequence[Sequence[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The targets and edges of a staged page for ``crawl_stage_resources``.

    ``references[i]`` holds the edge rows of ``rows[i]`` (see ``Crawler._edges``). Targets are
    the referenced resources that are not in ``rows``, each once; an edge names its ends by
    their position in ``rows`` followed by the targets, so Neo4j looks each node up once per
    page instead of once per reference.
    """
    position: dict[str, int] = {}
    for i, row in enumerate(rows):
        position.setdefault(row["uid"], i)
    targets: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for i, found in enumerate(references):
        for edge in found:
            end = position.get(edge["to"])
            if end is None:
                end = position[edge["to"]] = len(rows) + len(targets)
                targets.append(
                    {
                        "uid": edge["to"],
                        "key": edge["to_key"],
                        "type": edge["to_type"],
                        "id": edge["to_id"],
                        "status": edge["to_status"],
                        "error": edge["to_error"],
                    }
                )
            edges.append(
                {
                    "from": i,
                    "to": end,
                    "path": edge["path"],
                    "reference": edge["reference"],
                    "kind": edge["kind"],
                }
            )
    return targets, edges


def source_instant(source: FhirClient) -> str:
    """The source server's clock now, less :data:`CLOCK_MARGIN`: the instant from which a
    later sync looks for changes. Read from the ``meta.lastUpdated`` of a search Bundle (the
    server's own clock, as its resources' ``lastUpdated``); this machine's clock, less a few
    minutes more, if the server does not say."""
    page = source.get("Patient", {"_id": "fhirgraph-clock", "_count": 1})
    stamp = (page.get("meta") or {}).get("lastUpdated")
    try:
        now = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        now = None
    if now is None or now.tzinfo is None:
        now = datetime.now(UTC) - timedelta(minutes=5)
    return (now - CLOCK_MARGIN).isoformat(timespec="milliseconds")


def crawl(
    graph: Graph,
    source: FhirClient,
    transfer: str,
    seeds: Iterable[Seeds],
    *,
    get_missing: bool = True,
    progress: Progress | None = None,
    read_concurrency: int = 1,
    notify: bulk.Notify | None = None,
    early_missing: bool = False,
) -> CrawlStats:
    """Stage the seeds and (with ``get_missing``) everything they reference, transitively;
    ``read_concurrency`` searches (seeds, then batches of missing references) at a time.

    Export seeds run first, one after another, in this thread (where Ctrl-C arrives, so that
    it cancels the job); ``notify`` is told how an export job is doing while it runs. With
    ``early_missing`` (a load overlapping the crawl), one of the readers fetches missing
    references while the search seeds are read, not only after them.
    """
    require_transfer(graph, transfer)
    started = time.monotonic()
    with Crawler(
        graph, source, transfer, get_missing=get_missing, progress=progress, read_concurrency=read_concurrency
    ) as crawler:
        searches: list[Callable[[], None]] = []
        for seed in seeds:
            if isinstance(seed, SearchSeed):
                searches.append(functools.partial(_read_seed, crawler, seed))
            elif isinstance(seed, ExportSeed):
                crawler.crawl_export(seed, notify=notify)
            else:
                crawler.crawl_explicit(seed)
        if early_missing and get_missing and searches and read_concurrency > 1:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fhirgraph-missing") as side:
                done = threading.Event()
                missing = side.submit(crawler.fetch_placeholders_until, done)
                try:
                    crawler.concurrently(searches, at_once=max(1, read_concurrency - 1))
                finally:
                    done.set()
                missing.result()
        else:
            crawler.concurrently(searches)
        crawler.fetch_placeholders()
    crawler.stats.seconds = time.monotonic() - started
    finish_crawl(graph, transfer, seconds=crawler.stats.seconds, get_missing=get_missing)
    return crawler.stats


def _read_seed(crawler: Crawler, seed: SearchSeed) -> None:
    crawler.crawl_search(seed)
    checkpoint("seed_read")


def since_seed(seed: SearchSeed, since: str | None) -> SearchSeed:
    """``seed`` restricted to what changed on the source from ``since`` on."""
    if since is None:
        return seed
    restriction = ("_since", since) if seed.path else ("_lastUpdated", f"ge{since}")
    return dataclasses.replace(seed, params=(*seed.params, restriction))


def since_export(seed: ExportSeed, since: str | None) -> ExportSeed:
    """``seed`` asking only for what changed on the source from ``since`` on (its ``_since``)."""
    if since is None:
        return seed
    params = tuple((name, value) for name, value in seed.params if name != "_since")
    return dataclasses.replace(seed, params=(*params, ("_since", since)))


def crawl_changes(
    graph: Graph,
    source: FhirClient,
    transfer: str,
    seeds: Sequence[Seeds],
    *,
    since: str | None,
    generation: int,
    get_missing: bool = True,
    progress: Progress | None = None,
    read_concurrency: int = 1,
) -> tuple[CrawlStats, ChangeStats]:
    """Stage what changed on the source since ``since`` (see ``Crawler.crawl_changes``), then
    what the seeds newly match and whatever changed or new resources newly reference.

    A seed with a limit is a fixed cohort: its resources are kept current, but it adds no new
    matches. An export seed runs again with ``_since``. When every seed is an unlimited
    search, a changed seed match that its search no longer matches is marked to be deleted,
    like one deleted on the source.
    """
    require_transfer(graph, transfer)
    started = time.monotonic()
    types = [row["type"] for row in graph.execute("sync_staged_types", transfer=transfer)]
    searches = [s for s in seeds if isinstance(s, SearchSeed) and s.limit is None]
    # an operation seed ($everything) cannot be asked for what changed: with an instant, its new
    # members are found in the history (what refers to its resource); without one, run it again
    operations = [s for s in searches if s.path and since]
    compartments = frozenset(s.path.rsplit("/", 1)[0] for s in operations if s.path)
    with Crawler(
        graph,
        source,
        transfer,
        get_missing=get_missing,
        progress=progress,
        track_matches=True,
        read_concurrency=read_concurrency,
    ) as crawler:
        changes = crawler.crawl_changes(types, since, generation, compartments)
        for export in (s for s in seeds if isinstance(s, ExportSeed)):
            crawler.crawl_export(since_export(export, since))
        crawler.concurrently(
            [functools.partial(crawler.crawl_search, s, since=since) for s in searches if s not in operations]
        )
        crawler.fetch_placeholders()
        plain = [s for s in searches if not s.path]
        if plain and len(plain) == len(seeds) and crawler.matched is not None:
            unmatched = [key for key in changes.changed_seeds if key not in crawler.matched]
            if unmatched:
                rows = [
                    {"uid": resource_uid(transfer, key), "reason": "no longer matched by the seeds"}
                    for key in unmatched
                ]
                graph.execute("sync_mark_source_deleted", rows=rows, generation=generation)
                changes.deleted_keys.extend(unmatched)
    crawler.stats.seconds = time.monotonic() - started
    finish_crawl(graph, transfer, seconds=crawler.stats.seconds, get_missing=get_missing)
    checkpoint("sync_changes_staged")
    return crawler.stats, changes
