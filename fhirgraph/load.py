"""Load stage: replay the planned bundles to the target and record what it created.

For each bundle, in order: read its resources and where their references went,
rewrite the references (``urn:uuid:`` inside the bundle, target ids for earlier
bundles), drop the source's ``id``/``meta`` members, add the linkage tag, record
the intent (bundle ``sending``), POST the transaction, then write the target ids
back together with the bundle's ``loaded`` status.

Every copy carries two tags: its linkage hash, and the key's fingerprint (the
same on every copy made with the key). With ``match_existing`` (the default)
the load starts by asking the target, one search per resource type of the
transfer, whether it holds any copy of that type made with this key (an
earlier transfer, say a second cohort sharing Practitioners with the first).
Resources of those types are sent as conditional creates (``ifNoneExist`` on
the linkage tag), which the target answers with the copy it has; all others
as plain creates. Conditional creates cost the target a search per entry
(bench/RESULTS.md), so a transfer into a target without copies made with the
key pays nothing for the safety.

When the outcome of a send is unknown (a reset, a timeout, a 502/504), the
target may have committed the bundle, may still be working on it, or never got
it. A conditional resend right away could race a send still under way (both
would create), so the loader first looks for the bundle's copies by their
linkage tags, for up to the target's read timeout: if they appear, the send
committed and its answer is rebuilt from them; if not, the bundle is resent
with every entry a conditional create, which is safe to retry. A bundle left
``sending`` by a crash is looked for and resent the same way. A single transfer is
exactly-once with or without
``match_existing``. Bundles of one level do not depend on each other and are
sent ``concurrency`` at a time.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from fhirgraph import jsontext
from fhirgraph.errors import FhirError, FhirTransientError, TransferStateError
from fhirgraph.faults import checkpoint
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import (
    KEY_SYSTEM,
    LINKAGE_SYSTEM,
    LinkageKey,
    copies_by_hash,
    key_tag,
    linkage_tag,
    without_fhirgraph_tags,
)
from fhirgraph.references import Rewrites, rewrite, strip_source_metadata
from fhirgraph.staging import bundle_uid, check_key, entry_full_url, require_transfer, update_transfer

JSON = dict[str, Any]
Progress = Callable[[str, int], None]
#: statuses with which a server refuses a request without processing it
REFUSED = frozenset({429, 503})
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
    #: bundles sent again, as conditional creates, after the target refused a send (429/503)
    #: or after a send whose outcome was unknown and whose copies were not found
    resent_bundles: int = 0
    #: types sent as conditional creates: the target held copies of them made with this key
    conditional_types: list[str] = field(default_factory=list)
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


def target_resource(member: Member, rewrites: Rewrites, linkage_hash: str, fingerprint: str) -> JSON:
    """The resource as the target must receive it: raw JSON, references rewritten, source metadata
    gone, tagged with its linkage hash and the key's fingerprint."""
    resource = without_fhirgraph_tags(strip_source_metadata(rewrite(jsontext.loads(member.json), rewrites)))
    meta = resource.setdefault("meta", {})
    meta["tag"] = [*meta.get("tag", []), linkage_tag(linkage_hash), key_tag(fingerprint)]
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
        #: resource types of which the target holds copies made with this key (see the module doc)
        self.held_types: frozenset[str] = frozenset()
        #: how long to look for the copies of a send whose outcome is unknown (see _await_outcome)
        self.settle_seconds = target.read_timeout
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
                    "resource": target_resource(member, rewrites, linkage_hash, self.key.fingerprint),
                    "request": {"method": "POST", "url": member.type},
                }
            )
            rows.append({"uid": member.uid, "linkage_hash": linkage_hash, "pending_update": deferred})
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

    def probe_target(self, types: Iterable[str]) -> frozenset[str]:
        """The ``types`` of which the target holds a copy made with this key: one search each,
        by POST so that the server does not answer from a cached result."""
        tag = f"{KEY_SYSTEM}|{self.key.fingerprint}"
        held = set()
        for rtype in sorted(types):
            try:
                _, page = self.target.request(
                    "POST", f"{rtype}/_search", form={"_tag": tag, "_count": 1, "_elements": "id"}, retry=True
                )
            except FhirTransientError:
                raise
            except FhirError as exc:
                raise FhirError(
                    f"{exc} (asking the target for copies made with this key before loading; "
                    "a target that cannot search by _tag needs --no-match-existing)",
                    status=exc.status,
                ) from exc
            if (page or {}).get("entry"):
                held.add(rtype)
        self.held_types = frozenset(held)
        return self.held_types

    def _post(self, entries: list[JSON], rows: list[dict[str, Any]], *, outcome_unknown: bool) -> JSON:
        resent = outcome_unknown
        if outcome_unknown:
            # left 'sending' by a crash: that send may still be under way on the target
            committed = self._await_outcome(entries, rows)
            if committed is not None:
                return committed
        else:
            for entry, row in zip(entries, rows, strict=True):
                if entry["request"]["url"] in self.held_types:
                    _match_on_tag(entry, row)
            if _plain(entries):
                try:
                    return self.target.transaction(_transaction(entries), retry=False)
                except FhirTransientError as exc:
                    # 429 and 503 refuse a request unprocessed; after a reset, a timeout or a
                    # 502/504 the target may have committed the bundle or still be working on it
                    committed = None if exc.status in REFUSED else self._await_outcome(entries, rows)
                    if committed is not None:
                        return committed
                    resent = True
        # Every entry a conditional create on its linkage tag: whatever the target already
        # holds (an attempt whose response was lost, a crash before the write-back) is
        # matched, not duplicated. That makes the POST idempotent, so it is safe to retry.
        for entry, row in zip(entries, rows, strict=True):
            _match_on_tag(entry, row)
        if resent:
            with self._stats_lock:
                self.stats.resent_bundles += 1
        return self.target.transaction(_transaction(entries), retry=True)

    def _await_outcome(self, entries: list[JSON], rows: list[dict[str, Any]]) -> JSON | None:
        """After a send whose outcome is unknown, find out what the target did.

        The target may still be working on the bundle (a timeout, a crash mid-send), so a
        conditional resend right away could race it and both would create. Instead the
        bundle's copies are looked for, with growing pauses, for ``settle_seconds``: once
        every entry has one, the send committed (a transaction is all or nothing) and its
        answer is rebuilt from them; otherwise it never arrived and the caller resends.
        """
        deadline = time.monotonic() + self.settle_seconds
        pause = 0.5
        while True:
            copies = self.copies_on_target(entries, rows)
            if all(row["linkage_hash"] in copies for row in rows):
                return {"entry": [{"response": copies[row["linkage_hash"]]} for row in rows]}
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 10.0)

    def copies_on_target(self, entries: list[JSON], rows: list[dict[str, Any]]) -> dict[str, JSON]:
        """The target's copies of these entries by linkage hash, as transaction answers
        (``200 OK`` with the location): one search per type, by POST (no cached answer)."""
        wanted: dict[str, list[str]] = {}
        for entry, row in zip(entries, rows, strict=True):
            wanted.setdefault(entry["request"]["url"], []).append(row["linkage_hash"])
        found: dict[str, JSON] = {}
        for rtype, hashes in wanted.items():
            for linkage_hash, copies in copies_by_hash(self.target, rtype, hashes, summary=True).items():
                meta = copies[0].get("meta") or {}
                version = meta.get("versionId")
                location = f"{rtype}/{copies[0].get('id')}" + (f"/_history/{version}" if version else "")
                found[linkage_hash] = {"status": "200 OK", "location": location}
        return found

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
                resource = target_resource(member, rewrites, self.linkage_hash(member), self.key.fingerprint)
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


def _plain(entries: list[JSON]) -> bool:
    return any("ifNoneExist" not in e["request"] for e in entries)


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
    if match_existing and pending:
        loader.probe_target(row["type"] for row in graph.execute("load_types", transfer=transfer))
        loader.stats.conditional_types = sorted(loader.held_types)
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
