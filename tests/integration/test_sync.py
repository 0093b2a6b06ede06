"""``fhirgraph sync`` keeps a copy current: what changed on the real source since the last run
reaches the real target once, in place, and nothing else is sent.

Changes are made on the source between runs: new resources, edits, deletions. What the
target received is read back from the target's own history since just before the sync.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from fhirgraph import jsontext
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import copies_by_hash

from .conftest import create_on_source, run_cli, transfer_nodes


def clock(server: FhirClient) -> str:
    """The server's clock now (its search Bundles carry it)."""
    return str(server.get("Patient", {"_id": "clock", "_count": 1})["meta"]["lastUpdated"])


def writes_since(server: FhirClient, instant: str) -> list[tuple[str, str]]:
    """(method, Type/id) of every write the server took since ``instant``, from its history."""
    writes = []
    for page in server.pages("_history", {"_since": instant, "_count": 500}):
        for entry in page.get("entry", []):
            request = entry.get("request") or {}
            key = "/".join(str(request.get("url", "")).split("/")[:2])
            writes.append((str(request.get("method")), key))
    return sorted(writes)


def generations(graph: Graph, name: str) -> list[dict[str, Any]]:
    rows = graph.query("MATCH (g:Generation {transfer: $t}) RETURN g {.*} AS g ORDER BY g.number", t=name)
    return [row["g"] for row in rows]


def copies(target: FhirClient, node: dict[str, Any]) -> list[dict[str, Any]]:
    return copies_by_hash(target, node["type"], [node["linkage_hash"]]).get(node["linkage_hash"], [])


def read_exact(server: FhirClient, key: str) -> tuple[int, dict[str, Any] | None]:
    rtype, rid = key.split("/")
    return server.read(rtype, rid, exact=True)


def sync(name: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    return run_cli("sync", "--transfer", name, "--no-progress", *extra, env=env, check=False)


def test_sync_brings_a_synthea_copy_up_to_date(
    stack_env: dict[str, str],
    source: FhirClient,
    target: FhirClient,
    graph: Graph,
    run_id: str,
    synthea_patients: list[str],
) -> None:
    name, p = f"sync-{run_id}", run_id
    patient = f"Patient/{synthea_patients[0]}"
    create_on_source(
        source,
        [
            {
                "resourceType": "Condition",
                "id": f"{p}-cond",
                "subject": {"reference": patient},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                "extension": [{"url": "urn:fhirgraph-test:score", "valueDecimal": 7.1}],
            },
            {
                "resourceType": "Observation",
                "id": f"{p}-gone",
                "status": "final",
                "code": {"text": "to be deleted"},
                "subject": {"reference": patient},
            },
        ],
    )
    cohort = (
        f"Patient?_id={','.join(synthea_patients)}"
        "&_revinclude=Condition:subject&_revinclude=Observation:subject"
    )
    newcomers = f"Patient?identifier=urn:fhirgraph-sync|{p}"
    run_cli("transfer", "--transfer", name, "--no-progress", cohort, newcomers)
    before = transfer_nodes(graph, name)
    practitioner = next(
        k for k, n in before.items() if n["type"] == "Practitioner" and n["status"] == "loaded"
    )
    condition = before[f"Condition/{p}-cond"]

    # on the source: two new Observations of a patient, a Condition edited (a new code and
    # 7.1 -> 7.10), an Observation deleted, a new patient of a practitioner already copied
    create_on_source(
        source,
        [
            *(
                {
                    "resourceType": "Observation",
                    "id": f"{p}-new{i}",
                    "status": "final",
                    "code": {"text": f"new {i}"},
                    "subject": {"reference": patient},
                    "performer": [{"reference": practitioner}],
                }
                for i in (1, 2)
            ),
            {
                "resourceType": "Patient",
                "id": f"{p}-newpat",
                "identifier": [{"system": "urn:fhirgraph-sync", "value": p}],
                "generalPractitioner": [{"reference": practitioner}],
            },
        ],
    )
    edited = jsontext.loads(
        '{"resourceType": "Condition", "id": "P-cond", "subject": {"reference": "PATIENT"},'
        ' "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},'
        ' "extension": [{"url": "urn:fhirgraph-test:score", "valueDecimal": 7.10}]}'.replace(
            "P-", f"{p}-"
        ).replace("PATIENT", patient)
    )
    create_on_source(source, [edited])
    source.request("DELETE", f"Observation/{p}-gone")

    instant = clock(target)
    result = sync(name)
    assert result.returncode == 0, result.stderr
    assert "created 3, updated 1" in result.stdout, result.stdout
    assert "deleted on the source 1 (removed from the target 0)" in result.stdout

    after = transfer_nodes(graph, name)
    new_keys = [f"Observation/{p}-new1", f"Observation/{p}-new2", f"Patient/{p}-newpat"]
    for key in new_keys:
        assert after[key]["status"] == "loaded"
        assert len(copies(target, after[key])) == 1, key
    # the shared practitioner was not copied again: the new patient refers to its one copy
    _, new_patient = read_exact(target, f"Patient/{after[f'Patient/{p}-newpat']['target_id']}")
    assert new_patient is not None
    assert (
        new_patient["generalPractitioner"][0]["reference"]
        == f"Practitioner/{before[practitioner]['target_id']}"
    )

    # the Condition was updated in place: same target id, a new version, the decimal as written
    assert after[f"Condition/{p}-cond"]["target_id"] == condition["target_id"]
    _, copy = read_exact(target, f"Condition/{condition['target_id']}")
    assert copy is not None
    assert copy["meta"]["versionId"] == str(int(condition["target_version"]) + 1)
    assert copy["code"]["coding"][0]["code"] == "38341003"
    assert '"valueDecimal":7.10' in jsontext.dumps(copy)

    # nothing else was sent: the target's history holds the three creates and the one update
    gone = after[f"Observation/{p}-gone"]
    expected = sorted(
        [("POST", f"{after[k]['type']}/{after[k]['target_id']}") for k in new_keys]
        + [("PUT", f"Condition/{condition['target_id']}")]
    )
    assert writes_since(target, instant) == expected
    assert gone["status"] == "loaded" and gone["sync_pending"] == "delete"
    assert read_exact(target, f"Observation/{gone['target_id']}")[0] == 200

    status = run_cli("status", "--transfer", name).stdout
    assert "generation 2 (sync" in status and "pending delete Observation/" in status

    removed = sync(name, "--delete")
    assert removed.returncode == 0, removed.stderr
    assert "created 0, updated 0" in removed.stdout
    assert "(removed from the target 1)" in removed.stdout
    assert read_exact(target, f"Observation/{gone['target_id']}")[0] == 410
    assert transfer_nodes(graph, name)[f"Observation/{p}-gone"]["status"] == "deleted"

    run_cli("verify", "--transfer", name)
    numbers = [
        (g["number"], g["kind"], g["state"], g.get("created"), g.get("updated"))
        for g in generations(graph, name)
    ]
    assert numbers == [
        (1, "transfer", "done", len([n for n in before.values() if n["status"] == "loaded"]), 0),
        (2, "sync", "done", 3, 1),
        (3, "sync", "done", 0, 0),
    ]


def small(p: str, value: str = "1.50") -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Patient",
            "id": f"{p}-pat",
            "identifier": [{"system": "urn:fhirgraph-sync", "value": p}],
        },
        jsontext.loads(
            '{"resourceType": "Observation", "id": "P-obs", "status": "final", "code": {"text": "x"},'
            ' "subject": {"reference": "Patient/P-pat"}, "valueQuantity": {"value": VALUE}}'.replace(
                "P-", f"{p}-"
            ).replace("VALUE", value)
        ),
        {
            "resourceType": "Observation",
            "id": f"{p}-gone",
            "status": "final",
            "code": {"text": "y"},
            "subject": {"reference": f"Patient/{p}-pat"},
        },
    ]


SMALL_SEED = "Patient?identifier=urn:fhirgraph-sync|{p}&_revinclude=Observation:subject"


def transfer_small(source: FhirClient, graph: Graph, name: str, p: str) -> dict[str, dict[str, Any]]:
    """Put :func:`small` on the source, transfer it; the staged nodes by key."""
    create_on_source(source, small(p))
    run_cli("transfer", "--transfer", name, "--no-progress", SMALL_SEED.format(p=p))
    return transfer_nodes(graph, name)


def test_a_copy_changed_on_the_target_is_a_conflict_until_overwrite(
    stack_env: dict[str, str], source: FhirClient, target: FhirClient, graph: Graph, run_id: str
) -> None:
    name, p = f"conflict-{run_id}", run_id
    node = transfer_small(source, graph, name, p)[f"Observation/{p}-obs"]
    _, copy = read_exact(target, f"Observation/{node['target_id']}")
    assert copy is not None
    copy["code"] = {"text": "edited on the target"}
    target.request("PUT", f"Observation/{node['target_id']}", body=copy)
    create_on_source(source, small(p, "2.25")[1:2])

    result = sync(name)
    assert result.returncode == 1
    assert (
        f"CONFLICT Observation/{p}-obs: changed on the target since fhirgraph wrote version 1 (now version 2)"
        in result.stdout
    )
    assert "--overwrite" in result.stderr
    _, kept = read_exact(target, f"Observation/{node['target_id']}")
    assert kept is not None and kept["code"] == {"text": "edited on the target"}
    assert transfer_nodes(graph, name)[f"Observation/{p}-obs"]["sync_conflict"] is True

    forced = sync(name, "--overwrite")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    _, replaced = read_exact(target, f"Observation/{node['target_id']}")
    assert replaced is not None and replaced["code"] == {"text": "x"}
    assert '"value":2.25' in jsontext.dumps(replaced)
    run_cli("verify", "--transfer", name)


def test_sync_delete_keeps_a_copy_still_referred_to_and_one_the_target_refuses_to_delete(
    stack_env: dict[str, str], source: FhirClient, target: FhirClient, graph: Graph, run_id: str
) -> None:
    """Two resources deleted on the source whose copies stay on the target, each reported with
    its reason: a Practitioner that a copied Observation still refers to (fhirgraph keeps it
    without asking the target), and an Observation that a report made on the target alone
    refers to (the target, enforcing referential integrity, refuses the delete). Both stay
    pending: once the report is gone, the next sync removes the Observation's copy."""
    name, p = f"keep-{run_id}", run_id
    resources = small(p)
    resources[1]["performer"] = [{"reference": f"Practitioner/{p}-doc"}]
    create_on_source(
        source, [{"resourceType": "Practitioner", "id": f"{p}-doc", "name": [{"family": "Kept"}]}, *resources]
    )
    run_cli("transfer", "--transfer", name, "--no-progress", SMALL_SEED.format(p=p))
    before = transfer_nodes(graph, name)
    doc, gone = before[f"Practitioner/{p}-doc"], before[f"Observation/{p}-gone"]
    assert doc["status"] == gone["status"] == "loaded"
    _, report = target.request(
        "POST",
        "DiagnosticReport",
        body={
            "resourceType": "DiagnosticReport",
            "status": "final",
            "code": {"text": "made on the target, not by fhirgraph"},
            "result": [{"reference": f"Observation/{gone['target_id']}"}],
        },
    )
    assert report is not None
    source.request("DELETE", f"Practitioner/{p}-doc")
    source.request("DELETE", f"Observation/{p}-gone")

    kept = sync(name, "--delete")
    # kept copies are reported, not errors: the help says a copy others refer to is kept
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "deleted on the source 2 (removed from the target 0)" in kept.stdout, kept.stdout
    assert (
        f"KEPT Practitioner/{p}-doc: kept on the target: Observation/{p}-obs still refer to it" in kept.stdout
    )
    refused = next(
        line for line in kept.stdout.splitlines() if line.startswith(f"  KEPT Observation/{p}-gone")
    )
    assert "kept on the target, which refused to delete it" in refused and "409" in refused, refused
    assert "Traceback" not in kept.stderr
    assert read_exact(target, f"Practitioner/{doc['target_id']}")[0] == 200
    assert read_exact(target, f"Observation/{gone['target_id']}")[0] == 200
    after = transfer_nodes(graph, name)
    for key in (f"Practitioner/{p}-doc", f"Observation/{p}-gone"):
        assert after[key]["status"] == "loaded" and after[key]["sync_pending"] == "delete", after[key]

    target.request("DELETE", f"DiagnosticReport/{report['id']}")
    again = sync(name, "--delete")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(removed from the target 1)" in again.stdout, again.stdout
    assert read_exact(target, f"Observation/{gone['target_id']}")[0] == 410
    assert transfer_nodes(graph, name)[f"Observation/{p}-gone"]["status"] == "deleted"
    assert f"KEPT Practitioner/{p}-doc" in again.stdout  # the Observation still refers to it


# (checkpoint, n-th time): in the change crawl, the sync's load of new resources, the updates
# and the deletions
SYNC_KILL_POINTS = [
    ("sync_changes_staged", 1),
    ("after_commit", 1),
    ("before_sync_update", 1),
    ("after_sync_update", 1),
    ("after_sync_delete", 1),
]


@pytest.mark.parametrize(("point", "nth"), SYNC_KILL_POINTS)
def test_a_killed_sync_applies_each_change_once(
    stack_env: dict[str, str],
    source: FhirClient,
    target: FhirClient,
    graph: Graph,
    run_id: str,
    point: str,
    nth: int,
) -> None:
    name, p = f"sync-kill-{run_id}", run_id
    before = transfer_small(source, graph, name, p)
    create_on_source(
        source,
        [
            small(p, "2.50")[1],
            {
                "resourceType": "Observation",
                "id": f"{p}-new",
                "status": "final",
                "code": {"text": "new"},
                "subject": {"reference": f"Patient/{p}-pat"},
            },
        ],
    )
    source.request("DELETE", f"Observation/{p}-gone")

    killed = sync(name, "--delete", env={"FHIRGRAPH_CRASH_AT": f"{point}:{nth}"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    resumed = sync(name, "--delete")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    after = transfer_nodes(graph, name)
    assert len(copies(target, after[f"Observation/{p}-new"])) == 1
    obs = after[f"Observation/{p}-obs"]
    assert obs["target_id"] == before[f"Observation/{p}-obs"]["target_id"]
    _, copy = read_exact(target, f"Observation/{obs['target_id']}")
    assert copy is not None and copy["meta"]["versionId"] == "2"
    assert '"value":2.50' in jsontext.dumps(copy)
    assert obs.get("sync_pending") is None and obs.get("sync_conflict") is not True
    assert after[f"Observation/{p}-gone"]["status"] == "deleted"
    last = generations(graph, name)[-1]
    assert (
        last["number"],
        last["state"],
        last["created"],
        last["updated"],
        last["removed"],
        last["conflicts"],
    ) == (
        2,
        "done",
        1,
        1,
        1,
        0,
    )
    run_cli("verify", "--transfer", name)
    assert (
        json.loads(run_cli("status", "--transfer", name, "--json").stdout)["generations"][-1]["state"]
        == "done"
    )


def test_an_update_that_cannot_reach_the_target_is_refused_and_reported(
    stack_env: dict[str, str], source: FhirClient, target: FhirClient, graph: Graph, run_id: str
) -> None:
    name, p = f"sync-refused-{run_id}", run_id
    node = transfer_small(source, graph, name, p)[f"Observation/{p}-obs"]
    edited = small(p, "3.75")[1]
    edited["performer"] = [{"reference": f"Practitioner/{p}-nobody"}]  # the source has no such resource
    create_on_source(source, [edited])

    refused = sync(name)
    assert refused.returncode == 1
    assert (
        f"REFUSED Observation/{p}-obs: refers to Practitioner/{p}-nobody (dangling), which is not on the target"
        in refused.stdout
    )
    assert read_exact(target, f"Observation/{node['target_id']}")[1]["meta"]["versionId"] == "1"  # type: ignore[index]
    assert "pending update Observation/" in run_cli("status", "--transfer", name).stdout

    dropped = sync(name, "--on-dangling", "drop-reference")
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert "updated 1" in dropped.stdout
    _, copy = read_exact(target, f"Observation/{node['target_id']}")
    assert copy is not None and copy["meta"]["versionId"] == "2" and "performer" not in copy
    assert '"value":3.75' in jsontext.dumps(copy)


def test_a_sync_finds_the_new_members_of_an_everything_seed_in_the_history(
    stack_env: dict[str, str], source: FhirClient, target: FhirClient, graph: Graph, run_id: str
) -> None:
    # HAPI's $everything takes no _since: what is new in the compartment comes from the history
    name, p = f"sync-everything-{run_id}", run_id
    create_on_source(source, [*small(p), {"resourceType": "Practitioner", "id": f"{p}-doc"}])
    run_cli("transfer", "--transfer", name, "--no-progress", f"Patient/{p}-pat/$everything")
    newcomer = {
        "resourceType": "Observation",
        "id": f"{p}-new",
        "status": "final",
        "code": {"text": "new"},
        "subject": {"reference": f"Patient/{p}-pat"},
        "performer": [{"reference": f"Practitioner/{p}-doc"}],  # not in the compartment: fetched as missing
    }
    create_on_source(source, [newcomer, {"resourceType": "Patient", "id": f"{p}-stranger"}])
    result = sync(name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "created 2, updated 0" in result.stdout
    nodes = transfer_nodes(graph, name)
    assert nodes[f"Observation/{p}-new"]["status"] == "loaded"
    assert nodes[f"Practitioner/{p}-doc"]["status"] == "loaded"
    assert f"Patient/{p}-stranger" not in nodes
    assert len(copies(target, nodes[f"Observation/{p}-new"])) == 1
    run_cli("verify", "--transfer", name)
