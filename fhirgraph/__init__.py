"""fhirgraph: move interlinked FHIR R4 resources between servers without breaking a reference.

Resources are staged in Neo4j as a reference graph, ordered by Cypher, replayed to
the target with every reference rewritten, and linked back with a keyed hash.

Two ways in: ``FhirServer(...).transfer(...)``, the call shape of the older
public library, and one function per command in :mod:`fhirgraph.commands`
(``crawl``, ``plan``, ``load``, ``transfer``, ``sync``, ``verify``, ``status``, ...), each
taking the :class:`Settings` that :func:`build_settings` reads from options,
the environment and the config file, as the command line does.
"""

from fhirgraph import commands
from fhirgraph.api import FhirServer, Query, QueryResponse
from fhirgraph.config import Settings, build_settings
from fhirgraph.errors import (
    ConfigError,
    DanglingReferencesError,
    FhirError,
    FhirgraphError,
    FhirTerminalError,
    FhirTransientError,
    GraphError,
    LoadError,
    TerminalError,
    TransferStateError,
    TransientError,
)
from fhirgraph.results import SyncResult, TransferResponse
from fhirgraph.seeds import ExportSeed

__all__ = [
    "ConfigError",
    "DanglingReferencesError",
    "ExportSeed",
    "FhirError",
    "FhirServer",
    "FhirTerminalError",
    "FhirTransientError",
    "FhirgraphError",
    "GraphError",
    "LoadError",
    "Query",
    "QueryResponse",
    "Settings",
    "SyncResult",
    "TerminalError",
    "TransferResponse",
    "TransferStateError",
    "TransientError",
    "build_settings",
    "commands",
]
