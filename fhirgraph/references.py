"""Find, classify and rewrite the references inside a raw FHIR resource (pure functions).

A reference is any JSON object with a string ``reference`` member, wherever it
sits: top level, nested backbone elements, lists, extensions and contained
resources. Each one is identified by its element path, e.g. ``subject``,
``participant[0].individual`` or ``contained[1].extension[0].valueReference``;
the same walk order is used to find and to rewrite, so paths match.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from fhirgraph.resource_types import is_resource_type

JSON = dict[str, Any]

# FHIR id: 1-64 characters from this set.
_ID = r"[A-Za-z0-9\-\.]{1,64}"
_RELATIVE = re.compile(rf"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_ID})(?:/_history/(?P<version>{_ID}))?$")
_CONDITIONAL = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)\?(?P<query>.+)$")
_ID_ONLY = re.compile(rf"^{_ID}$")


class ReferenceKind(StrEnum):
    RELATIVE = "relative"  # Patient/123
    VERSIONED = "versioned"  # Patient/123/_history/2
    ABSOLUTE = "absolute"  # http://source/fhir/Patient/123 (on the source base)
    CONTAINED = "contained"  # #contained-id: stays inside the resource
    URN = "urn"  # urn:uuid:... / urn:oid:...: only meaningful inside a bundle
    CONDITIONAL = "conditional"  # Patient?identifier=sys|val
    FOREIGN = "foreign"  # absolute URL on another host: kept, never fetched
    INVALID = "invalid"


#: kinds that become an edge to a resource on the source
RESOLVABLE_KINDS = frozenset({ReferenceKind.RELATIVE, ReferenceKind.VERSIONED, ReferenceKind.ABSOLUTE})


@dataclass(frozen=True)
class Reference:
    """One classified reference string."""

    reference: str
    kind: ReferenceKind
    resource_type: str | None = None
    resource_id: str | None = None
    version: str | None = None
    detail: str = ""

    @property
    def resource_key(self) -> str | None:
        """``Type/id`` of the source resource this points at, if it points at one."""
        if self.kind in RESOLVABLE_KINDS and self.resource_type and self.resource_id:
            return f"{self.resource_type}/{self.resource_id}"
        return None


@dataclass(frozen=True)
class FoundReference:
    """A reference found at an element path of a resource."""

    path: str
    reference: Reference


def normalise_base(base: str) -> str:
    """Canonical form of a FHIR base URL: no trailing slash, lower-case scheme and host."""
    parts = urlsplit(base.strip())
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


def classify(reference: str, source_base: str | None = None) -> Reference:
    """Classify a reference string; ``source_base`` decides which absolute URLs are local."""
    if reference.startswith("#"):
        return Reference(reference, ReferenceKind.CONTAINED)
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        return Reference(reference, ReferenceKind.URN)
    if match := _RELATIVE.match(reference):
        return _typed(reference, match, ReferenceKind.RELATIVE)
    conditional = _CONDITIONAL.match(reference)
    if "://" in reference and not conditional:
        return _classify_absolute(reference, source_base)
    if match := conditional:
        rtype = match["type"]
        if not is_resource_type(rtype):
            return Reference(reference, ReferenceKind.INVALID, detail=f"unknown resource type {rtype}")
        return Reference(reference, ReferenceKind.CONDITIONAL, resource_type=rtype)
    return Reference(reference, ReferenceKind.INVALID, detail=_why_invalid(reference))


def _typed(reference: str, match: re.Match[str], kind: ReferenceKind) -> Reference:
    rtype, rid, version = match["type"], match["id"], match["version"]
    if not is_resource_type(rtype):
        return Reference(reference, ReferenceKind.INVALID, detail=f"unknown resource type {rtype}")
    if version is not None and kind is ReferenceKind.RELATIVE:
        kind = ReferenceKind.VERSIONED
    return Reference(reference, kind, resource_type=rtype, resource_id=rid, version=version)


def _classify_absolute(reference: str, source_base: str | None) -> Reference:
    if source_base is not None:
        base = normalise_base(source_base)
        candidate = normalise_base(reference)
        if candidate.startswith(base + "/"):
            match = _RELATIVE.match(candidate[len(base) + 1 :])
            if match is None:
                return Reference(
                    reference, ReferenceKind.INVALID, detail="URL on the source base is not Type/id"
                )
            found = _typed(reference, match, ReferenceKind.RELATIVE)
            if found.kind is ReferenceKind.INVALID:
                return found
            return Reference(
                reference,
                ReferenceKind.ABSOLUTE,
                resource_type=found.resource_type,
                resource_id=found.resource_id,
                version=found.version,
            )
    parts = urlsplit(reference)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return Reference(reference, ReferenceKind.INVALID, detail="not an http(s) URL")
    return Reference(reference, ReferenceKind.FOREIGN)


def _why_invalid(reference: str) -> str:
    if not reference:
        return "empty reference"
    if _ID_ONLY.match(reference):
        return "a bare id without a resource type"
    if "/" in reference:
        rtype = reference.split("/", 1)[0]
        if not is_resource_type(rtype):
            return f"unknown resource type {rtype}"
        return "id is not 1-64 characters of A-Z a-z 0-9 - ."
    return "not Type/id, an absolute URL, #id, urn:uuid or a conditional reference"


def walk(resource: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(path, reference_object)`` for every object with a string ``reference``.

    The top-level ``id``/``meta`` are skipped (they hold no references). The objects
    yielded are the ones inside ``resource``, so callers may edit them in place.
    """
    yield from _walk(resource, "")


def _walk(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield path, node
        for key, value in node.items():
            if isinstance(value, dict | list):
                yield from _walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, dict | list):
                yield from _walk(item, f"{path}[{index}]")


def find_references(resource: Mapping[str, Any], source_base: str | None = None) -> list[FoundReference]:
    """Every reference in ``resource``, classified, in walk order."""
    return [FoundReference(path, classify(obj["reference"], source_base)) for path, obj in walk(resource)]


#: a rewrite plan: path -> new reference string, or None to remove the reference
Rewrites = Mapping[str, str | None]


def rewrite(resource: Mapping[str, Any], rewrites: Rewrites) -> JSON:
    """Return a deep copy of ``resource`` with references replaced or removed by path.

    Removing keeps ``display``/``identifier`` if present; a reference object left
    empty is removed from its parent (list item or member), and so are lists
    left empty.
    """
    result: JSON = copy.deepcopy(dict(resource))
    if not rewrites:
        return result
    removals: list[str] = []
    for path, obj in walk(result):
        if path not in rewrites:
            continue
        new = rewrites[path]
        if new is None:
            del obj["reference"]
            if not obj:
                removals.append(path)
        else:
            obj["reference"] = new
    # remove deepest paths first so list indices of earlier paths stay valid
    for path in sorted(removals, key=_path_sort_key, reverse=True):
        _remove_path(result, path)
    return result


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parse_path(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _STEP.findall(path)]


def _path_sort_key(path: str) -> list[tuple[int, str | int]]:
    return [(1, step) if isinstance(step, int) else (0, step) for step in _parse_path(path)]


def _remove_path(root: JSON, path: str) -> None:
    steps = _parse_path(path)
    parents: list[tuple[Any, str | int]] = []
    node: Any = root
    for step in steps:
        parents.append((node, step))
        node = node[step]
    # remove the element, then any container it leaves empty (but never the root)
    for container, step in reversed(parents):
        if isinstance(container, list):
            assert isinstance(step, int)
            del container[step]
        else:
            del container[step]
        if container or container is root:
            break


SOURCE_ONLY_META = ("versionId", "lastUpdated", "source")


def strip_source_metadata(resource: Mapping[str, Any]) -> JSON:
    """Copy without ``id`` and the server-owned ``meta`` members of the source."""
    result: JSON = {k: v for k, v in resource.items() if k != "id"}
    meta = result.get("meta")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if k not in SOURCE_ONLY_META}
        if kept:
            result["meta"] = kept
        else:
            del result["meta"]
    return result
