"""SIGKILL at precise points of a transfer, then the same command again.

Every time: each source resource is on the target exactly once (verify counts the
copies per linkage hash), every reference resolves and the linkage is complete.
"""

from __future__ import annotations

import re
import signal
from typing import Any

import pytest

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph

from .conftest import create_on_source, run_cli, transfer_nodes

# (checkpoint, n-th time it is reached): during crawl, plan, load and the update phase
KILL_POINTS = [
    ("crawl_staged", 1),  # the seeds are staged, nothing fetched as missing yet
    ("crawl_staged", 2),  # while fetching missing references
    ("plan_levels", 1),  # creation order computed, no bundles yet
    ("plan_bundles", 1),  # bundles written, plan not marked done
    ("before_intent", 2),  # before a bundle is marked 'sending'
    ("before_post", 2),  # marked 'sending', nothing posted
    ("after_commit", 2),  # the target committed the bundle, ids not written back
    ("after_commit", 4),  # the same, later, after some bundles of the last level
    ("after_write_back", 3),  # between bundles
    ("before_update", 1),  # all created, the self reference not yet restored
    ("after_update", 1),  # the update committed, not recorded
]


def small_cohort(p: str) -> list[dict[str, Any]]:
    """A patient with a self-referencing encounter, an encounter/condition cycle and observations."""
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": f"{p}-pat"},
        {"resourceType": "Practitioner", "id": f"{p}-doc"},
        {
            "resourceType": "Encounter",
            "id": f"{p}-e1",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{p}-pat"},
            "participant": [{"individual": {"reference": f"Practitioner/{p}-doc"}}],
            "partOf": {"reference": f"Encounter/{p}-e1"},
        },
        {
            "resourceType": "Encounter",
            "id": f"{p}-e2",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{p}-pat"},
            "partOf": {"reference": f"Encounter/{p}-e1"},
            "diagnosis": [{"condition": {"reference": f"Condition/{p}-c1"}}],
        },
        {
            "resourceType": "Condition",
            "id": f"{p}-c1",
            "subject": {"reference": f"Patient/{p}-pat"},
            "encounter": {"reference": f"Encounter/{p}-e2"},
        },
    ]
    for i in range(8):
        resources.append(
            {
                "resourceType": "Observation",
                "id": f"{p}-o{i}",
                "status": "final",
                "code": {"text": f"obs {i}"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "encounter": {"reference": f"Encounter/{p}-e{1 + i % 2}"},
                "performer": [{"reference": f"Practitioner/{p}-doc"}],
            }
        )
    return resources


@pytest.mark.parametrize(("point", "nth"), KILL_POINTS, ids=[f"{p}-{n}" for p, n in KILL_POINTS])
def test_killed_transfer_resumes_exactly_once(
    graph: Graph, source: FhirClient, stack_env: dict[str, str], run_id: str, point: str, nth: int
) -> None:
    p = f"kill-{run_id}"
    cohort = small_cohort(p)
    create_on_source(source, cohort)
    seeds = [f"--resource=Observation/{p}-o{i}" for i in range(8)]
    name = f"kill-{point}-{nth}-{run_id}"
    args = (
        "transfer",
        "--transfer",
        name,
        *seeds,
        "--bundle-size",
        "3",
        "--concurrency",
        "1",
        "--no-progress",
    )

    killed = run_cli(*args, env={"FHIRGRAPH_CRASH_AT": f"{point}:{nth}"}, check=False)
    assert killed.returncode == -signal.SIGKILL, (
        f"{point}:{nth} was never reached: {killed.stdout}{killed.stderr}"
    )

    resumed = run_cli(*args).stdout
    if point == "before_post":
        # left 'sending' but never posted: its copies are not found, so it is sent again
        assert "1 bundle(s) sent again as conditional creates" in resumed, resumed
    elif point == "after_commit":
        # left 'sending' after the target committed it: its copies are found and recorded, and
        # the rest of that bundle's type is matched on the linkage tag, not created blindly
        assert "sent again" not in resumed, resumed
        assert "conditional creates for " in resumed, resumed
    nodes = transfer_nodes(graph, name)
    assert {f"{r['resourceType']}/{r['id']}" for r in cohort} == set(nodes)
    for node in nodes.values():
        assert node["status"] == "loaded" and node["target_id"] and node["linkage_hash"], node["key"]
        assert not node.get("pending_update"), node["key"]
    run_cli("verify", "--transfer", name)  # content, references, and one copy per linkage hash
    exported = run_cli("linkage", "export", "--transfer", name, "--format", "csv").stdout.splitlines()
    assert len(exported) == len(cohort) + 1


def test_a_send_left_sending_long_ago_is_looked_for_once_not_waited_for(
    graph: Graph, source: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    """Killed after a bundle was marked 'sending', resumed as if an hour later, with a target
    timeout of 15 minutes: the resume does not wait up to 15 minutes for a send that began an
    hour ago (its own run would have given up on it after 30); it looks for its copies once,
    sends it again as conditional creates, and the copy is whole and single."""
    p = f"late-{run_id}"
    cohort = small_cohort(p)
    create_on_source(source, cohort)
    name = f"late-{run_id}"
    args = ("transfer", "--transfer", name, f"--resource=Observation/{p}-o0", "--bundle-size", "3")
    args += ("--concurrency", "1", "--no-progress")
    killed = run_cli(*args, env={"FHIRGRAPH_CRASH_AT": "before_post:2"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    moved = graph.query(
        "MATCH (b:Bundle {transfer: $t, status: 'sending'}) SET b.sent_at = b.sent_at - duration('PT1H') "
        "RETURN count(b) AS n",
        t=name,
    )
    assert moved == [{"n": 1}]

    resumed = run_cli(*args, env={"FHIRGRAPH_TARGET_TIMEOUT": "900"}).stdout
    assert "1 bundle(s) sent again as conditional creates" in resumed, resumed
    timing = re.search(r"time: .*\bload ([0-9.]+)s", resumed)
    assert timing is not None and float(timing[1]) < 300, (
        resumed
    )  # far below the 900 s a wait from now would take
    nodes = transfer_nodes(graph, name)
    assert {n["status"] for n in nodes.values()} == {"loaded"}
    run_cli("verify", "--transfer", name)
