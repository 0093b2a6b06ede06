"""fhirgraph: move interlinked FHIR R4 resources between servers without breaking a reference.

Resources are staged in Neo4j as a reference graph, ordered by Cypher, replayed to
the target with every reference rewritten, and linked back with a keyed hash.
"""

from fhirgraph.errors import (
    ConfigError,
    DanglingReferencesError,
    FhirError,
    FhirgraphError,
    GraphError,
    LoadError,
    TerminalError,
    TransferStateError,
    TransientError,
)
from fhirgraph.transfer import FhirServer, Query, QueryResponse, TransferResponse

__all__ = [
    "ConfigError",
    "DanglingReferencesError",
    "FhirError",
    "FhirServer",
    "FhirgraphError",
    "GraphError",
    "LoadError",
    "Query",
    "QueryResponse",
    "TerminalError",
    "TransferResponse",
    "TransferStateError",
    "TransientError",
]
