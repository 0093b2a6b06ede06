"""FHIR Bulk Data $export on the stack's source server (stack/hapi, fhirgraph.bulk-export).

What fhirgraph's bulk crawl relies on: kickoff with ``Prefer: respond-async`` answers 202 and a
status URL in Content-Location; the status URL answers 202 while the job runs, then 200 with the
manifest; each output URL is a Binary on the server's base that, fetched without a FHIR Accept
header, is the NDJSON file itself; DELETE on the status URL cancels. Each export is filtered to
resources made by the test (a unique tag), so that it stays small on a well-filled source.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import SOURCE_URL

TAG_SYSTEM = "urn:fhirgraph:test:bulk-export"
KICKOFF_HEADERS = {
    "Prefer": "respond-async",
    "Accept": "application/fhir+json",
    "Cache-Control": "no-cache",
}
# stack/up's servers finish a small export in ~3 s (batch2 maintenance every second); the
# hapiproject/hapi image of docker-compose.yml advances jobs once a minute.
EXPORT_DEADLINE = 300.0


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60.0) as client:
        try:
            metadata = client.get(f"{SOURCE_URL}/metadata", headers={"Accept": "application/fhir+json"})
        except httpx.HTTPError as exc:
            pytest.fail(f"the source FHIR server is not running ({exc}); start the stack with stack/up")
        operations = {op["name"] for rest in metadata.json()["rest"] for op in rest.get("operation", [])}
        if "export" not in operations:
            pytest.fail(
                f"{SOURCE_URL} offers no $export (a jar built before bulk export?): "
                "stack/down source, then stack/up source"
            )
        yield client


@pytest.fixture(scope="module")
def tagged(http: httpx.Client) -> dict[str, Any]:
    """A Patient, two Observations of it and a Group holding it, all with a tag of their own."""
    tag = uuid.uuid4().hex
    meta = {"tag": [{"system": TAG_SYSTEM, "code": tag}]}
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_url,
            "resource": {"resourceType": "Patient", "meta": meta, "name": [{"family": "Bulk"}]},
            "request": {"method": "POST", "url": "Patient"},
        },
        *(
            {
                "resource": {
                    "resourceType": "Observation",
                    "meta": meta,
                    "status": "final",
                    "code": {"text": f"bulk {n}"},
                    "subject": {"reference": patient_url},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
            for n in range(2)
        ),
        {
            "resource": {
                "resourceType": "Group",
                "meta": meta,
                "type": "person",
                "actual": True,
                "member": [{"entity": {"reference": patient_url}}],
            },
            "request": {"method": "POST", "url": "Group"},
        },
    ]
    response = http.post(
        SOURCE_URL,
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text
    ids = [entry["response"]["location"].split("/_history")[0] for entry in response.json()["entry"]]
    return {"tag": tag, "patient": ids[0], "observations": set(ids[1:3]), "group": ids[3]}


def kickoff(http: httpx.Client, path: str, params: dict[str, Any]) -> str:
    response = http.get(f"{SOURCE_URL}/{path}", params=params, headers=KICKOFF_HEADERS)
    assert response.status_code == 202, response.text
    status_url = response.headers["Content-Location"]
    assert status_url.startswith(f"{SOURCE_URL}/$export-poll-status?_jobId=")
    return status_url


def wait_for_manifest(http: httpx.Client, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + EXPORT_DEADLINE
    while True:
        response = http.get(status_url)
        if response.status_code != 202:
            break
        assert response.headers["X-Progress"].startswith("Build in progress")
        assert int(response.headers["Retry-After"]) > 0
        assert time.monotonic() < deadline, f"export not done after {EXPORT_DEADLINE:.0f} s"
        time.sleep(0.25)
    assert response.status_code == 200, response.text
    return response.json()


def download(http: httpx.Client, manifest: dict[str, Any]) -> dict[str, set[str]]:
    """resource type -> 'Type/id' of every resource in the manifest's NDJSON files."""
    found: dict[str, set[str]] = {}
    for output in manifest["output"]:
        assert output["url"].startswith(f"{SOURCE_URL}/Binary/")
        response = http.get(output["url"], headers={"Accept": "application/fhir+ndjson"})
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/fhir+ndjson")
        for line in response.text.splitlines():
            resource = json.loads(line)
            assert resource["resourceType"] == output["type"]
            found.setdefault(output["type"], set()).add(f"{resource['resourceType']}/{resource['id']}")
    return found


def tag_filters(tag: str, *types: str) -> list[str]:
    return [f"{t}?_tag={TAG_SYSTEM}|{tag}" for t in types]


def test_system_export_delivers_the_created_resources_as_ndjson(
    http: httpx.Client, tagged: dict[str, Any]
) -> None:
    status_url = kickoff(
        http,
        "$export",
        {"_type": "Patient,Observation", "_typeFilter": tag_filters(tagged["tag"], "Patient", "Observation")},
    )
    manifest = wait_for_manifest(http, status_url)

    assert manifest["request"].startswith(f"{SOURCE_URL}/$export?_type=Patient")
    assert manifest["transactionTime"] and manifest["requiresAccessToken"] is True
    assert manifest["error"] == []
    assert download(http, manifest) == {
        "Patient": {tagged["patient"]},
        "Observation": tagged["observations"],
    }


def test_group_export_delivers_the_members_and_their_compartments(
    http: httpx.Client, tagged: dict[str, Any]
) -> None:
    status_url = kickoff(http, f"{tagged['group']}/$export", {"_type": "Patient,Observation"})
    found = download(http, wait_for_manifest(http, status_url))
    assert found == {"Patient": {tagged["patient"]}, "Observation": tagged["observations"]}


def test_delete_on_the_status_url_cancels_the_export(http: httpx.Client, tagged: dict[str, Any]) -> None:
    # A small export can finish within a second: cancel right after the kickoff, and try again
    # in the unlikely case that it was already complete (404 "already ... completed").
    for _ in range(3):
        status_url = kickoff(
            http, "$export", {"_type": "Patient", "_typeFilter": tag_filters(tagged["tag"], "Patient")}
        )
        cancelled = http.delete(status_url)
        if cancelled.status_code == 202:
            break
        assert cancelled.status_code == 404 and "completed" in cancelled.text, cancelled.text
    assert cancelled.status_code == 202, cancelled.text
    assert "successfully cancelled" in cancelled.text
    after = http.get(status_url)
    assert after.status_code == 404 and "was cancelled" in after.text


def test_kickoff_without_respond_async_is_refused(http: httpx.Client) -> None:
    response = http.get(
        f"{SOURCE_URL}/$export", params={"_type": "Patient"}, headers={"Accept": "application/fhir+json"}
    )
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
