"""Vocabulary of the staging graph shared by every stage: statuses, keys, the transfer record,
and the one place where transfer and bundle states change.

Transfer state (:data:`TransferState`), each arrow one function of this module::

    created --finish_crawl--> crawled --start_plan--> planning --finish_plan--> planned
       ^                                                 |                        |
       +------------------- reopen_crawl ----------------+-- abandon_plan         finish_load
                                                                                  v
                                                                                loaded

While a crawl waits for a Bulk Data export, the job's status URL is kept on the transfer
(``record_export_job`` .. ``forget_export_job``) so that a killed crawl polls the same job again.

``reopen_crawl`` (new seeds for a crawled transfer) and ``abandon_plan`` (the
plan stopped at dangling references) go back; ``finish_load`` records a load
that left bundles failed as still ``planned``. ``record_verify`` keeps the last
verify's outcome beside the state.

Resource status transitions (each is set by exactly one stage's Cypher):

    placeholder --crawl--> crawled --plan--> planned --load--> loaded
         |                    |                  |--load--> failed    (the bundle, under on_reject stop)
         +--crawl--> dangling +--plan--> skipped |--load--> rejected  (the target refused it)
                                                 \\--load--> blocked   (it refers to a rejected one)
    loaded --sync--> deleted   (deleted on the source, removed from the target by a sync with delete)

A sync (:func:`start_generation` .. :func:`finish_generation`) is one generation of the
transfer: it reopens the crawl, stages what changed on the source (a loaded resource keeps its
status and gets ``sync_pending`` update or delete), and runs plan and load again for what is
new, then sends the updates and deletions.

Bundle status (:data:`BundleStatus`): planned -> sending (``mark_bundle_sending``,
the intent recorded before the POST) -> loaded (``mark_bundle_loaded``) | failed
(``mark_bundle_failed``). A bundle found in ``sending`` on resume may or may not
have been committed by the target, so it is re-sent with conditional creates on
the linkage tag.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from fhirgraph.errors import FhirgraphError, TransferLockedError, TransferStateError
from fhirgraph.graph import SCHEMA_VERSION, Graph

ResourceStatus = Literal[
    "placeholder",
    "crawled",
    "dangling",
    "planned",
    "loaded",
    "failed",
    "skipped",
    "rejected",
    "blocked",
    "deleted",
]
RESOURCE_STATUSES: tuple[ResourceStatus, ...] = get_args(ResourceStatus)

TransferState = Literal["created", "crawled", "planning", "planned", "loaded"]
BundleStatus = Literal["planned", "sending", "loaded", "failed"]
BUNDLE_STATUSES: tuple[BundleStatus, ...] = ("planned", "sending", "loaded", "failed")

_NAMESPACE = uuid.UUID("6f1c1d1e-4b0f-4a44-9a61-3f3c1b7c2f10")


def resource_uid(transfer: str, resource_key: str) -> str:
    return f"{transfer}|{resource_key}"


def bundle_uid(transfer: str, number: int) -> str:
    return f"{transfer}|bundle|{number}"


def entry_full_url(uid: str) -> str:
    """A stable ``urn:uuid:`` for a staged resource inside a transaction bundle."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, uid)}"


@dataclass
class TransferRecord:
    """The ``(:Transfer)`` node: what a transfer is and how far it got."""

    name: str
    source: str
    target: str
    key_fingerprint: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    crawl_done: bool = False
    plan_done: bool = False
    load_done: bool = False
    #: a plan has written levels, bundles or flags (a new plan must clear them first)
    plan_started: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    #: the seeds of its crawls (``seeds.seed_to_json``), which sync runs again
    seeds: list[str] = field(default_factory=list)
    #: the source's clock from which the next sync looks for changes
    synced_from: str | None = None
    #: an export job under way: the seed (``seeds.seed_to_json``) and the job's status URL
    export_job: tuple[str, str] | None = None

    @classmethod
    def from_node(cls, node: dict[str, Any]) -> TransferRecord:
        timings = {k[len("seconds_") :]: float(v) for k, v in node.items() if k.startswith("seconds_")}
        parameters = {k[len("param_") :]: v for k, v in node.items() if k.startswith("param_")}
        return cls(
            name=node["name"],
            source=node.get("source", ""),
            target=node.get("target", ""),
            key_fingerprint=node.get("key_fingerprint"),
            parameters=parameters,
            crawl_done=bool(node.get("crawl_done")),
            plan_done=bool(node.get("plan_done")),
            load_done=bool(node.get("load_done")),
            plan_started=bool(node.get("plan_started")),
            timings=timings,
            seeds=list(node.get("seeds") or []),
            synced_from=node.get("synced_from"),
            export_job=(
                (node["export_seed"], node["export_status_url"]) if node.get("export_status_url") else None
            ),
        )

    @property
    def state(self) -> TransferState:
        if self.load_done:
            return "loaded"
        if self.plan_done:
            return "planned"
        if self.plan_started and self.crawl_done:
            return "planning"
        return "crawled" if self.crawl_done else "created"


def get_transfer(graph: Graph, name: str) -> TransferRecord | None:
    row = graph.single("transfer_get", name=name)
    return TransferRecord.from_node(row["transfer"]) if row else None


def require_transfer(graph: Graph, name: str) -> TransferRecord:
    record = get_transfer(graph, name)
    if record is None:
        raise TransferStateError(f"no transfer named {name!r} in Neo4j; crawl it first")
    return record


def open_transfer(
    graph: Graph, name: str, *, source: str, target: str, key_fingerprint: str | None
) -> TransferRecord:
    """Create the transfer, or return the existing one if it is the same transfer."""
    props: dict[str, Any] = {"source": source, "target": target}
    if key_fingerprint is not None:
        props["key_fingerprint"] = key_fingerprint
    row = graph.single("transfer_create", name=name, props=props, schema_version=SCHEMA_VERSION)
    assert row is not None
    record = TransferRecord.from_node(row["transfer"])
    if record.source != source or (target and record.target and record.target != target):
        raise TransferStateError(
            f"transfer {name!r} already exists for {record.source} -> {record.target}; "
            "choose another transfer name or reset it"
        )
    if not record.target and target:
        graph.execute("transfer_set_target", name=name, target=target)
        record.target = target
    if key_fingerprint is not None:
        check_key(graph, record, key_fingerprint)
    return record


def check_key(graph: Graph, record: TransferRecord, key_fingerprint: str) -> None:
    """Refuse to continue a transfer with another linkage key than it started with."""
    if record.key_fingerprint is None:
        graph.execute("transfer_set_key", name=record.name, key_fingerprint=key_fingerprint)
        record.key_fingerprint = key_fingerprint
    elif record.key_fingerprint != key_fingerprint:
        raise TransferStateError(
            f"transfer {record.name!r} was started with a different linkage key; resume it with the "
            "same key (its hashes would not match) or reset it"
        )


# -- transfer state transitions (see the module docstring) -------------------


def finish_crawl(graph: Graph, name: str, *, seconds: float, get_missing: bool) -> None:
    """created -> crawled: every seed and (with ``get_missing``) what it references is staged."""
    graph.execute("transfer_finish_crawl", name=name, seconds=seconds, get_missing=get_missing)


def reopen_crawl(graph: Graph, name: str) -> None:
    """crawled (or later) -> created: more is about to be crawled into the transfer, which
    must then be planned again (resources already planned or loaded keep their place)."""
    graph.execute("transfer_reopen_crawl", name=name)


def start_plan(graph: Graph, name: str) -> None:
    """crawled -> planning: from here on a plan may have written levels, bundles and flags."""
    graph.execute("transfer_start_plan", name=name)


def abandon_plan(graph: Graph, name: str) -> None:
    """planning -> planning, not planned: the plan stopped (dangling references)."""
    graph.execute("transfer_abandon_plan", name=name)


def finish_plan(graph: Graph, name: str, *, seconds: float, bundle_size: int, on_dangling: str) -> None:
    """planning -> planned: bundles are written; the load has work again."""
    graph.execute(
        "transfer_finish_plan", name=name, seconds=seconds, bundle_size=bundle_size, on_dangling=on_dangling
    )


def finish_load(graph: Graph, name: str, *, done: bool, seconds: float, concurrency: int) -> None:
    """planned -> loaded when ``done`` (every bundle loaded); otherwise stays planned."""
    graph.execute("transfer_finish_load", name=name, done=done, seconds=seconds, concurrency=concurrency)


def record_export_job(graph: Graph, name: str, *, seed: str, status_url: str) -> None:
    """An export job was started for ``seed``: until :func:`forget_export_job`, a crawl of the
    same seed polls this job again (a killed crawl resumes it) instead of starting another."""
    graph.execute("transfer_record_export_job", name=name, seed=seed, status_url=status_url)


def forget_export_job(graph: Graph, name: str, *, status_url: str) -> None:
    """The export job's files are staged, or it failed, was cancelled or is gone."""
    graph.execute("transfer_forget_export_job", name=name, status_url=status_url)


def record_verify(graph: Graph, name: str, *, ok: bool, problems: int, seconds: float) -> None:
    """Keep the outcome of the last verify on the transfer (its state does not change)."""
    graph.execute("transfer_record_verify", name=name, ok=ok, problems=problems, seconds=seconds)


# -- generations (sync) -----------------------------------------------------------

GenerationState = Literal["running", "done"]


@dataclass(frozen=True)
class Generation:
    """One run of a transfer: the first transfer (number 1) or a sync."""

    number: int
    state: GenerationState
    #: the source's clock from which this sync looks for changes (None: since ever)
    since: str | None
    #: the source's clock when this sync began: where the next one will look from
    instant: str | None
    counts: dict[str, int]

    @classmethod
    def from_node(cls, node: dict[str, Any]) -> Generation:
        names = ("created", "updated", "unchanged", "deleted", "removed", "conflicts", "refused")
        return cls(
            number=int(node["number"]),
            state=node["state"],
            since=node.get("since"),
            instant=node.get("instant"),
            counts={name: int(node[name]) for name in names if node.get(name) is not None},
        )


def record_seeds(graph: Graph, name: str, seeds: list[str], instant: str | None) -> None:
    """Keep the seeds of a crawl (JSON, ``seeds.seed_to_json``) for sync to run again, and the
    source's clock at the transfer's first crawl (``instant``) unless it has one."""
    graph.execute("transfer_record_seeds", name=name, seeds=seeds, instant=instant)


def generations(graph: Graph, name: str) -> list[Generation]:
    """The transfer's generations, newest first."""
    return [Generation.from_node(row["generation"]) for row in graph.execute("sync_generations", name=name)]


def start_generation(graph: Graph, name: str, *, instant: str, delete: bool, overwrite: bool) -> Generation:
    """A new running generation (a sync), after recording the first transfer as generation 1
    if it has none; a crawl of what changed follows (:func:`reopen_crawl`)."""
    row = graph.single(
        "sync_start_generation", name=name, instant=instant, delete=delete, overwrite=overwrite
    )
    if row is None:
        raise TransferStateError(f"no transfer named {name!r}")
    reopen_crawl(graph, name)
    return Generation.from_node(row["generation"])


def finish_generation(graph: Graph, name: str, number: int) -> Generation:
    """running -> done, with the counts of what it changed; the next sync looks for changes from
    this one's instant."""
    counts = graph.single("sync_generation_counts", transfer=name, generation=number) or {}
    row = graph.single(
        "sync_finish_generation", name=name, number=number, counts={k: int(v or 0) for k, v in counts.items()}
    )
    assert row is not None
    return Generation.from_node(row["generation"])


def mark_changes_updated(graph: Graph, rows: list[dict[str, Any]], generation: int) -> None:
    """The target copies of these resources now hold their new content (``rows``: uid, target_version)."""
    graph.execute("sync_mark_updated", rows=rows, generation=generation)


def mark_change_conflicts(graph: Graph, rows: list[dict[str, Any]]) -> None:
    """These updates were not made (``rows``: uid, error, conflict): a copy changed on the
    target, or the target refused the update. They stay pending for the next sync."""
    graph.execute("sync_mark_conflicts", rows=rows)


def mark_deleted_on_target(graph: Graph, rows: list[dict[str, Any]], generation: int) -> None:
    """loaded -> deleted: their copies were removed from the target (``rows``: uid)."""
    graph.execute("sync_mark_deleted", rows=rows, generation=generation)


# -- bundle state transitions ---------------------------------------------------


def mark_bundle_sending(graph: Graph, uid: str) -> float | None:
    """planned | sending | failed -> sending: the intent, recorded before the POST. Returns
    how many seconds ago the previous send of the bundle began, by Neo4j's clock (the same
    for every machine), or None if no send of it was recorded."""
    rows = graph.execute("load_mark_sending", uid=uid)
    ago = rows[0]["previous_seconds_ago"] if rows else None
    return None if ago is None else float(ago)


def mark_bundle_loaded(graph: Graph, uid: str, rows: list[dict[str, Any]], seconds: float) -> None:
    """sending -> loaded, in one transaction with the target ids of its resources (``rows``)."""
    graph.execute("load_write_back", uid=uid, rows=rows, seconds=seconds)


def mark_resources_loaded(graph: Graph, rows: list[dict[str, Any]]) -> None:
    """planned -> loaded for a part of a bundle the target accepted while its refused
    resources were being isolated; the bundle stays ``sending`` until all are known."""
    graph.execute("load_mark_resources_loaded", rows=rows)


def mark_resources_rejected(graph: Graph, rows: list[dict[str, Any]]) -> None:
    """planned -> rejected: the target refused each of these (``rows``: uid, error)."""
    graph.execute("load_mark_resources_rejected", rows=rows)


def mark_resources_blocked(graph: Graph, rows: list[dict[str, Any]]) -> None:
    """planned -> blocked: each refers to a rejected or blocked resource (``rows``: uid, error)."""
    graph.execute("load_mark_resources_blocked", rows=rows)


def reopen_refused(graph: Graph, name: str) -> int:
    """rejected | blocked -> placeholder: to be read from the source again, planned and sent
    (retrying after the data was fixed), and, if there were any, the transfer back to created
    (as :func:`reopen_crawl`) in the same transaction; how many there were."""
    row = graph.single("load_reopen_refused", transfer=name)
    return int(row["reopened"]) if row else 0


def claim_bundle(
    graph: Graph, transfer: str, worker: str, *, lease_seconds: float, retry_failed: bool
) -> tuple[int, BundleStatus] | None:
    """planned | sending with an expired lease (| failed, retrying) -> sending, leased to
    ``worker``: a ready bundle (its level is the lowest not loaded) and the status it had,
    or None when none is ready."""
    row = graph.single(
        "load_claim_bundle",
        transfer=transfer,
        worker=worker,
        lease_seconds=lease_seconds,
        retry_failed=retry_failed,
    )
    return (int(row["number"]), row["status"]) if row else None


def join_as_worker(graph: Graph, name: str, worker: str, *, stale_after: float = 60.0) -> None:
    """Record ``worker`` as one of the transfer's load workers, unless a process holds the
    transfer's lock (a crawl, a plan, or a load without workers): then refuse, naming it."""
    host, pid, _ = worker.split(":", 2)
    joined = graph.single(
        "worker_join",
        transfer=name,
        worker=worker,
        host=host,
        pid=int(pid),
        dead_owners=_dead_lock_holders(graph, name),
        stale_seconds=int(stale_after),
    )
    if joined is None:
        raise TransferStateError(f"no transfer named {name!r}")
    if joined["locked"]:
        raise _locked(name, joined["owner"], joined["seconds_since"], "a worker joins once it has finished")


def bundles_open(graph: Graph, transfer: str) -> tuple[int, int]:
    """Bundles of the lowest level not loaded: how many are planned, and how many are being
    sent (whatever their lease); the work a worker that found nothing to claim waits for."""
    row = graph.single("load_open_bundles", transfer=transfer)
    return (int(row["planned"]), int(row["sending"])) if row else (0, 0)


def mark_bundle_failed(graph: Graph, uid: str, error: str, errors: dict[str, str] | None = None) -> None:
    """sending -> failed: the target refused it; ``errors`` by resource uid, else ``error`` for all."""
    graph.execute("load_mark_failed", uid=uid, error=error, errors=errors or {})


def reset_transfer(graph: Graph, name: str) -> int:
    """Delete everything staged for a transfer; return how many resources were deleted.

    Edges first, then nodes, each committed in batches, so that a million-resource
    transfer stays under Neo4j's transaction memory limit. An interrupted reset
    leaves a part of the transfer, which the next reset deletes.
    """
    graph.execute_batched("transfer_delete_references", name=name)
    rows = graph.execute_batched("transfer_delete_resources", name=name)
    graph.execute("transfer_delete_rest", name=name)
    return int(rows[0]["deleted"]) if rows else 0


class TransferLock:
    """One process at a time per transfer: the lock lives on the ``(:Transfer)`` node.

    The holder renews a heartbeat; a lock whose heartbeat is older than
    ``stale_after`` seconds, or whose process on this host is gone (a killed
    run), is taken over, so a crash never blocks the next run for long.
    """

    def __init__(self, graph: Graph, name: str, *, stale_after: float = 60.0, heartbeat: float = 10.0):
        self.graph = graph
        self.name = name
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TransferLock:
        row = self.graph.single(
            "transfer_lock_acquire",
            name=self.name,
            owner=self.owner,
            dead_owners=_dead_lock_holders(self.graph, self.name),
            stale_seconds=int(self.stale_after),
        )
        if row is None:
            raise TransferStateError(f"no transfer named {self.name!r}")
        if not row["free"]:
            raise _locked(
                self.name,
                row["owner"],
                row["seconds_since"],
                f"wait for it to finish, or if it died on another host, run again after "
                f"{int(self.stale_after)} s",
            )
        self._thread = threading.Thread(target=self._beat, name="fhirgraph-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            # a failed beat is not fatal: the main thread meets the same Neo4j problem and reports it
            with contextlib.suppress(FhirgraphError):
                self.graph.execute("transfer_lock_heartbeat", name=self.name, owner=self.owner)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # never hide the error that ended the work; a lock left behind goes stale by itself
        with contextlib.suppress(FhirgraphError):
            self.graph.execute("transfer_lock_release", name=self.name, owner=self.owner)


def _dead_lock_holders(graph: Graph, name: str) -> list[str]:
    """The holder of the transfer's lock if it is a process of this host that is gone (a killed run)."""
    row = graph.single("transfer_get", name=name)
    holder = (row or {}).get("transfer", {}).get("lock_owner")
    return [holder] if holder and _process_is_gone(holder) else []


def _locked(name: str, owner: object, seconds_since: object, advice: str) -> TransferLockedError:
    host, pid, _ = str(owner).split(":", 2)
    return TransferLockedError(
        f"transfer {name!r} is being worked on by process {pid} on {host} (alive {seconds_since} s ago); {advice}"
    )


def _process_is_gone(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
