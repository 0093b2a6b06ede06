"""The Neo4j staging graph: connection, Cypher loading, batched writes.

This is the one place where neo4j driver errors are translated. Every query
lives in ``cypher/<name>.cypher`` (shipped in the wheel as ``fhirgraph.cypher``)
and receives data only through parameters.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import neo4j
from neo4j import exceptions as neo4j_errors

from fhirgraph.errors import GraphTerminalError, GraphTransientError

SCHEMA_VERSION = 1
BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
SCHEMA_QUERIES = (
    "schema_resource_uid",
    "schema_bundle_uid",
    "schema_worker_uid",
    "schema_transfer_name",
    "schema_resource_status",
    "schema_resource_bundle",
    "schema_resource_level",
    "schema_resource_sync",
    "schema_generation_uid",
)


@functools.cache
def cypher(name: str) -> str:
    """The text of ``cypher/<name>.cypher`` (``browse/x`` for saved browser queries)."""
    resource = importlib.resources.files("fhirgraph.cypher").joinpath(f"{name}.cypher")
    try:
        return resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphTerminalError(f"internal: no Cypher query named {name!r}") from None


def cypher_names() -> list[str]:
    root = importlib.resources.files("fhirgraph.cypher")
    return sorted(p.name[: -len(".cypher")] for p in root.iterdir() if p.name.endswith(".cypher"))


@dataclass(frozen=True)
class GraphSettings:
    uri: str = "bolt://127.0.0.1:7687"
    user: str = "neo4j"
    password: str = ""
    database: str = "neo4j"

    def __repr__(self) -> str:
        return f"GraphSettings(uri={self.uri!r}, user={self.user!r}, database={self.database!r})"


class Graph:
    """A connection to the staging database."""

    def __init__(self, settings: GraphSettings):
        self.settings = settings
        scheme = settings.uri.partition("://")[0] if "://" in settings.uri else ""
        if scheme not in BOLT_SCHEMES:
            # the driver would also take http(s):// (an experimental API needing aiohttp)
            raise GraphTerminalError(
                f"invalid Neo4j URI {settings.uri!r}: use a Bolt URI such as bolt://127.0.0.1:7687 "
                f"(schemes {', '.join(BOLT_SCHEMES)})"
            )
        try:
            self._driver = neo4j.GraphDatabase.driver(
                settings.uri,
                auth=(settings.user, settings.password),
                connection_timeout=10.0,
                max_transaction_retry_time=30.0,
                notifications_min_severity="OFF",
            )
        except (ValueError, neo4j_errors.ConfigurationError) as exc:
            raise GraphTerminalError(f"invalid Neo4j URI {settings.uri!r}: {exc}") from None

    def close(self) -> None:
        self._driver.close()

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries ------------------------------------------------------------
    def execute(self, query: str, /, **parameters: Any) -> list[dict[str, Any]]:
        """Run a named query in a managed (retried) transaction; return all rows as dicts."""
        with self._translated():
            records, _, _ = self._driver.execute_query(
                cypher(query), parameters_=parameters, database_=self.settings.database
            )
        return [record.data() for record in records]

    def single(self, query: str, /, **parameters: Any) -> dict[str, Any] | None:
        rows = self.execute(query, **parameters)
        return rows[0] if rows else None

    def execute_batched(self, query: str, /, **parameters: Any) -> list[dict[str, Any]]:
        """Run a named query that commits in batches itself (``CALL {...} IN TRANSACTIONS``).

        Such a query must run in an auto-commit transaction. It is for writes that
        touch a large part of a transfer, which in one transaction would exceed
        Neo4j's transaction memory limit; a rerun must be able to repeat it.
        """
        with (
            self._translated(),
            self._driver.session(database=self.settings.database) as session,
        ):
            return [record.data() for record in session.run(cypher(query), parameters)]

    def execute_together(self, steps: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Run named write queries in one managed (retried) transaction: all of them or none."""

        def work(tx: neo4j.ManagedTransaction) -> None:
            for query, parameters in steps:
                tx.run(cypher(query), dict(parameters)).consume()

        with self._translated(), self._driver.session(database=self.settings.database) as session:
            session.execute_write(work)

    def write_batches(
        self, query: str, /, rows: Sequence[Mapping[str, Any]], *, batch_size: int = 2000, **parameters: Any
    ) -> None:
        """``UNWIND $rows`` a query over ``rows`` in batches."""
        for start in range(0, len(rows), batch_size):
            self.execute(query, rows=list(rows[start : start + batch_size]), **parameters)

    def stream(self, query: str, /, **parameters: Any) -> Iterator[dict[str, Any]]:
        """Stream the rows of a read query without holding them all in memory."""
        with (
            self._translated(),
            self._driver.session(
                database=self.settings.database, default_access_mode=neo4j.READ_ACCESS
            ) as session,
        ):
            result = session.run(cypher(query), parameters)
            for record in result:
                yield record.data()

    def query(self, text: str, /, **parameters: Any) -> list[dict[str, Any]]:
        """Run ad-hoc Cypher ``text`` in an auto-commit transaction; return all rows as dicts.

        For tests, benchmarks and diagnostics only: fhirgraph's own stages use the
        named queries of ``cypher/`` (``execute``). The text may be any Cypher,
        including ``CALL {...} IN TRANSACTIONS``; data still goes in as parameters.
        """
        with self._translated(), self._driver.session(database=self.settings.database) as session:
            return [record.data() for record in session.run(text, parameters)]

    def ensure_schema(self) -> None:
        for name in SCHEMA_QUERIES:
            self.execute(name)

    def check(self) -> None:
        """Fail with a clear error if Neo4j is unreachable or refuses the credentials."""
        with self._translated():
            self._driver.verify_connectivity()

    # -- error translation ----------------------------------------------------
    def _translated(self) -> _Translate:
        return _Translate(self.settings)


class _Translate:
    def __init__(self, settings: GraphSettings):
        self.settings = settings

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        where = f"Neo4j at {self.settings.uri}"
        if isinstance(exc, neo4j_errors.AuthError):
            raise GraphTerminalError(
                f"{where} refused the credentials of user {self.settings.user!r}; "
                "check NEO4J_USER / NEO4J_PASSWORD"
            ) from exc
        if isinstance(exc, neo4j_errors.ServiceUnavailable | neo4j_errors.SessionExpired):
            raise GraphTerminalError(f"cannot reach {where}; is it running? (local stack: stack/up)") from exc
        if isinstance(exc, neo4j_errors.TransientError):
            raise GraphTransientError(f"{where} transient error: {exc.message}") from exc
        if isinstance(exc, neo4j_errors.Neo4jError):
            if exc.code and "DatabaseNotFound" in exc.code:
                raise GraphTerminalError(f"{where} has no database {self.settings.database!r}") from exc
            raise GraphTerminalError(f"{where} rejected a query: {exc.code}: {exc.message}") from exc
        if isinstance(exc, neo4j_errors.DriverError | OSError):
            raise GraphTerminalError(f"{where}: {type(exc).__name__}: {exc}") from exc
