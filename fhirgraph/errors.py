"""The exception tree of fhirgraph.

Every error a user can see derives from :class:`FhirgraphError`; the CLI turns
exactly these into one-line messages. Third-party errors (httpx, neo4j) are
translated at one boundary each (``fhir/client.py`` and ``graph.py``).

    FhirgraphError
    ├── TransientError            safe to retry: 429, 503, timeouts, Neo4j transient
    │   ├── FhirTransientError    (also a FhirError)
    │   └── GraphTransientError   (also a GraphError)
    ├── TerminalError             report and stop
    │   ├── ConfigError           bad options, config file, key file
    │   ├── FhirTerminalError     a FHIR server answered with an error (also a FhirError)
    │   │   └── FhirUnreachableError
    │   ├── ForeignHostError      a request to a host other than source/target
    │   ├── GraphTerminalError    Neo4j refused or is unreachable (also a GraphError)
    │   ├── TransferStateError    the staged transfer cannot do what was asked
    │   │   ├── TransferLockedError
    │   │   └── DanglingReferencesError
    │   └── LoadError             the target rejected a bundle
    ├── FhirError                 any failure of a FHIR server: catch this for all of them
    └── GraphError                any failure of Neo4j

``FhirError`` and ``GraphError`` group the failures of one system whichever
branch they are on: ``except FhirError`` catches a FHIR server's every failure,
``except TransientError`` everything worth repeating. Raise the concrete
transient or terminal class. Messages name settings and what to do, never
command-line flags: the CLI adds those from ``hint`` (``CLI_HINTS`` there).
"""

from __future__ import annotations

from dataclasses import dataclass


class FhirgraphError(Exception):
    """Root of every error fhirgraph raises on purpose.

    ``hint`` names what gets past the error: a setting as the config file and
    the Python API call it (``on_dangling``) or a step (``plan``, ``status``),
    so that each interface can name it in its own terms (the CLI as a flag or
    a command).
    """

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class TransientError(FhirgraphError):
    """A failure that may go away if the same, safe, request is repeated."""


class TerminalError(FhirgraphError):
    """A failure that repeating will not fix; report it and stop."""


class ConfigError(TerminalError):
    """Invalid options, environment, config file or key file."""


class FhirError(FhirgraphError):
    """Any failure of a FHIR server: a :class:`FhirTerminalError` or a :class:`FhirTransientError`."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str | None = None,
        hint: str | None = None,
        outcome: str | None = None,
    ):
        super().__init__(message, hint=hint)
        self.status = status
        self.url = url
        #: the server's OperationOutcome, issue by issue: severity, code, diagnostics, where
        self.outcome = outcome


class FhirTerminalError(FhirError, TerminalError):
    """A FHIR server answered with an error that repeating will not fix."""


class FhirUnreachableError(FhirTerminalError):
    """The FHIR server could not be reached at all."""


class FhirTransientError(FhirError, TransientError):
    """A FHIR request that failed in a way worth retrying (429, 502-504, timeouts)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        url: str | None = None,
    ):
        super().__init__(message, status=status, url=url)
        self.retry_after = retry_after


class ForeignHostError(TerminalError):
    """A request would have gone to a host other than the configured source or target."""


class GraphError(FhirgraphError):
    """Any failure of Neo4j: a :class:`GraphTerminalError` or a :class:`GraphTransientError`."""


class GraphTerminalError(GraphError, TerminalError):
    """Neo4j is unreachable, refused the credentials or rejected a query."""


class GraphTransientError(GraphError, TransientError):
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
            "fix the source, or run again dropping those references (on_dangling drop-reference) "
            "or skipping their resources (skip-resource)",
            hint="on_dangling",
        )


class LoadError(TerminalError):
    """The target rejected one or more bundles."""
