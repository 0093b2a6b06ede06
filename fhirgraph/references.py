"""Find, classify and rewrite the references inside a raw FHIR resource (pure functions).

Three kinds of element point at another resource (``ReferenceElement``):

- ``reference``: any JSON object with a string ``reference`` member, wherever it
  sits (top level, backbone elements, lists, extensions, contained resources);
  its path names the object: ``subject``, ``participant[0].individual``.
- ``canonical``: an element of FHIR type canonical (``ActivityDefinition.library``,
  ``PlanDefinition.action.definitionCanonical``, ``RelatedArtifact.resource``, an
  extension's ``valueCanonical``, ...). HAPI treats ``Type/id`` there as a local
  reference and enforces it; the path names the string: ``library[0]``.
- ``attachment``: the ``url`` of an Attachment (``DocumentReference.content.attachment``,
  ``Patient.photo``, ``valueAttachment``, ...) naming a Binary on the source; the path
  ends in the url: ``content[0].attachment.url``.

Which elements are canonicals or Attachments comes from the R4 definitions
(``fhirgraph.r4_elements``, generated), so the walk is typed: it follows the
resource's ``resourceType`` (a contained resource's own, inside ``contained``), and
an extension at any depth by its ``value[x]``. Finding and rewriting share one
walk, so paths match. The entries of a Bundle stored as a resource are walked but
point at nothing on the server (``find_references``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

from fhirgraph import r4_elements
from fhirgraph.jsontext import JSON
from fhirgraph.resource_types import is_resource_type

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
    # absolute URL on another host, a canonical/url naming nothing on the source, or anything
    # inside a stored Bundle's entries (find_references): kept
    FOREIGN = "foreign"
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


#: which kind of element holds a reference (module docstring)
ReferenceElement = Literal["reference", "canonical", "attachment"]


@dataclass(frozen=True)
class FoundReference:
    """A reference found at an element path of a resource.

    ``path`` names a Reference object (``subject``), a canonical string (``library[0]``) or
    an Attachment's url (``content[0].attachment.url``); ``element`` says which.
    """

    path: str
    reference: Reference
    element: ReferenceElement = "reference"


def normalise_base(base: str) -> str:
    """Canonical form of a FHIR base URL: no trailing slash, lower-case scheme and host."""
    parts = urlsplit(base.strip())
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


def classify(
    reference: str, source_base: str | None = None, *, element: ReferenceElement = "reference"
) -> Reference:
    """Classify a reference string; ``source_base`` decides which absolute URLs are local.

    For a ``canonical`` only ``Type/id`` and ``<source base>/Type/id`` point at a source
    resource (RELATIVE, ABSOLUTE); for an ``attachment`` url only ``Binary/id`` and
    ``<source base>/Binary/id`` do; ``#id`` is CONTAINED. Every other value of those two
    (``Library/x|1.0``, ``http://hl7.org/fhir/...``, other hosts, ``/_history/n``,
    ``urn:uuid:``, any other URL) is FOREIGN: kept as it is, never fetched or rewritten.
    """
    if element != "reference":
        return _classify_url(reference, source_base, element)
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


@lru_cache(maxsize=4096)  # canonicals repeat a lot (meta.profile on every resource)
def _classify_url(value: str, source_base: str | None, element: ReferenceElement) -> Reference:
    if value.startswith("#"):
        return Reference(value, ReferenceKind.CONTAINED)
    found = classify(value, source_base)
    points_at_one = found.kind in (ReferenceKind.RELATIVE, ReferenceKind.ABSOLUTE) and found.version is None
    if points_at_one and (element == "canonical" or found.resource_type == "Binary"):
        return found
    if element == "attachment":
        detail = "not a Binary on the source"
    elif "|" in value:
        detail = "a canonical with a version is not a reference to one resource"
    else:
        detail = "not Type/id or a URL on the source base"
    return Reference(value, ReferenceKind.FOREIGN, detail=detail)


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


# -- the typed walk -----------------------------------------------------------------------
# Each type's table from r4_elements becomes a tree: member name -> subtree, or one of
# these leaf markers. Members a tree does not name are untyped (only their extensions and
# Reference objects matter), so the walk costs one dict lookup per member.
_Tree: TypeAlias = "dict[str, _Tree | str]"
_CANONICAL = "canonical"  # a canonical string, or a list of them
_ATTACHMENT_URL = "attachment"  # the url of an Attachment
_RESOURCE = "Resource"  # a resource inside this one: typed by its own resourceType


def _typed_tree(extension: _Tree) -> _Tree:
    return {"extension": extension, "modifierExtension": extension}


def _fill(tree: _Tree, entries: Mapping[str, str], datatypes: Mapping[str, _Tree]) -> None:
    def place(path: str, node: _Tree | str) -> None:
        *parents, name = path.split(".")
        parent = tree
        for step in parents:
            child = parent.setdefault(step, _typed_tree(datatypes["Extension"]))
            assert isinstance(child, dict)
            parent = child
        parent[name] = node

    def at(path: str) -> _Tree | str | None:
        node: _Tree | str | None = tree
        for step in path.split("."):
            node = node.get(step) if isinstance(node, dict) else None
        return node

    pending: dict[str, str] = {}  # path -> the path whose element it repeats
    for path, type_name in entries.items():
        if type_name.startswith("#"):
            pending[path] = type_name[1:]
        elif type_name in (_CANONICAL, _RESOURCE):
            place(path, type_name)
        else:
            place(path, datatypes[type_name])
    # a contentReference repeats another backbone element: share its subtree (recursion included)
    while pending:
        ready = {path: node for path, target in pending.items() if (node := at(target)) is not None}
        assert ready, f"unresolvable content references {pending}"
        for path, node in ready.items():
            place(path, node)
            del pending[path]


def _build_trees() -> tuple[dict[str, _Tree], _Tree, _Tree]:
    """Trees for every resource type in r4_elements, the default resource tree, the untyped tree."""
    extension: _Tree = {}
    extension.update(_typed_tree(extension))
    datatypes: dict[str, _Tree] = {"Extension": extension, "Attachment": _typed_tree(extension)}
    datatypes["Attachment"]["url"] = _ATTACHMENT_URL
    for name in r4_elements.DATATYPES:
        datatypes.setdefault(name, _typed_tree(extension))
    for name, entries in r4_elements.DATATYPES.items():
        _fill(datatypes[name], entries, datatypes)

    def resource_tree(resource_type: str | None) -> _Tree:
        tree = _typed_tree(extension)
        _fill(tree, r4_elements.BASES["Resource"], datatypes)
        if resource_type not in r4_elements.PLAIN_RESOURCES:
            _fill(tree, r4_elements.BASES["DomainResource"], datatypes)
        _fill(tree, r4_elements.RESOURCES.get(resource_type or "", {}), datatypes)
        return tree

    names = {*r4_elements.RESOURCES, *r4_elements.PLAIN_RESOURCES}
    return {name: resource_tree(name) for name in names}, resource_tree(None), _typed_tree(extension)


_RESOURCE_TREES, _DOMAIN_RESOURCE_TREE, _UNTYPED = _build_trees()

#: one place a reference string sits: (path, element, the dict or list holding it, key or index,
#: whether it sits inside a Bundle's entries)
_Site: TypeAlias = tuple[str, ReferenceElement, Any, Any, bool]


def _resource_tree(resource: Mapping[str, Any]) -> _Tree:
    return _RESOURCE_TREES.get(resource.get("resourceType", ""), _DOMAIN_RESOURCE_TREE)


def _sites(resource: Mapping[str, Any]) -> list[_Site]:
    """Every reference object, canonical string and Attachment url, in walk order."""
    sites: list[_Site] = []
    _walk_object(resource, "", _resource_tree(resource), sites)
    return sites


def _walk_object(
    node: Mapping[str, Any], path: str, tree: _Tree, sites: list[_Site], bundled: bool = False
) -> None:
    if isinstance(node.get("reference"), str):
        sites.append((path, "reference", node, "reference", bundled))
    prefix = f"{path}." if path else ""
    is_bundle = node.get("resourceType") == "Bundle"
    for key, value in node.items():
        spec = tree.get(key, _UNTYPED)
        if isinstance(value, str):
            if spec == _CANONICAL:
                sites.append((prefix + key, "canonical", node, key, bundled))
            elif spec == _ATTACHMENT_URL:
                sites.append((prefix + key, "attachment", node, key, bundled))
        elif isinstance(value, dict):
            _walk_object(value, prefix + key, _subtree(spec, value), sites, bundled)
        elif isinstance(value, list):
            _walk_list(value, prefix + key, spec, sites, bundled or (is_bundle and key == "entry"))


def _walk_list(
    items: list[Any], path: str, spec: _Tree | str, sites: list[_Site], bundled: bool = False
) -> None:
    for index, item in enumerate(items):
        if isinstance(item, str):
            if spec == _CANONICAL:
                sites.append((f"{path}[{index}]", "canonical", items, index, bundled))
        elif isinstance(item, dict):
            _walk_object(item, f"{path}[{index}]", _subtree(spec, item), sites, bundled)
        elif isinstance(item, list):
            _walk_list(item, f"{path}[{index}]", _UNTYPED, sites, bundled)


def _subtree(spec: _Tree | str, node: Mapping[str, Any]) -> _Tree:
    if isinstance(spec, dict):
        return spec
    if spec == _RESOURCE:
        return _resource_tree(node)
    return _UNTYPED  # an object where a canonical or url belongs: only its Reference objects count


def walk(resource: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(path, reference_object)`` for every object with a string ``reference``.

    The objects yielded are the ones inside ``resource``, so callers may edit them in
    place. Canonicals and Attachment urls are not yielded (``find_references`` has them).
    """
    for path, element, holder, _, _ in _sites(resource):
        if element == "reference":
            yield path, holder


#: why a reference inside a stored Bundle's entries is FOREIGN
IN_BUNDLE = "inside a Bundle entry: resolved within the Bundle, kept as written"


def find_references(resource: Mapping[str, Any], source_base: str | None = None) -> list[FoundReference]:
    """Every reference, canonical and Attachment url in ``resource``, classified, in walk order.

    Inside the entries of a Bundle stored as a resource (a document, message or collection)
    every one except ``#contained`` is FOREIGN: FHIR resolves it within the Bundle, against
    the fullUrl of its entry (which names the server the entry came from, not the one that
    stores the Bundle), and the Bundle is a snapshot (a document is immutable, maybe signed)
    that a copy must keep as written. The Bundle's own elements (``signature.who``) are
    references like any other resource's.
    """
    found: list[FoundReference] = []
    for path, element, holder, key, bundled in _sites(resource):
        reference = classify(holder[key], source_base, element=element)
        if bundled and reference.kind is not ReferenceKind.CONTAINED:
            reference = Reference(holder[key], ReferenceKind.FOREIGN, detail=IN_BUNDLE)
        found.append(FoundReference(path, reference, element))
    return found


#: a rewrite plan: path -> new reference string, or None to remove the reference
Rewrites = Mapping[str, str | None]


def rewrite(resource: Mapping[str, Any], rewrites: Rewrites, *, in_place: bool = False) -> JSON:
    """Return a deep copy of ``resource`` with references replaced or removed by path;
    ``in_place`` changes ``resource`` itself (a dict parsed for this, such as a staged
    resource's JSON about to be sent) and returns it, saving the copy.

    Any string may replace any of the three elements (``urn:uuid:`` inside a bundle).
    Removing a reference keeps ``display``/``identifier`` if present; removing an
    Attachment url keeps the Attachment's other members; removing a canonical deletes
    the string (and its ``_name`` extension entry in a list). An object left empty is
    removed from its parent (list item or member), and so are lists left empty; so is
    an extension left without a value (the reference removed was its value).
    """
    result: JSON = resource if in_place and isinstance(resource, dict) else copy.deepcopy(dict(resource))
    if not rewrites:
        return result
    removals: list[str] = []
    for path, element, holder, key, _ in _sites(result):
        if path not in rewrites:
            continue
        new = rewrites[path]
        if new is not None:
            holder[key] = new
        elif element == "canonical":
            removals.append(path)
        else:
            del holder[key]
            if not holder:
                removals.append(path if element == "reference" else path.rsplit(".", 1)[0])
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
    if len(steps) >= 2 and isinstance(steps[-1], int) and isinstance(steps[-2], str):
        _remove_primitive_extension(parents[-2][0], steps[-2], steps[-1])
    # remove the element, then any container it leaves empty (but never the root)
    for depth in range(len(parents) - 1, -1, -1):
        container, step = parents[depth]
        del container[step]
        if container is root or not _left_empty(container, steps[:depth]):
            break


def _left_empty(container: Any, path: list[str | int]) -> bool:
    if not container:
        return True
    # an extension left without a value and without extensions breaks FHIR's ext-1, and
    # servers drop it on write (HAPI does): it goes with the value that was removed
    in_extension_list = (
        len(path) >= 2 and isinstance(path[-1], int) and path[-2] in ("extension", "modifierExtension")
    )
    return (
        in_extension_list
        and isinstance(container, dict)
        and not any(name == "extension" or name.lstrip("_").startswith("value") for name in container)
    )


def _remove_primitive_extension(parent: Any, name: str, index: int) -> None:
    # FHIR JSON keeps a list of primitives and its extensions (``_name``) aligned by index
    extensions = parent.get("_" + name) if isinstance(parent, dict) else None
    if isinstance(extensions, list) and index < len(extensions):
        del extensions[index]
        if all(item is None for item in extensions):
            del parent["_" + name]


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
