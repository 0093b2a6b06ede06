"""Seeds of a crawl: searches, operations, Bulk Data exports and explicit resources, parsed and
checked before use."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

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


@dataclass(frozen=True)
class ExportSeed:
    """A Bulk Data export of the source (``$export``, ``Patient/$export``, ``Group/<id>/$export``):
    an asynchronous job whose NDJSON files are staged instead of paging searches.

    ``params`` may hold ``_type`` (comma-separated resource types), ``_typeFilter``
    (``Type?search``, repeatable), ``_since`` (an instant: only what changed after it) and,
    for ``Patient/$export`` and ``Group/<id>/$export``, ``patient`` (comma-separated
    ``Patient/<id>`` references, repeatable: only their compartments).
    """

    #: the kick-off path on the source: ``$export``, ``Patient/$export`` or ``Group/<id>/$export``
    path: str = "$export"
    params: tuple[tuple[str, str], ...] = ()


Seeds = SearchSeed | ExplicitSeeds | ExportSeed


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
        elif isinstance(seed, ExportSeed):
            check_export(seed)
        else:
            check_resource_type(seed.resource_type)


_OPERATION = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})/\$(?P<op>[a-z][A-Za-z-]*)$")


_EXPORT = re.compile(r"^(?:(?P<type>Patient)/|Group/(?P<group>[A-Za-z0-9\-.]{1,64})/)?\$export$")
#: the kick-off parameters fhirgraph passes on; the others would change what the files hold
EXPORT_PARAMS = ("_type", "_typeFilter", "_since", "patient")
_PATIENT = re.compile(r"^Patient/[A-Za-z0-9\-.]{1,64}$")
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$")


def parse_seed(text: str, limit: int | None = None) -> SearchSeed | ExportSeed:
    """A seed from ``Condition?code=x&_include=Condition:subject``, ``Patient/1/$everything``
    or a Bulk Data export: ``$export?_type=Patient,Observation``, ``Patient/$export``,
    ``Group/5/$export``."""
    head = text.partition("?")[0]
    if "$export" in head:
        if limit is not None:
            raise ConfigError(
                f"{text!r} is a Bulk Data export, which takes no limit: restrict it with _type, "
                "_typeFilter or _since"
            )
        return parse_export(text)
    if match := _OPERATION.match(head.strip()):
        check_resource_type(match["type"])
        _, params = parse_search(f"{match['type']}?{text.partition('?')[2]}")
        return SearchSeed(match["type"], params, limit, path=head.strip())
    rtype, params = parse_search(text)
    return SearchSeed(rtype, params, limit)


def parse_export(text: str) -> ExportSeed:
    """``$export``, ``Patient/$export`` or ``Group/<id>/$export``, with ``_type``, ``_typeFilter``,
    ``_since`` and (not for ``$export``) ``patient`` (``Patient/1,Patient/2``, repeatable)."""
    head, _, query = text.strip().partition("?")
    if not _EXPORT.match(head):
        raise ConfigError(
            f"{text!r} is not a Bulk Data export: give $export, Patient/$export or Group/<id>/$export "
            "(with _type, _typeFilter or _since)",
            hint="seeds",
        )
    params: list[tuple[str, str]] = []
    for part in filter(None, query.split("&")):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise ConfigError(f"export parameter {part!r} in {text!r} is not name=value", hint="seeds")
        params.append((name, unquote(value)))
    return check_export(ExportSeed(head, tuple(params)))


def check_export(seed: ExportSeed) -> ExportSeed:
    """Refuse export parameters fhirgraph does not pass on, unknown types and bad instants."""
    if not _EXPORT.match(seed.path):
        raise ConfigError(
            f"{seed.path!r} is not $export, Patient/$export or Group/<id>/$export", hint="seeds"
        )
    for name, value in seed.params:
        if name not in EXPORT_PARAMS:
            raise ConfigError(
                f"{seed.path} parameter {name!r} is not supported: use {', '.join(EXPORT_PARAMS)}",
                hint="seeds",
            )
        if name == "_type":
            for rtype in value.split(","):
                check_resource_type(rtype.strip())
        elif name == "_typeFilter":
            check_resource_type(value.partition("?")[0].strip())
        elif name == "patient":
            if not seed.path.endswith("/$export"):
                raise ConfigError(
                    "patient= restricts Patient/$export or Group/<id>/$export, not $export", hint="seeds"
                )
            for reference in value.split(","):
                if not _PATIENT.match(reference.strip()):
                    raise ConfigError(
                        f"patient={reference!r} is not a Patient reference such as Patient/123", hint="seeds"
                    )
        elif not _INSTANT.match(value):
            raise ConfigError(
                f"_since={value!r} is not a FHIR instant such as 2026-01-31T12:00:00Z", hint="seeds"
            )
    names = [name for name, _ in seed.params]
    if names.count("_type") > 1 or names.count("_since") > 1:
        raise ConfigError(f"{seed.path}: give _type and _since at most once each", hint="seeds")
    return seed


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
    if isinstance(seed, ExportSeed):
        return json.dumps({"export": seed.path, "params": [list(p) for p in seed.params]})
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
    if "export" in data:
        return ExportSeed(data["export"], tuple((name, value) for name, value in data["params"]))
    return SearchSeed(
        data["type"],
        tuple((name, value) for name, value in data["params"]),
        data["limit"],
        data["page_size"],
        data["path"],
    )
