"""The validating target (`stack/up validating`): a HAPI target that validates each request body.

It refuses what the ordinary target stores: resources missing required elements, codes outside
a required binding, unknown elements; like the ordinary target it also refuses references to
resources it does not hold. Refusals are 4xx with an OperationOutcome naming the problem.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fhirgraph.fhir.client import FhirClient
from fhirgraph.jsontext import JSON

MARKER_SYSTEM = "urn:fhirgraph:test:validating"
CLIENT_ERRORS = tuple(range(400, 500))


def marked(resource: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``resource`` with a fresh identifier, to find out later whether the server stored it."""
    marker = uuid.uuid4().hex
    return {**resource, "identifier": [{"system": MARKER_SYSTEM, "value": marker}]}, marker


def stored(client: FhirClient, resource_type: str, marker: str) -> int:
    found = client.get(resource_type, {"identifier": f"{MARKER_SYSTEM}|{marker}", "_summary": "count"})
    return int(found["total"])


def refused(client: FhirClient, method: str, path: str, body: JSON) -> tuple[int, list[dict[str, Any]]]:
    """Send a request the server must refuse: its 4xx status and the OperationOutcome's issues."""
    status, outcome = client.request(method, path, body=body, allow_status=CLIENT_ERRORS)
    assert 400 <= status < 500, f"{client.name} accepted it ({status}): {outcome}"
    assert outcome is not None and outcome["resourceType"] == "OperationOutcome", outcome
    return status, outcome["issue"]


def errors(issues: list[dict[str, Any]]) -> list[str]:
    return [i.get("diagnostics", "") for i in issues if i.get("severity") in ("error", "fatal")]


# Observation.status and Observation.code are 1..1; nothing else is wrong.
OBSERVATION_WITHOUT_STATUS_AND_CODE = {"resourceType": "Observation", "valueString": "no status, no code"}

# Condition.clinicalStatus has a required binding to condition-clinical (a CodeableConcept, so
# HAPI's parser takes any code; only the validator knows the value set). The subject (1..1) is
# contained, so that the code is the only problem on either server.
CONDITION_WITH_UNKNOWN_CLINICAL_STATUS = {
    "resourceType": "Condition",
    "contained": [{"resourceType": "Patient", "id": "p"}],
    "clinicalStatus": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "bogus"}]
    },
    "code": {"text": "x"},
    "subject": {"reference": "#p"},
}


def test_validating_target_is_up_and_says_it_validates(validating_target: FhirClient) -> None:
    capabilities = validating_target.capability_statement()
    assert capabilities["fhirVersion"] == "4.0.1"
    assert "(validates requests)" in capabilities["implementation"]["description"]


def test_valid_patient_is_created(validating_target: FhirClient) -> None:
    patient, marker = marked(
        {
            "resourceType": "Patient",
            "name": [{"family": "Valid"}],
            "gender": "female",
            "birthDate": "1970-01-01",
        }
    )
    status, created = validating_target.request("POST", "Patient", body=patient)
    assert status == 201 and created is not None and created["id"]
    assert validating_target.get(f"Patient/{created['id']}")["name"] == [{"family": "Valid"}]
    assert stored(validating_target, "Patient", marker) == 1


def test_missing_required_elements_are_refused(validating_target: FhirClient) -> None:
    observation, marker = marked(OBSERVATION_WITHOUT_STATUS_AND_CODE)
    status, issues = refused(validating_target, "POST", "Observation", observation)
    assert status == 422
    problems = errors(issues)
    assert any("Observation.status: minimum required = 1, but only found 0" in p for p in problems), problems
    assert any("Observation.code: minimum required = 1, but only found 0" in p for p in problems), problems
    assert stored(validating_target, "Observation", marker) == 0


def test_code_outside_a_required_binding_is_refused(validating_target: FhirClient) -> None:
    condition, marker = marked(CONDITION_WITH_UNKNOWN_CLINICAL_STATUS)
    status, issues = refused(validating_target, "POST", "Condition", condition)
    assert status == 422
    problems = errors(issues)
    assert any("condition-clinical#bogus" in p for p in problems), problems
    assert any("Condition Clinical Status Codes" in p and "required" in p for p in problems), problems
    assert stored(validating_target, "Condition", marker) == 0
    # with a code from the value set, the same Condition is stored
    active = {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
    status, created = validating_target.request(
        "POST", "Condition", body={**condition, "clinicalStatus": {"coding": [active]}}
    )
    assert status == 201 and created is not None
    assert stored(validating_target, "Condition", marker) == 1


def test_unknown_element_is_refused(validating_target: FhirClient, target: FhirClient) -> None:
    patient, marker = marked({"resourceType": "Patient", "nickname": "not an R4 element"})
    _, issues = refused(validating_target, "POST", "Patient", patient)
    assert any("Unrecognized property 'nickname'" in p for p in errors(issues)), issues
    assert stored(validating_target, "Patient", marker) == 0
    # the ordinary target stores it, without the unknown element
    status, created = target.request("POST", "Patient", body=patient)
    assert status == 201 and created is not None and "nickname" not in created


def test_reference_to_a_missing_resource_is_refused(validating_target: FhirClient) -> None:
    missing = f"Patient/missing-{uuid.uuid4().hex[:12]}"
    observation, marker = marked(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": missing},
        }
    )
    _, issues = refused(validating_target, "POST", "Observation", observation)
    assert any(missing in p and "not found" in p for p in errors(issues)), issues
    assert stored(validating_target, "Observation", marker) == 0


def test_one_invalid_entry_refuses_the_whole_transaction(validating_target: FhirClient) -> None:
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    patient, patient_marker = marked({"resourceType": "Patient", "name": [{"family": "InBundle"}]})
    observation, _ = marked({**OBSERVATION_WITHOUT_STATUS_AND_CODE, "subject": {"reference": patient_url}})
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": patient_url, "resource": patient, "request": {"method": "POST", "url": "Patient"}},
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": observation,
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    status, issues = refused(validating_target, "POST", "", bundle)
    assert status == 422
    located = [i for i in issues if i.get("severity") == "error"]
    assert located and all(i["expression"][0].startswith("Bundle.entry[1].resource") for i in located), (
        located
    )
    assert stored(validating_target, "Patient", patient_marker) == 0  # the valid entry went too

    # the same transaction with the Observation fixed goes through, urn:uuid reference resolved
    fixed = {**observation, "status": "final", "code": {"text": "x"}}
    bundle["entry"][1]["resource"] = fixed
    response = validating_target.transaction(bundle)
    assert [e["response"]["status"] for e in response["entry"]] == ["201 Created", "201 Created"]
    assert stored(validating_target, "Patient", patient_marker) == 1


@pytest.mark.parametrize(
    ("resource_type", "invalid"),
    [
        ("Observation", OBSERVATION_WITHOUT_STATUS_AND_CODE),
        ("Condition", CONDITION_WITH_UNKNOWN_CLINICAL_STATUS),
    ],
)
def test_ordinary_target_accepts_what_the_validating_one_refuses(
    validating_target: FhirClient, target: FhirClient, resource_type: str, invalid: dict[str, Any]
) -> None:
    resource, marker = marked(invalid)
    refused(validating_target, "POST", resource_type, resource)
    status, created = target.request("POST", resource_type, body=resource)
    assert status == 201 and created is not None
    assert stored(target, resource_type, marker) == 1
    assert stored(validating_target, resource_type, marker) == 0
