"""What changed on the source since a transfer was staged: pure functions for ``sync``.

A staged resource carries its source version and a content hash. The hash is
over the raw JSON without what the source server owns (``id``, ``meta.versionId``,
``meta.lastUpdated``, ``meta.source``), so a new version whose content is the same
(a server that bumps versions on a no-op write, a tag fhirgraph never sends) is
not sent again. Decimals keep their text (``7.10`` and ``7.1`` differ), as
everywhere in fhirgraph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fhirgraph import jsontext
from fhirgraph.jsontext import JSON
from fhirgraph.references import classify, strip_source_metadata

__all__ = ["HistoryEntry", "content_hash", "history_entries"]


def content_hash(resource: Mapping[str, Any]) -> str:
    """SHA-256 of the resource's content, independent of key order and of server metadata."""
    canonical = jsontext.dumps(strip_source_metadata(resource), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class HistoryEntry:
    """One version in a source history: the resource as of that version, or a deletion."""

    key: str
    version: str | None
    #: None when this version is the deletion of the resource
    resource: JSON | None

    @property
    def deleted(self) -> bool:
        return self.resource is None


def history_entries(page: Mapping[str, Any], source_base: str) -> Iterator[HistoryEntry]:
    """The versions in one page of a ``_history`` Bundle, in its order (newest first on HAPI).

    A deletion has ``request.method`` DELETE and no resource; its ``Type/id`` comes from
    ``request.url`` (``Patient/1/_history/2``) or the ``fullUrl``.
    """
    for entry in page.get("entry", []):
        resource = entry.get("resource")
        request = entry.get("request") or {}
        if isinstance(resource, dict) and request.get("method") != "DELETE":
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if isinstance(rtype, str) and isinstance(rid, str):
                version = (resource.get("meta") or {}).get("versionId")
                yield HistoryEntry(f"{rtype}/{rid}", version, resource)
            continue
        where = request.get("url") or entry.get("fullUrl") or ""
        ref = classify(where, source_base)
        if ref.resource_key is not None:
            etag = str((entry.get("response") or {}).get("etag") or "")
            version = ref.version or (etag.removeprefix("W/").strip('"') or None)
            yield HistoryEntry(ref.resource_key, version, None)
