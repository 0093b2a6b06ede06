"""The Python API, in the call shape of the older public library: ``FhirServer``, ``query``, ``transfer``.

Code written for that library keeps working::

    src = FhirServer("http://127.0.0.1:8081/fhir")
    tgt = FhirServer("http://127.0.0.1:8082/fhir")
    response = src.transfer(resources=src.query("Condition").limit(100).resources, target_server=tgt)
    print(response)

Staging settings that the call leaves out come from the environment and the
config file exactly as for the command line (``config.build_settings``); the
servers are the two ``FhirServer`` objects as given.
"""

from __future__ import annotations

import contextlib
import importlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx

from fhirgraph import commands
from fhirgraph.config import OnDangling, OnReject, ServerConfig, Settings, build_settings
from fhirgraph.errors import ConfigError
from fhirgraph.fhir.client import origin
from fhirgraph.jsontext import JSON
from fhirgraph.progress import ProgressDisplay
from fhirgraph.resource_types import check_resource_type
from fhirgraph.results import SyncResult, TransferResponse
from fhirgraph.seeds import (
    ExplicitSeeds,
    ExportSeed,
    SearchSeed,
    Seeds,
    check_export,
    parse_seed,
    validate_resource,
)
from fhirgraph.session import check_distinct, make_client


class QueryResponse:
    """The result of a query: raw dicts (exact JSON) and, on demand, typed models."""

    def __init__(self, raw: list[JSON]):
        self.raw = raw

    @property
    def resources(self) -> list[Any]:
        return [to_model(r) for r in self.raw]

    def __len__(self) -> int:
        return len(self.raw)

    def __iter__(self) -> Iterator[JSON]:
        return iter(self.raw)


def to_model(resource: JSON) -> Any:
    """A fhir.resources (R4B) model for a raw resource, for convenience only."""
    rtype = resource.get("resourceType", "")
    try:
        module = importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}")
        model = getattr(module, rtype)
    except (ImportError, AttributeError):
        raise ConfigError(f"fhir.resources has no R4B model for {rtype!r}; use .raw for dicts") from None
    try:
        return model.model_validate(resource)
    except ValueError as exc:  # pydantic's ValidationError
        first = str(exc).splitlines()[1:3]
        raise ConfigError(
            f"{rtype}/{resource.get('id')} is not a valid fhir.resources R4B model ({' '.join(first).strip()}); "
            "use .raw for the exact JSON"
        ) from None


class Query:
    """A search on a server, built fluently: ``server.query("Condition").where(code="x").limit(100)``."""

    def __init__(self, server: FhirServer, resource_type: str):
        self.server = server
        self.resource_type = check_resource_type(resource_type)
        self.params: list[tuple[str, str]] = []
        self.count: int | None = None

    def where(self, filter: str | Mapping[str, Any] | None = None, **params: Any) -> Query:
        items: list[tuple[str, Any]] = []
        if isinstance(filter, str):
            name, sep, value = filter.partition("=")
            if not sep:
                raise ConfigError(f"where({filter!r}) is not name=value")
            items.append((name, value))
        elif filter:
            items.extend(filter.items())
        items.extend(params.items())
        self.params.extend((str(k), str(v)) for k, v in items)
        return self

    def include(
        self,
        include: str | None = None,
        *,
        resource: str | None = None,
        reference_param: str | None = None,
        reverse: bool = False,
    ) -> Query:
        if include is None:
            if not (resource and reference_param):
                raise ConfigError("include() needs 'Type:param' or resource= and reference_param=")
            include = f"{resource}:{reference_param}"
        self.params.append(("_revinclude" if reverse else "_include", include))
        return self

    def limit(self, count: int) -> Query:
        if count < 1:
            raise ConfigError(f"limit must be at least 1, not {count}")
        self.count = count
        return self

    def seed(self) -> SearchSeed:
        return SearchSeed(self.resource_type, tuple(self.params), self.count)

    def pages(self) -> Iterator[JSON]:
        params = list(self.params)
        if self.count is not None and not any(k == "_count" for k, _ in params):
            params.append(("_count", str(min(self.count, 500))))
        return self.server.client.pages(self.resource_type, params)

    def __iter__(self) -> Iterator[JSON]:
        """Every matching resource (raw dict) over all pages, up to the limit."""
        seen = 0
        for page in self.pages():
            for entry in page.get("entry", []):
                if (entry.get("search") or {}).get("mode", "match") != "match":
                    continue
                if self.count is not None and seen >= self.count:
                    return
                seen += 1
                yield entry["resource"]

    def all(self) -> QueryResponse:
        return QueryResponse(list(self))

    @property
    def raw(self) -> list[JSON]:
        return self.all().raw

    @property
    def resources(self) -> list[Any]:
        return self.all().resources


class FhirServer:
    """A FHIR server, as in the older library: query it, or transfer from it to another."""

    def __init__(
        self,
        api_address: str,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        oidc_provider_url: str | None = None,
        *,
        private_key_file: str | None = None,
        key_id: str | None = None,
        algorithm: str | None = None,
        scope: str | None = None,
        token_url: str | None = None,
        timeout: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.config = ServerConfig(
            url=api_address,
            username=username,
            password=password,
            token=token,
            client_id=client_id,
            client_secret=client_secret,
            oidc_provider_url=oidc_provider_url,
            private_key_file=private_key_file,
            key_id=key_id,
            algorithm=algorithm,
            scope=scope,
            token_url=token_url,
            timeout=timeout,
        )
        #: a transport instead of the network, for tests (an httpx ``MockTransport``)
        self.transport = transport
        self.client = make_client(self.config, "source", transport=transport)
        self.api_address = self.client.base_url

    def __repr__(self) -> str:
        return f"FhirServer({self.api_address!r})"

    def query(self, resource_type: str) -> Query:
        return Query(self, resource_type)

    def export(
        self,
        types: Sequence[str] = (),
        *,
        since: str | None = None,
        type_filters: Sequence[str] = (),
        patients: bool = False,
        group: str | None = None,
        patient_ids: Sequence[str] = (),
    ) -> ExportSeed:
        """A Bulk Data ``$export`` of this server, for ``transfer(query=...)``: the job's NDJSON
        files are staged instead of paging searches (the fast path for large extracts).

        ``types`` restricts it to those resource types (``_type``), ``since`` to what changed
        after that instant (``_since``), ``type_filters`` to the matches of searches such as
        ``"Observation?code=1234-5"`` (``_typeFilter``). ``patients`` exports the Patient
        compartments (``Patient/$export``), ``group`` those of a Group's members
        (``Group/<id>/$export``); else the whole server (``$export``). ``patient_ids`` restricts
        the patients (or the members) to those (``patient``; without ``group`` it means
        ``Patient/$export``). The same as the string
        ``"Patient/$export?_type=Patient,Observation&_since=..."``.
        """
        if patients and group:
            raise ConfigError("give patients=True or group=, not both")
        patients = patients or bool(patient_ids)
        path = f"Group/{group}/$export" if group else "Patient/$export" if patients else "$export"
        params = [("_type", ",".join(types))] if types else []
        params += [("_typeFilter", search) for search in type_filters]
        params += [("_since", since)] if since else []
        params += [("patient", ",".join(f"Patient/{pid}" for pid in patient_ids))] if patient_ids else []
        return check_export(ExportSeed(path, tuple(params)))

    def transfer(
        self,
        target_server: FhirServer,
        query: Query | ExportSeed | str | None = None,
        resources: Sequence[Any] | None = None,
        get_missing: bool | None = None,
        record_linkage: bool = True,
        display: bool = False,
        *,
        transfer_name: str | None = None,
        neo4j_uri: str | None = None,
        neo4j_user: str | None = None,
        neo4j_password: str | None = None,
        neo4j_database: str | None = None,
        bundle_size: int | None = None,
        concurrency: int | None = None,
        on_dangling: OnDangling | None = None,
        on_reject: OnReject | None = None,
        key_file: str | None = None,
        match_existing: bool | None = None,
        config_file: str | None = None,
        read_concurrency: int | None = None,
        overlap: bool | None = None,
    ) -> TransferResponse:
        """Copy ``resources`` (or the results of ``query``) and, with ``get_missing``,
        everything they reference, to ``target_server`` with every reference rewritten.

        ``query`` is a :class:`Query`, a search or operation string (``"Condition?code=x"``,
        ``"Patient/1/$everything"``) or a Bulk Data export: :meth:`export` or a string such
        as ``"$export?_type=Patient,Observation"``.

        Resources are identified by type and id and read fresh from this server, so
        the target receives the exact source JSON. A staging setting left out (None)
        comes from the environment (``$NEO4J_URI``, ``$NEO4J_PASSWORD``,
        ``$FHIRGRAPH_BUNDLE_SIZE``, ...), then the config file (``config_file``,
        ``$FHIRGRAPH_CONFIG`` or ``./fhirgraph.toml``), then the defaults, exactly as
        for the command line. Without a ``transfer_name`` from any of them, each call
        is a new transfer; pass the same ``transfer_name`` again to resume one.

        With ``on_dangling`` ``"drop-reference"`` or ``"skip-resource"``, resources whose
        references are all staged are loaded while the crawl goes on (``overlap=False``: after
        it); under ``"fail"`` nothing is written before the crawl has ended.
        """
        seeds = self._seeds(query, resources)
        options = {
            **_neo4j_options(neo4j_uri, neo4j_user, neo4j_password, neo4j_database),
            ("transfer", "name"): transfer_name,
            ("transfer", "bundle_size"): bundle_size,
            ("transfer", "concurrency"): concurrency,
            ("transfer", "read_concurrency"): read_concurrency,
            ("transfer", "on_dangling"): on_dangling,
            ("transfer", "on_reject"): on_reject,
            ("transfer", "key_file"): key_file,
            ("transfer", "get_missing"): get_missing,
            ("transfer", "match_existing"): match_existing,
            ("transfer", "overlap"): overlap,
        }
        settings, transports = self._settings(target_server, options, config_file)
        with _progress(display) as progress:
            return commands.transfer(
                settings,
                seeds,
                progress=progress,
                record_linkage=record_linkage,
                transports=transports,  # type: ignore[arg-type]
            )

    def sync(
        self,
        target_server: FhirServer,
        transfer_name: str,
        query: Query | str | None = None,
        *,
        delete: bool = False,
        overwrite: bool = False,
        display: bool = False,
        neo4j_uri: str | None = None,
        neo4j_user: str | None = None,
        neo4j_password: str | None = None,
        neo4j_database: str | None = None,
        on_dangling: OnDangling | None = None,
        on_reject: OnReject | None = None,
        key_file: str | None = None,
        config_file: str | None = None,
    ) -> SyncResult:
        """Bring the copy that transfer ``transfer_name`` made on ``target_server`` up to date
        with what changed on this server since its last run (see :func:`fhirgraph.commands.sync`):
        new resources created, changed ones updated in place, deletions reported (removed from
        the target with ``delete``), copies changed on the target left alone unless ``overwrite``.
        ``query`` adds a seed to the transfer's. ``result.summary()`` says what it did;
        ``result.error()`` is the problem to raise, if any (a conflict, a refusal)."""
        options = {
            **_neo4j_options(neo4j_uri, neo4j_user, neo4j_password, neo4j_database),
            ("transfer", "name"): transfer_name,
            ("transfer", "on_dangling"): on_dangling,
            ("transfer", "on_reject"): on_reject,
            ("transfer", "key_file"): key_file,
        }
        seeds = [] if query is None else self._seeds(query, None)
        settings, transports = self._settings(target_server, options, config_file)
        with _progress(display) as progress:
            return commands.sync(
                settings,
                seeds,
                delete=delete,
                overwrite=overwrite,
                progress=progress,
                transports=transports,  # type: ignore[arg-type]
            )

    def _settings(
        self, target_server: FhirServer, options: Mapping[tuple[str, str], Any], config_file: str | None
    ) -> tuple[Settings, dict[str, httpx.BaseTransport]]:
        if not isinstance(target_server, FhirServer):
            raise ConfigError(
                f"target_server must be a FhirServer, not {type(target_server).__name__}; "
                'use FhirServer("http://host/fhir")'
            )
        settings = build_settings(
            options, config_file, default_transfer=f"api-{uuid.uuid4().hex[:12]}"
        ).with_(source=self.config, target=target_server.config)
        check_distinct(self.api_address, target_server.api_address)
        transports = {
            side: server.transport
            for side, server in (("source", self), ("target", target_server))
            if server.transport is not None
        }
        return settings, transports

    def _seeds(self, query: Query | ExportSeed | str | None, resources: Sequence[Any] | None) -> list[Seeds]:
        if (query is None) == (resources is None):
            raise ConfigError("give exactly one of query= or resources=")
        if isinstance(query, Query):
            if (
                origin(query.server.api_address) != origin(self.api_address)
                or query.server.api_address != self.api_address
            ):
                raise ConfigError("the query belongs to another server than the transfer's source")
            return [query.seed()]
        if isinstance(query, str):
            return [parse_seed(query)]
        if isinstance(query, ExportSeed):
            return [check_export(query)]
        assert resources is not None
        references = []
        for index, resource in enumerate(resources):
            if not isinstance(resource, dict) and hasattr(resource, "get_resource_type"):
                # a fhir.resources model: only its identity is used, the JSON is read from the source
                resource = {"resourceType": resource.get_resource_type(), "id": getattr(resource, "id", None)}
            raw = validate_resource(resource, f"resources[{index}]")
            references.append(f"{raw['resourceType']}/{raw['id']}")
        if not references:
            raise ConfigError("resources= is empty: nothing to transfer")
        return [ExplicitSeeds(references=tuple(references))]


def _neo4j_options(
    uri: str | None, user: str | None, password: str | None, database: str | None
) -> dict[tuple[str, str], Any]:
    return {
        ("neo4j", "uri"): uri,
        ("neo4j", "user"): user,
        ("neo4j", "password"): password,
        ("neo4j", "database"): database,
    }


@contextlib.contextmanager
def _progress(display: bool) -> Iterator[ProgressDisplay | None]:
    """A progress display on stderr while the call runs, if ``display``."""
    progress = ProgressDisplay() if display else None
    try:
        yield progress
    finally:
        if progress:
            progress.close()
