"""Transfers through a fault-injecting proxy in front of the source and the target."""

from __future__ import annotations

import re

import pytest

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph

from .conftest import SOURCE_URL, TARGET_URL, create_on_source, run_cli, transfer_nodes
from .faultproxy import FaultProxy
from .test_crashes import small_cohort


def test_transfer_completes_through_ten_percent_faults(
    graph: Graph, synthea_patients: list[str], stack_env: dict[str, str], run_id: str
) -> None:
    name = f"faults-{run_id}"
    with (
        FaultProxy(SOURCE_URL, rate=0.1, slow_seconds=6, seed=11) as source_proxy,
        FaultProxy(TARGET_URL, rate=0.1, slow_seconds=21, seed=12) as target_proxy,
    ):
        env = {
            "FHIRGRAPH_SOURCE_URL": source_proxy.base,
            "FHIRGRAPH_TARGET_URL": target_proxy.base,
            "FHIRGRAPH_SOURCE_TIMEOUT": "5",
            "FHIRGRAPH_TARGET_TIMEOUT": "20",
        }
        result = run_cli(
            "transfer", "--transfer", name, f"Patient/{synthea_patients[0]}/$everything",
            "--bundle-size", "100", "--no-progress", env=env,
        )  # fmt: skip
        faults = source_proxy.faults + target_proxy.faults
    assert sum(faults.values()) >= 5, faults
    assert {"429", "503", "reset", "slow", "truncated"} & set(faults), faults
    retries = int(re.search(r"retries (\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    assert retries >= 1  # the report counts them
    assert all(n["status"] == "loaded" for n in transfer_nodes(graph, name).values())
    run_cli("verify", "--transfer", name, "--target", TARGET_URL)  # exactly once, intact


@pytest.mark.parametrize("creates", ["--match-existing", "--no-match-existing"])
def test_a_lost_post_response_creates_no_duplicate(
    graph: Graph, source: FhirClient, stack_env: dict[str, str], run_id: str, creates: str
) -> None:
    # plain creates too: the POST whose answer was lost is resent as conditional creates
    p = f"lost{creates.count('no')}-{run_id}"
    cohort = small_cohort(p)
    create_on_source(source, cohort)
    name = p
    with FaultProxy(TARGET_URL, rate=0.0, lose_first_write=True) as target_proxy:
        result = run_cli(
            "transfer", "--transfer", name, *[f"--resource=Observation/{p}-o{i}" for i in range(8)],
            creates, "--no-progress", env={"FHIRGRAPH_TARGET_URL": target_proxy.base},
        )  # fmt: skip
    assert target_proxy.faults["lost_response"] == 1
    matched = int(re.search(r"matched existing (\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    assert matched >= 1  # the committed bundle was found by its linkage tags, not created again
    run_cli("verify", "--transfer", name, "--target", TARGET_URL)
