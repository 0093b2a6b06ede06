"""Load stage: replay the planned bundles to the target and record what it created.

For each bundle, in order: read its resources and where their references went,
rewrite the references (``urn:uuid:`` inside the bundle, target ids for earlier
bundles), drop the source's ``id``/``meta`` members, add the linkage tag, record
the intent (bundle ``sending``), POST the transaction, then write the target ids
back together with the bundle's ``loaded`` status.

A bundle is sent as plain creates, except for the resources the target already
holds. With ``match_existing`` (the default) the loader first asks the target for
the bundle's linkage tags, one search per resource type (``POST [type]/_search``
with ``_tag=h1,h2,…``); a resource found there, from an earlier transfer with the
same key (say, a second cohort sharing Practitioners with the first), is sent as
a conditional create (``ifNoneExist`` on its tag), which the target answers with
the copy it has. Conditional creates for every entry would cost the target a
search per entry (bench/RESULTS.md); the pre-check costs one per type.

When the outcome of a send is unknown (a lost or failed response, or a crash
after the intent was recorded) the bundle is resent with every entry a
conditional create, which matches what the target did commit and makes the
resend safe to retry: a single transfer is exactly-once with or without
``match_existing``. Bundles of one level do not depend on each other and are
sent ``concurrency`` at a time.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from fhirgraph import jsontext
from fhirgraph.errors import FhirError, FhirTransientError, TransferStateError
from fhirgraph.faults import checkpoint
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import LINKAGE_SYSTEM, LinkageKey, linkage_tag
from fhirgraph.references import Rewrites, rewrite, strip_source_metadata
from fhirgraph.staging import bundle_uid, check_key, entry_full_url, require_transfer, update_transfer

JSON = dict[str, Any]
Progress = Callable[[str, int], None]
_LOCATION = re.compile(
    r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<version>[^/]+))?/?$"
)


@dataclass(frozen=True)
class BundleFailure:
    bundle: int
    resources: tuple[str, ...]
    message: str


@dataclass
class LoadStats:
    bundles: int = 0
    created: int = 0
    matched_existing: int = 0
    resent_bundles: int = 0
    updated: int = 0
    failures: list[BundleFailure] = field(default_factory=list)
    #: bundles that failed in an earlier run and were not retried (see ``retry_failed``)
    failed_earlier: int = 0
    seconds: float = 0.0
    throughput: list[tuple[float, int]] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        return self.created + self.matched_existing


@dataclass(frozen=True)
class Member:
    uid: str
    key: str
    type: str
    json: str
    refs: tuple[dict[str, Any], ...]
    target_id: str | None = None


def reference_rewrites(member: Member, in_bundle: dict[str, str], *, phase: str) -> tuple[Rewrites, bool]:
    """Where each reference of ``member`` must point on the target, and whether some were deferred."""
    rewrites: dict[str, str | None] = {}
    deferred = False
    for ref in member.refs:
        path = ref["path"]
        if ref["dropped"]:
            rewrites[path] = None
        elif ref["deferred"] and phase == "create":
            rewrites[path] = None
            deferred = True
        elif ref["uid"] in in_bundle:
            rewrites[path] = in_bundle[ref["uid"]]
        elif ref["target_id"]:
            target = f"{ref['type']}/{ref['target_id']}"
            if ref["kind"] == "versioned" and ref.get("target_version"):
                target += f"/_history/{ref['target_version']}"
            rewrites[path] = target
        else:
            raise TransferStateError(
                f"{member.key} {path} refers to {ref['uid'].split('|', 1)[-1]}, which is not on the target "
                f"(status {ref['status']}); run `fhirgraph plan` again"
            )
    return rewrites, deferred


def target_resource(member: Member, rewrites: Rewrites, linkage_hash: str) -> JSON:
    """The resource as the target must receive it: raw JSON, references rewritten, source metadata gone."""
    resource = strip_source_metadata(rewrite(jsontext.loads(member.json), rewrites))
    meta = resource.setdefault("meta", {})
    tags = [t for t in meta.get("tag", []) if t.get("system") != LINKAGE_SYSTEM]
    tags.append(linkage_tag(linkage_hash))
    meta["tag"] = tags
    return resource


def parse_location(location: str) -> tuple[str, str, str | None]:
    match = _LOCATION.search(location.split("?", 1)[0])
    if not match:
        raise FhirError(f"target answered with an unreadable location {location!r}")
    return match["type"], match["id"], match["version"]


class Loader:
    def __init__(
        self,
        graph: Graph,
        target: FhirClient,
        transfer: str,
        key: LinkageKey,
        source_base: str,
        *,
        match_existing: bool = True,
        progress: Progress | None = None,
    ):
        self.graph = graph
        self.target = target
        self.transfer = transfer
        self.key = key
        self.source_base = source_base
        self.match_existing = match_existing
        self.progress = progress or (lambda stage, n: None)
        self.stats = LoadStats()
        self._stats_lock = threading.Lock()
        self._started = time.monotonic()

    def members(self, query: str, **params: Any) -> list[Member]:
        return [
            Member(
                row["uid"],
                row["key"],
                row["type"],
                row["json"],
                tuple(r for r in row["refs"] if r),
                row["target_id"],
            )
            for row in self.graph.execute(query, transfer=self.transfer, **params)
        ]

    def linkage_hash(self, member: Member) -> str:
        return self.key.hash(self.source_base, member.key)

    # -- bundles ---------------------------------------------------------
    def send_bundle(self, number: int, status: str) -> None:
        uid = bundle_uid(self.transfer, number)
        members = self.members("load_bundle_members", number=number)
        if not members:
            self.graph.execute("load_write_back", uid=uid, rows=[], seconds=0.0)
            return
        in_bundle = {m.uid: entry_full_url(m.uid) for m in members}
        entries: list[JSON] = []
        rows: list[dict[str, Any]] = []
        for member in members:
            rewrites, deferred = reference_rewrites(member, in_bundle, phase="create")
            linkage_hash = self.linkage_hash(member)
            entries.append(
                {
                    "fullUrl": in_bundle[member.uid],
                    "resource": target_resource(member, rewrites, linkage_hash),
                    "request": {"method": "POST", "url": member.type},
                }
            )
            rows.append({"uid": member.uid, "linkage_hash": linkage_hash, "pending_update": deferred})
        if status == "sending":
            with self._stats_lock:
                self.stats.resent_bundles += 1
        checkpoint("before_intent")
        self.graph.execute("load_mark_sending", uid=uid)
        checkpoint("before_post")
        started = time.monotonic()
        try:
            response = self._post(entries, rows, outcome_unknown=status == "sending")
        except FhirError as exc:
            self._fail(uid, number, members, str(exc))
            return
        checkpoint("after_commit")
        self._write_back(uid, members, rows, response, time.monotonic() - started)

    def _post(self, entries: list[JSON], rows: list[dict[str, Any]], *, outcome_unknown: bool) -> JSON:
        if not outcome_unknown:
            held = self._held_by_target(entries, rows) if self.match_existing else set()
            for entry, row in zip(entries, rows, strict=True):
                if row["linkage_hash"] in held:
                    _match_on_tag(entry, row)
            try:
                return self.target.transaction(_transaction(entries), retry=False)
            except FhirTransientError:
                # a reset, timeout or 5xx gateway answer: the target may have committed the
                # bundle or not, so it is resent as conditional creates, which match what it did
                with self._stats_lock:
                    self.stats.resent_bundles += 1
        # Every entry a conditional create on its linkage tag: whatever the target already
        # holds (an attempt whose response was lost, a crash before the write-back) is
        # matched, not duplicated. That makes the POST idempotent, so it is safe to retry.
        for entry, row in zip(entries, rows, strict=True):
            _match_on_tag(entry, row)
        return self.target.transaction(_transaction(entries), retry=True)

    def _held_by_target(self, entries: list[JSON], rows: list[dict[str, Any]]) -> set[str]:
        """The linkage hashes of this bundle that the target already holds: one search per type."""
        wanted: dict[str, list[str]] = defaultdict(list)
        for entry, row in zip(entries, rows, strict=True):
            wanted[entry["request"]["url"]].append(row["linkage_hash"])
        held: set[str] = set()
        for rtype, hashes in wanted.items():
            tags = ",".join(f"{LINKAGE_SYSTEM}|{h}" for h in hashes)
            params: dict[str, str | int] = {"_tag": tags, "_count": len(hashes), "_summary": "true"}
            for page in self.target.pages(rtype, params, post=True):
                for found in page.get("entry", []):
                    meta = (found.get("resource") or {}).get("meta") or {}
                    held.update(
                        t.get("code") for t in meta.get("tag", []) if t.get("system") == LINKAGE_SYSTEM
                    )
        return held

    def _write_back(
        self,
        uid: str,
        members: list[Member],
        rows: list[dict[str, Any]],
        response: JSON,
        seconds: float,
    ) -> None:
        results = response.get("entry", [])
        if len(results) != len(members):
            raise FhirError(f"target answered a transaction of {len(members)} entries with {len(results)}")
        created = 0
        for member, row, result in zip(members, rows, results, strict=True):
            answer = result.get("response") or {}
            rtype, rid, version = parse_location(answer.get("location", ""))
            if rtype != member.type:
                raise FhirError(f"target created a {rtype} for {member.key}")
            row["target_id"], row["target_version"] = rid, version
            if str(answer.get("status", "")).startswith("201"):
                created += 1
        self.graph.execute("load_write_back", uid=uid, rows=rows, seconds=seconds)
        with self._stats_lock:
            self.stats.bundles += 1
            self.stats.created += created
            self.stats.matched_existing += len(members) - created
            self.stats.throughput.append((time.monotonic() - self._started, len(members)))
        checkpoint("after_write_back")
        self.progress("load", len(members))

    def _fail(self, uid: str, number: int, members: list[Member], message: str) -> None:
        self.graph.execute("load_mark_failed", uid=uid, error=message, errors={})
        with self._stats_lock:
            self.stats.failures.append(BundleFailure(number, tuple(m.key for m in members), message))
        self.progress("load", len(members))

    # -- second phase for deferred cycle references -------------------------
    def update_deferred(self, batch: int) -> None:
        while True:
            members = self.members("load_pending_updates", limit=batch)
            if not members:
                return
            entries: list[JSON] = []
            rows: list[dict[str, Any]] = []
            for member in members:
                rewrites, _ = reference_rewrites(member, {}, phase="update")
                resource = target_resource(member, rewrites, self.linkage_hash(member))
                target_id = member.target_id
                resource["id"] = target_id
                entries.append(
                    {"resource": resource, "request": {"method": "PUT", "url": f"{member.type}/{target_id}"}}
                )
                rows.append({"uid": member.uid})
            checkpoint("before_update")
            response = self.target.transaction(
                {"resourceType": "Bundle", "type": "transaction", "entry": entries}, retry=True
            )
            checkpoint("after_update")
            for row, result in zip(rows, response.get("entry", []), strict=True):
                _, _, version = parse_location((result.get("response") or {}).get("location", ""))
                row["target_version"] = version
            self.graph.execute("load_mark_updated", rows=rows)
            self.stats.updated += len(rows)


def _match_on_tag(entry: JSON, row: dict[str, Any]) -> None:
    entry["request"]["ifNoneExist"] = f"_tag={LINKAGE_SYSTEM}|{row['linkage_hash']}"


def _transaction(entries: list[JSON]) -> JSON:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _levels(pending: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for _, group in groupby(pending, key=lambda b: b["level"]):
        yield list(group)


def load(
    graph: Graph,
    target: FhirClient,
    transfer: str,
    key: LinkageKey,
    *,
    concurrency: int = 1,
    retry_failed: bool = False,
    match_existing: bool = True,
    progress: Progress | None = None,
) -> LoadStats:
    """Send every bundle not yet loaded, then the deferred cycle updates."""
    record = require_transfer(graph, transfer)
    if not record.plan_done:
        raise TransferStateError(
            f"transfer {transfer!r} has no plan; run `fhirgraph plan` (or transfer) first"
        )
    if concurrency < 1:
        raise TransferStateError(f"concurrency must be at least 1, not {concurrency}")
    check_key(graph, record, key.fingerprint)
    loader = Loader(
        graph, target, transfer, key, record.source, match_existing=match_existing, progress=progress
    )
    pending = graph.execute("load_pending_bundles", transfer=transfer, retry_failed=retry_failed)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for level in _levels(pending):
            if concurrency == 1:
                for bundle in level:
                    loader.send_bundle(bundle["number"], bundle["status"])
            else:
                for future in [pool.submit(loader.send_bundle, b["number"], b["status"]) for b in level]:
                    future.result()
            if loader.stats.failures:
                break  # later levels depend on what failed
    if not loader.stats.failures:
        loader.update_deferred(batch=max(1, int(record.parameters.get("bundle_size", 250))))
    loader.stats.seconds = time.monotonic() - loader._started
    summary = {row["status"]: int(row["count"]) for row in graph.execute("load_summary", transfer=transfer)}
    loader.stats.failed_earlier = 0 if retry_failed else summary.get("failed", 0) - len(loader.stats.failures)
    done = not loader.stats.failures and summary.get("failed", 0) == 0
    update_transfer(
        graph,
        transfer,
        load_done=done,
        seconds_load=record.timings.get("load", 0.0) + loader.stats.seconds,
        param_concurrency=concurrency,
    )
    return loader.stats
