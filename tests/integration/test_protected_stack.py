"""The protected servers (`stack/up protected`): real OAuth2 with SMART Backend Services scopes.

Keycloak issues the tokens (client credentials; client secret or a signed JWT assertion); the
two HAPI servers check them (signature against Keycloak's keys, issuer, expiry) and the
scopes: ``system/*.read`` (or ``system/*.write``) to read, ``system/*.write`` to write. Plain
httpx throughout, so that these tests check the servers, not fhirgraph's client.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirgraph.testing.stack import ProtectedStack, set_client_enabled

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# fhirgraph.oauth2.clock-skew of stack/hapi (its default): leeway on a token's exp.
CLOCK_SKEW = 5
SERVERS = ["source_url", "target_url"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_rs384(claims: dict[str, Any], key: Path, kid: str | None) -> str:
    """A compact JWS (RS384): with PyJWT if it is installed (with cryptography), else openssl."""
    headers = {"kid": kid} if kid else {}
    try:
        import jwt

        return str(jwt.encode(claims, key.read_bytes(), algorithm="RS384", headers=headers))
    except (ImportError, NotImplementedError):  # no PyJWT, or PyJWT without cryptography
        pass
    header = {"alg": "RS384", "typ": "JWT", **headers}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = subprocess.run(
        ["openssl", "dgst", "-sha384", "-sign", str(key)],
        input=signing_input.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return f"{signing_input}.{b64url(signature)}"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def secret_token(stack: ProtectedStack, scope: str | None, client_id: str | None = None) -> str:
    data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    response = httpx.post(
        stack.token_endpoint, data=data, auth=(client_id or stack.secret_client_id, stack.client_secret)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def assertion(stack: ProtectedStack, **overrides: Any) -> str:
    """A client assertion for fhirgraph-jwt as SMART Backend Services prescribes it."""
    now = int(time.time())
    claims = {
        "iss": stack.jwt_client_id,
        "sub": stack.jwt_client_id,
        "aud": stack.token_endpoint,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 60,
        **overrides,
    }
    return sign_rs384(claims, stack.private_key_path, stack.kid)


def jwt_token_request(stack: ProtectedStack, client_assertion: str, scope: str) -> httpx.Response:
    return httpx.post(
        stack.token_endpoint,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": client_assertion,
        },
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


def transaction(patient_marker: str) -> dict[str, Any]:
    patient, observation = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:fhirgraph:test:protected", "value": patient_marker}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": observation,
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "protected"},
                    "subject": {"reference": patient},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


def outcome_issue(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return dict(body["issue"][0])


@pytest.mark.parametrize("server", SERVERS)
def test_requests_without_a_token_get_401(protected_stack: ProtectedStack, server: str) -> None:
    base = getattr(protected_stack, server)
    for method, path, body in [
        ("GET", "Patient", None),
        ("POST", "Patient/_search", None),
        ("POST", "Patient", {"resourceType": "Patient"}),
        ("POST", "", transaction("no-token")),
    ]:
        response = httpx.request(
            method, f"{base}/{path}", json=body, headers={"Accept": "application/fhir+json"}
        )
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), response.headers
        assert outcome_issue(response)["code"] == "login"


@pytest.mark.parametrize("server", SERVERS)
def test_metadata_and_smart_configuration_are_open(protected_stack: ProtectedStack, server: str) -> None:
    base = getattr(protected_stack, server)
    keycloak = httpx.get(f"{protected_stack.issuer}/.well-known/openid-configuration").json()
    assert keycloak["token_endpoint"] == protected_stack.token_endpoint
    assert keycloak["issuer"] == protected_stack.issuer

    smart = httpx.get(f"{base}/.well-known/smart-configuration")
    assert smart.status_code == 200 and smart.headers["Content-Type"].startswith("application/json")
    config = smart.json()
    assert config["token_endpoint"] == protected_stack.token_endpoint
    assert config["issuer"] == protected_stack.issuer
    assert "client_credentials" in config["grant_types_supported"]
    assert {"private_key_jwt", "client_secret_basic"} <= set(config["token_endpoint_auth_methods_supported"])
    assert {"RS384", "ES384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])
    assert {"system/*.read", "system/*.write"} <= set(config["scopes_supported"])
    assert "client-confidential-asymmetric" in config["capabilities"]

    metadata = httpx.get(f"{base}/metadata", headers={"Accept": "application/fhir+json"})
    assert metadata.status_code == 200 and metadata.json()["resourceType"] == "CapabilityStatement"
    security = metadata.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]
    assert uris["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert uris["extension"][0] == {"url": "token", "valueUri": protected_stack.token_endpoint}


def test_read_scope_reads_but_cannot_write(protected_stack: ProtectedStack) -> None:
    token = secret_token(protected_stack, protected_stack.read_scope)
    claims = claims_of(token)
    assert claims["iss"] == protected_stack.issuer
    assert claims["azp"] == protected_stack.secret_client_id
    assert claims["scope"].split() == ["system/*.read"]
    for base in (protected_stack.source_url, protected_stack.target_url):
        search = httpx.get(f"{base}/Patient", params={"_count": "1"}, headers=bearer(token))
        assert search.status_code == 200 and search.json()["resourceType"] == "Bundle", search.text
        post_search = httpx.post(f"{base}/Patient/_search", data={"_count": "1"}, headers=bearer(token))
        assert post_search.status_code == 200, post_search.text
        for method, path, body in [
            ("POST", "Patient", {"resourceType": "Patient"}),
            ("PUT", "Patient/protected-read-only", {"resourceType": "Patient", "id": "protected-read-only"}),
            ("DELETE", "Patient/protected-read-only", None),
            ("POST", "", transaction("read-only")),
        ]:
            response = httpx.request(method, f"{base}/{path}", json=body, headers=bearer(token))
            assert response.status_code == 403, (method, path, response.text)
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith("Bearer") and 'error="insufficient_scope"' in challenge
            assert 'scope="system/*.write"' in challenge
            assert outcome_issue(response)["code"] == "forbidden"


def test_a_token_without_scopes_reads_nothing(protected_stack: ProtectedStack) -> None:
    token = secret_token(protected_stack, None)
    assert "system/" not in claims_of(token).get("scope", "")
    response = httpx.get(f"{protected_stack.source_url}/Patient", headers=bearer(token))
    assert response.status_code == 403 and 'scope="system/*.read"' in response.headers["WWW-Authenticate"]


def test_write_scope_writes_a_transaction(protected_stack: ProtectedStack) -> None:
    token = secret_token(protected_stack, protected_stack.write_scope)
    assert claims_of(token)["scope"].split() == ["system/*.write"]
    for base in (protected_stack.source_url, protected_stack.target_url):
        marker = uuid.uuid4().hex
        response = httpx.post(base, json=transaction(marker), headers=bearer(token))
        assert response.status_code == 200, response.text
        patient_location, observation_location = (e["response"]["location"] for e in response.json()["entry"])
        observation = httpx.get(f"{base}/{observation_location.split('/_history')[0]}", headers=bearer(token))
        assert observation.status_code == 200
        assert observation.json()["subject"]["reference"] == patient_location.split("/_history")[0]
        found = httpx.get(
            f"{base}/Patient",
            params={"identifier": f"urn:fhirgraph:test:protected|{marker}"},
            headers=bearer(token),
        )
        assert found.json()["total"] == 1


def test_protected_source_and_target_keep_their_integrity_settings(protected_stack: ProtectedStack) -> None:
    token = secret_token(protected_stack, protected_stack.write_scope)
    dangling = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/does-not-exist"},
    }
    source = httpx.post(f"{protected_stack.source_url}/Observation", json=dangling, headers=bearer(token))
    assert source.status_code == 201, source.text
    target = httpx.post(f"{protected_stack.target_url}/Observation", json=dangling, headers=bearer(token))
    assert 400 <= target.status_code < 500 and "does-not-exist" in target.text


def test_signed_jwt_client_gets_a_token(protected_stack: ProtectedStack) -> None:
    assert protected_stack.private_key_path.stat().st_mode & 0o077 == 0, "the private key must be 0600"
    jwk = json.loads(protected_stack.public_jwk_path.read_text())
    assert jwk["kid"] == protected_stack.kid and jwk["kty"] == "RSA" and "d" not in jwk

    response = jwt_token_request(protected_stack, assertion(protected_stack), "system/*.read system/*.write")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"].lower() == "bearer" and body["expires_in"] == 300
    claims = claims_of(body["access_token"])
    assert claims["azp"] == protected_stack.jwt_client_id
    assert set(claims["scope"].split()) == {"system/*.read", "system/*.write"}
    token = body["access_token"]
    read = httpx.get(f"{protected_stack.target_url}/Patient", params={"_count": "1"}, headers=bearer(token))
    assert read.status_code == 200
    write = httpx.post(
        f"{protected_stack.target_url}/Patient", json={"resourceType": "Patient"}, headers=bearer(token)
    )
    assert write.status_code == 201, write.text


def test_bad_client_assertions_are_refused(protected_stack: ProtectedStack, tmp_path: Path) -> None:
    once = assertion(protected_stack)
    assert jwt_token_request(protected_stack, once, "system/*.read").status_code == 200
    other_key = tmp_path / "other.pem"
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            str(other_key),
        ],
        capture_output=True,
        check=True,
    )
    now = int(time.time())
    other_claims = {
        "iss": protected_stack.jwt_client_id,
        "sub": protected_stack.jwt_client_id,
        "aud": protected_stack.token_endpoint,
        "jti": str(uuid.uuid4()),
        "exp": now + 60,
    }
    cases = {
        "the same assertion again (jti)": (once, "Token reuse detected"),
        "another audience": (
            assertion(protected_stack, aud="https://example.org/token"),
            "Invalid token audience",
        ),
        "expired": (assertion(protected_stack, exp=now - 30), "Token is not active"),
        "another key": (sign_rs384(other_claims, other_key, protected_stack.kid), "Signature"),
    }
    for case, (client_assertion, description) in cases.items():
        response = jwt_token_request(protected_stack, client_assertion, "system/*.read")
        assert response.status_code == 400, (case, response.text)
        assert response.json()["error"] == "invalid_client", (case, response.text)
        assert description in response.json()["error_description"], (case, response.text)


def test_a_token_not_signed_by_keycloak_is_refused(protected_stack: ProtectedStack) -> None:
    """Right issuer and scopes, but signed with the client's key instead of Keycloak's."""
    now = int(time.time())
    forged = sign_rs384(
        {
            "iss": protected_stack.issuer,
            "scope": "system/*.read system/*.write",
            "iat": now,
            "exp": now + 300,
        },
        protected_stack.private_key_path,
        protected_stack.kid,
    )
    response = httpx.get(f"{protected_stack.source_url}/Patient", headers=bearer(forged))
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_short_lived_token_expires_and_is_then_refused(protected_stack: ProtectedStack) -> None:
    token = secret_token(
        protected_stack, protected_stack.read_scope, client_id=protected_stack.short_client_id
    )
    claims = claims_of(token)
    assert claims["exp"] - claims["iat"] == protected_stack.short_token_lifespan
    url = f"{protected_stack.source_url}/Patient"
    assert httpx.get(url, headers=bearer(token)).status_code == 200
    time.sleep(max(0.0, claims["exp"] + CLOCK_SKEW + 1 - time.time()))
    response = httpx.get(url, headers=bearer(token))
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in challenge and "expired" in challenge.lower()
    assert "expired" in outcome_issue(response)["diagnostics"].lower()


def test_a_disabled_client_cannot_get_a_token(protected_stack: ProtectedStack) -> None:
    client = protected_stack.revocable_client_id
    issued_before = secret_token(protected_stack, protected_stack.read_scope, client_id=client)
    set_client_enabled(protected_stack, client, False)
    try:
        response = httpx.post(
            protected_stack.token_endpoint,
            data={"grant_type": "client_credentials", "scope": protected_stack.read_scope},
            auth=(client, protected_stack.client_secret),
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
        # The servers check tokens offline (signature, issuer, expiry): one issued before
        # the client was disabled works until it expires.
        still = httpx.get(f"{protected_stack.source_url}/Patient", headers=bearer(issued_before))
        assert still.status_code == 200
    finally:
        set_client_enabled(protected_stack, client, True)
    assert secret_token(protected_stack, protected_stack.read_scope, client_id=client)


# -- fhirgraph itself against the protected pair ---------------------------------------------


def fhirgraph_env(stack: ProtectedStack, how: str, **extra: str) -> dict[str, str]:
    """The environment of a fhirgraph run against the protected pair, authenticated ``how``."""
    from tests.integration.conftest import NEO4J

    env = {
        "NEO4J_URI": NEO4J.uri,
        "NEO4J_USER": NEO4J.user,
        "NEO4J_PASSWORD": NEO4J.password,
        "FHIRGRAPH_SOURCE_URL": stack.source_url,
        "FHIRGRAPH_TARGET_URL": stack.target_url,
        "FHIRGRAPH_LINKAGE_KEY": uuid.uuid4().hex * 2,
    }
    for side, scope in (("SOURCE", stack.read_scope), ("TARGET", f"{stack.read_scope} {stack.write_scope}")):
        if how == "jwt":  # SMART Backend Services: token endpoint discovered, default scopes
            env[f"FHIRGRAPH_{side}_CLIENT_ID"] = stack.jwt_client_id
            env[f"FHIRGRAPH_{side}_PRIVATE_KEY_FILE"] = str(stack.private_key_path)
            env[f"FHIRGRAPH_{side}_KEY_ID"] = stack.kid
        else:  # a client secret, the token endpoint discovered too
            env[f"FHIRGRAPH_{side}_CLIENT_ID"] = how
            env[f"FHIRGRAPH_{side}_CLIENT_SECRET"] = stack.client_secret
            env[f"FHIRGRAPH_{side}_SCOPE"] = scope
    return {**env, **extra}


def fhirgraph(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    command = [str(Path(sys.executable).with_name("fhirgraph")), *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=900)


def put_on_protected_source(stack: ProtectedStack, p: str, observations: int = 5) -> None:
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": f"{p}-pat", "name": [{"family": "Müller"}]},
        {"resourceType": "Practitioner", "id": f"{p}-doc"},
    ]
    resources += [
        {
            "resourceType": "Observation",
            "id": f"{p}-o{i}",
            "status": "final",
            "code": {"text": "bp"},
            "subject": {"reference": f"Patient/{p}-pat"},
            "performer": [{"reference": f"Practitioner/{p}-doc"}],
            "valueQuantity": {"value": 120.5},
        }
        for i in range(observations)
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }
    token = secret_token(stack, f"{stack.read_scope} {stack.write_scope}")
    answer = httpx.post(stack.source_url, json=bundle, headers=bearer(token), timeout=120)
    assert answer.status_code == 200, answer.text


#: how every JWT fhirgraph or Keycloak makes begins (a header ``{"alg": ...``, base64url)
JWT_START = "eyJhbGciOi"


def secrets_of(stack: ProtectedStack) -> list[str]:
    """The client secret, every line of the private key, and the start of any JWT."""
    pem = [line for line in stack.private_key_path.read_text().splitlines() if line and "-----" not in line]
    return [stack.client_secret, *pem, JWT_START]


def assert_no_secret(stack: ProtectedStack, *texts: str) -> None:
    for text in texts:
        for secret in secrets_of(stack):
            assert secret not in text, f"{secret[:6]}... leaked"


@pytest.mark.parametrize("how", ["fhirgraph-secret", "jwt"])
def test_a_transfer_between_protected_servers_verifies(
    protected_stack: ProtectedStack, how: str, tmp_path: Path
) -> None:
    from fhirgraph.graph import Graph
    from tests.integration.conftest import NEO4J

    p = f"sec-{uuid.uuid4().hex[:8]}"
    put_on_protected_source(protected_stack, p)
    env = fhirgraph_env(protected_stack, how)
    name = f"secured-{how}-{p}"
    moved = fhirgraph(
        env, "transfer", "--transfer", name, "--resource", f"Observation/{p}-o0", "--no-progress"
    )
    assert moved.returncode == 0, moved.stdout + moved.stderr
    checked = fhirgraph(env, "verify", "--transfer", name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    status = fhirgraph(env, "status", "--transfer", name, "--json")
    report = tmp_path / "report.html"
    fhirgraph(env, "report", "--transfer", name, "--out", str(report))
    with Graph(NEO4J) as graph:
        staged = json.dumps(graph.query("MATCH (n {transfer: $t}) RETURN n {.*} AS n", t=name), default=str)
        staged += json.dumps(
            graph.query("MATCH (t:Transfer {name: $t}) RETURN t {.*} AS t", t=name), default=str
        )
    assert json.loads(status.stdout)["totals"] == {"loaded": 3}
    assert_no_secret(
        protected_stack,
        moved.stdout, moved.stderr, checked.stdout, checked.stderr, status.stdout, report.read_text(), staged,
    )  # fmt: skip


def test_a_token_that_expires_during_a_transfer_is_replaced_unnoticed(
    protected_stack: ProtectedStack,
) -> None:
    p = f"sec-short-{uuid.uuid4().hex[:8]}"
    put_on_protected_source(protected_stack, p, observations=5)
    # after the first bundle, the transfer waits out the first token's life, then goes on
    pause = protected_stack.short_token_lifespan + 5
    env = fhirgraph_env(
        protected_stack, protected_stack.short_client_id, FHIRGRAPH_PAUSE_AT=f"after_write_back:{pause}"
    )
    name = f"secured-short-{p}"
    started = time.monotonic()
    moved = fhirgraph(
        env, "transfer", "--transfer", name, f"Observation?subject=Patient/{p}-pat",
        "--bundle-size", "1", "--concurrency", "1", "--no-progress",
    )  # fmt: skip
    took = time.monotonic() - started
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert took > pause, f"the transfer took {took:.1f} s: it did not wait"
    checked = fhirgraph(env, "verify", "--transfer", name)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_disabled_client_and_a_wrong_key_are_one_clear_line(
    protected_stack: ProtectedStack, tmp_path: Path
) -> None:
    p = f"sec-bad-{uuid.uuid4().hex[:8]}"
    put_on_protected_source(protected_stack, p, observations=1)
    client = protected_stack.revocable_client_id
    set_client_enabled(protected_stack, client, False)
    try:
        refused = fhirgraph(
            fhirgraph_env(protected_stack, client), "transfer", "--transfer", f"secured-off-{p}",
            "--resource", f"Observation/{p}-o0", "--no-progress",
        )  # fmt: skip
    finally:
        set_client_enabled(protected_stack, client, True)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert len(errors) == 1 and "source server" in errors[0] and "invalid client" in errors[0].lower(), errors
    other_key = tmp_path / "other.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(other_key), "2048"], check=True, capture_output=True)
    other_key.chmod(0o600)
    wrong = fhirgraph(
        fhirgraph_env(
            protected_stack, "jwt", FHIRGRAPH_SOURCE_PRIVATE_KEY_FILE=str(other_key),
            FHIRGRAPH_TARGET_PRIVATE_KEY_FILE=str(other_key),
        ),
        "transfer", "--transfer", f"secured-key-{p}", "--resource", f"Observation/{p}-o0", "--no-progress",
    )  # fmt: skip
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("Error:")]
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert len(errors) == 1 and "source server" in errors[0] and "signed client assertion" in errors[0], (
        errors
    )
    assert_no_secret(protected_stack, refused.stdout, refused.stderr, wrong.stdout, wrong.stderr)
