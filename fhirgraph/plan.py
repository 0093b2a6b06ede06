"""Plan stage: dangling references, cycles, creation order and bundles, decided in the graph.

1. References to resources the source does not have stop the plan (default), are
   marked to be dropped, or make their referrers (transitively) skipped.
2. Levels are peeled in Cypher: a resource gets level *L* once everything it
   references has a lower level. What is left when peeling stalls is cycles and
   what depends on them; those few resources are read into Python, their strongly
   connected components found (Tarjan), and each ready component placed on one
   level: together in one bundle if it fits (the target resolves ``urn:uuid``
   cycles inside a transaction), otherwise with its cycle-closing references
   deferred to a second phase (create without them, then update). Self
   references are always deferred: HAPI cannot resolve an entry naming itself.
3. Each level is packed into bundles of at most ``bundle_size`` entries and at
   most ``REFERENCES_PER_ENTRY`` times as many references (5,000 at the default
   size): the target resolves and indexes every reference, so 26 Provenances
   naming 1,700 resources each cost it as much as 20,000 Observations. A cycle is
   never split, and a resource with more references gets a bundle of its own.
   Bundles of one level are independent and may load concurrently; the load
   sends a bundle once those it refers to are loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from fhirgraph.config import OnDangling
from fhirgraph.errors import DanglingReference, DanglingReferencesError, TransferStateError
from fhirgraph.faults import checkpoint
from fhirgraph.graph import Graph
from fhirgraph.staging import abandon_plan, finish_plan, require_transfer, start_plan

MAX_LISTED_DANGLING = 50
WRITE_BATCH = 5000
#: concurrent writes of one level's resources (bench/RESULTS.md, "planning")
LEVEL_WRITERS = 2
#: a bundle holds at most this many references per entry of ``bundle_size`` (see step 3)
REFERENCES_PER_ENTRY = 20
Progress = Callable[[str, int], None]


@dataclass
class PlanStats:
    levels: int = 0
    bundles: int = 0
    planned: int = 0
    cycles: int = 0
    deferred_references: int = 0
    dropped_references: int = 0
    skipped: int = 0
    seconds: float = 0.0


def dangling_references(
    graph: Graph, transfer: str, limit: int = MAX_LISTED_DANGLING
) -> list[DanglingReference]:
    return [
        DanglingReference(
            referrer=row["referrer"],
            path=row["path"],
            reference=row["reference"],
            target=row["target"],
            detail=row["detail"]
            or ("not fetched (get_missing is off)" if row["status"] == "placeholder" else "missing"),
        )
        for row in graph.execute("plan_missing_list", transfer=transfer, limit=limit)
    ]


def plan(
    graph: Graph,
    transfer: str,
    *,
    bundle_size: int,
    on_dangling: OnDangling = "fail",
    cycles_in_one_bundle: bool = True,
    progress: Progress | None = None,
) -> PlanStats:
    """Compute the creation order and the bundles of a crawled transfer."""
    record = require_transfer(graph, transfer)
    if not record.crawl_done:
        raise TransferStateError(f"transfer {transfer!r} has not finished crawling; crawl it first")
    started = time.monotonic()
    stats = PlanStats()
    load_started = bool(graph.single("load_started", transfer=transfer)["started"])  # type: ignore[index]
    if not load_started and record.plan_started:
        # an earlier plan (finished, failed or killed) left levels, bundles and flags behind
        graph.execute_batched("plan_reopen", transfer=transfer)
        graph.execute_batched("plan_reopen_references", transfer=transfer)
        graph.execute("plan_delete_bundles", transfer=transfer)
    start_plan(graph, transfer)

    _handle_dangling(graph, transfer, on_dangling, stats)
    first_bundle = _bundle_numbers_from(graph, transfer)
    row = graph.single("plan_defer_self_references", transfer=transfer)
    stats.deferred_references += int(row["deferred"]) if row else 0
    _place(graph, transfer, BundlePacker(bundle_size, first_bundle), cycles_in_one_bundle, stats, progress)
    checkpoint("plan_levels")
    row = graph.single("plan_write_bundles", transfer=transfer, first=first_bundle)
    stats.bundles = int(row["bundles"]) if row else 0
    stats.seconds = time.monotonic() - started
    finish_plan(graph, transfer, seconds=stats.seconds, bundle_size=bundle_size, on_dangling=on_dangling)
    return stats


def _handle_dangling(graph: Graph, transfer: str, on_dangling: OnDangling, stats: PlanStats) -> None:
    missing = int(graph.single("plan_missing_count", transfer=transfer)["missing"])  # type: ignore[index]
    if missing == 0:
        return
    if on_dangling == "fail":
        abandon_plan(graph, transfer)
        raise DanglingReferencesError(dangling_references(graph, transfer), missing)
    if on_dangling == "drop-reference":
        row = graph.single("plan_drop_missing", transfer=transfer)
        stats.dropped_references = int(row["dropped"]) if row else 0
        return
    while True:
        row = graph.single("plan_skip_missing", transfer=transfer)
        skipped = int(row["skipped"]) if row else 0
        stats.skipped += skipped
        if skipped == 0:
            return


def _place(
    graph: Graph,
    transfer: str,
    packer: BundlePacker,
    cycles_in_one_bundle: bool,
    stats: PlanStats,
    progress: Progress | None,
) -> None:
    """Peel levels and put each level's resources in its bundles as it is found.

    Level, bundle and status are written together, once per resource: a placed
    resource is ``planned``, so "crawled" means "not placed yet".
    """
    first = next_level(graph, transfer)
    level, query = first, "plan_ready_first"
    while True:
        row = graph.single(query, transfer=transfer, level=level)
        if row and row["ids"]:
            _place_level(graph, row["ids"], row["references"], level, packer, stats, progress)
            level, query = level + 1, "plan_ready_next"
            continue
        row = graph.single("plan_unassigned_count", transfer=transfer)
        if not row or int(row["unassigned"]) == 0:
            break
        edges: dict[str, list[str]] = {}
        references: dict[str, int] = {}
        for r in graph.stream("plan_unassigned_edges", transfer=transfer):
            edges[r["uid"]] = [t for t in r["targets"] if t is not None]
            references[r["uid"]] = r["references"]
        placed, deferred = place_ready_components(edges, level, packer.bundle_size, cycles_in_one_bundle)
        if not placed:
            raise TransferStateError("internal: planning made no progress on the remaining cycles")
        if deferred:
            graph.write_batches("plan_defer_edges", deferred, batch_size=WRITE_BATCH)
        for _, unit in groupby(placed, key=lambda p: p["scc"] or p["uid"]):
            members = list(unit)
            number = packer.add(len(members), sum(references[m["uid"]] for m in members))
            for member in members:
                member["bundle"] = number
        packer.close()
        graph.write_batches("plan_set_component", placed, batch_size=WRITE_BATCH)
        stats.planned += len(placed)
        stats.cycles += len({p["scc"] for p in placed})
        stats.deferred_references += len(deferred)
        checkpoint("plan_bundles")
        if progress:
            progress("plan", len(placed))
        level, query = level + 1, "plan_ready_next"
    stats.levels = level - first


def next_level(graph: Graph, transfer: str) -> int:
    """The lowest level above every level placed so far (0 if none)."""
    row = graph.single("plan_next_level", transfer=transfer)
    return int(row["next"]) if row else 0


def place_ready(graph: Graph, transfer: str, *, bundle_size: int, first_level: int) -> tuple[int, int]:
    """Place what is ready while the crawl goes on (overlap): the resources whose references
    all lead to placed resources, level by level from ``first_level``, in new bundles. Cycles
    and whatever refers to something not staged wait (for a later round, or the plan after the
    crawl). Returns how many were placed and the next free level.

    A round killed between placing and writing the bundle nodes leaves resources with bundle
    numbers but no bundle: their bundles are written first, so new numbers never collide.
    """
    first_bundle = _bundle_numbers_from(graph, transfer)
    graph.single("plan_defer_self_references", transfer=transfer)
    packer, stats = BundlePacker(bundle_size, first_bundle), PlanStats()
    level, query = first_level, "overlap_ready_first"
    while True:
        row = graph.single(query, transfer=transfer, level=level)
        if not row or not row["ids"]:
            break
        _place_level(graph, row["ids"], row["references"], level, packer, stats, None, "overlap_place_level")
        level, query = level + 1, "overlap_ready_next"
    if stats.planned:
        checkpoint("overlap_placed")
        graph.single("plan_write_bundles", transfer=transfer, first=first_bundle)
    return stats.planned, level


def _bundle_numbers_from(graph: Graph, transfer: str) -> int:
    """The first free bundle number, once resources placed by a round that was killed before it
    wrote their bundle nodes have them (else new bundles would take their numbers)."""
    stray = int(graph.single("load_next_bundle_number", transfer=transfer)["next"])  # type: ignore[index]
    graph.single("plan_write_bundles", transfer=transfer, first=stray)
    return int(graph.single("load_next_bundle_number", transfer=transfer)["next"])  # type: ignore[index]


def _place_level(
    graph: Graph,
    ids: list[str],
    references: list[int],
    level: int,
    packer: BundlePacker,
    stats: PlanStats,
    progress: Progress | None,
    query: str = "plan_place_level",
) -> None:
    """Put the resources of one peeled level (by element id, with their numbers of references)
    in bundles, in the order given.

    The writes of a level touch disjoint resources, so up to ``LEVEL_WRITERS`` run at once;
    a plan that stops half-way is computed again from the start (see ``plan``).
    """
    chunks: list[list[dict[str, Any]]] = []
    for start in range(0, len(ids), WRITE_BATCH):
        chunk: dict[int, list[str]] = {}
        for element_id, count in zip(
            ids[start : start + WRITE_BATCH], references[start : start + WRITE_BATCH], strict=True
        ):
            chunk.setdefault(packer.add(1, count), []).append(element_id)
        chunks.append([{"bundle": number, "ids": members} for number, members in chunk.items()])
    packer.close()

    def write(rows: list[dict[str, Any]]) -> int:
        graph.execute(query, rows=rows, level=level)
        return sum(len(row["ids"]) for row in rows)

    with ThreadPoolExecutor(LEVEL_WRITERS, thread_name_prefix="fhirgraph-plan") as pool:
        futures = [pool.submit(write, rows) for rows in chunks]
        try:
            for future in futures:
                done = future.result()
                stats.planned += done
                checkpoint("plan_bundles")
                if progress:
                    progress("plan", done)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def place_ready_components(
    edges: dict[str, list[str]], level: int, bundle_size: int, cycles_in_one_bundle: bool
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Place every cycle that depends on nothing else unplaced on ``level``.

    Returns the placement rows (uid, level, scc) and the references to defer.
    A component that fits in a bundle keeps its references (``scc`` keeps it in one
    bundle); a bigger one has all its internal references deferred, so its members
    no longer depend on each other.
    """
    placed: list[dict[str, Any]] = []
    deferred: list[dict[str, str]] = []
    for component in strongly_connected_components(edges):
        members = set(component)
        if any(t not in members for uid in component for t in edges.get(uid, ())):
            continue  # depends on another unplaced component: a later round
        scc = min(component)
        keep_together = cycles_in_one_bundle and len(component) <= bundle_size
        for uid in component:
            placed.append({"uid": uid, "level": level, "scc": scc if keep_together else None})
            if not keep_together:
                deferred.extend({"from": uid, "to": t} for t in edges.get(uid, ()) if t in members)
    return placed, deferred


def strongly_connected_components(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components come out dependencies first."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(edges.get(root, ())))]
        index[root] = lowlink[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in edges:
                    continue
                if succ not in index:
                    index[succ] = lowlink[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(edges.get(succ, ()))))
                    advanced = True
                    break
                if succ in on_stack:
                    lowlink[node] = min(lowlink[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


class BundlePacker:
    """Greedy packing of units (a cycle, or one resource) into numbered bundles.

    A bundle holds at most ``bundle_size`` resources and ``bundle_size *
    REFERENCES_PER_ENTRY`` references; a unit is never split, so one bigger than
    that gets a bundle of its own.
    """

    def __init__(self, bundle_size: int, first_number: int):
        self.bundle_size = bundle_size
        self.max_references = bundle_size * REFERENCES_PER_ENTRY
        self.number = first_number
        self.filled = 0
        self.references = 0

    def add(self, size: int, references: int = 0) -> int:
        """Return the bundle number for a unit of ``size`` resources with ``references`` in all."""
        if self.filled and (
            self.filled + size > self.bundle_size or self.references + references > self.max_references
        ):
            self.close()
        self.filled += size
        self.references += references
        return self.number

    def close(self) -> None:
        """End the current bundle (at the end of each level)."""
        if self.filled:
            self.number += 1
            self.filled = 0
            self.references = 0
