"""Seeds of a crawl: searches, operations and explicit resources, parsed and checked before use."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhirgraph.errors import ConfigError
from fhirgraph.jsontext import JSON
from fhirgraph.references import ReferenceKind, classify
from fhirgraph.resource_types import check_resource_type


@dataclass(frozen=True)
class SearchSeed:
    """``GET [base]/{resource_type}?{params}``, at most ``limit`` matches (None: all)."""

    resource_type: str
    params: tuple[tuple[str, str], ...] = ()
    limit: int | None = None
    page_size: int = 500
    #: an operation path instead of a type search, e.g. ``Patient/1/$everything``
    path: str | None = None


@dataclass(frozen=True)
class ExplicitSeeds:
    """Resources named by reference (``Type/id``), read fresh from the source.

    Resources handed to the Python API are seeded this way too, so that the
    target receives the source's exact JSON, never a re-serialised copy.
    """

    references: tuple[str, ...] = ()


Seeds = SearchSeed | ExplicitSeeds


def validate_resource(resource: Any, where: str = "resource") -> JSON:
    """Check that a dict is a FHIR resource with a server-assigned id; return it."""
    if not isinstance(resource, dict):
        raise ConfigError(
            f"{where} is a {type(resource).__name__}, not a FHIR resource (a dict with resourceType)"
        )
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        raise ConfigError(f"{where} has no resourceType; is it a FHIR resource?")
    check_resource_type(rtype)
    rid = resource.get("id")
    if not isinstance(rid, str) or not rid:
        raise ConfigError(
            f"{where} ({rtype}) has no id; only resources read from the source server can be transferred"
        )
    ref = classify(f"{rtype}/{rid}")
    if ref.kind is not ReferenceKind.RELATIVE:
        raise ConfigError(f"{where} has an invalid id {rid!r}: use 1-64 characters of A-Z a-z 0-9 - .")
    return resource


def seed_key(reference: str, source_base: str) -> str:
    """``Type/id`` of an explicit seed, which must name a resource on the source."""
    ref = classify(reference, source_base)
    if ref.resource_key is None:
        what = ref.detail or f"a {ref.kind} reference"
        raise ConfigError(
            f"resource {reference!r} is not a Type/id reference to the source ({what}); "
            "give e.g. Patient/123",
            hint="resource",
        )
    return ref.resource_key


def check_seeds(seeds: Iterable[Seeds], source_base: str) -> None:
    """Reject bad seeds before anything is staged."""
    for seed in seeds:
        if isinstance(seed, ExplicitSeeds):
            for reference in seed.references:
                seed_key(reference, source_base)
        else:
            check_resource_type(seed.resource_type)


_OPERATION = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})/\$(?P<op>[a-z][A-Za-z-]*)$")


def parse_seed(text: str, limit: int | None = None) -> SearchSeed:
    """A seed from ``Condition?code=x&_include=Condition:subject`` or ``Patient/1/$everything``."""
    head, _, _ = text.partition("?")
    if match := _OPERATION.match(head.strip()):
        check_resource_type(match["type"])
        _, params = parse_search(f"{match['type']}?{text.partition('?')[2]}")
        return SearchSeed(match["type"], params, limit, path=head.strip())
    rtype, params = parse_search(text)
    return SearchSeed(rtype, params, limit)


def check_include(include: str) -> str:
    """``Type:param`` or ``Type:param:TargetType`` (or ``*``), as ``_include`` takes it."""
    if include == "*":
        return include
    parts = include.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(
            f"include {include!r} is not TYPE:PARAM (e.g. Condition:subject or Encounter:participant:Practitioner)",
            hint="include",
        )
    check_resource_type(parts[0])
    if len(parts) == 3:
        check_resource_type(parts[2])
    return include


def parse_search(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Split ``Condition?code=x&_include=Condition:subject`` into type and parameters."""
    rtype, _, query = text.partition("?")
    check_resource_type(rtype.strip())
    params: list[tuple[str, str]] = []
    for part in filter(None, query.split("&")):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise ConfigError(f"search parameter {part!r} in {text!r} is not name=value")
        params.append((name, value))
    return rtype.strip(), tuple(params)


def seed_to_json(seed: Seeds) -> str:
    """A seed as the transfer keeps it, so that ``sync`` can run it again."""
    if isinstance(seed, ExplicitSeeds):
        return json.dumps({"resources": list(seed.references)})
    return json.dumps(
        {
            "type": seed.resource_type,
            "params": [list(p) for p in seed.params],
            "limit": seed.limit,
            "page_size": seed.page_size,
            "path": seed.path,
        }
    )


def seed_from_json(text: str) -> Seeds:
    """The seed that :func:`seed_to_json` wrote."""
    data = json.loads(text)
    if "resources" in data:
        return ExplicitSeeds(references=tuple(data["resources"]))
    return SearchSeed(
        data["type"],
        tuple((name, value) for name, value in data["params"]),
        data["limit"],
        data["page_size"],
        data["path"],
    )
