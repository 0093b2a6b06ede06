"""The transfer pipeline against the real stack: canonical use, cycles, reference forms, dangling."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from fhirgraph import DanglingReferencesError, FhirServer, commands, jsontext
from fhirgraph.config import Settings
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import KEY_ENV, copies_by_hash

from .conftest import NEO4J, SOURCE_URL, TARGET_URL, create_on_source, transfer_nodes


def settings_for(transfer: str) -> Settings:
    return Settings(source=None, target=None, neo4j=NEO4J, transfer=transfer)


def api_transfer(resources: list[Any] | None = None, query: Any = None, **kwargs: Any) -> Any:
    src = FhirServer(SOURCE_URL)
    tgt = FhirServer(TARGET_URL)
    return src.transfer(target_server=tgt, resources=resources, query=query, **kwargs)


def loaded(graph: Graph, transfer: str) -> dict[str, dict[str, Any]]:
    return {k: n for k, n in transfer_nodes(graph, transfer).items() if n["status"] == "loaded"}


def target_copy(target: FhirClient, node: dict[str, Any]) -> dict[str, Any]:
    copies = copies_by_hash(target, node["type"], [node["linkage_hash"]]).get(node["linkage_hash"], [])
    assert len(copies) == 1, f"{node['key']} has {len(copies)} copies on the target"
    assert copies[0]["id"] == node["target_id"]
    return copies[0]


def test_canonical_first_100_conditions_with_the_older_library_call_shape(
    graph: Graph, target: FhirClient, synthea_patients: list[str], stack_env: dict[str, str], run_id: str
) -> None:
    src = FhirServer(SOURCE_URL)
    tgt = FhirServer(TARGET_URL)
    conditions = src.query("Condition").limit(100).resources
    assert len(conditions) == 100
    response = src.transfer(resources=conditions, target_server=tgt, transfer_name=f"canonical-{run_id}")

    assert response.ok
    nodes = loaded(graph, response.transfer)
    condition_keys = {f"Condition/{c.id}" for c in conditions}
    assert condition_keys <= set(nodes)
    assert {"Patient", "Encounter"} <= {n["type"] for n in nodes.values()}  # fetched as missing references
    # the linkage maps every transferred source resource
    assert set(response.linkage) == {n["linkage_hash"] for n in nodes.values()}
    assert len(response.linkage) == len(nodes)
    report = commands.verify(settings_for(response.transfer)).report
    assert report.ok, report.problems[:5]
    assert report.checked == len(nodes)
    assert report.references_checked > 0


def test_cycles_arrive_intact(
    graph: Graph,
    source: FhirClient,
    target: FhirClient,
    stack_env: dict[str, str],
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = f"cyc-{run_id}"
    resources = [
        {"resourceType": "Patient", "id": f"{p}-pat"},
        # Encounter.diagnosis.condition <-> Condition.encounter
        {
            "resourceType": "Encounter",
            "id": f"{p}-enc",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{p}-pat"},
            "diagnosis": [{"condition": {"reference": f"Condition/{p}-cond"}}],
            "partOf": {"reference": f"Encounter/{p}-enc"},  # self reference
        },
        {
            "resourceType": "Condition",
            "id": f"{p}-cond",
            "subject": {"reference": f"Patient/{p}-pat"},
            "encounter": {"reference": f"Encounter/{p}-enc"},
        },
        # Patient.link pair
        {
            "resourceType": "Patient",
            "id": f"{p}-a",
            "link": [{"other": {"reference": f"Patient/{p}-b"}, "type": "seealso"}],
        },
        {
            "resourceType": "Patient",
            "id": f"{p}-b",
            "link": [{"other": {"reference": f"Patient/{p}-a"}, "type": "seealso"}],
        },
        # a cycle of three
        {"resourceType": "Organization", "id": f"{p}-o1", "partOf": {"reference": f"Organization/{p}-o2"}},
        {"resourceType": "Organization", "id": f"{p}-o2", "partOf": {"reference": f"Organization/{p}-o3"}},
        {"resourceType": "Organization", "id": f"{p}-o3", "partOf": {"reference": f"Organization/{p}-o1"}},
    ]
    create_on_source(source, resources)
    keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
    # in one bundle each, then with bundles too small for the cycle of three (create, then update);
    # a new key for the second run, or it would match the copies of the first
    for bundle_size, name in ((250, f"cycles-{run_id}"), (2, f"cycles-small-{run_id}")):
        monkeypatch.setenv(KEY_ENV, secrets.token_hex(32))
        response = api_transfer(
            [r for r in resources if r["id"] != f"{p}-pat"], bundle_size=bundle_size, transfer_name=name
        )
        assert response.ok
        nodes = loaded(graph, name)
        assert set(keys) == set(nodes)
        copy = {key: target_copy(target, nodes[key]) for key in keys}
        tid = {key: f"{nodes[key]['type']}/{nodes[key]['target_id']}" for key in keys}

        def ref(obj: dict[str, Any]) -> str:
            return str(obj["reference"]).split("/_history/")[0]

        enc, cond = copy[f"Encounter/{p}-enc"], copy[f"Condition/{p}-cond"]
        assert ref(enc["diagnosis"][0]["condition"]) == tid[f"Condition/{p}-cond"]
        assert ref(cond["encounter"]) == tid[f"Encounter/{p}-enc"]
        assert ref(enc["partOf"]) == tid[f"Encounter/{p}-enc"]
        assert ref(copy[f"Patient/{p}-a"]["link"][0]["other"]) == tid[f"Patient/{p}-b"]
        assert ref(copy[f"Patient/{p}-b"]["link"][0]["other"]) == tid[f"Patient/{p}-a"]
        assert ref(copy[f"Organization/{p}-o1"]["partOf"]) == tid[f"Organization/{p}-o2"]
        assert ref(copy[f"Organization/{p}-o2"]["partOf"]) == tid[f"Organization/{p}-o3"]
        assert ref(copy[f"Organization/{p}-o3"]["partOf"]) == tid[f"Organization/{p}-o1"]
        report = commands.verify(settings_for(name)).report
        assert report.ok, report.problems[:5]


def test_a_second_cohort_matches_what_an_earlier_transfer_with_the_same_key_copied(
    graph: Graph, source: FhirClient, target: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"cohort-{run_id}"
    doctor = {"resourceType": "Practitioner", "id": f"{p}-doc"}
    patients = [
        {
            "resourceType": "Patient",
            "id": f"{p}-{n}",
            "generalPractitioner": [{"reference": f"Practitioner/{p}-doc"}],
        }
        for n in ("a", "b")
    ]
    create_on_source(source, [doctor, *patients])
    first = api_transfer([patients[0]], transfer_name=f"{p}-1")
    second = api_transfer([patients[1]], transfer_name=f"{p}-2")
    assert first.ok and second.ok
    assert (first.created, first.matched_existing) == (2, 0)
    # the first made copies of both types with this key, so the second sent conditional creates
    assert first.conditional_types == [] and second.conditional_types == ["Patient", "Practitioner"]
    assert (second.created, second.matched_existing) == (1, 1)  # the Practitioner was matched
    doc_first = loaded(graph, first.transfer)[f"Practitioner/{p}-doc"]
    doc_second = loaded(graph, second.transfer)[f"Practitioner/{p}-doc"]
    assert doc_second["target_id"] == doc_first["target_id"]
    target_copy(target, doc_first)  # one copy on the target, not two
    patient_b = target_copy(target, loaded(graph, second.transfer)[f"Patient/{p}-b"])
    assert patient_b["generalPractitioner"][0]["reference"] == f"Practitioner/{doc_first['target_id']}"
    assert commands.verify(settings_for(second.transfer)).report.ok
    # verify asks the target afresh: HAPI answers a repeated GET search from its cache for a
    # minute, which would hide a second copy made right after a clean verify
    duplicate = {k: v for k, v in target_copy(target, doc_first).items() if k != "id"}
    target.request("POST", "Practitioner", body=duplicate)
    report = commands.verify(settings_for(second.transfer)).report
    assert not report.ok
    assert any(f"Practitioner/{p}-doc: 2 copies on the target" in problem for problem in report.problems)


def test_every_reference_form(
    graph: Graph, source: FhirClient, target: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"forms-{run_id}"
    foreign = "http://other.example.org/fhir/Practitioner/77"
    resources = [
        {"resourceType": "Patient", "id": f"{p}-pat"},
        {"resourceType": "Practitioner", "id": f"{p}-doc"},
        {"resourceType": "Organization", "id": f"{p}-org"},
        {"resourceType": "Location", "id": f"{p}-loc"},
        {
            "resourceType": "Encounter",
            "id": f"{p}-enc",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"{SOURCE_URL}/Patient/{p}-pat"},  # absolute on the source base
            "participant": [{"individual": {"reference": f"Practitioner/{p}-doc"}}],  # nested
        },
        {
            "resourceType": "Observation",
            "id": f"{p}-obs",
            "status": "final",
            "code": {"text": "blood pressure"},
            "subject": {"reference": f"Patient/{p}-pat/_history/1"},  # versioned
            "encounter": {"reference": f"Encounter/{p}-enc"},
            "performer": [  # a list, with a foreign host and an identifier-only reference
                {"reference": f"Practitioner/{p}-doc"},
                {"reference": f"Organization/{p}-org"},
                {"reference": foreign},
                {"identifier": {"system": "urn:npi", "value": "123"}, "display": "Dr Nobody"},
            ],
            "extension": [
                {"url": "http://example.org/where", "valueReference": {"reference": f"Location/{p}-loc"}}
            ],
            "contained": [
                {"resourceType": "Device", "id": "dev1", "owner": {"reference": f"Organization/{p}-org"}}
            ],
            "device": {"reference": "#dev1"},
            "valueQuantity": {"value": jsontext.loads("120.00"), "unit": "mmHg"},  # exact decimal text
        },
    ]
    create_on_source(source, resources)
    name = f"forms-{run_id}"
    response = api_transfer(resources=[{"resourceType": "Observation", "id": f"{p}-obs"}], transfer_name=name)
    assert response.ok
    nodes = loaded(graph, name)
    assert set(nodes) == {f"{r['resourceType']}/{r['id']}" for r in resources}
    tid = {key: f"{n['type']}/{n['target_id']}" for key, n in nodes.items()}
    obs = target_copy(target, nodes[f"Observation/{p}-obs"])
    enc = target_copy(target, nodes[f"Encounter/{p}-enc"])
    assert enc["subject"]["reference"] == tid[f"Patient/{p}-pat"]
    assert enc["participant"][0]["individual"]["reference"] == tid[f"Practitioner/{p}-doc"]
    assert obs["subject"]["reference"].split("/_history/")[0] == tid[f"Patient/{p}-pat"]
    assert [x.get("reference") for x in obs["performer"]] == [
        tid[f"Practitioner/{p}-doc"],
        tid[f"Organization/{p}-org"],
        foreign,
        None,
    ]
    assert obs["performer"][3]["identifier"]["value"] == "123"
    assert obs["extension"][0]["valueReference"]["reference"] == tid[f"Location/{p}-loc"]
    assert obs["device"]["reference"] == "#dev1"
    assert obs["contained"][0]["owner"]["reference"] == tid[f"Organization/{p}-org"]
    exact = target.get(f"Observation/{nodes[f'Observation/{p}-obs']['target_id']}", exact=True)
    # the decimal's text survives
    assert jsontext.dumps(exact["valueQuantity"]) == '{"value":120.00,"unit":"mmHg"}'
    report = commands.verify(settings_for(name)).report
    assert report.ok, report.problems[:5]
    assert "Practitioner/77" not in {n["key"] for n in transfer_nodes(graph, name).values()}


def test_dangling_reference_policies(
    graph: Graph, source: FhirClient, target: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    p = f"dangle-{run_id}"
    resources = [
        {"resourceType": "Patient", "id": f"{p}-pat"},
        {
            "resourceType": "Observation",
            "id": f"{p}-obs",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{p}-pat"},
            "performer": [{"reference": f"Practitioner/{p}-gone", "display": "Dr Gone"}],
        },
        {
            "resourceType": "Observation",
            "id": f"{p}-fine",
            "status": "final",
            "code": {"text": "y"},
            "subject": {"reference": f"Patient/{p}-pat"},
        },
    ]
    create_on_source(source, resources)
    seeds = [
        {"resourceType": "Observation", "id": f"{p}-obs"},
        {"resourceType": "Observation", "id": f"{p}-fine"},
    ]

    name = f"dangle-fail-{run_id}"
    with pytest.raises(DanglingReferencesError) as caught:
        api_transfer(seeds, transfer_name=name)
    assert f"Practitioner/{p}-gone" in str(caught.value) and "performer[0]" in str(caught.value)
    assert not loaded(graph, name)  # nothing was written to the target
    for node in transfer_nodes(graph, name).values():
        assert node.get("target_id") is None

    name = f"dangle-drop-{run_id}"
    response = api_transfer(seeds, transfer_name=name, on_dangling="drop-reference")
    nodes = loaded(graph, name)
    obs = target_copy(target, nodes[f"Observation/{p}-obs"])
    assert obs["performer"] == [{"display": "Dr Gone"}]
    assert response.ok

    name = f"dangle-skip-{run_id}"
    response = api_transfer(seeds, transfer_name=name, on_dangling="skip-resource")
    statuses = {k: n["status"] for k, n in transfer_nodes(graph, name).items()}
    assert statuses[f"Observation/{p}-obs"] == "skipped"
    assert statuses[f"Observation/{p}-fine"] == "loaded"
    assert statuses[f"Patient/{p}-pat"] == "loaded"
    assert statuses[f"Practitioner/{p}-gone"] == "dangling"
