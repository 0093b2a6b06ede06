"""One function per command: each owns its session, the transfer's lock and its state changes.

The command line and the Python API both call these and nothing else:
``crawl``, ``plan``, ``load``, ``transfer`` (crawl + plan + load, resuming
whatever is unfinished), ``verify``, ``reset``, ``status``, ``report`` and
``export_linkage``. Each takes :class:`~fhirgraph.config.Settings` (see
``config.build_settings``) and returns a result with a ``summary()``
(``fhirgraph.results``). The stages (crawl, plan, load, verify) meet only in the
graph; only this module runs them one after another.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from fhirgraph import crawl as crawl_stage
from fhirgraph import load as load_stage
from fhirgraph import plan as plan_stage
from fhirgraph import verify as verify_stage
from fhirgraph.config import Settings
from fhirgraph.errors import ConfigError, FhirgraphError, TransferLockedError, TransferStateError
from fhirgraph.graph import Graph
from fhirgraph.linkage import write_export
from fhirgraph.overlap import Overlap
from fhirgraph.progress import ProgressDisplay
from fhirgraph.report import TransferOverview, transfer_overview, write_html_report
from fhirgraph.results import (
    Counts,
    CrawlResult,
    ExportResult,
    LoadResult,
    PlanResult,
    Refusal,
    ReportResult,
    ResetResult,
    SyncResult,
    TransferResponse,
    VerifyResult,
)
from fhirgraph.seeds import Seeds, check_seeds, seed_from_json, seed_to_json
from fhirgraph.sender import TargetProbe
from fhirgraph.session import Session, Transports
from fhirgraph.staging import (
    TransferLock,
    TransferRecord,
    finish_generation,
    generations,
    get_transfer,
    join_as_worker,
    open_transfer,
    record_seeds,
    reopen_crawl,
    reopen_refused,
    reset_transfer,
    start_generation,
)


def crawl(
    settings: Settings,
    seeds: Sequence[Seeds],
    *,
    progress: ProgressDisplay | None = None,
    transports: Transports | None = None,
) -> CrawlResult:
    """Stage the seeds and (with ``settings.get_missing``) what they reference, transitively.

    Seeds given to a transfer that was crawled before are crawled into it again.
    """
    if not seeds:
        raise _nothing_to_crawl()
    with Session(settings, need_source=True, transports=transports) as session:
        record, is_new = _open(session, seeds)
        with TransferLock(session.graph, settings.transfer):
            if record.crawl_done:
                reopen_crawl(session.graph, settings.transfer)
            stats = _crawl(session, seeds, is_new, progress)
        return CrawlResult(settings.transfer, stats, status_counts(session.graph, settings.transfer))


def plan(settings: Settings, *, progress: ProgressDisplay | None = None) -> PlanResult:
    """Report dangling references, order the creation and pack the bundles of a crawled transfer."""
    with Session(settings) as session:
        _require(session.graph, settings.transfer)
        with TransferLock(session.graph, settings.transfer):
            return PlanResult(settings.transfer, _plan(session, progress))


def load(
    settings: Settings,
    *,
    retry_failed: bool = False,
    worker: bool = False,
    progress: ProgressDisplay | None = None,
    transports: Transports | None = None,
) -> LoadResult:
    """Send the planned bundles not yet loaded and record the target ids.

    With ``retry_failed`` (after fixing the cause on the source or the target), the
    bundles that failed are sent again, and the resources the target rejected and
    those blocked by them are read from the source again, planned and sent. Nothing
    already on the target is sent again.

    With ``worker``, this process is one of any number of load workers, on this
    machine or others, sharing the transfer (see :func:`fhirgraph.load.work`): it
    does not take the transfer's lock, only leases on the bundles it sends.
    """
    with Session(
        settings,
        need_source=retry_failed and not worker,
        need_target=True,
        need_key=True,
        transports=transports,
    ) as session:
        graph, name = session.graph, settings.transfer
        record = _require(graph, name)
        if not record.target:  # crawled without a target: it is this one from now on
            assert session.target is not None
            open_transfer(
                graph, name, source=record.source, target=session.target.base_url, key_fingerprint=None
            )
        if worker:
            stats = _work(session, progress, retry_failed=retry_failed)
        else:
            with TransferLock(graph, name):
                _refuse_if_workers(graph, name, settings.lease_seconds)
                if retry_failed:
                    _reopen_refused(session, progress)
                stats = _load(session, progress, retry_failed=retry_failed)
        return LoadResult(name, stats, refused(graph, name))


def transfer(
    settings: Settings,
    seeds: Sequence[Seeds] | None,
    *,
    progress: ProgressDisplay | None = None,
    record_linkage: bool = True,
    transports: Transports | None = None,
) -> TransferResponse:
    """Crawl, plan and load, skipping the stages a run of the same transfer finished (resume).

    ``seeds`` may be left out when resuming a transfer that finished its crawl.
    """
    started = time.monotonic()
    with Session(
        settings, need_source=True, need_target=True, need_key=True, transports=transports
    ) as session:
        graph, name = session.graph, settings.transfer
        record, is_new = _open(session, seeds)
        if not record.crawl_done and not seeds:
            raise _nothing_to_crawl()
        response = TransferResponse(transfer=name, source=record.source, target=record.target)
        early: load_stage.LoadStats | None = None
        probe: TargetProbe | None = None
        with TransferLock(graph, name):
            if not record.crawl_done:
                assert seeds
                if _overlaps(settings):
                    early, probe = _crawl_and_load(session, seeds, is_new, progress, response)
                else:
                    response.timings["crawl"] = _crawl(session, seeds, is_new, progress).seconds
            if not _require(graph, name).plan_done:
                plan_stats = _plan(session, progress)
                response.timings["plan"] = plan_stats.seconds
                response.dropped_references = plan_stats.dropped_references
                response.skipped = plan_stats.skipped
            load_done = _require(graph, name).load_done
            if early is not None:
                _add_load(response, early)
            if not load_done and not settings.workers and not (early and early.failures):
                _refuse_if_workers(graph, name, settings.lease_seconds)
                stats = _load(session, progress, retry_failed=False, probe=probe)
                response.timings["load"] = stats.seconds
                _add_load(response, stats)
        if not load_done and settings.workers:
            response.timings["load"] = _run_workers(session, progress)
            _worker_totals(graph, name, response)
        response.timings["total"] = time.monotonic() - started
        response.retries = sum(c.retries for c in (session.source, session.target) if c is not None)
        response.counts = status_counts(graph, name)
        response.refused = refused(graph, name)
        if record_linkage:
            response.linkage = dict(linkage_rows(graph, name))
        return response


def _overlaps(settings: Settings) -> bool:
    """Whether ``transfer`` loads while it crawls: only where no dangling reference can stop it
    (so never under the default ``fail``), and not with load workers."""
    return settings.overlap and settings.on_dangling != "fail" and not settings.workers


def _crawl_and_load(
    session: Session,
    seeds: Sequence[Seeds],
    is_new: bool,
    progress: ProgressDisplay | None,
    response: TransferResponse,
) -> tuple[load_stage.LoadStats, TargetProbe]:
    """Crawl while the resources whose references are all staged are planned and sent; what
    was loaded, and what the target said of copies made with the key before that."""
    assert session.target is not None and session.key is not None
    settings = session.settings
    load = load_stage.ReadyLoad(
        session.graph,
        session.target,
        settings.transfer,
        session.key,
        concurrency=settings.concurrency,
        match_existing=settings.match_existing,
        on_reject=settings.on_reject,
        progress=progress,
    )
    with Overlap(session.graph, settings.transfer, load, bundle_size=settings.bundle_size) as overlap:
        response.timings["crawl"] = _crawl(session, seeds, is_new, progress, early_missing=True).seconds
        early = overlap.finish()
    response.loaded_while_crawling = early.loaded
    return early, load.probe


def _add_load(response: TransferResponse, stats: load_stage.LoadStats) -> None:
    response.failures = [*response.failures, *stats.failures]
    response.created += stats.created
    response.matched_existing += stats.matched_existing
    response.bundles += stats.bundles
    response.conditional_types = sorted({*response.conditional_types, *stats.conditional_types})
    response.resent_bundles += stats.resent_bundles
    response.isolation_sends += stats.isolation_sends


def sync(
    settings: Settings,
    seeds: Sequence[Seeds] | None = None,
    *,
    delete: bool = False,
    overwrite: bool = False,
    progress: ProgressDisplay | None = None,
    transports: Transports | None = None,
) -> SyncResult:
    """Bring a loaded transfer's copy up to date with the source: one new generation.

    What changed on the source since the last run is found in the source's history
    (``_history?_since``) and by running the transfer's search seeds again restricted to it
    (``_lastUpdated``); ``seeds``, if given, are added to the transfer's. New resources, and whatever they newly refer to, are created as in a first
    transfer; the target copies of changed ones are updated in place (a PUT to the recorded
    target id, ``If-Match`` on the version fhirgraph wrote; ``overwrite`` replaces copies
    changed on the target too); unchanged ones are not sent. Resources deleted on the source,
    or no longer matched by the seeds, are reported, and with ``delete`` removed from the target
    unless something still refers to them. An interrupted sync is resumed by running it again:
    each change is applied once.
    """
    started = time.monotonic()
    with Session(
        settings, need_source=True, need_target=True, need_key=True, transports=transports
    ) as session:
        graph, name = session.graph, settings.transfer
        assert session.source is not None and session.target is not None and session.key is not None
        _require(graph, name)
        record, _ = _open(session, seeds or None)
        with TransferLock(graph, name):
            _refuse_if_workers(graph, name, settings.lease_seconds)
            running = next((g for g in generations(graph, name) if g.state == "running"), None)
            if running is None and not record.load_done:
                raise TransferStateError(
                    f"transfer {name!r} has not finished loading; finish it first, then sync", hint="transfer"
                )
            if seeds:
                # no clock: a transfer without one (an older fhirgraph's) is compared whole
                record_seeds(graph, name, [seed_to_json(seed) for seed in seeds], None)
            all_seeds = [seed_from_json(text) for text in _require(graph, name).seeds]
            if not all_seeds:
                raise ConfigError(
                    f"transfer {name!r} does not know its seeds (it was crawled by an older fhirgraph); "
                    "give them to sync",
                    hint="seeds",
                )
            if running is None:
                running = start_generation(
                    graph,
                    name,
                    instant=crawl_stage.source_instant(session.source),
                    delete=delete,
                    overwrite=overwrite,
                )
            found = crawl_stage.ChangeStats()
            if not _require(graph, name).crawl_done:
                _, found = crawl_stage.crawl_changes(
                    graph,
                    session.source,
                    name,
                    all_seeds,
                    since=running.since,
                    generation=running.number,
                    get_missing=settings.get_missing,
                    progress=progress,
                    read_concurrency=settings.read_concurrency,
                )
            if not _require(graph, name).plan_done:
                _plan(session, progress)
            stats = (
                _load(session, progress, retry_failed=False) if not _require(graph, name).load_done else None
            )
            applied = load_stage.apply_changes(
                graph,
                session.target,
                name,
                session.key,
                running.number,
                overwrite=overwrite,
                delete=delete,
                on_reject=settings.on_reject,
                drop_dangling=settings.on_dangling == "drop-reference",
                concurrency=settings.concurrency,
                progress=progress,
            )
            if stats is not None and stats.failures:
                generation = running  # left running: the next sync resumes it
            else:
                generation = finish_generation(graph, name, running.number)
        return SyncResult(
            name,
            generation,
            found,
            applied,
            stats,
            delete=delete,
            refused=refused(graph, name),
            seconds=time.monotonic() - started,
        )


def verify(
    settings: Settings, *, progress: ProgressDisplay | None = None, transports: Transports | None = None
) -> VerifyResult:
    """Compare every loaded resource on the target with its source copy; never writes to the target."""
    with Session(settings, need_target=True, transports=transports) as session:
        _require(session.graph, settings.transfer)
        assert session.target is not None
        report = verify_stage.verify(session.graph, session.target, settings.transfer, progress=progress)
        return VerifyResult(settings.transfer, report)


def reset(settings: Settings, *, confirm: Callable[[str], bool] | None = None) -> ResetResult:
    """Delete a transfer's staging graph (the FHIR servers are not touched).

    ``confirm`` is asked (with the question) before anything is deleted; answering
    False leaves the transfer as it is and raises :class:`ConfigError`.
    """
    with Session(settings) as session:
        _require(session.graph, settings.transfer)
        if confirm is not None and not confirm(f"delete the staged transfer {settings.transfer!r}?"):
            raise ConfigError(f"transfer {settings.transfer!r} was not deleted")
        with TransferLock(session.graph, settings.transfer):  # never under a running transfer
            deleted = reset_transfer(session.graph, settings.transfer)
    return ResetResult(settings.transfer, deleted)


def status(settings: Settings) -> TransferOverview:
    """A transfer's resources per type and status, its bundles, failures and dangling references."""
    with Session(settings) as session:
        return transfer_overview(session.graph, settings.transfer)


def report(settings: Settings, path: str | Path) -> ReportResult:
    """Write a self-contained HTML report of a transfer to ``path`` (replaced atomically)."""
    with Session(settings) as session:
        overview = write_html_report(session.graph, settings.transfer, path)
    return ReportResult(settings.transfer, Path(path), overview)


def export_linkage(
    settings: Settings, fmt: str = "csv", *, path: str | Path | None = None, out: TextIO | None = None
) -> ExportResult:
    """Write ``linkage hash -> target reference`` of every loaded resource as CSV or JSON,
    to ``path`` (never left half-written) or to ``out`` (default standard output)."""
    if fmt not in ("csv", "json"):
        raise ConfigError(f"linkage export format must be csv or json, not {fmt!r}", hint="format")
    with Session(settings) as session:
        _require(session.graph, settings.transfer)
        rows = linkage_rows(session.graph, settings.transfer)
        if path is None:
            return ExportResult(settings.transfer, write_export(rows, fmt, out), None)
        partial = f"{path}.partial"
        try:
            with open(partial, "w", encoding="utf-8") as handle:
                count = write_export(rows, fmt, handle)
            os.replace(partial, path)
        except OSError as exc:
            Path(partial).unlink(missing_ok=True)
            raise ConfigError(f"cannot write the linkage export to {path}: {exc.strerror}") from None
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    return ExportResult(settings.transfer, count, Path(path))


# -- reading the graph ------------------------------------------------------------


def status_counts(graph: Graph, transfer: str) -> Counts:
    counts: Counts = {}
    for row in graph.execute("status_counts", transfer=transfer):
        counts.setdefault(row["type"], {})[row["status"]] = int(row["count"])
    return counts


def refused(graph: Graph, transfer: str) -> list[Refusal]:
    """The resources the target rejected and those blocked by them, with why (at most 300)."""
    return [
        Refusal(row["key"], row["status"], row["error"] or "")
        for row in graph.execute("browse/rejected", transfer=transfer)
    ]


def linkage_rows(graph: Graph, transfer: str) -> Iterator[tuple[str, str]]:
    for row in graph.stream("linkage_export", transfer=transfer):
        yield row["linkage_hash"], row["target"]


# -- the steps that commands compose ------------------------------------------------


def _require(graph: Graph, name: str) -> TransferRecord:
    record = get_transfer(graph, name)
    if record is None:
        raise _no_transfer(name)
    return record


def _no_transfer(name: str) -> ConfigError:
    return ConfigError(f"no transfer named {name!r}; crawl or transfer it first", hint="crawl")


def _nothing_to_crawl() -> ConfigError:
    return ConfigError(
        "nothing to crawl: give a search such as 'Condition?code=123' or a resource such as Patient/1",
        hint="seeds",
    )


def _open(session: Session, seeds: Sequence[Seeds] | None) -> tuple[TransferRecord, bool]:
    """The transfer of ``session.settings``, created if new, checked against the servers and
    the key of this session; and whether it is new. A new transfer needs ``seeds``."""
    graph, name = session.graph, session.settings.transfer
    existing = get_transfer(graph, name)
    if existing is None and not seeds:
        raise _nothing_to_crawl()
    source = session.source.base_url if session.source else (existing.source if existing else "")
    target = session.target.base_url if session.target else (existing.target if existing else "")
    if seeds:
        check_seeds(seeds, source)
    record = open_transfer(
        graph,
        name,
        source=source,
        target=target,
        key_fingerprint=session.key.fingerprint if session.key else None,
    )
    return record, existing is None


def _crawl(
    session: Session,
    seeds: Sequence[Seeds],
    is_new: bool,
    progress: ProgressDisplay | None,
    *,
    early_missing: bool = False,
) -> crawl_stage.CrawlStats:
    assert session.source is not None
    graph, name = session.graph, session.settings.transfer
    _record_seeds(session, seeds)
    try:
        return crawl_stage.crawl(
            graph,
            session.source,
            name,
            seeds,
            get_missing=session.settings.get_missing,
            progress=progress,
            read_concurrency=session.settings.read_concurrency,
            notify=functools.partial(progress.note, "export") if progress else None,
            early_missing=early_missing,
        )
    except FhirgraphError:
        if is_new and not _has_crawled(graph, name):
            # the very first search failed (e.g. an unknown search parameter): leave no trace
            reset_transfer(graph, name)
        raise


def _record_seeds(session: Session, seeds: Sequence[Seeds]) -> None:
    """Keep the seeds for sync, and from the first crawl on, the source's clock before it."""
    assert session.source is not None
    graph, name = session.graph, session.settings.transfer
    record = _require(graph, name)
    texts = [seed_to_json(seed) for seed in seeds]
    if record.synced_from is not None and set(texts) <= set(record.seeds):
        return
    instant = crawl_stage.source_instant(session.source)
    record_seeds(graph, name, texts, instant)


def _plan(session: Session, progress: ProgressDisplay | None) -> plan_stage.PlanStats:
    settings = session.settings
    return plan_stage.plan(
        session.graph,
        settings.transfer,
        bundle_size=settings.bundle_size,
        on_dangling=settings.on_dangling,
        progress=progress,
    )


def _load(
    session: Session,
    progress: ProgressDisplay | None,
    *,
    retry_failed: bool,
    probe: TargetProbe | None = None,
) -> load_stage.LoadStats:
    assert session.target is not None and session.key is not None
    graph, settings = session.graph, session.settings
    if progress:
        pending = graph.execute("load_pending_bundles", transfer=settings.transfer, retry_failed=retry_failed)
        progress.set_total("load", sum(int(b["size"] or 0) for b in pending))
    return load_stage.load(
        graph,
        session.target,
        settings.transfer,
        session.key,
        concurrency=settings.concurrency,
        retry_failed=retry_failed,
        match_existing=settings.match_existing,
        on_reject=settings.on_reject,
        progress=progress,
        probe=probe,
    )


def _reopen_refused(session: Session, progress: ProgressDisplay | None) -> None:
    """Read the rejected and blocked resources from the source again and plan them (also
    finishing such a retry that was interrupted)."""
    graph, name = session.graph, session.settings.transfer
    reopen_refused(graph, name)
    if not _require(graph, name).crawl_done:
        _crawl(session, [], False, progress)
    if not _require(graph, name).plan_done:
        _plan(session, progress)


def _work(session: Session, progress: ProgressDisplay | None, *, retry_failed: bool) -> load_stage.LoadStats:
    assert session.target is not None and session.key is not None
    graph, settings = session.graph, session.settings
    worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    # a load without workers takes the transfer's lock and then looks for live workers; a worker
    # joins only while nobody holds that lock: either way they never run side by side
    join_as_worker(graph, settings.transfer, worker)
    return load_stage.work(
        graph,
        session.target,
        settings.transfer,
        session.key,
        worker,
        lease_seconds=settings.lease_seconds,
        retry_failed=retry_failed,
        match_existing=settings.match_existing,
        on_reject=settings.on_reject,
        progress=progress,
    )


def _refuse_if_workers(graph: Graph, name: str, lease_seconds: float) -> None:
    row = graph.single("workers_alive", transfer=name, seconds=lease_seconds)
    if row and row["alive"]:
        raise TransferLockedError(
            f"transfer {name!r} is being loaded by {row['alive']} worker(s) (e.g. {row['example']}); "
            "wait for them, or join them as another worker",
            hint="worker",
        )


def _run_workers(session: Session, progress: ProgressDisplay | None) -> float:
    """Start ``settings.workers`` load workers on this machine and wait for them; the seconds taken."""
    settings, graph = session.settings, session.graph
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "fhirgraph",
        "load",
        "--worker",
        "--no-progress",
        *worker_options(settings),
    ]
    environment = {**os.environ, **worker_environment(settings)}
    processes = [
        subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(settings.workers)
    ]
    if progress:
        pending = graph.execute("load_pending_bundles", transfer=settings.transfer, retry_failed=False)
        progress.set_total("load", sum(int(b["size"] or 0) for b in pending))
    shown = 0
    while any(p.poll() is None for p in processes):
        time.sleep(1.0)
        if progress:
            loaded = _workers_loaded(graph, settings.transfer)
            if loaded > shown:
                progress("load", loaded - shown)
                shown = loaded
    errors = []
    for process in processes:
        _, err = process.communicate()
        lines = [line for line in err.splitlines() if line.startswith("Error:")]
        # exit 1 with the refusal summary is a finished load; anything else is the worker's failure
        if process.returncode != 0 and not any("the target refused" in line for line in lines):
            errors.append(lines[-1] if lines else f"a worker exited with {process.returncode}")
    if errors:
        raise TransferStateError(f"{len(errors)} of {settings.workers} workers failed: {errors[0]}")
    return time.monotonic() - started


def worker_options(settings: Settings) -> list[str]:
    """The command-line options that give a worker process the same transfer and settings."""
    options = ["--transfer", settings.transfer, "--neo4j-uri", settings.neo4j.uri]
    options += ["--neo4j-user", settings.neo4j.user, "--neo4j-database", settings.neo4j.database]
    options += ["--on-reject", settings.on_reject]
    options += ["--match-existing" if settings.match_existing else "--no-match-existing"]
    if settings.config_file:
        options += ["--config", settings.config_file]
    if settings.target:
        options += ["--target", settings.target.url]
    if settings.key_file:
        options += ["--key-file", settings.key_file]
    return options


def worker_environment(settings: Settings) -> dict[str, str]:
    """What a worker needs from the environment that options must not carry: credentials (never
    on a command line), the lease."""
    environment = {"FHIRGRAPH_LEASE_SECONDS": str(settings.lease_seconds)}
    if settings.neo4j.password:
        environment["NEO4J_PASSWORD"] = settings.neo4j.password
    if settings.target:
        for key in ("username", "password", "token", "client_id", "client_secret", "oidc_provider_url"):
            value = getattr(settings.target, key)
            if value:
                environment[f"FHIRGRAPH_TARGET_{key.upper()}"] = str(value)
    return environment


def _workers_loaded(graph: Graph, transfer: str) -> int:
    return sum(int(row["loaded"] or 0) for row in graph.execute("browse/workers", transfer=transfer))


def _worker_totals(graph: Graph, transfer: str, response: TransferResponse) -> None:
    for row in graph.execute("browse/workers", transfer=transfer):
        response.bundles += int(row["bundles"] or 0)
        response.created += int(row["created"] or 0)
        response.matched_existing += int(row["loaded"] or 0) - int(row["created"] or 0)


def _has_crawled(graph: Graph, transfer: str) -> bool:
    return any(
        status != "placeholder"
        for by_status in status_counts(graph, transfer).values()
        for status in by_status
    )
