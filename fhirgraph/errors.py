"""The exception tree of fhirgraph.

Every error a user can see derives from :class:`FhirgraphError`; the CLI turns
exactly these into one-line messages. Third-party errors (httpx, neo4j) are
translated at one boundary each (``fhir/client.py`` and ``graph.py``).

    FhirgraphError
    ├── TransientError            safe to retry: 429, 503, timeouts, Neo4j transient
    │   ├── FhirTransientError
    │   └── GraphTransientError
    └── TerminalError             report and stop
        ├── ConfigError           bad options, config file, key file
        ├── FhirError             a FHIR server answered with an error
        │   └── FhirUnreachableError
        ├── ForeignHostError      a request to a host other than source/target
        ├── GraphError            Neo4j refused or is unreachable
        ├── TransferStateError    the staged transfer cannot do what was asked
        │   ├── TransferLockedError
        │   └── DanglingReferencesError
        └── LoadError             the target rejected a bundle
"""

from __future__ import annotations

from dataclasses import dataclass


class FhirgraphError(Exception):
    """Root of every error fhirgraph raises on purpose."""


class TransientError(FhirgraphError):
    """A failure that may go away if the same, safe, request is repeated."""


class TerminalError(FhirgraphError):
    """A failure that repeating will not fix; report it and stop."""


class ConfigError(TerminalError):
    """Invalid options, environment, config file or key file."""


class FhirError(TerminalError):
    """A FHIR server answered with an error status."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.status = status
        self.url = url


class FhirUnreachableError(FhirError):
    """The FHIR server could not be reached at all."""


class FhirTransientError(TransientError):
    """A FHIR request that failed in a way worth retrying (429, 502-504, timeouts)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        url: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.url = url


class ForeignHostError(TerminalError):
    """A request would have gone to a host other than the configured source or target."""


class GraphError(TerminalError):
    """Neo4j is unreachable, refused the credentials or rejected a query."""


class GraphTransientError(TransientError):
    """A Neo4j error the driver reports as transient."""


class TransferStateError(TerminalError):
    """The staged transfer is not in a state that allows what was asked."""


class TransferLockedError(TransferStateError):
    """Another process is working on the same transfer."""


@dataclass(frozen=True)
class DanglingReference:
    """A reference from a staged resource to something the source does not have."""

    referrer: str
    path: str
    reference: str
    target: str
    detail: str


class DanglingReferencesError(TransferStateError):
    """The plan found references to resources that cannot be transferred."""

    def __init__(self, dangling: list[DanglingReference], total: int):
        self.dangling = dangling
        self.total = total
        first = dangling[0]
        more = f" (and {total - 1} more)" if total > 1 else ""
        super().__init__(
            f"{total} dangling reference(s), nothing was written to the target: "
            f"{first.referrer} {first.path} -> {first.reference} ({first.detail}){more}; "
            "fix the source, or rerun with --on-dangling drop-reference or skip-resource"
        )


class LoadError(TerminalError):
    """The target rejected one or more bundles."""
