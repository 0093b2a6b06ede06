"""The official HL7 FHIR R4 examples on a source server: varied real-world data nobody here wrote.

The examples ship on the npm registry as ``hl7.fhir.r4.examples@4.0.1``: 5,306 JSON
files, of which about 700 are examples of 124 resource types and the rest the
specification's own definitions (StructureDefinitions, ValueSets, CodeSystems,
SearchParameters, ...). The selection (``select``) is deterministic:

- every example of a non-conformance type (clinical, financial, workflow, knowledge
  artifacts, Binary, Bundles of every type, ...), except the Bundles that package the
  specification's definitions (``DEFINITION_BUNDLES``: up to 35 MB each);
- of the conformance types, the resources named as examples (id containing ``example``):
  ``StructureDefinition/example-composition``, ``ValueSet/example-expansion``, ...

They are PUT with their own ids, so that their references to one another hold, in
``batch`` bundles, so one example the server refuses costs only itself. A HAPI source
refuses some of them (purely numeric client ids, Bundle types it does not store,
references to a type the element does not allow): they are recorded with the server's
reason. A ``Basic`` marker on the source remembers that
the selection was loaded, with what was refused, so the load runs once per database.

    python -m fhirgraph.testing.examples --source http://127.0.0.1:8081/fhir
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fhirgraph import jsontext
from fhirgraph.errors import FhirError, FhirTerminalError
from fhirgraph.fhir.client import FhirClient, operation_outcome_text
from fhirgraph.jsontext import JSON

PACKAGE = "hl7.fhir.r4.examples"
VERSION = "4.0.1"
CACHE = Path(__file__).resolve().parents[2] / ".stack" / "examples"

#: conformance resources: only the ones named as examples are selected
CONFORMANCE_TYPES = frozenset(
    {
        "CapabilityStatement",
        "CodeSystem",
        "CompartmentDefinition",
        "ConceptMap",
        "GraphDefinition",
        "ImplementationGuide",
        "MessageDefinition",
        "NamingSystem",
        "OperationDefinition",
        "SearchParameter",
        "StructureDefinition",
        "StructureMap",
        "TerminologyCapabilities",
        "TestReport",
        "TestScript",
        "ValueSet",
    }
)
#: Bundles that package the specification's definitions, not examples (0.2 to 35 MB each)
DEFINITION_BUNDLES = frozenset(
    {
        "conceptmaps",
        "dataelements",
        "extensions",
        "profiles-others",
        "resources",
        "searchParams",
        "terminologies",
        "types",
        "v2-valuesets",
        "v3-valuesets",
        "valueset-expansions",
        "valuesets",
    }
)
BATCH = 50
MARKER_SYSTEM = "urn:fhirgraph:sample-data"


@dataclass(frozen=True)
class Example:
    """One selected example: its ``Type/id``, file and raw JSON (decimals kept as written)."""

    key: str
    file: str
    resource: JSON


@dataclass
class ExamplesOnSource:
    """What the source holds of the selection: the keys it stored and the ones it refused, with why."""

    loaded: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def by_type(self) -> Counter[str]:
        return Counter(key.split("/", 1)[0] for key in self.loaded)


def ensure_package(cache: Path = CACHE) -> Path:
    """The folder holding the package's JSON files, downloaded with ``npm pack`` once."""
    folder = cache / f"{PACKAGE}-{VERSION}"
    done = folder / ".complete"
    if done.exists():
        return folder / "package"
    npm = shutil.which("npm")
    if npm is None:
        raise click.ClickException(f"npm not found: install Node.js to download {PACKAGE}@{VERSION}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        try:
            packed = subprocess.run(
                [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", scratch],
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            raise click.ClickException(f"npm pack {PACKAGE}@{VERSION} took more than 600 s") from None
        tarballs = list(Path(scratch).glob("*.tgz"))
        if packed.returncode != 0 or len(tarballs) != 1:
            # npm's first error line is a code (``npm error code ETARGET``), the next one says why
            lines = packed.stderr.strip().splitlines()
            errors = [line for line in lines if line.startswith("npm error") and " code " not in line]
            why = (errors or lines or ["no tarball written"])[0]
            raise click.ClickException(f"npm pack {PACKAGE}@{VERSION} failed: {why}")
        shutil.rmtree(folder, ignore_errors=True)
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers() if _may_be_selected(Path(m.name).name)]
            tar.extractall(folder, members=members, filter="data")
    done.write_text(f"{PACKAGE}@{VERSION}\n")
    return folder / "package"


def _may_be_selected(file_name: str) -> bool:
    # the package names its files Type-id.json: leave out the 180 MB of definitions at once
    rtype, _, rest = file_name.partition("-")
    if rtype in CONFORMANCE_TYPES:
        return "example" in rest
    return not (rtype == "Bundle" and rest.removesuffix(".json") in DEFINITION_BUNDLES)


def select(folder: Path) -> list[Example]:
    """The selection (module docstring), sorted by file name."""
    selected: list[Example] = []
    for path in sorted(folder.glob("*.json")):
        if path.name == "package.json" or path.name.startswith("."):
            continue
        resource = jsontext.loads(path.read_bytes())
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(rtype, str) or not isinstance(rid, str):
            continue
        if rtype in CONFORMANCE_TYPES and "example" not in rid:
            continue
        if rtype == "Bundle" and rid in DEFINITION_BUNDLES:
            continue
        selected.append(Example(f"{rtype}/{rid}", path.name, resource))
    return selected


def load(client: FhirClient, examples: list[Example]) -> ExamplesOnSource:
    """PUT every example with its own id, ``BATCH`` to a batch bundle; record refusals."""
    result = ExamplesOnSource()
    for start in range(0, len(examples), BATCH):
        chunk = examples[start : start + BATCH]
        entries = [
            {"resource": example.resource, "request": {"method": "PUT", "url": example.key}}
            for example in chunk
        ]
        try:
            # a PUT with the resource's own id is idempotent: safe to retry
            answer = client.transaction(
                {"resourceType": "Bundle", "type": "batch", "entry": entries}, retry=True
            )
        except FhirTerminalError as exc:
            if exc.status not in (400, 422):
                raise
            # the server could not even parse the batch (one unparseable example): one by one
            for example in chunk:
                _put_one(client, example, result)
            continue
        responses = answer.get("entry", [])
        if len(responses) != len(chunk):
            raise click.ClickException(
                f"{client.base_url} answered a batch of {len(chunk)} with {len(responses)} entries"
            )
        for example, entry in zip(chunk, responses, strict=True):
            response = entry.get("response") or {}
            status = str(response.get("status", ""))
            if status.startswith("2"):
                result.loaded.append(example.key)
            else:
                why = operation_outcome_text(response.get("outcome")) or "no OperationOutcome"
                result.refused[example.key] = f"{status}: {why}"
    return result


def _put_one(client: FhirClient, example: Example, result: ExamplesOnSource) -> None:
    status, answer = client.request(
        "PUT", example.key, body=example.resource, retry=True, allow_status=(400, 404, 405, 409, 412, 422)
    )
    if 200 <= status < 300:
        result.loaded.append(example.key)
    else:
        result.refused[example.key] = f"{status}: {operation_outcome_text(answer) or 'no OperationOutcome'}"


def selection_name(examples: list[Example]) -> str:
    digest = hashlib.sha256("\n".join(e.key for e in examples).encode()).hexdigest()[:12]
    return f"{PACKAGE}-{VERSION}-{digest}"


def ensure_loaded(client: FhirClient, cache: Path = CACHE, *, echo: bool = False) -> ExamplesOnSource:
    """Load the selection once per source database; what the source holds of it and what it refused.

    A ``Basic`` marker on the source, named after the selection, keeps the answer.
    """
    examples = select(ensure_package(cache))
    name = selection_name(examples)
    markers = client.get("Basic", {"identifier": f"{MARKER_SYSTEM}|{name}"}).get("entry", [])
    if markers:
        stored = json.loads(markers[0]["resource"]["extension"][0]["valueString"])
        return ExamplesOnSource(list(stored["loaded"]), dict(stored["refused"]))
    result = load(client, examples)
    summary = {"loaded": result.loaded, "refused": result.refused}
    try:
        client.request(
            "POST",
            "Basic",
            body={
                "resourceType": "Basic",
                "identifier": [{"system": MARKER_SYSTEM, "value": name}],
                "code": {"text": "fhirgraph sample data marker"},
                "extension": [{"url": f"{MARKER_SYSTEM}:examples", "valueString": json.dumps(summary)}],
            },
        )
    except FhirError as exc:
        raise click.ClickException(
            f"could not record the examples marker on {client.base_url}: {exc}"
        ) from exc
    if echo:
        click.echo(
            f"loaded {len(result.loaded)} of {len(examples)} examples ({len(result.by_type())} types) "
            f"into {client.base_url}; refused {len(result.refused)}",
            err=True,
        )
    return result


def describe(result: ExamplesOnSource) -> dict[str, Any]:
    """A JSON-ready overview: counts by type and the refusals."""
    return {
        "loaded": len(result.loaded),
        "types": dict(sorted(result.by_type().items())),
        "refused": result.refused,
    }


@click.command()
@click.option("--source", "source_url", required=True, help="FHIR base URL to load into.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=CACHE, show_default=True)
def main(source_url: str, cache: Path) -> None:
    """Load the selected HL7 FHIR R4 examples into SOURCE once; print what it holds and refused."""
    with FhirClient(source_url, name="source", timeout=600.0) as client:
        click.echo(json.dumps(describe(ensure_loaded(client, cache, echo=True)), indent=2))


if __name__ == "__main__":
    main()
