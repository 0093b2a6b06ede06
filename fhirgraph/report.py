"""What a staged transfer did: an overview for ``fhirgraph status`` and a self-contained HTML report.

The overview is read from the graph with the saved browser queries (the same
rows a user sees in Neo4j Browser); the report is one HTML file with inline CSS
and an inline SVG chart, so it can be viewed without network access.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhirgraph.errors import ConfigError, TransferStateError
from fhirgraph.graph import Graph
from fhirgraph.staging import BUNDLE_STATUSES, RESOURCE_STATUSES, TransferRecord, get_transfer

LIST_LIMIT = 300
GENERATION_COLUMNS = (
    "number",
    "kind",
    "state",
    "started",
    "ended",
    "since",
    "created",
    "updated",
    "unchanged",
    "deleted",
    "removed",
    "conflicts",
    "refused",
)


@dataclass
class BundleRow:
    number: int
    level: int | None
    size: int
    status: str
    sent_at: str | None = None
    loaded_at: str | None = None
    seconds: float | None = None
    attempts: int | None = None
    error: str | None = None
    failed_at: str | None = None
    sent_ms: int | None = None
    loaded_ms: int | None = None


@dataclass
class TransferOverview:
    """Everything ``status`` and ``report`` show about one transfer."""

    transfer: str
    source: str
    target: str
    stages: dict[str, bool]
    timings: dict[str, float]
    resources: dict[str, dict[str, int]]
    bundles: list[BundleRow]
    failures: list[dict[str, Any]]
    dangling: list[dict[str, Any]]
    last_error: str | None = None
    #: resources the target refused (rejected) and those not sent because they refer to one (blocked)
    refused: list[dict[str, Any]] = field(default_factory=list)
    #: the load workers (``load --worker``): what each loaded, its rate, bundles taken over from it
    workers: list[dict[str, Any]] = field(default_factory=list)
    #: where the transfer is: created, crawled, planning, planned or loaded (staging.TransferState)
    state: str = ""
    totals: dict[str, int] = field(default_factory=dict)
    #: the first transfer and each sync: when, and what each created, updated and deleted
    generations: list[dict[str, Any]] = field(default_factory=list)
    #: changes a sync has not applied (conflicts, refused updates, copies still to remove)
    sync_pending: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bundles_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(BUNDLE_STATUSES, 0)
        for bundle in self.bundles:
            counts[bundle.status] = counts.get(bundle.status, 0) + 1
        return counts

    @property
    def bundles_done(self) -> int:
        return self.bundles_by_status["loaded"]

    @property
    def bundles_left(self) -> int:
        return len(self.bundles) - self.bundles_done

    def summary(self) -> str:
        """The text of ``fhirgraph status``: stages, a table of types by status, bundles, failures."""
        lines = [f"transfer {self.transfer}: {self.source} -> {self.target or '(no target yet)'}"]
        lines.append(
            f"  state {self.state}; stages: "
            + ", ".join(
                f"{stage} {'done' if self.stages[stage] else 'open'}"
                + (f" ({self.timings[stage]:.1f}s)" if stage in self.timings else "")
                for stage in ("crawl", "plan", "load")
            )
        )
        statuses = [s for s in self.totals if self.totals[s]]
        width = max([len("type"), len("all"), *(len(t) for t in self.resources)])
        lines.append(
            "  " + f"{'type':<{width}}" + "".join(f"  {s:>11}" for s in statuses) + f"  {'total':>7}"
        )
        for rtype, by_status in self.resources.items():
            cells = "".join(f"  {by_status.get(s, 0) or '.':>11}" for s in statuses)
            lines.append(f"  {rtype:<{width}}{cells}  {sum(by_status.values()):>7}")
        cells = "".join(f"  {self.totals[s]:>11}" for s in statuses)
        lines.append(f"  {'all':<{width}}{cells}  {sum(self.totals.values()):>7}")
        if self.bundles:
            bundle_counts = ", ".join(f"{s} {n}" for s, n in self.bundles_by_status.items() if n)
            lines.append(f"  bundles: {self.bundles_done} done, {self.bundles_left} left ({bundle_counts})")
        else:
            lines.append("  bundles: none planned")
        if self.dangling:
            lines.append(f"  dangling references: {len(self.dangling)} (fhirgraph browse dangling)")
        lines.extend(f"  failed {failure['key']}: {failure['error']}" for failure in self.failures[:20])
        lines.extend(f"  {r['status']} {r['key']}: {r['error']}" for r in self.refused[:20])
        if len(self.refused) > 20:
            lines.append(f"  ... {len(self.refused) - 20} more (fhirgraph browse rejected)")
        for w in self.workers:
            seconds = float(w["seconds"] or 0.0)
            rate = f"{int(w['loaded'] or 0) / seconds:,.0f}/s" if seconds > 0 else "-/s"
            taken = (
                f", {w['taken_over']} bundle(s) taken over by others after its lease expired"
                if w["taken_over"]
                else ""
            )
            leases = w.get("leases") or []
            held = "".join(f", holds bundle {x['bundle']} ({x['expires_in']} s left)" for x in leases)
            lines.append(
                f"  worker {w['worker']}: {w['state']}, {w['bundles'] or 0} bundles, {w['loaded'] or 0} resources "
                f"({rate}), seen {w['seen_seconds_ago']} s ago{held}{taken}"
            )
        lines.extend(generation_line(g) for g in self.generations)
        lines.extend(
            f"  {'conflict' if p['conflict'] else 'pending ' + p['pending']} {p['key']}: {p['why']}"
            for p in self.sync_pending[:20]
        )
        if len(self.sync_pending) > 20:
            lines.append(f"  ... {len(self.sync_pending) - 20} more (fhirgraph browse sync_pending)")
        if self.last_error:
            lines.append(f"  last error: {self.last_error}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "transfer": self.transfer,
            "source": self.source,
            "target": self.target,
            "state": self.state,
            "stages": self.stages,
            # the flat flags of earlier versions, kept for scripts that read them
            "crawl_done": self.stages["crawl"],
            "plan_done": self.stages["plan"],
            "load_done": self.stages["load"],
            "timings": self.timings,
            "resources": self.resources,
            "totals": self.totals,
            "bundles": {
                "total": len(self.bundles),
                "done": self.bundles_done,
                "left": self.bundles_left,
                "by_status": self.bundles_by_status,
                "resources_loaded": sum(b.size for b in self.bundles if b.status == "loaded"),
            },
            "failures": self.failures,
            "dangling": self.dangling,
            "refused": self.refused,
            "workers": self.workers,
            "generations": self.generations,
            "sync_pending": self.sync_pending,
            "last_error": self.last_error,
        }


def generation_line(g: dict[str, Any]) -> str:
    what = "transfer" if g["kind"] == "transfer" else "sync"
    if g["state"] != "done":
        return (
            f"  generation {g['number']} ({what}, started {g['started']}): running (sync again to finish it)"
        )
    counts = ", ".join(
        f"{name} {g[name] or 0}"
        for name in ("created", "updated", "unchanged", "deleted", "removed", "conflicts", "refused")
        if what == "sync" or name == "created"
    )
    return f"  generation {g['number']} ({what}, {g['started']} .. {g['ended']}): {counts}"


def _overview_from(record: TransferRecord, graph: Graph) -> TransferOverview:
    name = record.name
    resources: dict[str, dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = dict.fromkeys(RESOURCE_STATUSES, 0)
    for row in graph.execute("status_counts", transfer=name):
        resources[row["type"]][row["status"]] = int(row["count"])
        totals[row["status"]] = totals.get(row["status"], 0) + int(row["count"])
    bundles = [BundleRow(**row) for row in graph.execute("browse/bundles", transfer=name)]
    failures = [
        {"key": row["key"], "bundle": row["bundle"], "error": row["error"]}
        for row in graph.execute("browse/failed", transfer=name)
    ]
    dangling = [
        {k: row[k] for k in ("referrer", "path", "missing", "detail")}
        for row in graph.execute("browse/dangling", transfer=name)
    ]
    refused = [
        {"key": row["key"], "status": row["status"], "error": row["error"]}
        for row in graph.execute("browse/rejected", transfer=name)
    ]
    workers = [
        {k: row[k] for k in ("worker", "host", "pid", "state", "bundles", "loaded", "created", "seconds")}
        | {
            "seen_seconds_ago": row["seen_seconds_ago"],
            "taken_over": row["taken_over"],
            "leases": row["leases"],
        }
        for row in graph.execute("browse/workers", transfer=name)
    ]
    generations = [
        {k: row[k] for k in GENERATION_COLUMNS} for row in graph.execute("browse/generations", transfer=name)
    ]
    sync_pending = [
        {k: row[k] for k in ("key", "pending", "conflict", "why")}
        for row in graph.execute("browse/sync_pending", transfer=name)
    ]
    failed_bundles = sorted(
        (b for b in bundles if b.status == "failed" and b.error), key=lambda b: b.failed_at or ""
    )
    last_error = None
    if failed_bundles:
        last = failed_bundles[-1]
        last_error = f"bundle {last.number}: {last.error}"
    elif failures:
        last_error = f"{failures[0]['key']}: {failures[0]['error']}"
    return TransferOverview(
        transfer=name,
        source=record.source,
        target=record.target,
        stages={"crawl": record.crawl_done, "plan": record.plan_done, "load": record.load_done},
        state=record.state,
        timings=record.timings,
        resources=dict(sorted(resources.items())),
        bundles=bundles,
        failures=failures,
        dangling=dangling,
        last_error=last_error,
        refused=refused,
        workers=workers,
        totals={k: v for k, v in totals.items() if v},
        generations=generations,
        sync_pending=sync_pending,
    )


def transfer_overview(graph: Graph, transfer: str) -> TransferOverview:
    """Read a transfer's counts, bundles, failures and dangling references from the graph."""
    record = get_transfer(graph, transfer)
    if record is None:
        raise TransferStateError(f"no transfer named {transfer!r} in Neo4j")
    return _overview_from(record, graph)


# -- HTML ---------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;
color:#1c2024;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{background:#f4f4f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777}.bad{color:#c62828}.ok{color:#2e7d32}pre{white-space:pre-wrap;margin:0;font-size:12px}
svg{background:#fafafa;border:1px solid #eee}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[object]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def throughput_points(bundles: list[BundleRow]) -> list[tuple[float, int]]:
    """(seconds since the first bundle was sent, resources loaded so far) after each loaded bundle."""
    loaded = sorted(
        (b for b in bundles if b.status == "loaded" and b.loaded_ms), key=lambda b: b.loaded_ms or 0
    )
    if not loaded:
        return []
    starts = [b.sent_ms for b in loaded if b.sent_ms] or [loaded[0].loaded_ms or 0]
    start = min(min(starts), loaded[0].loaded_ms or 0)
    points: list[tuple[float, int]] = [(0.0, 0)]
    total = 0
    for bundle in loaded:
        total += bundle.size
        points.append((((bundle.loaded_ms or start) - start) / 1000.0, total))
    return points


def throughput_svg(points: list[tuple[float, int]], width: int = 640, height: int = 220) -> str:
    """A small inline SVG line chart of resources loaded over time."""
    if len(points) < 2:
        return '<p class="muted">No bundle has been loaded yet.</p>'
    left, bottom, top, right = 56, 30, 12, 16
    max_x = max(p[0] for p in points) or 1.0
    max_y = max(p[1] for p in points) or 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(x: float, y: int) -> str:
        return f"{left + x / max_x * plot_w:.1f},{top + plot_h - y / max_y * plot_h:.1f}"

    line = " ".join(xy(x, y) for x, y in points)
    rate = max_y / max_x if max_x > 0 else 0.0
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="resources loaded over time">'
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>'
        f'<polyline fill="none" stroke="#3e63dd" stroke-width="2" points="{line}"/>'
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11">{max_y}</text>'
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>'
        f'<text x="{left}" y="{height - 8}" font-size="11">0 s</text>'
        f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" font-size="11">{max_x:.1f} s</text>'
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle" font-size="11">'
        f"resources loaded over time, {rate:.1f}/s on average</text></svg>"
    )


def render_html(overview: TransferOverview) -> str:
    """The report as one self-contained HTML document (no scripts, fonts or images from elsewhere)."""
    o = overview
    statuses = [s for s in RESOURCE_STATUSES if any(s in c for c in o.resources.values())]
    count_rows: list[list[object]] = [
        [rtype, *(by_status.get(s, 0) for s in statuses), sum(by_status.values())]
        for rtype, by_status in o.resources.items()
    ]
    count_rows.append(["all", *(o.totals.get(s, 0) for s in statuses), sum(o.totals.values())])
    stage_rows: list[list[object]] = [
        [
            stage,
            "done" if o.stages.get(stage) else "open",
            f"{o.timings[stage]:.1f}" if stage in o.timings else "-",
        ]
        for stage in ("crawl", "plan", "load")
    ]
    by_status = o.bundles_by_status
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>fhirgraph transfer {_e(o.transfer)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Transfer {_e(o.transfer)}</h1>",
        f"<p>{_e(o.source)} &rarr; {_e(o.target or '(no target yet)')}</p>",
        "<h2>Stages</h2>",
        _table(["stage", "state", "seconds"], stage_rows, {2}),
        "<h2>Resources per type and status</h2>",
        _table(["type", *statuses, "total"], count_rows, set(range(1, len(statuses) + 2))),
        "<h2>Bundles</h2>",
        f"<p>{o.bundles_done} of {len(o.bundles)} loaded, {o.bundles_left} left "
        + "("
        + ", ".join(f"{s} {n}" for s, n in by_status.items() if n)
        + ")</p>"
        if o.bundles
        else '<p class="muted">No bundles planned yet.</p>',
        "<h2>Throughput</h2>",
        throughput_svg(throughput_points(o.bundles)),
        "<h2>Dangling references</h2>",
        _table(
            ["referrer", "element", "missing", "detail"],
            [[d["referrer"], d["path"], d["missing"], d["detail"]] for d in o.dangling],
        )
        if o.dangling
        else '<p class="ok">None.</p>',
        "<h2>Failures</h2>",
    ]
    failed_bundles = [b for b in o.bundles if b.status == "failed"]
    if failed_bundles or o.failures:
        parts.append(
            _table(
                ["bundle", "size", "failed at", "OperationOutcome"],
                [[b.number, b.size, b.failed_at, b.error] for b in failed_bundles],
                {0, 1},
            )
        )
        parts.append(
            _table(["resource", "bundle", "error"], [[f["key"], f["bundle"], f["error"]] for f in o.failures])
        )
    else:
        parts.append('<p class="ok">None.</p>')
    parts.append("<h2>Refused by the target</h2>")
    parts.append(
        _table(["resource", "status", "why"], [[r["key"], r["status"], r["error"]] for r in o.refused])
        if o.refused
        else '<p class="ok">None.</p>'
    )
    if o.generations:
        parts.append("<h2>Generations</h2>")
        columns = [c for c in GENERATION_COLUMNS if c != "since"]
        parts.append(
            _table(
                columns,
                [[g[c] for c in columns] for g in o.generations],
                {i for i, c in enumerate(columns) if c not in ("kind", "state", "started", "ended")},
            )
        )
    if o.sync_pending:
        parts.append("<h2>Changes not applied</h2>")
        parts.append(
            _table(
                ["resource", "pending", "conflict", "why"],
                [[p["key"], p["pending"], "yes" if p["conflict"] else "", p["why"]] for p in o.sync_pending],
            )
        )
    if o.last_error:
        parts.append(f'<p class="bad">Last error: {_e(o.last_error)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(path: str | Path, content: str) -> Path:
    """Write ``content`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ConfigError(f"cannot write report {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write report {target}: {exc.strerror or exc}") from None
    return target


def write_html_report(graph: Graph, transfer: str, path: str | Path) -> TransferOverview:
    overview = transfer_overview(graph, transfer)
    write_report(path, render_html(overview))
    return overview


__all__ = [
    "BundleRow",
    "TransferOverview",
    "render_html",
    "throughput_points",
    "throughput_svg",
    "transfer_overview",
    "write_html_report",
    "write_report",
]
