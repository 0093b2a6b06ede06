"""Load stage: replay the planned bundles to the target and record what it created.

For each bundle, in order: read its resources and where their references went,
rewrite the references (``urn:uuid:`` inside the bundle, target ids for earlier
bundles), drop the source's ``id``/``meta`` members, add the linkage tag, record
the intent (bundle ``sending``), POST the transaction, then write the target ids
back together with the bundle's ``loaded`` status. A bundle is sent as soon as
the bundles it refers to are loaded (:class:`BundleQueue`), ``concurrency``
transactions at a time while as many more bundles read their members or write
back. Then the second
phase puts back the cycle-closing references that the plan deferred: a PUT per
resource created without them.

The stage is in three parts. :mod:`fhirgraph.bundle` builds each transaction
from the members (pure); :mod:`fhirgraph.sender` holds the target-side policy
that makes a transfer exactly-once (plain or conditional creates, what to do
when the outcome of a send is unknown); this module reads the members from the
graph, records the intent, writes back what the target created or marks a
bundle failed, and stops at the crash points (``faults.checkpoint``) that the
crash tests hit one by one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from fhirgraph.bundle import (
    HELD_BACK,
    Entry,
    Member,
    StagedReference,
    blocked_members,
    create_entries,
    parse_location,
    update_entries,
    without_held_back_references,
)
from fhirgraph.changes import content_hash
from fhirgraph.config import OnReject
from fhirgraph.errors import FhirgraphError, FhirTerminalError, TransferStateError
from fhirgraph.faults import checkpoint
from fhirgraph.fhir.client import FhirClient, operation_outcome_issues
from fhirgraph.graph import Graph
from fhirgraph.linkage import LinkageKey, without_fhirgraph_tags
from fhirgraph.sender import Sender, TargetProbe, refused_for_content
from fhirgraph.staging import (
    TransferRecord,
    bundle_uid,
    bundles_open,
    check_key,
    claim_bundle,
    finish_load,
    mark_bundle_failed,
    mark_bundle_loaded,
    mark_bundle_sending,
    mark_change_conflicts,
    mark_changes_updated,
    mark_deleted_on_target,
    mark_resources_blocked,
    mark_resources_loaded,
    mark_resources_rejected,
    require_transfer,
)

__all__ = ["BundleFailure", "ChangeStats", "LoadStats", "apply_changes", "load", "parse_location"]

Progress = Callable[[str, int], None]
#: a rejection reason is cut to this many characters
MAX_REASON = 1000


@dataclass(frozen=True)
class BundleFailure:
    bundle: int
    resources: tuple[str, ...]
    message: str
    #: the setting that may get past the failure (see ``errors.FhirgraphError.hint``)
    hint: str | None = None

    def text(self, hints: Mapping[str, str] | None = None) -> str:
        """The message, with the hint named as ``hints`` names it (the setting's name by default)."""
        if self.hint is None:
            return self.message
        return f"{self.message} ({(hints or {}).get(self.hint, self.hint)})"


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
    #: resources the target refused, found by isolating them in refused bundles
    rejected: int = 0
    #: resources not sent because they refer to a rejected (or blocked) one (``on_reject`` skip)
    blocked: int = 0
    #: references to rejected or blocked resources removed (``on_reject`` drop-reference)
    dropped_references: int = 0
    #: transactions sent to isolate refused resources
    isolation_sends: int = 0
    seconds: float = 0.0
    throughput: list[tuple[float, int]] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        return self.created + self.matched_existing


class Loader:
    """The graph side of a load: reads a bundle's members, records the intent to send it,
    has ``sender`` send it, then writes back what the target created or marks it failed."""

    def __init__(
        self,
        graph: Graph,
        sender: Sender,
        transfer: str,
        key: LinkageKey,
        source_base: str,
        *,
        on_reject: OnReject = "skip",
        progress: Progress | None = None,
        concurrency: int = 1,
    ) -> None:
        self.graph = graph
        self.sender = sender
        #: the sends to the target at one time: other bundles meanwhile read their members,
        #: record their intent or write back what the target created
        self.slots = threading.BoundedSemaphore(concurrency)
        self.on_reject = on_reject
        self.transfer = transfer
        self.key = key
        self.source_base = source_base
        self.progress = progress or (lambda stage, n: None)
        self.stats = LoadStats()
        self.started = time.monotonic()
        self._stats_lock = threading.Lock()

    def members(self, query: str, **params: Any) -> list[Member]:
        return [_member(row) for row in self.graph.execute(query, transfer=self.transfer, **params)]

    # -- bundles ---------------------------------------------------------
    def send_bundle(self, number: int, status: str) -> None:
        uid = bundle_uid(self.transfer, number)
        members = self.members("load_bundle_members", number=number)
        if self.on_reject != "stop":
            members = self._hold_back(members)
        if not members:
            mark_bundle_loaded(self.graph, uid, [], 0.0)
            return
        entries = create_entries(members, key=self.key, source_base=self.source_base)
        checkpoint("before_intent")
        try:
            with self.slots:  # the intent too: a crash leaves only bundles really under way 'sending'
                previous_send = mark_bundle_sending(self.graph, uid)
                checkpoint("before_post")
                started = time.monotonic()
                response = self.sender.send(
                    entries, outcome_unknown=status == "sending", sent_seconds_ago=previous_send or 0.0
                )
        except FhirTerminalError as exc:
            if self.on_reject == "stop" or not refused_for_content(exc):
                self._fail(uid, number, entries, exc)
            else:
                with self.slots:
                    self._isolate(uid, number, entries, exc, started)
            return
        checkpoint("after_commit")
        self._write_back(uid, entries, response, time.monotonic() - started)

    def _hold_back(self, members: list[Member]) -> list[Member]:
        """The members to send, after those that refer to a rejected or blocked resource
        are marked blocked (``on_reject`` skip) or lose that reference (drop-reference)."""
        if self.on_reject == "drop-reference":
            return self._drop_references(members)
        blocked = blocked_members(members)
        if blocked:
            mark_resources_blocked(self.graph, [{"uid": uid, "error": e} for uid, e in blocked.items()])
            with self._stats_lock:
                self.stats.blocked += len(blocked)
            self.progress("load", len(blocked))
        return [m for m in members if m.uid not in blocked]

    def _drop_references(self, members: Sequence[Member]) -> list[Member]:
        kept, rows = without_held_back_references(members)
        if rows:
            self.graph.execute("load_drop_references", rows=rows)
            with self._stats_lock:
                self.stats.dropped_references += len(rows)
        return kept

    def _isolate(
        self, uid: str, number: int, entries: Sequence[Entry], refusal: FhirTerminalError, started: float
    ) -> None:
        """Keep what the target accepts of a bundle it refused for its content; reject the rest."""
        units: dict[str, list[Entry]] = {}
        for entry in entries:
            units.setdefault(entry.member.scc or entry.member.uid, []).append(entry)
        done: set[str] = set()

        def accepted(part: Sequence[Entry], answer: dict[str, Any]) -> None:
            rows, created = self._rows(part, answer)
            mark_resources_loaded(self.graph, rows)
            done.update(e.member.uid for e in part)
            self._count_loaded(len(part), created)
            checkpoint("after_isolated_part")

        def rejected(unit: Sequence[Entry], error: FhirTerminalError) -> None:
            text = f"{error.status}: {error.outcome or error}"[:MAX_REASON]
            mark_resources_rejected(self.graph, [{"uid": e.member.uid, "error": text} for e in unit])
            done.update(e.member.uid for e in unit)
            with self._stats_lock:
                self.stats.rejected += len(unit)
            self.progress("load", len(unit))

        try:
            self.sender.isolate(list(units.values()), refusal, accepted=accepted, rejected=rejected)
        except FhirTerminalError as exc:
            self._fail(uid, number, [e for e in entries if e.member.uid not in done], exc)
            return
        mark_bundle_loaded(self.graph, uid, [], time.monotonic() - started)
        with self._stats_lock:
            self.stats.bundles += 1

    def _rows(self, entries: Sequence[Entry], response: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """What the target created for ``entries`` (its transaction ``response``), as graph rows,
        and how many it created (the others it matched by their linkage tags)."""
        results = response.get("entry", [])
        if len(results) != len(entries):
            raise FhirTerminalError(
                f"target answered a transaction of {len(entries)} entries with {len(results)}"
            )
        created = 0
        rows: list[dict[str, Any]] = []
        for entry, result in zip(entries, results, strict=True):
            answer = result.get("response") or {}
            rtype, rid, version = parse_location(answer.get("location", ""))
            if rtype != entry.resource_type:
                raise FhirTerminalError(f"target created a {rtype} for {entry.member.key}")
            rows.append(
                {
                    "uid": entry.member.uid,
                    "linkage_hash": entry.linkage_hash,
                    "pending_update": entry.pending_update,
                    "target_id": rid,
                    "target_version": version,
                }
            )
            if str(answer.get("status", "")).startswith("201"):
                created += 1
        return rows, created

    def _count_loaded(self, loaded: int, created: int) -> None:
        with self._stats_lock:
            self.stats.created += created
            self.stats.matched_existing += loaded - created
            self.stats.throughput.append((time.monotonic() - self.started, loaded))
        self.progress("load", loaded)

    def _write_back(
        self, uid: str, entries: Sequence[Entry], response: dict[str, Any], seconds: float
    ) -> None:
        rows, created = self._rows(entries, response)
        mark_bundle_loaded(self.graph, uid, rows, seconds)
        with self._stats_lock:
            self.stats.bundles += 1
        self._count_loaded(len(entries), created)
        checkpoint("after_write_back")

    def _fail(self, uid: str, number: int, entries: Sequence[Entry], exc: FhirTerminalError) -> None:
        message = str(exc)
        mark_bundle_failed(self.graph, uid, message)
        with self._stats_lock:
            self.stats.failures.append(
                BundleFailure(number, tuple(e.member.key for e in entries), message, exc.hint)
            )
        self.progress("load", len(entries))

    # -- second phase for deferred cycle references -------------------------
    def update_deferred(self, batch: int) -> None:
        while True:
            members = self.members("load_pending_updates", limit=batch)
            if not members:
                return
            if self.on_reject != "stop":
                # already created, so never blocked: a deferred reference to a refused resource goes
                members = self._drop_references(members)
            entries = update_entries(members, key=self.key, source_base=self.source_base)
            checkpoint("before_update")
            response = self.sender.send_updates(entries)
            checkpoint("after_update")
            rows: list[dict[str, Any]] = []
            for entry, result in zip(entries, response.get("entry", []), strict=True):
                _, _, version = parse_location((result.get("response") or {}).get("location", ""))
                rows.append({"uid": entry.member.uid, "target_version": version})
            self.graph.execute("load_mark_updated", rows=rows)
            self.stats.updated += len(rows)


def _member(row: Mapping[str, Any]) -> Member:
    return Member(
        row["uid"],
        row["key"],
        row["type"],
        row["json"],
        tuple(r for r in row["refs"] if r),
        row["target_id"],
        row.get("scc"),
    )


# -- sync: updates and deletions of copies already on the target ---------------------


@dataclass
class ChangeStats:
    """What a sync did to copies already on the target."""

    updated: int = 0
    #: (resource, why): copies changed on the target since fhirgraph wrote them, left alone
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    #: (resource, why): updates the target refused, or that refer to what is not on the target
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: copies removed from the target (deleted on the source, or no longer matched by the seeds)
    removed: int = 0
    #: (resource, why): copies to remove that were kept (something still refers to them)
    kept: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


#: resources not on the target whose referrers may lose the reference under a drop policy
_DANGLING = frozenset({"placeholder", "dangling", "skipped"})


class ChangeSender:
    """Sends a sync's updates (PUT to the recorded target id, ``If-Match`` on the version
    fhirgraph wrote) and deletions, and records what the target did.

    Exactly-once: an update whose answer was lost (a crash, a timeout) is sent again and meets
    its own earlier write as a version conflict (412); the copy is then read, and if it holds
    what was sent, the update is recorded as done. A copy that holds anything else was changed
    on the target by someone else: a conflict, reported and left alone (``overwrite`` sends
    the update without ``If-Match``).
    """

    def __init__(
        self,
        loader: Loader,
        generation: int,
        *,
        overwrite: bool,
        drop_dangling: bool,
    ) -> None:
        self.loader = loader
        self.graph = loader.graph
        self.sender = loader.sender
        self.generation = generation
        self.overwrite = overwrite
        self.drop_dangling = drop_dangling
        self.stats = ChangeStats()
        self._lock = threading.Lock()

    def update_changed(self, batch: int, concurrency: int = 1) -> None:
        """Send the pending updates in batches of ``batch``, ``concurrency`` batches at a time
        (the updates are independent: each PUT names its copy)."""
        after: str | None = None
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fhirgraph-sync") as pool:
            in_flight: deque[Future[None]] = deque()
            while True:
                rows = self.graph.execute(
                    "sync_pending_updates", transfer=self.loader.transfer, limit=batch, after=after
                )
                if not rows:
                    break
                after = rows[-1]["uid"]
                in_flight.append(pool.submit(self._send_updates, rows))
                if len(in_flight) >= concurrency:
                    in_flight.popleft().result()
            while in_flight:
                in_flight.popleft().result()

    def _send_updates(self, rows: list[dict[str, Any]]) -> None:
        versions = {row["uid"]: row["target_version"] for row in rows}
        problems: list[dict[str, Any]] = []
        sendable: list[Member] = []
        for member in map(_member, rows):
            member, missing = self._references_on_target(member)
            if missing:
                problems.append(self._problem(member, f"refers to {missing}, which is not on the target"))
            elif versions[member.uid] is None and not self.overwrite:
                problems.append(
                    self._problem(
                        member, "the version fhirgraph wrote is not recorded; sync with overwrite", True
                    )
                )
            else:
                sendable.append(member)
        entries = update_entries(sendable, key=self.loader.key, source_base=self.loader.source_base)
        updated: list[dict[str, Any]] = []
        if entries:
            checkpoint("before_sync_update")
            results = self.sender.send_batch(
                [e.conditional_update(None if self.overwrite else versions[e.member.uid]) for e in entries]
            )
            checkpoint("after_sync_update")
            for entry, result in zip(entries, results, strict=True):
                self._settle(entry, result, versions[entry.member.uid], updated, problems)
        if updated:
            mark_changes_updated(self.graph, updated, self.generation)
        if problems:
            mark_change_conflicts(self.graph, problems)
        with self._lock:
            self.stats.updated += len(updated)
        self.loader.progress("sync", len(rows))

    def _references_on_target(self, member: Member) -> tuple[Member, str]:
        """``member`` with the references it may lose under the policies dropped, and the first
        reference to a resource not on the target that it may not lose ('' if none)."""
        refs: list[StagedReference] = []
        for ref in member.refs:
            if not ref["dropped"] and not ref["target_id"]:
                droppable = (ref["status"] in HELD_BACK and self.loader.on_reject == "drop-reference") or (
                    ref["status"] in _DANGLING and self.drop_dangling
                )
                if not droppable:
                    return member, f"{ref.get('key') or ref['uid']} ({ref['status']})"
                ref = {**ref, "dropped": True}
            refs.append(ref)
        return dataclasses.replace(member, refs=tuple(refs)), ""

    def _settle(
        self,
        entry: Entry,
        result: Mapping[str, Any],
        version: str | None,
        updated: list[dict[str, Any]],
        problems: list[dict[str, Any]],
    ) -> None:
        status = str(result.get("status", ""))
        member = entry.member
        if status.startswith(("200", "201")):
            _, _, new_version = parse_location(
                str(result.get("location") or f"{member.type}/{member.target_id}")
            )
            updated.append({"uid": member.uid, "target_version": new_version or _etag_version(result)})
            return
        if status.startswith(("409", "412")) and version is not None:
            # If-Match failed (HAPI answers 409, the specification 412), or something else
            # conflicted: the copy tells which
            assert member.target_id is not None
            copy = self.sender.read_copy(member.type, member.target_id)
            now = ((copy or {}).get("meta") or {}).get("versionId")
            if copy is not None and same_content(copy, entry.bundle_entry["resource"]):
                updated.append({"uid": member.uid, "target_version": now})  # our own write, resent
                return
            if copy is not None and now == version:
                outcome = operation_outcome_issues(result.get("outcome"))
                problems.append(self._problem(member, f"{status}: {outcome}".rstrip(": ")[:MAX_REASON]))
                return
            where = f"now version {now}" if copy is not None else "now deleted"
            problems.append(
                self._problem(
                    member,
                    f"changed on the target since fhirgraph wrote version {version} ({where}); "
                    "left alone (sync with overwrite replaces it)",
                    True,
                )
            )
            return
        outcome = operation_outcome_issues(result.get("outcome"))
        problems.append(self._problem(member, f"{status}: {outcome}".rstrip(": ")[:MAX_REASON]))

    def _problem(self, member: Member, error: str, conflict: bool = False) -> dict[str, Any]:
        with self._lock:
            (self.stats.conflicts if conflict else self.stats.refused).append((member.key, error))
        return {"uid": member.uid, "error": error, "conflict": conflict}

    def delete_removed(self) -> None:
        """Remove from the target the copies of resources deleted on the source (or no longer
        matched), those that others refer to last; one that a resource still on the target
        refers to is kept and reported, as is one the target refuses to delete."""
        for row in self.graph.execute("sync_pending_deletes", transfer=self.loader.transfer):
            if row["referrers"]:
                error = f"kept on the target: {', '.join(row['referrers'])} still refer to it"
                self._keep(row, error)
                continue
            checkpoint("before_sync_delete")
            refusal = self.sender.delete(row["type"], row["target_id"])
            checkpoint("after_sync_delete")
            if refusal is not None:
                self._keep(row, f"kept on the target, which refused to delete it: {refusal}")
                continue
            mark_deleted_on_target(self.graph, [{"uid": row["uid"]}], self.generation)
            self.stats.removed += 1

    def _keep(self, row: Mapping[str, Any], error: str) -> None:
        self.stats.kept.append((row["key"], error[:MAX_REASON]))
        mark_change_conflicts(
            self.graph, [{"uid": row["uid"], "error": error[:MAX_REASON], "conflict": False}]
        )


def same_content(copy: Mapping[str, Any], sent: Mapping[str, Any]) -> bool:
    """Whether the target's copy holds what fhirgraph sent (ids, server metadata and its own
    tags aside)."""
    return content_hash(without_fhirgraph_tags(dict(copy))) == content_hash(
        without_fhirgraph_tags(dict(sent))
    )


def _etag_version(result: Mapping[str, Any]) -> str | None:
    etag = str(result.get("etag") or "")
    return etag.removeprefix("W/").strip('"') or None


def apply_changes(
    graph: Graph,
    target: FhirClient,
    transfer: str,
    key: LinkageKey,
    generation: int,
    *,
    overwrite: bool = False,
    delete: bool = False,
    on_reject: OnReject = "skip",
    drop_dangling: bool = False,
    concurrency: int = 1,
    progress: Progress | None = None,
) -> ChangeStats:
    """Update the target copies of what changed on the source and (with ``delete``) remove
    those of what was deleted there, after the sync's new resources were loaded (:func:`load`)."""
    record = require_transfer(graph, transfer)
    check_key(graph, record, key.fingerprint)
    loader = Loader(
        graph,
        Sender(target, key.fingerprint),
        transfer,
        key,
        record.source,
        on_reject=on_reject,
        progress=progress,
    )
    changes = ChangeSender(loader, generation, overwrite=overwrite, drop_dangling=drop_dangling)
    changes.update_changed(batch=_update_batch(record), concurrency=concurrency)
    if delete:
        changes.delete_removed()
    changes.stats.seconds = time.monotonic() - loader.started
    return changes.stats


def _loader(
    graph: Graph,
    target: FhirClient,
    transfer: str,
    key: LinkageKey,
    *,
    retry_failed: bool,
    match_existing: bool,
    on_reject: OnReject,
    progress: Progress | None,
    concurrency: int = 1,
    probe: TargetProbe | None = None,
) -> tuple[TransferRecord, Sender, Loader, list[dict[str, Any]]]:
    """The transfer's record, its sender and loader, and the bundles still to send (with
    ``match_existing`` the target has been asked which types it holds copies of, unless
    ``probe`` says so already)."""
    record = require_transfer(graph, transfer)
    if not record.plan_done:
        raise TransferStateError(f"transfer {transfer!r} has no plan; plan it first", hint="plan")
    sender, loader = _sender_and_loader(
        graph,
        target,
        record,
        key,
        on_reject=on_reject,
        progress=progress,
        concurrency=concurrency,
        probe=probe,
    )
    pending = graph.execute("load_pending_bundles", transfer=transfer, retry_failed=retry_failed)
    if match_existing and pending:
        held = sender.probe_target(row["type"] for row in graph.execute("load_types", transfer=transfer))
        loader.stats.conditional_types = sorted(held)
    return record, sender, loader, pending


def _sender_and_loader(
    graph: Graph,
    target: FhirClient,
    record: TransferRecord,
    key: LinkageKey,
    *,
    on_reject: OnReject,
    progress: Progress | None,
    concurrency: int,
    probe: TargetProbe | None = None,
) -> tuple[Sender, Loader]:
    """A sender to the target and a loader of the transfer's bundles, once the key is the one
    the transfer was made with."""
    check_key(graph, record, key.fingerprint)
    sender = Sender(target, key.fingerprint, probe=probe)
    loader = Loader(
        graph,
        sender,
        record.name,
        key,
        record.source,
        on_reject=on_reject,
        progress=progress,
        concurrency=concurrency,
    )
    return sender, loader


def _finish(
    graph: Graph, transfer: str, sender: Sender, loader: Loader, *, retry_failed: bool, concurrency: int
) -> LoadStats:
    loader.stats.resent_bundles = sender.resent_bundles
    loader.stats.isolation_sends = sender.isolation_sends
    loader.stats.seconds = time.monotonic() - loader.started
    summary = {row["status"]: int(row["count"]) for row in graph.execute("load_summary", transfer=transfer)}
    loader.stats.failed_earlier = 0 if retry_failed else summary.get("failed", 0) - len(loader.stats.failures)
    pending_updates = graph.single("load_pending_update_count", transfer=transfer)
    done = (
        not loader.stats.failures
        and not summary.get("failed")
        and not summary.get("planned")
        and not summary.get("sending")
        and not (pending_updates and pending_updates["pending"])
    )
    finish_load(graph, transfer, done=done, seconds=loader.stats.seconds, concurrency=concurrency)
    return loader.stats


def load(
    graph: Graph,
    target: FhirClient,
    transfer: str,
    key: LinkageKey,
    *,
    concurrency: int = 1,
    retry_failed: bool = False,
    match_existing: bool = True,
    on_reject: OnReject = "skip",
    progress: Progress | None = None,
    probe: TargetProbe | None = None,
) -> LoadStats:
    """Send every bundle not yet loaded, then the deferred cycle updates.

    A bundle the target refuses for its content is split until what it refuses is
    isolated (``rejected``); the resources that refer to a rejected one are then
    ``blocked`` (``on_reject`` skip) or sent without that reference (drop-reference).
    With ``on_reject`` stop the load stops at the refused bundle, which is ``failed``.
    ``probe``: what the target said of copies made with the key earlier in this run, before
    it sent anything (the load while the crawl went on, :attr:`ReadyLoad.probe`).
    """
    record, sender, loader, pending = _loader(
        graph,
        target,
        transfer,
        key,
        retry_failed=retry_failed,
        match_existing=match_existing,
        on_reject=on_reject,
        progress=progress,
        concurrency=concurrency,
        probe=probe,
    )
    with ThreadPoolExecutor(max_workers=_ahead(concurrency), thread_name_prefix="fhirgraph-load") as pool:
        _send_bundles(loader, pending, pool, _ahead(concurrency))
    if not loader.stats.failures:
        loader.update_deferred(batch=_update_batch(record))
    return _finish(graph, transfer, sender, loader, retry_failed=retry_failed, concurrency=concurrency)


def _ahead(concurrency: int) -> int:
    """Bundles under way at one time: while ``concurrency`` of them are sent, as many more read
    their members or write back what the target created."""
    return 2 * concurrency


class BundleQueue:
    """Bundles to send, each once the bundles it refers to are done (the plan's levels without
    waiting for a whole level), at most ``ahead`` under way in ``pool`` (their POSTs limited by
    the loader's slots). Bundles may be added while others are under way (overlap)."""

    def __init__(self, loader: Loader, pool: ThreadPoolExecutor, ahead: int) -> None:
        self.loader, self.pool, self.ahead = loader, pool, ahead
        #: bundle number -> its status when added (planned, or sending: outcome unknown)
        self.waiting: dict[int, str] = {}
        self.running: dict[Future[None], int] = {}
        #: bundle number -> the bundles it refers to
        self._after: dict[int, set[int]] = {}
        #: every bundle number ever queued
        self.seen: set[int] = set()

    def add(self, pending: Sequence[Mapping[str, Any]]) -> int:
        """Queue the bundles of ``pending`` not queued before; how many were new."""
        new = {b["number"]: b["status"] for b in pending if b["number"] not in self.seen}
        if new:
            rows = self.loader.graph.execute(
                "load_bundle_dependencies", transfer=self.loader.transfer, numbers=sorted(new)
            )
            self._after.update({row["number"]: set(row["after"]) for row in rows})
            self.waiting.update(new)
            self.seen.update(new)
        return len(new)

    def start(self, stop: threading.Event | None = None) -> None:
        """Start the bundles that may go, in number order, unless one failed (what refers to it
        must wait) or ``stop`` is set."""
        if self.loader.stats.failures or (stop is not None and stop.is_set()):
            return
        # the bundles not done yet; the same throughout, as a bundle started only moves from
        # waiting to running
        open_ = self.waiting.keys() | set(self.running.values())
        for number in sorted(self.waiting):
            if len(self.running) >= self.ahead:
                return
            if not self._after.get(number, set()).isdisjoint(open_):
                continue
            self._submit(number)
        if not self.running and self.waiting:
            # nothing may go although nothing is under way: a plan whose references do not
            # follow its numbers; send in number order, as the levels would
            self._submit(min(self.waiting))

    def wait(self, timeout: float | None = None) -> None:
        """Wait until a bundle under way is done (at most ``timeout``); raise what it raised."""
        if not self.running:
            return
        finished, _ = wait(self.running, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in finished:
            self.running.pop(future)
            future.result()

    def drain(self) -> None:
        """Wait for the bundles under way, starting no more."""
        while self.running:
            self.wait()

    def _submit(self, number: int) -> None:
        status = self.waiting.pop(number)
        self.running[self.pool.submit(self.loader.send_bundle, number, status)] = number


def _send_bundles(
    loader: Loader, pending: list[dict[str, Any]], pool: ThreadPoolExecutor, ahead: int
) -> None:
    """Send ``pending`` bundles through a :class:`BundleQueue` until none is left or one failed."""
    queue = BundleQueue(loader, pool, ahead)
    queue.add(pending)
    while True:
        queue.start()
        if not queue.running:
            return
        queue.wait()


class ReadyLoad:
    """The load while the crawl goes on (overlap): :meth:`add_placed` queues the bundles placed
    so far (``plan.place_ready``), :meth:`send` sends them while more are placed. The transfer
    has no plan yet and its load does not finish here: the plan after the crawl and its load do
    the rest, deferred updates too."""

    def __init__(
        self,
        graph: Graph,
        target: FhirClient,
        transfer: str,
        key: LinkageKey,
        *,
        concurrency: int = 1,
        match_existing: bool = True,
        on_reject: OnReject = "skip",
        progress: Progress | None = None,
    ) -> None:
        self.graph, self.transfer = graph, transfer
        self.concurrency, self.match_existing = concurrency, match_existing
        self.sender, self.loader = _sender_and_loader(
            graph,
            target,
            require_transfer(graph, transfer),
            key,
            on_reject=on_reject,
            progress=progress,
            concurrency=concurrency,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=_ahead(concurrency), thread_name_prefix="fhirgraph-overlap"
        )
        self.queue = BundleQueue(self.loader, self._pool, _ahead(concurrency))

    @property
    def stats(self) -> LoadStats:
        stats = self.loader.stats
        stats.resent_bundles = self.sender.resent_bundles
        stats.isolation_sends = self.sender.isolation_sends
        stats.conditional_types = sorted(self.sender.held_types)
        stats.seconds = time.monotonic() - self.loader.started
        return stats

    @property
    def probe(self) -> TargetProbe:
        """What the target said of copies made with the key before this run sent anything: the
        load after the crawl must not ask again (it would find the copies sent here)."""
        return self.sender.probe

    def add_placed(self) -> int:
        """Queue the bundles placed since the last call (asking the target first about copies of
        types not asked about yet); how many there were."""
        pending = self.graph.execute("load_pending_bundles", transfer=self.transfer, retry_failed=False)
        if self.match_existing and any(b["number"] not in self.queue.seen for b in pending):
            self.sender.probe_target(
                row["type"] for row in self.graph.execute("load_types", transfer=self.transfer)
            )
        return self.queue.add(pending)

    def send(self, stop: threading.Event, seconds: float) -> None:
        """Start the queued bundles that may go (none once one failed or ``stop`` is set), then
        wait up to ``seconds`` for one under way to be done."""
        self.queue.start(stop)
        if self.queue.running:
            self.queue.wait(seconds)
        else:
            stop.wait(seconds)

    def drain(self) -> None:
        """Wait for the bundles under way; those queued and not started wait for the load after
        the crawl."""
        self.queue.drain()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


def _update_batch(record: TransferRecord) -> int:
    return max(1, int(record.parameters.get("bundle_size", 250)))


#: how long a worker with nothing to claim waits before it looks again
IDLE_PAUSE = 0.5


def work(
    graph: Graph,
    target: FhirClient,
    transfer: str,
    key: LinkageKey,
    worker: str,
    *,
    lease_seconds: float,
    retry_failed: bool = False,
    match_existing: bool = True,
    on_reject: OnReject = "skip",
    progress: Progress | None = None,
) -> LoadStats:
    """Load as one of several workers, on this machine or others, that share a planned transfer.

    ``worker`` has joined the transfer (``staging.join_as_worker``). It claims a ready bundle in the graph (every bundle it depends on is on a
    lower level, and loaded) with a lease of ``lease_seconds``, which a heartbeat keeps
    alive, sends it as :func:`load` would, and claims the next, until no bundle is ready
    and none is in flight. A bundle whose worker died (its lease expired) is claimed by
    another worker and handled like one left ``sending`` by a crash: its copies are
    looked for first, then it is resent as conditional creates, so every resource stays
    on the target exactly once. One worker at a time then restores deferred cycle
    references.
    """
    record, sender, loader, _ = _loader(
        graph,
        target,
        transfer,
        key,
        retry_failed=retry_failed,
        match_existing=match_existing,
        on_reject=on_reject,
        progress=progress,
    )
    with _Heartbeat(graph, transfer, worker, lease_seconds, loader):
        while True:
            claim = claim_bundle(
                graph, transfer, worker, lease_seconds=lease_seconds, retry_failed=retry_failed
            )
            if claim is not None:
                number, status = claim
                checkpoint("worker_claimed")
                loader.send_bundle(number, status)
                _record_worker(graph, worker, loader, "working")
                continue
            planned, sending = bundles_open(graph, transfer)
            if planned:
                continue  # the level the claim found all taken is done since: claim from the next
            if sending:
                time.sleep(IDLE_PAUSE)  # another worker is sending a bundle this one waits for
                continue
            break
        if not loader.stats.failures and _claim_updates(graph, transfer, worker, lease_seconds):
            try:
                loader.update_deferred(batch=_update_batch(record))
            finally:
                graph.execute("load_release_updates", transfer=transfer, worker=worker)
        stats = _finish(graph, transfer, sender, loader, retry_failed=retry_failed, concurrency=1)
        _record_worker(graph, worker, loader, "done")
    return stats


def _claim_updates(graph: Graph, transfer: str, worker: str, lease_seconds: float) -> bool:
    row = graph.single("load_claim_updates", transfer=transfer, worker=worker, lease_seconds=lease_seconds)
    return bool(row and row["free"])


def _record_worker(graph: Graph, worker: str, loader: Loader, state: str) -> None:
    stats = loader.stats
    graph.execute(
        "worker_record",
        worker=worker,
        bundles=stats.bundles,
        loaded=stats.loaded,
        created=stats.created,
        seconds=time.monotonic() - loader.started,
        state=state,
    )


class _Heartbeat:
    """Renews a worker's leases (and its own record) every third of the lease, on a thread."""

    def __init__(self, graph: Graph, transfer: str, worker: str, lease_seconds: float, loader: Loader):
        self.graph, self.transfer, self.worker = graph, transfer, worker
        self.lease_seconds = lease_seconds
        self.loader = loader
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="fhirgraph-lease", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            # a failed beat is not fatal: the main thread meets the same Neo4j problem and reports it
            with contextlib.suppress(FhirgraphError):
                self.graph.execute(
                    "load_renew_leases",
                    transfer=self.transfer,
                    worker=self.worker,
                    lease_seconds=self.lease_seconds,
                )

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
