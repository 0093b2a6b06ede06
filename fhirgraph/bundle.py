"""Build a bundle's transaction from its staged members: pure, no Neo4j and no HTTP.

Each member becomes one :class:`Entry`, which carries everything the load needs
about it: the member, its linkage hash, whether a deferred cycle reference was
left out (its pending update) and the bundle entry the target receives. The
resource in it is the raw JSON as read, with its references rewritten
(``urn:uuid:`` for members of the same bundle, the target ids already recorded
for earlier bundles), the source's ``id``/``meta`` members dropped and the
linkage tag added.

The plan defers the cycle-closing references of a cycle that does not fit in one
bundle: they are left out of the create, and a second phase puts them back with
a PUT to the target id the create got. Both phases build their entries here, in
the same way; they differ only in the request (:data:`Phase`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

from fhirgraph import jsontext
from fhirgraph.errors import FhirTerminalError, TransferStateError
from fhirgraph.jsontext import JSON
from fhirgraph.linkage import LINKAGE_SYSTEM, LinkageKey, key_tag, linkage_tag, without_fhirgraph_tags
from fhirgraph.references import Rewrites, rewrite, strip_source_metadata
from fhirgraph.staging import entry_full_url

__all__ = [
    "Entry",
    "Member",
    "Phase",
    "StagedReference",
    "batch",
    "blocked_members",
    "build_entry",
    "create_entries",
    "parse_location",
    "reference_rewrites",
    "target_resource",
    "transaction",
    "update_entries",
    "without_held_back_references",
]

#: ``create``: a POST without the deferred references; ``update``: a PUT to the target id with them
Phase = Literal["create", "update"]

_LOCATION = re.compile(
    r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<version>[^/]+))?/?$"
)


class StagedReference(TypedDict):
    """One reference of a member as the load reads it from the graph: where its target went."""

    path: str
    kind: str
    #: a cycle-closing reference left out of the create and put back by the update
    deferred: bool
    #: its target will never be on the target server (the plan dropped it): the reference is removed
    dropped: bool
    uid: str
    type: str
    target_id: str | None
    target_version: str | None
    bundle: int | None
    status: str
    #: the target's ``Type/id`` on the source, and why it is not on the target (rejected, blocked)
    key: NotRequired[str]
    error: NotRequired[str | None]


@dataclass(frozen=True)
class Member:
    """A staged resource of a bundle, with its references."""

    uid: str
    key: str
    type: str
    json: str
    refs: tuple[StagedReference, ...]
    target_id: str | None = None
    #: the strongly connected component (cycle) it belongs to, if any: sent together or not at all
    scc: str | None = None


@dataclass(frozen=True)
class Entry:
    """One member's entry in a transaction. ``bundle_entry`` is never changed once built."""

    member: Member
    linkage_hash: str
    #: a deferred cycle reference was left out: the member waits for the second phase
    pending_update: bool
    #: what the target receives: ``fullUrl`` (creates only), ``resource`` and ``request``
    bundle_entry: JSON

    @property
    def resource_type(self) -> str:
        return self.member.type

    def conditional_create(self) -> JSON:
        """The bundle entry as a create on condition that the target holds no resource with
        this linkage tag (``ifNoneExist``); if it holds one, it answers with that copy."""
        request = self.bundle_entry["request"]
        if request["method"] != "POST":
            raise ValueError(f"only a create can be conditional, not a {request['method']}")
        condition = f"_tag={LINKAGE_SYSTEM}|{self.linkage_hash}"
        return {**self.bundle_entry, "request": {**request, "ifNoneExist": condition}}

    def conditional_update(self, version: str | None) -> JSON:
        """The bundle entry as an update on condition that the target copy is still at
        ``version`` (``ifMatch``), the one fhirgraph wrote; None: unconditional."""
        request = self.bundle_entry["request"]
        if request["method"] != "PUT":
            raise ValueError(f"only an update can be conditional on a version, not a {request['method']}")
        if version is None:
            return self.bundle_entry
        return {**self.bundle_entry, "request": {**request, "ifMatch": f'W/"{version}"'}}


def reference_rewrites(
    member: Member, in_bundle: Mapping[str, str], *, phase: Phase
) -> tuple[Rewrites, bool]:
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
    resource = without_fhirgraph_tags(
        strip_source_metadata(rewrite(jsontext.loads(member.json), rewrites, in_place=True))
    )
    meta = resource.setdefault("meta", {})
    meta["tag"] = [*meta.get("tag", []), linkage_tag(linkage_hash), key_tag(fingerprint)]
    return resource


def build_entry(
    member: Member, *, key: LinkageKey, source_base: str, in_bundle: Mapping[str, str], phase: Phase
) -> Entry:
    """``member``'s entry: a POST with a ``fullUrl`` from ``in_bundle`` (the ``urn:uuid:`` of each
    member of its bundle) to create it, or a PUT to its target id to update it."""
    rewrites, deferred = reference_rewrites(member, in_bundle, phase=phase)
    linkage_hash = key.hash(source_base, member.key)
    resource = target_resource(member, rewrites, linkage_hash, key.fingerprint)
    if phase == "create":
        bundle_entry = {
            "fullUrl": in_bundle[member.uid],
            "resource": resource,
            "request": {"method": "POST", "url": member.type},
        }
    else:
        resource["id"] = member.target_id
        bundle_entry = {
            "resource": resource,
            "request": {"method": "PUT", "url": f"{member.type}/{member.target_id}"},
        }
    return Entry(member, linkage_hash, deferred, bundle_entry)


def create_entries(members: Sequence[Member], *, key: LinkageKey, source_base: str) -> list[Entry]:
    """The entries that create one bundle's members, in order; they refer to each other by ``urn:uuid:``."""
    in_bundle = {m.uid: entry_full_url(m.uid) for m in members}
    return [
        build_entry(m, key=key, source_base=source_base, in_bundle=in_bundle, phase="create") for m in members
    ]


def update_entries(members: Sequence[Member], *, key: LinkageKey, source_base: str) -> list[Entry]:
    """The entries that put back the deferred references of members already created, in order."""
    return [build_entry(m, key=key, source_base=source_base, in_bundle={}, phase="update") for m in members]


def transaction(bundle_entries: Iterable[JSON]) -> JSON:
    """A transaction Bundle of these bundle entries."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(bundle_entries)}


def batch(bundle_entries: Iterable[JSON]) -> JSON:
    """A batch Bundle: the target processes each entry on its own and answers each."""
    return {"resourceType": "Bundle", "type": "batch", "entry": list(bundle_entries)}


def parse_location(location: str) -> tuple[str, str, str | None]:
    """``(type, id, version)`` of a location the target answered a transaction entry with."""
    match = _LOCATION.search(location.split("?", 1)[0])
    if not match:
        raise FhirTerminalError(f"target answered with an unreadable location {location!r}")
    return match["type"], match["id"], match["version"]


# -- what refers to resources the target refused ----------------------------------

#: statuses of resources that will not reach the target in this run: their referrers are held back
HELD_BACK = frozenset({"rejected", "blocked"})
#: a block reason (a chain) is cut to this many characters
MAX_REASON = 1000


def _reason(ref: StagedReference) -> str:
    error = ref.get("error") or ""
    return error if error.startswith("blocked:") else f"{ref['status']}: {error}".rstrip(": ")


def blocked_members(members: Sequence[Member]) -> dict[str, str]:
    """The members (by uid) that refer to a rejected or blocked resource, each with the chain
    that leads there (``blocked: result[1] -> Observation/o9 (rejected: 422: ...)``); a member
    referring to a member blocked here is blocked too. Dropped references do not count."""
    keys = {m.uid: m.key for m in members}
    reasons = {ref["uid"]: _reason(ref) for m in members for ref in m.refs if ref["status"] in HELD_BACK}
    blocked: dict[str, str] = {}
    changed = bool(reasons)
    while changed:
        changed = False
        for member in members:
            if member.uid in blocked:
                continue
            for ref in member.refs:
                reason = blocked.get(ref["uid"]) or reasons.get(ref["uid"])
                if reason is None or ref["dropped"]:
                    continue
                target = keys.get(ref["uid"]) or ref.get("key") or ref["uid"].split("|", 1)[-1]
                blocked[member.uid] = f"blocked: {ref['path']} -> {target} ({reason})"[:MAX_REASON]
                changed = True
                break
    return blocked


def without_held_back_references(members: Sequence[Member]) -> tuple[list[Member], list[dict[str, str]]]:
    """The members with every reference to a rejected or blocked resource dropped, and a row
    (uid, path, because) per reference dropped, for the graph."""
    kept: list[Member] = []
    rows: list[dict[str, str]] = []
    for member in members:
        refs: list[StagedReference] = []
        for ref in member.refs:
            if ref["status"] in HELD_BACK and not ref["dropped"]:
                ref = {**ref, "dropped": True}
                rows.append({"uid": member.uid, "path": ref["path"], "because": ref["status"]})
            refs.append(ref)
        kept.append(dataclasses.replace(member, refs=tuple(refs)) if rows else member)
    return kept, rows
