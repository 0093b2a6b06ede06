"""The FHIR client against an httpx MockTransport handler acting as a server."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from fhirgraph.errors import FhirError, FhirTransientError, FhirUnreachableError, ForeignHostError
from fhirgraph.fhir.auth import BearerAuth, ClientCredentialsAuth, build_auth
from fhirgraph.fhir.client import FhirClient
from tests.fakes import fhir, outcome, raw, searchset

BASE = "http://source.test/fhir"
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kwargs: object) -> FhirClient:
    return FhirClient(BASE, name="source", transport=httpx.MockTransport(handler), max_wait=0.01, **kwargs)  # type: ignore[arg-type]


def test_pages_follow_next_links() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "page=2" in str(request.url):
            return fhir(searchset([{"resource": {"resourceType": "Patient", "id": "2"}}]))
        return fhir(searchset([{"resource": {"resourceType": "Patient", "id": "1"}}], f"{BASE}?page=2"))

    ids = [e["resource"]["id"] for page in client(handler).pages("Patient") for e in page["entry"]]
    assert ids == ["1", "2"]


def test_next_link_to_another_host_is_refused() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return fhir(searchset([], "http://evil.test/fhir?page=2"))

    with pytest.raises(ForeignHostError, match=r"evil\.test"):
        list(client(handler).pages("Patient"))
    assert all("evil.test" not in url for url in seen)


def test_requests_to_other_hosts_never_leave() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"request escaped to {request.url}")

    with pytest.raises(ForeignHostError):
        client(handler).get("http://elsewhere.test/fhir/Patient/1")


def test_429_is_retried_honouring_retry_after() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return fhir({"resourceType": "OperationOutcome"}, 429, **{"Retry-After": "0"})
        return fhir({"resourceType": "Patient", "id": "1"})

    c = client(handler)
    assert c.get("Patient/1")["id"] == "1"
    assert len(calls) == 3 and c.retries == 2


def test_post_is_not_retried_unless_safe() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503)

    with pytest.raises(FhirTransientError):
        client(handler).transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert len(calls) == 1


def test_connection_refused_becomes_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(FhirUnreachableError, match="connection refused"):
        client(handler, max_attempts=2).get("metadata")


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (raw(200, b"<html></html>", "text/html"), "HTML instead of FHIR"),
        (httpx.Response(401, json={}), "401 Unauthorized"),
        (httpx.Response(403, json={}), "403 Forbidden"),
        (outcome(422, "Bad subject"), "Bad subject"),
    ],
)
def test_errors_are_one_clear_message(response: httpx.Response, message: str) -> None:
    with pytest.raises(FhirError, match=message):
        client(lambda request: response).get("Patient/1")


def test_malformed_json_is_retried_then_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return raw(200, b'{"resourceType": "Pat')

    with pytest.raises(FhirError, match="malformed JSON"):
        client(handler, max_attempts=2).get("Patient/1")


def test_exact_numbers_keep_their_text() -> None:
    body = b'{"resourceType":"Observation","id":"1","valueQuantity":{"value":120.00}}'

    def handler(request: httpx.Request) -> httpx.Response:
        return raw(200, body)

    from fhirgraph import jsontext

    assert jsontext.dumps(client(handler).get("Observation/1", exact=True)) == body.decode()


def test_client_credentials_token_is_cached() -> None:
    token_calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            token_calls.append(request)
            assert request.headers["Authorization"].startswith("Basic ")
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 3600})
        assert request.headers["Authorization"] == "Bearer tok"
        return fhir({"resourceType": "Patient", "id": "1"})

    auth = build_auth(client_id="id", client_secret="secret", oidc_provider_url="http://auth.test/token")
    assert isinstance(auth, ClientCredentialsAuth)
    c = client(handler, auth=auth)
    c.get("Patient/1")
    c.get("Patient/1")
    assert len(token_calls) == 1


def test_bearer_token_sent_and_hidden() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer s3cret"
        return fhir({"resourceType": "Patient", "id": "1"})

    auth = BearerAuth("s3cret")
    assert "s3cret" not in repr(auth)
    client(handler, auth=auth).get("Patient/1")


def test_only_one_kind_of_credentials() -> None:
    from fhirgraph.errors import ConfigError

    with pytest.raises(ConfigError, match="only one kind"):
        build_auth(username="u", password="p", token="t")


def test_transaction_body_keeps_decimals() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return fhir({"resourceType": "Bundle", "type": "transaction-response", "entry": []})

    from fhirgraph import jsontext

    resource = jsontext.loads('{"resourceType":"Observation","valueQuantity":{"value":120.00}}')
    client(handler).transaction(
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": resource}]}
    )
    assert b'"value":120.00' in sent[0]
    assert json.loads(sent[0])["entry"][0]["resource"]["valueQuantity"]["value"] == 120.0


def test_a_timeout_names_its_limit_and_how_to_raise_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = FhirClient(
        "http://target.test/fhir", name="target", timeout=7.5, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(FhirTransientError) as caught:
        client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    message = str(caught.value)
    assert "did not answer POST /fhir/ within 7.5 s (ReadTimeout)" in message
    assert "FHIRGRAPH_TARGET_TIMEOUT" in message
    assert client.read_timeout == 7.5
