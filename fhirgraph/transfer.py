"""Orchestration: crawl + plan + load, resuming whatever is unfinished, and the Python API.

``FhirServer.transfer(...)`` has the call shape of the older public library, so
code written for it keeps working; every transfer is staged in Neo4j and can be
inspected or resumed by name.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx

from fhirgraph import crawl as crawl_stage
from fhirgraph import load as load_stage
from fhirgraph import plan as plan_stage
from fhirgraph import verify as verify_stage
from fhirgraph.config import DEFAULT_CONCURRENCY, ServerConfig, Settings, build_settings, require_password
from fhirgraph.crawl import ExplicitSeeds, SearchSeed, Seeds, validate_resource
from fhirgraph.errors import ConfigError, DanglingReference, FhirgraphError
from fhirgraph.fhir.auth import build_auth
from fhirgraph.fhir.client import FhirClient, origin
from fhirgraph.graph import Graph, GraphSettings
from fhirgraph.linkage import LinkageKey, load_key
from fhirgraph.load import BundleFailure
from fhirgraph.progress import ProgressDisplay
from fhirgraph.references import normalise_base
from fhirgraph.resource_types import check_resource_type
from fhirgraph.staging import (
    TransferLock,
    TransferRecord,
    get_transfer,
    open_transfer,
    reset_transfer,
    validate_transfer_name,
)

JSON = dict[str, Any]


def make_client(config: ServerConfig, name: str, transport: httpx.BaseTransport | None = None) -> FhirClient:
    auth = build_auth(
        username=config.username,
        password=config.password,
        token=config.token,
        client_id=config.client_id,
        client_secret=config.client_secret,
        oidc_provider_url=config.oidc_provider_url,
    )
    return FhirClient(config.url, name=name, auth=auth, timeout=config.timeout, transport=transport)


def check_distinct(source: str, target: str) -> None:
    if normalise_base(source) == normalise_base(target):
        raise ConfigError(
            f"source and target are the same server ({normalise_base(source)}); give two different servers"
        )


@dataclass
class TransferResponse:
    """What a transfer did: counts, linkage, failures and timings."""

    transfer: str
    source: str
    target: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    linkage: dict[str, str] = field(default_factory=dict)
    failures: list[BundleFailure] = field(default_factory=list)
    dangling: list[DanglingReference] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    created: int = 0
    matched_existing: int = 0
    retries: int = 0
    bundles: int = 0
    #: types sent as conditional creates, because the target held copies of them made with this key
    conditional_types: list[str] = field(default_factory=list)
    #: bundles sent again as conditional creates after a send whose outcome was unknown
    resent_bundles: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def status_totals(self) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for by_status in self.counts.values():
            for status, count in by_status.items():
                totals[status] += count
        return dict(totals)

    def summary(self) -> str:
        totals = self.status_totals()
        lines = [
            f"transfer {self.transfer}: {self.source} -> {self.target}",
            "  " + ", ".join(f"{status} {count}" for status, count in sorted(totals.items())),
        ]
        width = max((len(t) for t in self.counts), default=4)
        for rtype, by_status in sorted(self.counts.items()):
            lines.append(
                f"  {rtype:<{width}}  " + "  ".join(f"{s}={n}" for s, n in sorted(by_status.items()))
            )
        timing = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in self.timings.items())
        lines.append(
            f"  bundles {self.bundles}, created {self.created}, matched existing {self.matched_existing}, retries {self.retries}"
        )
        if self.conditional_types:
            lines.append(f"  {conditional_note(self.conditional_types)}")
        if self.resent_bundles:
            lines.append(f"  {resent_note(self.resent_bundles)}")
        lines.append(f"  time: {timing}")
        for failure in self.failures[:10]:
            lines.append(
                f"  FAILED bundle {failure.bundle} ({len(failure.resources)} resources): {failure.message}"
            )
        return "\n".join(lines)


def conditional_note(types: list[str]) -> str:
    return (
        f"conditional creates for {', '.join(types)}: the target holds copies of "
        f"{'this type' if len(types) == 1 else 'these types'} made with this linkage key"
    )


def resent_note(bundles: int) -> str:
    return (
        f"{bundles} bundle(s) sent again as conditional creates: the target refused a send "
        "(429/503), or its outcome was unknown and its copies were not on the target"
    )


def status_counts(graph: Graph, transfer: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in graph.execute("status_counts", transfer=transfer):
        counts[row["type"]][row["status"]] = int(row["count"])
    return dict(counts)


def linkage_rows(graph: Graph, transfer: str) -> Iterator[tuple[str, str]]:
    for row in graph.stream("linkage_export", transfer=transfer):
        yield row["linkage_hash"], row["target"]


class Session:
    """Opened resources for one command: graph, clients, key. Closes them all."""

    def __init__(
        self,
        settings: Settings,
        *,
        need_source: bool = False,
        need_target: bool = False,
        need_key: bool = False,
    ):
        self.settings = settings
        self._stack = ExitStack()
        self.notices: list[str] = list(settings.notices)
        try:
            self.graph = self._stack.enter_context(Graph(require_password(settings.neo4j)))
            self.graph.check()
            self.graph.ensure_schema()
            self.source = self._client(settings.source, "source") if need_source or settings.source else None
            self.target = self._client(settings.target, "target") if need_target or settings.target else None
            if self.source and self.target:
                check_distinct(self.source.base_url, self.target.base_url)
            # a wrong URL, missing credentials or an HTML page fail here, before a transfer is recorded
            for client, needed in ((self.source, need_source), (self.target, need_target)):
                if client is not None and needed:
                    client.capability_statement()
            self.key: LinkageKey | None = None
            if need_key:
                self.key, notice = load_key(settings.key_file)
                if notice:
                    self.notices.append(notice)
        except BaseException:
            self._stack.close()
            raise

    def _client(self, config: ServerConfig | None, name: str) -> FhirClient:
        if config is None:
            # resuming: the transfer remembers its servers (credentials still come from the environment)
            record = get_transfer(self.graph, self.settings.transfer)
            recorded = (record.source if name == "source" else record.target) if record else ""
            if recorded:
                env = build_settings({(name, "url"): recorded}, self.settings.config_file)
                config = env.source if name == "source" else env.target
        if config is None:
            raise ConfigError(f"no {name} server: pass --{name} URL or set FHIRGRAPH_{name.upper()}_URL")
        return self._stack.enter_context(make_client(config, name))

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_transfer(
    settings: Settings,
    seeds: Sequence[Seeds] | None,
    *,
    progress: ProgressDisplay | None = None,
    stages: Iterable[str] = ("crawl", "plan", "load"),
    record_linkage: bool = True,
    session: Session | None = None,
) -> TransferResponse:
    """Run the named stages of a transfer, skipping those already finished (resume)."""
    wanted = set(stages)
    own = session is None
    sess = session or Session(
        settings, need_source="crawl" in wanted, need_target="load" in wanted, need_key="load" in wanted
    )
    try:
        return _run(sess, settings, seeds, progress, wanted, record_linkage)
    finally:
        if progress:
            progress.close()
        if own:
            sess.close()


def _run(
    sess: Session,
    settings: Settings,
    seeds: Sequence[Seeds] | None,
    progress: ProgressDisplay | None,
    wanted: set[str],
    record_linkage: bool,
) -> TransferResponse:
    graph = sess.graph
    name = settings.transfer
    existing = get_transfer(graph, name)
    source_url = sess.source.base_url if sess.source else (existing.source if existing else "")
    target_url = sess.target.base_url if sess.target else (existing.target if existing else "")
    if existing is None and "crawl" not in wanted:
        raise ConfigError(f"no transfer named {name!r}; run `fhirgraph crawl` or `fhirgraph transfer` first")
    if "crawl" in wanted and seeds:
        crawl_stage.check_seeds(seeds, source_url)
    record = open_transfer(
        graph,
        name,
        source=source_url,
        target=target_url,
        key_fingerprint=sess.key.fingerprint if sess.key else None,
    )
    with TransferLock(graph, name):
        return _run_stages(sess, settings, seeds, progress, wanted, record_linkage, record, existing is None)


def _run_stages(
    sess: Session,
    settings: Settings,
    seeds: Sequence[Seeds] | None,
    progress: ProgressDisplay | None,
    wanted: set[str],
    record_linkage: bool,
    record: TransferRecord,
    is_new: bool,
) -> TransferResponse:
    graph = sess.graph
    name = settings.transfer
    response = TransferResponse(transfer=name, source=record.source, target=record.target)
    started = time.monotonic()
    if "crawl" in wanted and not record.crawl_done:
        if not seeds:
            raise ConfigError("nothing to crawl: give a search (e.g. 'Condition?_count=100') or resources")
        assert sess.source is not None
        try:
            stats = crawl_stage.crawl(
                graph, sess.source, name, seeds, get_missing=settings.get_missing, progress=progress
            )
        except FhirgraphError:
            if is_new and not _has_crawled(graph, name):
                # the very first search failed (e.g. an unknown search parameter): leave no trace
                reset_transfer(graph, name)
            raise
        response.timings["crawl"] = stats.seconds
    record = get_transfer(graph, name) or record
    if "plan" in wanted and not record.plan_done:
        plan_stats = plan_stage.plan(
            graph, name, bundle_size=settings.bundle_size, on_dangling=settings.on_dangling, progress=progress
        )
        response.timings["plan"] = plan_stats.seconds
    record = get_transfer(graph, name) or record
    if "load" in wanted and not record.load_done:
        assert sess.target is not None and sess.key is not None
        if progress:
            remaining = sum(
                int(b["size"] or 0)
                for b in graph.execute("load_pending_bundles", transfer=name, retry_failed=False)
            )
            progress.set_total("load", remaining)
        load_stats = load_stage.load(
            graph,
            sess.target,
            name,
            sess.key,
            concurrency=settings.concurrency,
            match_existing=settings.match_existing,
            progress=progress,
        )
        response.timings["load"] = load_stats.seconds
        response.failures = load_stats.failures
        response.created = load_stats.created
        response.matched_existing = load_stats.matched_existing
        response.bundles = load_stats.bundles
        response.conditional_types = load_stats.conditional_types
        response.resent_bundles = load_stats.resent_bundles
    response.timings["total"] = time.monotonic() - started
    response.retries = sum(c.retries for c in (sess.source, sess.target) if c is not None)
    response.counts = status_counts(graph, name)
    if record_linkage:
        response.linkage = dict(linkage_rows(graph, name))
    return response


def _has_crawled(graph: Graph, transfer: str) -> bool:
    return any(
        status != "placeholder"
        for by_status in status_counts(graph, transfer).values()
        for status in by_status
    )


# -- Python API compatible with the older library ----------------------------


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
    import importlib

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
            timeout=timeout,
        )
        self.client = make_client(self.config, "source", transport=transport)
        self.api_address = self.client.base_url

    def __repr__(self) -> str:
        return f"FhirServer({self.api_address!r})"

    def query(self, resource_type: str) -> Query:
        return Query(self, resource_type)

    def transfer(
        self,
        target_server: FhirServer,
        query: Query | str | None = None,
        resources: Sequence[Any] | None = None,
        get_missing: bool = True,
        record_linkage: bool = True,
        display: bool = False,
        *,
        transfer_name: str | None = None,
        neo4j_uri: str | None = None,
        neo4j_user: str | None = None,
        neo4j_password: str | None = None,
        neo4j_database: str | None = None,
        bundle_size: int = plan_stage.DEFAULT_BUNDLE_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_dangling: plan_stage.OnDangling = "fail",
        key_file: str | None = None,
        match_existing: bool = True,
    ) -> TransferResponse:
        """Copy ``resources`` (or the results of ``query``) and, with ``get_missing``,
        everything they reference, to ``target_server`` with every reference rewritten.

        Resources are identified by type and id and read fresh from this server, so
        the target receives the exact source JSON. Staging settings default to
        ``$NEO4J_URI``, ``$NEO4J_USER``, ``$NEO4J_PASSWORD``, ``$NEO4J_DATABASE``.
        Pass the same ``transfer_name`` again to resume an interrupted transfer.
        """
        seeds = self._seeds(query, resources)
        if not isinstance(target_server, FhirServer):
            raise ConfigError(
                f"target_server must be a FhirServer, not {type(target_server).__name__}; "
                'use FhirServer("http://host/fhir")'
            )
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
        if on_dangling not in plan_stage.ON_DANGLING_CHOICES:
            raise ConfigError(
                f"on_dangling must be one of {', '.join(plan_stage.ON_DANGLING_CHOICES)}, not {on_dangling!r}"
            )
        settings = Settings(
            source=self.config,
            target=target_server.config,
            neo4j=GraphSettings(
                uri=neo4j_uri or os.environ.get("NEO4J_URI") or "bolt://127.0.0.1:7687",
                user=neo4j_user or os.environ.get("NEO4J_USER") or "neo4j",
                password=neo4j_password or os.environ.get("NEO4J_PASSWORD") or "",
                database=neo4j_database or os.environ.get("NEO4J_DATABASE") or "neo4j",
            ),
            transfer=validate_transfer_name(transfer_name)
            if transfer_name is not None
            else f"api-{uuid.uuid4().hex[:12]}",
            bundle_size=plan_stage.check_bundle_size(bundle_size),
            concurrency=concurrency,
            on_dangling=on_dangling,
            key_file=key_file,
            get_missing=get_missing,
            match_existing=match_existing,
        )
        check_distinct(self.api_address, target_server.api_address)
        progress = ProgressDisplay() if display else None
        return run_transfer(settings, seeds, progress=progress, record_linkage=record_linkage)

    def _seeds(self, query: Query | str | None, resources: Sequence[Any] | None) -> list[Seeds]:
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
            return [crawl_stage.parse_seed(query)]
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


def verify_transfer(settings: Settings) -> verify_stage.VerifyReport:
    with Session(settings) as sess:
        record = get_transfer(sess.graph, settings.transfer)
        if record is None:
            raise ConfigError(f"no transfer named {settings.transfer!r}")
        target = settings.target or ServerConfig(url=record.target)
        with make_client(target, "target") as client:
            return verify_stage.verify(sess.graph, client, settings.transfer)
