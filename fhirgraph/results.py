"""What each command returns: the stage's numbers and a ``summary()`` to show a user.

``summary(hints)`` names settings the way ``hints`` maps them (the command
line passes its flags), by their own names otherwise. A result whose command
did not reach its goal (a bundle refused, a verify
problem) says so through ``error()``: the error the command line exits with
and a script may raise; ``None`` when all went well.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fhirgraph.crawl import ChangeStats as FoundChanges
from fhirgraph.crawl import CrawlStats
from fhirgraph.errors import DanglingReference, FhirgraphError, LoadError, TransferStateError
from fhirgraph.load import BundleFailure, ChangeStats, LoadStats
from fhirgraph.plan import PlanStats
from fhirgraph.report import TransferOverview
from fhirgraph.staging import Generation
from fhirgraph.verify import VerifyReport

Counts = dict[str, dict[str, int]]


def status_totals(counts: Counts) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for by_status in counts.values():
        for status, count in by_status.items():
            totals[status] += count
    return dict(totals)


def conditional_note(types: list[str]) -> str:
    return (
        f"conditional creates for {', '.join(types)}: the target holds copies of "
        f"{'this type' if len(types) == 1 else 'these types'} made with this linkage key"
    )


def resent_note(bundles: int) -> str:
    return (
        f"{bundles} bundle(s) sent again as conditional creates: the target refused a send "
        "(429/503), or its outcome was unknown and its copies were not on the target"
    )


@dataclass(frozen=True)
class Refusal:
    """A resource the target refused (``rejected``, with its OperationOutcome) or one not sent
    because it refers to such a resource (``blocked``, with the chain that leads there)."""

    key: str
    status: str
    reason: str


def refusal_lines(refusals: list[Refusal], limit: int = 20) -> list[str]:
    lines = [f"  {r.status.upper()} {r.key}: {r.reason}" for r in refusals[:limit]]
    if len(refusals) > limit:
        lines.append(f"  ... and {len(refusals) - limit} more (saved query: rejected)")
    return lines


def _refused_error(refusals: list[Refusal], counts: dict[str, int]) -> FhirgraphError | None:
    rejected, blocked = counts.get("rejected", 0), counts.get("blocked", 0)
    if not (rejected or blocked):
        return None
    return LoadError(
        f"the target refused {rejected} resource(s) and {blocked} more were not sent because they "
        "refer to one; everything else was transferred. Fix them on the source, then load again "
        "retrying the failed ones",
        hint="retry_failed",
    )


def _failed_error(failures: list[BundleFailure], failed_earlier: int) -> FhirgraphError | None:
    if failures:
        return LoadError(f"{len(failures)} bundle(s) failed; see the transfer's status", hint="status")
    if failed_earlier:
        return LoadError(
            f"{failed_earlier} bundle(s) failed in an earlier run; fix the cause and load again, "
            "retrying the failed bundles",
            hint="retry_failed",
        )
    return None


@dataclass
class CrawlResult:
    transfer: str
    stats: CrawlStats
    counts: Counts

    def summary(self, hints: Mapping[str, str] | None = None) -> str:
        totals = status_totals(self.counts)
        line = f"crawled transfer {self.transfer}: " + ", ".join(
            f"{status} {count}" for status, count in sorted(totals.items())
        )
        jobs, resumed = self.stats.export_jobs, self.stats.resumed_export_jobs
        if jobs:
            line += f"; staged from {len(jobs)} export job(s)"
            line += (
                f", {len(resumed)} resumed after an interruption ({', '.join(resumed)})" if resumed else ""
            )
        return line

    def error(self) -> FhirgraphError | None:
        return None


@dataclass
class PlanResult:
    transfer: str
    stats: PlanStats

    def summary(self, hints: Mapping[str, str] | None = None) -> str:
        s = self.stats
        return (
            f"planned {s.planned} resources in {s.bundles} bundles over {s.levels} levels; "
            f"cycles {s.cycles}, deferred references {s.deferred_references}, "
            f"dropped references {s.dropped_references}, skipped resources {s.skipped} ({s.seconds:.1f}s)"
        )

    def error(self) -> FhirgraphError | None:
        return None


@dataclass
class LoadResult:
    transfer: str
    stats: LoadStats
    #: rejected and blocked resources of the whole transfer, with their reasons
    refused: list[Refusal] = field(default_factory=list)

    def summary(self, hints: Mapping[str, str] | None = None) -> str:
        s = self.stats
        lines = [
            f"loaded {s.loaded} resources in {s.bundles} bundles ({s.created} created, "
            f"{s.matched_existing} matched existing) in {s.seconds:.1f}s"
        ]
        if s.conditional_types:
            lines.append(conditional_note(s.conditional_types))
        if s.resent_bundles:
            lines.append(resent_note(s.resent_bundles))
        if s.rejected or s.blocked or s.dropped_references:
            lines.append(
                f"rejected by the target {s.rejected}, blocked {s.blocked}, references to them dropped "
                f"{s.dropped_references} ({s.isolation_sends} sends to isolate them)"
            )
        lines.extend(refusal_lines(self.refused))
        return "\n".join(lines)

    def failure_lines(self, hints: Mapping[str, str] | None = None) -> list[str]:
        """A line per bundle that failed in this run, with the target's OperationOutcome."""
        return [f"  bundle {f.bundle} failed: {f.text(hints)}" for f in self.stats.failures]

    def error(self) -> FhirgraphError | None:
        counts: dict[str, int] = {}
        for refusal in self.refused:
            counts[refusal.status] = counts.get(refusal.status, 0) + 1
        return _failed_error(self.stats.failures, self.stats.failed_earlier) or _refused_error(
            self.refused, counts
        )


@dataclass
class SyncResult:
    """What a sync did: one generation of the transfer."""

    transfer: str
    generation: Generation
    #: what the source's history showed (changed, deleted, reopened)
    found: FoundChanges
    #: what was done to copies already on the target
    applied: ChangeStats
    load: LoadStats | None = None
    delete: bool = False
    refused: list[Refusal] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, hints: Mapping[str, str] | None = None) -> str:
        hints = hints or {}
        c = self.generation.counts
        lines = [
            f"synced transfer {self.transfer} (generation {self.generation.number}): "
            f"created {c.get('created', 0)}, updated {c.get('updated', 0)}, "
            f"unchanged {c.get('unchanged', 0)}, deleted on the source {c.get('deleted', 0) + c.get('removed', 0)} "
            f"(removed from the target {c.get('removed', 0)}), conflicts {c.get('conflicts', 0)}, "
            f"refused {c.get('refused', 0)} in {self.seconds:.1f}s"
        ]
        if self.found.reopened:
            lines.append(
                f"{self.found.reopened} resource(s) that had not reached the target changed and were sent"
            )
        for key, why in self.applied.conflicts[:20]:
            lines.append(f"  CONFLICT {key}: {why}")
        for key, why in self.applied.refused[:20]:
            lines.append(f"  REFUSED {key}: {why}")
        for key, why in self.applied.kept[:20]:
            lines.append(f"  KEPT {key}: {why}")
        if c.get("deleted") and not self.delete:
            lines.append(
                f"{c['deleted']} resource(s) deleted on the source (or no longer matched) are still on the "
                f"target; sync with {hints.get('delete', 'delete')} to remove them (saved query: sync_pending)"
            )
        lines.extend(refusal_lines(self.refused))
        return "\n".join(lines)

    def error(self) -> FhirgraphError | None:
        if self.load is not None and (failed := _failed_error(self.load.failures, 0)):
            return failed
        c = self.generation.counts
        if c.get("conflicts") or c.get("refused"):
            return LoadError(
                f"{c.get('conflicts', 0)} update(s) not made because their copies changed on the target, "
                f"{c.get('refused', 0)} refused; everything else was synced",
                hint="overwrite" if c.get("conflicts") else "status",
            )
        if self.load is not None and self.load.rejected + self.load.blocked:
            counts: dict[str, int] = {"rejected": self.load.rejected, "blocked": self.load.blocked}
            return _refused_error(self.refused, counts)
        return None


@dataclass
class TransferResponse:
    """What a transfer did: counts, linkage, failures and timings."""

    transfer: str
    source: str
    target: str
    counts: Counts = field(default_factory=dict)
    linkage: dict[str, str] = field(default_factory=dict)
    failures: list[BundleFailure] = field(default_factory=list)
    dangling: list[DanglingReference] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    created: int = 0
    matched_existing: int = 0
    retries: int = 0
    bundles: int = 0
    #: types sent as conditional creates, because the target held copies of them made with this key
    conditional_types: list[str] = field(default_factory=list)
    #: bundles sent again as conditional creates after a send whose outcome was unknown
    resent_bundles: int = 0
    #: resources the target rejected and those blocked by them, with their reasons (at most 300)
    refused: list[Refusal] = field(default_factory=list)
    #: transactions sent to isolate the resources the target refused
    isolation_sends: int = 0
    #: references to resources the source lacks, removed by the plan (on_dangling drop-reference)
    dropped_references: int = 0
    #: resources skipped because they refer to what the source lacks (on_dangling skip-resource)
    skipped: int = 0
    #: of ``created`` and ``matched_existing``, those loaded while the crawl went on (overlap)
    loaded_while_crawling: int = 0

    @property
    def ok(self) -> bool:
        return self.error() is None

    def status_totals(self) -> dict[str, int]:
        return status_totals(self.counts)

    def error(self) -> FhirgraphError | None:
        totals = self.status_totals()
        return _failed_error(self.failures, totals.get("failed", 0)) or _refused_error(self.refused, totals)

    def summary(self, hints: Mapping[str, str] | None = None) -> str:
        totals = self.status_totals()
        lines = [
            f"transfer {self.transfer}: {self.source} -> {self.target}",
            "  " + ", ".join(f"{status} {count}" for status, count in sorted(totals.items())),
        ]
        width = max((len(t) for t in self.counts), default=4)
        for rtype, by_status in sorted(self.counts.items()):
            lines.append(
                f"  {rtype:<{width}}  " + "  ".join(f"{s}={n}" for s, n in sorted(by_status.items()))
            )
        timing = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in self.timings.items())
        lines.append(
            f"  bundles {self.bundles}, created {self.created}, matched existing {self.matched_existing}, "
            f"retries {self.retries}"
        )
        if self.loaded_while_crawling:
            lines.append(f"  {self.loaded_while_crawling} of them loaded while the crawl went on")
        if self.conditional_types:
            lines.append(f"  {conditional_note(self.conditional_types)}")
        if self.resent_bundles:
            lines.append(f"  {resent_note(self.resent_bundles)}")
        if self.dropped_references:
            dangling = self.status_totals().get("dangling", 0)
            lines.append(
                f"  dropped {self.dropped_references} reference(s) to {dangling} resource(s) the source "
                "lacks (saved query: dangling)"
            )
        if self.skipped:
            lines.append(f"  skipped {self.skipped} resource(s) that refer to what the source lacks")
        if self.isolation_sends:
            lines.append(f"  {self.isolation_sends} sends to isolate what the target refused")
        lines.append(f"  time: {timing}")
        lines.extend(refusal_lines(self.refused))
        for failure in self.failures[:10]:
            lines.append(
                f"  FAILED bundle {failure.bundle} ({len(failure.resources)} resources): {failure.text(hints)}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        # the linkage of a large transfer has a line per resource: show its size only
        totals = ", ".join(f"{status}={count}" for status, count in sorted(self.status_totals().items()))
        return (
            f"TransferResponse(transfer={self.transfer!r}, {totals or 'nothing staged'}, "
            f"failures={len(self.failures)}, linkage=<{len(self.linkage)} entries>)"
        )


@dataclass
class VerifyResult:
    transfer: str
    report: VerifyReport

    def summary(self, hints: Mapping[str, str] | None = None) -> str:
        r = self.report
        if r.ok:
            return (
                f"verified {r.checked} resources and {r.references_checked} references: all match "
                f"({r.seconds:.1f}s)"
            )
        return "\n".join(f"  {problem}" for problem in r.problems)

    def error(self) -> FhirgraphError | None:
        r = self.report
        if r.ok:
            return None
        return TransferStateError(f"verify found {r.problem_count} problem(s) in {r.checked} resources")


@dataclass
class ResetResult:
    transfer: str
    deleted: int

    def summary(self, hints: Mapping[str, str] | None = None) -> str:
        return f"deleted transfer {self.transfer} ({self.deleted} staged resources)"

    def error(self) -> FhirgraphError | None:
        return None


@dataclass
class ExportResult:
    transfer: str
    rows: int
    path: Path | None

    def summary(self, hints: Mapping[str, str] | None = None) -> str:
        return f"wrote {self.rows} linkage rows to {self.path or 'standard output'}"

    def error(self) -> FhirgraphError | None:
        return None


@dataclass
class ReportResult:
    transfer: str
    path: Path
    overview: TransferOverview

    def summary(self, hints: Mapping[str, str] | None = None) -> str:
        o = self.overview
        return (
            f"wrote {self.path}: {sum(o.totals.values())} resources, {len(o.bundles)} bundles, "
            f"{len(o.failures)} failed"
        )

    def error(self) -> FhirgraphError | None:
        return None
