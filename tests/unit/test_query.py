"""The Python API's query builder against an httpx MockTransport acting as the source."""

from __future__ import annotations

import httpx
import pytest

from fhirgraph import ConfigError, FhirServer
from tests.fakes import fhir, searchset

BASE = "http://source.test/fhir"


def server(pages: dict[str, dict[str, object]], seen: list[httpx.URL]) -> FhirServer:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        key = request.url.params.get("page", "1")
        return fhir(pages[key])

    return FhirServer(BASE, transport=httpx.MockTransport(handler))


def page(ids: list[str], next_page: str | None, included: list[str] = ()) -> dict[str, object]:  # type: ignore[assignment]
    entries = [
        {
            "resource": {"resourceType": "Condition", "id": i, "subject": {"reference": "Patient/p"}},
            "search": {"mode": "match"},
        }
        for i in ids
    ]
    entries += [
        {"resource": {"resourceType": "Patient", "id": i}, "search": {"mode": "include"}} for i in included
    ]
    return searchset(entries, f"{BASE}?page={next_page}" if next_page else None)


def test_where_include_limit_and_paging() -> None:
    seen: list[httpx.URL] = []
    src = server({"1": page(["a", "b"], "2", included=["p"]), "2": page(["c", "d"], None)}, seen)
    query = (
        src.query("Condition")
        .where(code="123")
        .where("clinical-status=active")
        .include("Condition:subject")
        .limit(3)
    )
    conditions = query.resources
    assert [c.id for c in conditions] == ["a", "b", "c"]
    assert type(conditions[0]).__name__ == "Condition"
    first = seen[0]
    assert first.path == "/fhir/Condition"
    assert first.params.get("code") == "123" and first.params.get("clinical-status") == "active"
    assert first.params.get("_include") == "Condition:subject" and first.params.get("_count") == "3"


def test_iteration_covers_every_page_as_raw_dicts() -> None:
    src = server({"1": page(["a"], "2"), "2": page(["b"], "3"), "3": page(["c"], None)}, [])
    assert [r["id"] for r in src.query("Condition")] == ["a", "b", "c"]
    assert src.query("Condition").raw[2]["id"] == "c"


def test_invalid_model_is_a_clear_error_and_raw_still_works() -> None:
    broken = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Condition", "id": "x"}}],
    }
    src = server({"1": broken}, [])
    with pytest.raises(ConfigError, match=r"Condition/x is not a valid fhir\.resources R4B model.*use \.raw"):
        _ = src.query("Condition").resources
    assert src.query("Condition").raw == [{"resourceType": "Condition", "id": "x"}]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.query("Conditions"), "did you mean Condition"),
        (lambda s: s.query("Condition").limit(0), "limit must be at least 1"),
        (lambda s: s.query("Condition").where("code"), "not name=value"),
        (lambda s: s.query("Condition").include(), "include\\(\\) needs"),
        (lambda s: s.transfer(s, query="Condition"), "same server"),
        (lambda s: s.transfer(FhirServer("http://t.test/fhir"), resources=[{"id": "1"}]), "no resourceType"),
        (
            lambda s: s.transfer(FhirServer("http://t.test/fhir"), resources=[{"resourceType": "Patient"}]),
            "has no id",
        ),
        (
            lambda s: s.transfer(FhirServer("http://t.test/fhir"), resources=["Patient/1"]),
            "not a FHIR resource",
        ),
        (lambda s: s.transfer(FhirServer("http://t.test/fhir")), "exactly one of query= or resources="),
    ],
)
def test_bad_api_input_is_a_clear_error(call: object, message: str) -> None:
    src = server({}, [])
    with pytest.raises(ConfigError, match=message):
        call(src)  # type: ignore[operator]
