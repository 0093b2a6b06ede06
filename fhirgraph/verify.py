"""Verify stage: read the target back through the linkage and compare with the staged source.

Each loaded resource is looked up on the target by its linkage tag (batched:
``_tag=urn:fhirgraph:linkage|h1,...|h2``), which also proves it exists exactly
once. Its content must equal the raw JSON read from the source, except for the
id, the rewritten references, the source's ``meta.versionId/lastUpdated/source``
and the linkage tag. Decimals are compared by their exact text (``120.00`` is
not ``120.0``), narratives modulo runs of whitespace (``_narrative_whitespace``).
Everything on the target that names a resource there must resolve: references,
relative canonicals (``Library/abc``) and Attachment urls naming a Binary, as
``find_references`` sees them with the target's base.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from fhirgraph import jsontext
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.jsontext import JSON
from fhirgraph.linkage import copies_by_hash, without_fhirgraph_tags
from fhirgraph.references import (
    ReferenceKind,
    classify,
    find_references,
    rewrite,
    strip_source_metadata,
    walk,
)
from fhirgraph.staging import record_verify, require_transfer

BATCH = 50
MAX_PROBLEMS = 200
Progress = Callable[[str, int], None]


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    references_checked: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


def comparable_source(source_json: str, rewrites: dict[str, str | None]) -> Any:
    resource = strip_source_metadata(rewrite(jsontext.loads(source_json), rewrites, in_place=True))
    return _narrative_whitespace(_without_versions(without_fhirgraph_tags(resource)))


def comparable_target(resource: JSON) -> Any:
    result = without_fhirgraph_tags(strip_source_metadata(resource))
    return _narrative_whitespace(_without_versions(result))


def _without_versions(resource: JSON) -> JSON:
    # servers may or may not keep /_history/n on references; compare what they point at
    for _, obj in walk(resource):
        ref = classify(obj["reference"])
        if ref.kind is ReferenceKind.VERSIONED:
            obj["reference"] = f"{ref.resource_type}/{ref.resource_id}"
    return resource


_WHITESPACE = re.compile(r"\s+")


def _narrative_whitespace(node: Any) -> Any:
    """``node`` with runs of whitespace in each narrative (``div``) as one space, except in <pre>.

    HAPI (8.8) re-indents the XHTML narrative around XML comments every time it stores it:
    ``PlanDefinition/KDN5`` of the HL7 examples gains four spaces before each ``<!-- -->``
    per write, so no copy ever equals its source. Outside <pre>, XHTML renders a run of
    whitespace as one space; everything else in a narrative still compares exactly.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "div" and isinstance(value, str):
                if "<pre" not in value:
                    node[key] = _WHITESPACE.sub(" ", value)
            else:
                _narrative_whitespace(value)
    elif isinstance(node, list):
        for item in node:
            _narrative_whitespace(item)
    return node


def resources_named(resource: Mapping[str, Any], target_base: str) -> set[tuple[str, str]]:
    """``(type, id)`` of every resource on the target that a copy there names: by a reference
    (relative, versioned or absolute on ``target_base``), a relative canonical or an
    Attachment url naming a Binary. Foreign URLs, versioned canonicals, ``#contained`` and
    conditional references name nothing to look up."""
    named: set[tuple[str, str]] = set()
    for found in find_references(resource, target_base):
        ref = found.reference
        if ref.resource_key and ref.resource_type and ref.resource_id:
            named.add((ref.resource_type, ref.resource_id))
    return named


def first_difference(expected: Any, actual: Any, path: str = "") -> str | None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            where = f"{path}.{key}" if path else key
            if key not in actual:
                return f"{where} missing on the target"
            if key not in expected:
                return f"{where} added on the target"
            found = first_difference(expected[key], actual[key], where)
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{path} has {len(actual)} items on the target, {len(expected)} on the source"
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found = first_difference(e, a, f"{path}[{index}]")
            if found:
                return found
        return None
    if expected != actual:
        return f"{path}: source {_show(expected)} != target {_show(actual)}"
    return None


def _show(value: Any) -> str:
    if jsontext.is_decimal(value):
        return str(jsontext.decimal_text(value))
    text = jsontext.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _rows_by_type(graph: Graph, transfer: str) -> Iterator[list[dict[str, Any]]]:
    for _, group in groupby(graph.stream("verify_loaded", transfer=transfer), key=lambda r: r["type"]):
        batch: list[dict[str, Any]] = []
        for row in group:
            batch.append(row)
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def verify(
    graph: Graph, target: FhirClient, transfer: str, *, progress: Progress | None = None
) -> VerifyReport:
    """Check every loaded resource of ``transfer`` on the target; never writes to the target."""
    require_transfer(graph, transfer)
    started = time.monotonic()
    report = VerifyReport()
    known_targets: set[str] = set()
    references: dict[str, set[str]] = defaultdict(set)
    for batch in _rows_by_type(graph, transfer):
        rtype = batch[0]["type"]
        found = copies_by_hash(target, rtype, [row["linkage_hash"] for row in batch])
        for row in batch:
            copies = found.get(row["linkage_hash"], [])
            _check_one(row, copies, report)
            if copies:
                for named_type, rid in resources_named(copies[0], target.base_url):
                    references[named_type].add(rid)
            known_targets.add(f"{row['type']}/{row['target_id']}")
        if progress:
            progress("verify", len(batch))
    _check_references(target, references, known_targets, report)
    report.seconds = time.monotonic() - started
    record_verify(graph, transfer, ok=report.ok, problems=report.problem_count, seconds=report.seconds)
    return report


def _check_one(row: dict[str, Any], copies: list[JSON], report: VerifyReport) -> None:
    report.checked += 1
    key = row["key"]
    if not copies:
        report.add(f"{key}: not found on the target (expected {row['type']}/{row['target_id']})")
        return
    if len(copies) > 1:
        ids = ", ".join(sorted(str(c.get("id")) for c in copies))
        report.add(f"{key}: {len(copies)} copies on the target ({ids})")
    actual = copies[0]
    if len(copies) == 1 and actual.get("id") != row["target_id"]:
        report.add(f"{key}: found on the target as {actual.get('id')}, recorded as {row['target_id']}")
    rewrites: dict[str, str | None] = {}
    for ref in row["refs"]:
        if ref is None:
            continue
        rewrites[ref["path"]] = None if ref["dropped"] else f"{ref['type']}/{ref['target_id']}"
    expected = comparable_source(row["json"], rewrites)
    target_copy = comparable_target(actual)
    difference = first_difference(expected, target_copy)
    if difference:
        report.add(f"{key} -> {row['type']}/{actual.get('id')}: {difference}")


def _check_references(
    target: FhirClient, references: dict[str, set[str]], known: set[str], report: VerifyReport
) -> None:
    for rtype, ids in references.items():
        unknown = sorted(i for i in ids if f"{rtype}/{i}" not in known)
        report.references_checked += len(ids)
        for start in range(0, len(unknown), BATCH):
            chunk = unknown[start : start + BATCH]
            present: set[str] = set()
            for page in target.pages(
                rtype, {"_id": ",".join(chunk), "_count": len(chunk), "_elements": "id"}
            ):
                present.update(e.get("resource", {}).get("id", "") for e in page.get("entry", []))
            for missing in sorted(set(chunk) - present):
                report.add(f"reference {rtype}/{missing} on the target does not resolve")
