"""FHIR Bundle resources in a transfer. Staged resources carry their type as a label, so a
staged Bundle is a ``(:Resource:Bundle)`` node beside the plan's ``(:Bundle)`` nodes: the
load, the workers, the plan and the Browser queries must tell them apart."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph

from .conftest import create_on_source, run_cli, transfer_nodes
from .test_workers import assert_exactly_once


def cohort(p: str) -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/{p}-pat"}
    return [
        {"resourceType": "Patient", "id": f"{p}-pat"},
        *[
            {
                "resourceType": "Observation",
                "id": f"{p}-o{i}",
                "status": "final",
                "code": {"text": f"obs {i}"},
                "subject": subject,
            }
            for i in range(4)
        ],
        {
            "resourceType": "Bundle",
            "id": f"{p}-collection",
            "type": "collection",
            "entry": [{"resource": {"resourceType": "Basic", "code": {"text": f"{p} inside a collection"}}}],
        },
    ]


@pytest.mark.parametrize(
    "options",
    [("--on-dangling", "drop-reference"), ("--no-overlap",), ("--workers", "2")],
    ids=["overlap", "after-the-crawl", "workers"],
)
def test_a_bundle_resource_is_moved_like_any_other(
    source: FhirClient,
    target: FhirClient,
    graph: Graph,
    stack_env: dict[str, str],
    run_id: str,
    options: tuple[str, ...],
) -> None:
    p = f"bres-{run_id}-{len(options)}{options[0][2:6]}"
    create_on_source(source, cohort(p))
    name = f"bundle-resource-{p}"
    seeds = ["--resource", f"Bundle/{p}-collection", f"Observation?subject=Patient/{p}-pat"]
    result = run_cli("transfer", "--transfer", name, "--bundle-size", "2", "--no-progress", *options, *seeds)
    assert "Traceback" not in result.stderr, result.stderr
    nodes = transfer_nodes(graph, name)
    assert set(nodes) == {f"Patient/{p}-pat", f"Bundle/{p}-collection"} | {
        f"Observation/{p}-o{i}" for i in range(4)
    }
    assert_exactly_once(target, nodes)
    run_cli("verify", "--transfer", name)
    _, copy = target.read("Bundle", nodes[f"Bundle/{p}-collection"]["target_id"])
    assert copy is not None and copy["entry"][0]["resource"]["code"]["text"] == f"{p} inside a collection"
    # the plan's bundles are counted without the staged Bundle resource
    status = json.loads(run_cli("status", "--transfer", name, "--json").stdout)
    planned = graph.query(
        "MATCH (b:Bundle&!Resource {transfer: $t}) RETURN count(b) AS bundles, sum(b.size) AS size", t=name
    )[0]
    assert planned["size"] == len(nodes)
    assert status["load_done"] is True, status
    assert status["bundles"]["total"] == status["bundles"]["done"] == planned["bundles"], status
    # planning again (nothing left to plan) does not delete the staged Bundle resource
    run_cli("plan", "--transfer", name, check=False)
    assert f"Bundle/{p}-collection" in transfer_nodes(graph, name)
