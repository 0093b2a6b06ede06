"""OAuth2 against an httpx MockTransport acting as a FHIR server and its authorisation server:
SMART Backend Services (a signed client assertion), discovery, the token cache, the
once-on-401 refresh, refusals, and the client-secret flow sharing all of it."""

from __future__ import annotations

import json
import logging
import stat
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhirgraph.api import FhirServer
from fhirgraph.config import build_settings
from fhirgraph.errors import ConfigError, FhirError, FhirTerminalError, ForeignHostError
from fhirgraph.fhir.auth import ClientCredentialsAuth, PrivateKeyJwtAuth, build_auth
from fhirgraph.fhir.client import FhirClient
from fhirgraph.fhir.signing import ASSERTION_TYPE, load_signing_key
from fhirgraph.session import make_client
from tests.fakes import fhir, outcome

BASE = "https://fhir.test/fhir"
TOKEN_URL = "https://auth.test/realms/fhir/protocol/openid-connect/token"
CLIENT_ID = "fhirgraph-loader"
KEYCLOAK_BAD_CLIENT = {
    "error": "invalid_client",
    "error_description": "Invalid client or Invalid client credentials",
}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# -- keys ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def pem(
    key: PrivateKey | ed25519.Ed25519PrivateKey,
    form: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


def private_jwk(key: PrivateKey, **extra: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        return {**RSAAlgorithm.to_jwk(key, as_dict=True), **extra}
    return {**ECAlgorithm.to_jwk(key, as_dict=True), **extra}


def key_file(path: Path, content: bytes | dict[str, Any], mode: int = 0o600) -> str:
    path.write_bytes(json.dumps(content).encode() if isinstance(content, dict) else content)
    path.chmod(mode)
    return str(path)


def secret_parts(key: PrivateKey) -> list[str]:
    """Pieces of the private key that must never show: PEM lines and the JWK's private members."""
    body = [line for line in pem(key).decode().splitlines() if "-----" not in line]
    jwk = private_jwk(key)
    return body + [str(jwk[m]) for m in ("d", "p", "q", "dp", "dq", "qi") if m in jwk]


# -- the fake servers -----------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SmartServer:
    """A FHIR server with a SMART configuration, and the authorisation server it names.

    The token endpoint checks each assertion as Keycloak does (signature with the
    registered public key, ``aud``, ``iss`` = ``sub``, a ``jti`` never seen before) and
    hands out ``token-1``, ``token-2``, ...; the FHIR server accepts only live tokens.
    """

    def __init__(self, public_key: Any, *, lifetime: float = 300, discovery: bool = True):
        self.public_key = public_key
        self.lifetime = lifetime
        self.discovery = discovery
        self.requests: list[httpx.Request] = []
        self.token_forms: list[dict[str, str]] = []
        self.live: set[str] = set()
        self.issued = 0
        self.seen_jti: set[str] = set()
        self.token_answer: httpx.Response | None = None  # instead of a token
        self.fhir_always_401 = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url)
        if url == f"{BASE}/.well-known/smart-configuration":
            if not self.discovery:
                return httpx.Response(404, text="Not Found")
            return httpx.Response(
                200,
                json={
                    "token_endpoint": TOKEN_URL,
                    "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
                    "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                    "grant_types_supported": ["client_credentials"],
                },
            )
        if url == TOKEN_URL:
            return self.token(request)
        assert url.startswith(BASE), f"request escaped to {url}"
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.fhir_always_401 or bearer not in self.live:
            return outcome(401, "invalid or expired token")
        return fhir({"resourceType": "Patient", "id": "1"})

    def token(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and "Authorization" not in request.headers
        form = dict(urllib.parse.parse_qsl(request.content.decode()))
        self.token_forms.append(form)
        if self.token_answer is not None:
            return self.token_answer
        try:
            claims = jwt.decode(
                form["client_assertion"],
                self.public_key,
                algorithms=["RS384", "ES384"],
                audience=TOKEN_URL,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.InvalidTokenError as exc:
            return httpx.Response(
                400,
                json={
                    "error": "invalid_client",
                    "error_description": f"Client authentication with signed JWT failed: {exc}",
                },
            )
        if claims["iss"] != claims["sub"] or claims["jti"] in self.seen_jti:
            return httpx.Response(
                400, json={"error": "invalid_client", "error_description": "Token reuse detected"}
            )
        self.seen_jti.add(claims["jti"])
        self.issued += 1
        token = f"token-{self.issued}"
        self.live.add(token)
        return httpx.Response(
            200,
            json={
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.lifetime,
                "scope": form.get("scope"),
            },
        )

    def revoke(self) -> None:
        self.live.clear()

    @property
    def token_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) == TOKEN_URL]

    @property
    def fhir_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if "/.well-known/" not in str(r.url) and str(r.url) != TOKEN_URL]

    def assertions(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(header, claims) of every assertion received, signature checked."""
        return [
            (
                jwt.get_unverified_header(form["client_assertion"]),
                jwt.decode(
                    form["client_assertion"],
                    self.public_key,
                    algorithms=["RS384", "ES384"],
                    audience=TOKEN_URL,
                ),
            )
            for form in self.token_forms
        ]


def smart_client(server: SmartServer, key_path: str, **settings: Any) -> FhirClient:
    auth = build_auth(
        server="source", base_url=BASE, client_id=CLIENT_ID, private_key_file=key_path, **settings
    )
    return FhirClient(BASE, name="source", auth=auth, transport=httpx.MockTransport(server), max_wait=0.01)


def clocked_client(server: SmartServer, key_path: str, clock: Clock) -> FhirClient:
    auth = PrivateKeyJwtAuth(
        CLIENT_ID,
        load_signing_key(key_path),
        server="source",
        fhir_base=BASE,
        scope="system/*.read",
        clock=clock,
    )
    return FhirClient(BASE, name="source", auth=auth, transport=httpx.MockTransport(server), max_wait=0.01)


# -- SMART Backend Services --------------------------------------------------------
def test_discovery_then_a_token_then_the_fhir_request(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    server = SmartServer(rsa_key.public_key())
    client = smart_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)))
    assert client.get("Patient/1")["id"] == "1"
    assert [(r.method, str(r.url)) for r in server.requests] == [
        ("GET", f"{BASE}/.well-known/smart-configuration"),
        ("POST", TOKEN_URL),
        ("GET", f"{BASE}/Patient/1"),
    ]
    assert "Authorization" not in server.requests[0].headers  # discovery carries no credentials
    assert server.requests[2].headers["Authorization"] == "Bearer token-1"


@pytest.mark.parametrize(("which", "alg"), [("rsa", "RS384"), ("ec", "ES384")])
def test_the_assertion_is_signed_and_claims_what_smart_asks(
    which: str, alg: str, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    key = rsa_key if which == "rsa" else ec_key
    server = SmartServer(key.public_key())
    client = smart_client(
        server, key_file(tmp_path / "key.pem", pem(key)), key_id="kid-7", scope="system/*.read"
    )
    client.get("Patient/1")
    [form] = server.token_forms
    assert form["grant_type"] == "client_credentials"
    assert (
        form["client_assertion_type"]
        == ASSERTION_TYPE
        == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )
    assert form["scope"] == "system/*.read"
    [(header, claims)] = server.assertions()
    assert header == {"alg": alg, "typ": "JWT", "kid": "kid-7"}
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert len(claims["jti"]) >= 16


def test_a_fresh_jti_for_every_token_request(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    server = SmartServer(rsa_key.public_key())
    clock = Clock()
    client = clocked_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)), clock)
    for _ in range(3):
        client.get("Patient/1")
        clock.now += 1000
    jtis = [claims["jti"] for _, claims in server.assertions()]
    assert len(jtis) == 3 and len(set(jtis)) == 3


def test_the_token_is_cached_for_many_requests(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    server = SmartServer(rsa_key.public_key())
    client = smart_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)))
    for _ in range(20):
        client.get("Patient/1")
    assert len(server.token_requests) == 1 and len(server.fhir_requests) == 20
    assert sum("/.well-known/" in str(r.url) for r in server.requests) == 1


def test_a_token_about_to_expire_is_replaced(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    server = SmartServer(rsa_key.public_key(), lifetime=300)
    clock = Clock()
    client = clocked_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)), clock)
    client.get("Patient/1")
    clock.now += 269  # renewed 30 s before expiry
    client.get("Patient/1")
    assert len(server.token_requests) == 1
    clock.now += 2
    client.get("Patient/1")
    assert len(server.token_requests) == 2
    assert server.fhir_requests[-1].headers["Authorization"] == "Bearer token-2"


def test_a_401_fetches_one_new_token_and_repeats_the_request(
    rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    server = SmartServer(rsa_key.public_key())
    client = smart_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)))
    client.get("Patient/1")
    server.revoke()
    before = len(server.requests)
    assert client.get("Patient/1")["id"] == "1"
    assert [str(r.url) for r in server.requests[before:]] == [
        f"{BASE}/Patient/1",
        TOKEN_URL,
        f"{BASE}/Patient/1",
    ]
    assert server.requests[-1].headers["Authorization"] == "Bearer token-2"


def test_a_401_repeats_a_post_with_its_body(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    server = SmartServer(rsa_key.public_key())
    client = smart_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)))
    client.get("Patient/1")
    server.revoke()
    status, _ = client.request("POST", "Patient/_search", form=[("name", "x")], retry=False)
    posts = [r for r in server.fhir_requests if r.method == "POST"]
    assert status == 200 and len(posts) == 2 and posts[0].content == posts[1].content == b"name=x"


def test_a_second_401_is_an_error_naming_the_server(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    server = SmartServer(rsa_key.public_key())
    server.fhir_always_401 = True
    client = smart_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)))
    with pytest.raises(FhirTerminalError, match=r"^source server answered 401 Unauthorized") as caught:
        client.get("Patient/1")
    assert len(server.token_requests) == 2 and len(server.fhir_requests) == 2
    assert "token-" not in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            httpx.Response(401, json=KEYCLOAK_BAD_CLIENT),
            "(401 invalid_client: Invalid client or Invalid client credentials)",
        ),
        (
            httpx.Response(
                400, json={"error": "invalid_client", "error_description": "Invalid client: disabled"}
            ),
            "(400 invalid_client: Invalid client: disabled)",
        ),
        (
            httpx.Response(
                400,
                json={
                    "error": "unauthorized_client",
                    "error_description": "Client not enabled to retrieve service account",
                },
            ),
            "enable its service account",
        ),
        (
            httpx.Response(
                400, json={"error": "invalid_scope", "error_description": "Invalid scopes: system/*.read"}
            ),
            "may not have the scope 'system/*.read'",
        ),
        (httpx.Response(403, text="<html>Forbidden</html>"), "(403); check client_id, private_key_file"),
    ],
)
def test_a_refusal_is_one_line_naming_server_endpoint_and_reason(
    answer: httpx.Response, expected: str, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    server = SmartServer(rsa_key.public_key())
    server.token_answer = answer
    client = smart_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)), scope="system/*.read")
    with pytest.raises(FhirTerminalError) as caught:
        client.get("Patient/1")
    message = str(caught.value)
    assert message.startswith(
        f"source server's OAuth2 token endpoint {TOKEN_URL} refused the signed client assertion"
    )
    assert expected in message and "\n" not in message
    assert server.token_forms[0]["client_assertion"] not in message
    assert server.fhir_requests == []


def test_a_wrong_key_is_refused_with_the_servers_reason(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    registered = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = SmartServer(registered.public_key())  # not the key we sign with
    client = smart_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)))
    with pytest.raises(
        FhirTerminalError, match="400 invalid_client: Client authentication with signed JWT failed"
    ):
        client.get("Patient/1")


def test_a_server_that_repeats_the_assertion_does_not_get_it_shown(
    rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    server = SmartServer(rsa_key.public_key())

    def echo(request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            assertion = dict(urllib.parse.parse_qsl(request.content.decode()))["client_assertion"]
            return httpx.Response(
                400, json={"error": "invalid_client", "error_description": f"bad token {assertion}"}
            )
        return server(request)

    auth = build_auth(
        server="target",
        base_url=BASE,
        client_id=CLIENT_ID,
        private_key_file=key_file(tmp_path / "k", pem(rsa_key)),
    )
    client = FhirClient(BASE, name="target", auth=auth, transport=httpx.MockTransport(echo))
    with pytest.raises(FhirTerminalError, match="bad token <hidden>") as caught:
        client.get("Patient/1")
    assert "eyJ" not in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(404, text="Not Found"), "publishes no SMART configuration"),
        (httpx.Response(200, json={"issuer": "x"}), "is not a SMART configuration with a token_endpoint"),
        (httpx.Response(200, text="<html/>"), "is not a SMART configuration with a token_endpoint"),
        (httpx.Response(200, json={"token_endpoint": "ftp://auth.test/token"}), "is not an http(s) URL"),
        (
            httpx.Response(200, json={"token_endpoint": "http://auth.test/token"}),
            "plain http, the FHIR server https",
        ),
        (
            httpx.Response(
                200,
                json={
                    "token_endpoint": TOKEN_URL,
                    "token_endpoint_auth_signing_alg_values_supported": ["ES384"],
                },
            ),
            "accepts client assertions signed with ES384, not RS384",
        ),
    ],
)
def test_discovery_failures_say_what_to_set(
    answer: httpx.Response, expected: str, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return answer

    auth = build_auth(
        server="source",
        base_url=BASE,
        client_id=CLIENT_ID,
        private_key_file=key_file(tmp_path / "k", pem(rsa_key)),
    )
    client = FhirClient(BASE, name="source", auth=auth, transport=httpx.MockTransport(handler))
    with pytest.raises(FhirTerminalError) as caught:
        client.get("Patient/1")
    assert expected in str(caught.value)
    if "SMART configuration" in expected:
        assert "FHIRGRAPH_SOURCE_TOKEN_URL" in str(caught.value)
    assert seen == [f"{BASE}/.well-known/smart-configuration"]


def test_a_configured_token_url_is_used_without_discovery(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    server = SmartServer(rsa_key.public_key(), discovery=False)
    client = smart_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)), token_url=TOKEN_URL)
    client.get("Patient/1")
    assert [str(r.url) for r in server.requests] == [TOKEN_URL, f"{BASE}/Patient/1"]


def test_the_token_host_gets_token_requests_only(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    server = SmartServer(rsa_key.public_key())
    client = smart_client(server, key_file(tmp_path / "key.pem", pem(rsa_key)))
    with pytest.raises(ForeignHostError):  # before discovery
        client.get(TOKEN_URL)
    client.get("Patient/1")
    for url in (TOKEN_URL, "https://auth.test/realms/fhir/Patient/1"):
        with pytest.raises(ForeignHostError, match=r"auth\.test"):
            client.get(url)
    with pytest.raises(ForeignHostError):
        client.request("POST", "https://auth.test/other", body={"resourceType": "Bundle"})
    assert [r.method for r in server.requests if r.url.host == "auth.test"] == ["POST"]


# -- key files and settings ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("which", "form"),
    [
        ("rsa", "pkcs8"),
        ("rsa", "pkcs1"),
        ("ec", "pkcs8"),
        ("ec", "sec1"),
        ("rsa", "jwk"),
        ("ec", "jwk"),
        ("rsa", "jwks"),
    ],
)
def test_pem_and_jwk_key_files(
    which: str, form: str, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    key = rsa_key if which == "rsa" else ec_key
    content: bytes | dict[str, Any]
    if form == "pkcs8":
        content = pem(key)
    elif form in ("pkcs1", "sec1"):
        content = pem(key, serialization.PrivateFormat.TraditionalOpenSSL)
    elif form == "jwk":
        content = private_jwk(key, kid="from-jwk")
    else:
        public = {k: v for k, v in private_jwk(key).items() if k in ("kty", "n", "e")}
        content = {"keys": [{**public, "kid": "old"}, private_jwk(key, kid="from-jwk", alg="RS384")]}
    server = SmartServer(key.public_key())
    smart_client(server, key_file(tmp_path / "key", content)).get("Patient/1")
    [(header, _)] = server.assertions()
    assert header["alg"] == ("RS384" if which == "rsa" else "ES384")
    assert header.get("kid") == ("from-jwk" if form.startswith("jwk") else None)


def test_key_id_picks_a_key_of_a_set_and_overrides_the_kid(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    jwks = {"keys": [private_jwk(rsa_key, kid="r"), private_jwk(ec_key, kid="e")]}
    path = key_file(tmp_path / "set.json", jwks)
    with pytest.raises(ConfigError, match=r"holds 2 private keys \(r, e\); set key_id"):
        load_signing_key(path)
    assert load_signing_key(path, key_id="e").algorithm == "ES384"
    with pytest.raises(ConfigError, match="no private key with kid 'x'"):
        load_signing_key(path, key_id="x")
    single = key_file(tmp_path / "one.json", private_jwk(rsa_key, kid="r"))
    assert load_signing_key(single, key_id="registered").key_id == "registered"


def unusable_key_files(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> list[Any]:
    encrypted = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_jwk = {k: v for k, v in private_jwk(rsa_key).items() if k in ("kty", "n", "e")}
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p256 = ec.generate_private_key(ec.SECP256R1())
    return [
        (tmp_path / "absent.pem", {}, "does not exist"),
        (key_file(tmp_path / "enc.pem", encrypted), {}, "is encrypted with a passphrase"),
        (key_file(tmp_path / "pub.pem", public_pem), {}, "holds a public key, not a private key"),
        (key_file(tmp_path / "pub.json", public_jwk), {}, "is a public JWK"),
        (key_file(tmp_path / "pubset.json", {"keys": [public_jwk]}), {}, "holds no private key"),
        (key_file(tmp_path / "junk", b"hello"), {}, "is not a PEM private key or a JWK"),
        (key_file(tmp_path / "bad.json", b"{nope"), {}, "is not valid JSON"),
        (key_file(tmp_path / "bad.jwk", {"kty": "RSA", "d": "AA", "n": "AA"}), {}, "is not a valid RSA JWK"),
        (key_file(tmp_path / "oct.jwk", {"kty": "oct", "k": "c2VjcmV0", "d": "x"}), {}, "kty 'oct'"),
        (
            key_file(tmp_path / "ed.pem", pem(ed25519.Ed25519PrivateKey.generate())),
            {},
            "needs an RSA or EC key",
        ),
        (
            key_file(tmp_path / "rsa.pem", pem(rsa_key)),
            {"algorithm": "ES384"},
            "RSA key, which cannot sign ES384",
        ),
        (
            key_file(tmp_path / "ec.pem", pem(ec_key)),
            {"algorithm": "RS384"},
            "EC key, which cannot sign RS384",
        ),
        (
            key_file(tmp_path / "p256.pem", pem(p256)),
            {"algorithm": "ES384"},
            "curve secp256r1, but ES384 needs secp384r1",
        ),
        (key_file(tmp_path / "small.pem", pem(small)), {}, "RSA key of 1024 bits; use at least 2048"),
        (
            key_file(tmp_path / "rsa2.pem", pem(rsa_key)),
            {"algorithm": "HS256"},
            "algorithm must be one of RS384, ES384",
        ),
        (
            key_file(tmp_path / "alg.jwk", private_jwk(rsa_key, alg="RS256")),
            {"algorithm": "RS384"},
            "is a key for RS256, but the algorithm is set to RS384",
        ),
    ]


def test_an_unusable_key_file_is_one_clear_config_error_without_the_key(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    secrets = secret_parts(rsa_key) + secret_parts(ec_key)
    for path, settings, expected in unusable_key_files(tmp_path, rsa_key, ec_key):
        with pytest.raises(ConfigError) as caught:
            build_auth(
                server="target", base_url=BASE, client_id=CLIENT_ID, private_key_file=str(path), **settings
            )
        message = str(caught.value)
        assert expected in message, message
        assert message.startswith("target ") and "\n" not in message
        assert not [s for s in secrets if s in message]
        # the key parser's own error (which may quote the key) is neither cause nor shown context
        error = caught.value
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_a_key_file_others_can_read_is_warned_about(
    rsa_key: rsa.RSAPrivateKey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = key_file(tmp_path / "shared.pem", pem(rsa_key), mode=0o644)
    private = key_file(tmp_path / "private.pem", pem(rsa_key), mode=0o600)
    with caplog.at_level(logging.WARNING, logger="fhirgraph"):
        load_signing_key(private, server="source")
        assert caplog.messages == []
        load_signing_key(shared, server="source")
    assert caplog.messages == [
        f"warning: source private_key_file {shared} is readable by other users; run `chmod 600 {shared}`"
    ]
    assert stat.S_IMODE(Path(shared).stat().st_mode) == 0o644  # told, not changed


def test_nothing_secret_in_reprs_or_errors(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    path = key_file(tmp_path / "key.json", private_jwk(rsa_key, kid="k1"))
    server = SmartServer(rsa_key.public_key())
    auth = build_auth(server="source", base_url=BASE, client_id=CLIENT_ID, private_key_file=path)
    assert isinstance(auth, PrivateKeyJwtAuth)
    client = FhirClient(BASE, name="source", auth=auth, transport=httpx.MockTransport(server))
    client.get("Patient/1")
    server.fhir_always_401 = True
    with pytest.raises(FhirError) as caught:
        client.get("Patient/1")
    secret_auth = ClientCredentialsAuth(CLIENT_ID, "s3cret-Qx9", token_url=TOKEN_URL)
    shown = [
        repr(auth),
        str(auth),
        repr(auth.key),
        repr(client),
        str(caught.value),
        repr(secret_auth),
        str(secret_auth),
    ]
    secrets = [*secret_parts(rsa_key), *server.live, "token-1", "token-2", "s3cret-Qx9"]
    secrets += [form["client_assertion"] for form in server.token_forms]
    assert not [s for s in secrets if any(s in text for text in shown)]
    assert (
        repr(auth)
        == f"PrivateKeyJwtAuth(client_id='{CLIENT_ID}', key=SigningKey({path}, RS384, key_id='k1'), token_url='{TOKEN_URL}')"
    )


def test_settings_from_config_file_and_environment_reach_the_client(
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FHIRGRAPH_"):
            monkeypatch.delenv(name)
    config = tmp_path / "fhirgraph.toml"
    config.write_text(
        f'[source]\nurl = "{BASE}"\nclient_id = "{CLIENT_ID}"\n'
        f'private_key_file = "{key_file(tmp_path / "source.pem", pem(rsa_key))}"\nkey_id = "src-1"\n'
        f'algorithm = "rs384"\ntoken_url = "{TOKEN_URL}"\n'
    )
    monkeypatch.setenv("FHIRGRAPH_TARGET_URL", BASE)
    monkeypatch.setenv("FHIRGRAPH_TARGET_CLIENT_ID", "loader")
    monkeypatch.setenv(
        "FHIRGRAPH_TARGET_PRIVATE_KEY_FILE",
        key_file(tmp_path / "target.json", private_jwk(ec_key, kid="tgt")),
    )
    settings = build_settings({}, config)
    assert settings.source is not None and settings.target is not None
    assert settings.source.algorithm == "RS384" and settings.source.token_url == TOKEN_URL
    assert "src-1" not in repr(settings.source) and repr(settings.target) == f"ServerConfig(url='{BASE}')"

    source_server = SmartServer(rsa_key.public_key(), discovery=False)
    make_client(settings.source, "source", httpx.MockTransport(source_server)).get("Patient/1")
    [(header, claims)] = source_server.assertions()
    assert header["kid"] == "src-1" and claims["sub"] == CLIENT_ID
    assert source_server.token_forms[0]["scope"] == "system/*.read"

    target_server = SmartServer(ec_key.public_key())
    make_client(settings.target, "target", httpx.MockTransport(target_server)).get("Patient/1")
    [(header, claims)] = target_server.assertions()
    assert header == {"alg": "ES384", "typ": "JWT", "kid": "tgt"} and claims["sub"] == "loader"
    assert target_server.token_forms[0]["scope"] == "system/*.read system/*.write"

    monkeypatch.setenv("FHIRGRAPH_TARGET_SCOPE", "system/*.cruds")
    monkeypatch.setenv("FHIRGRAPH_TARGET_KEY_ID", "tgt-override")
    target = build_settings({}, config).target
    assert target is not None
    target_server = SmartServer(ec_key.public_key())
    make_client(target, "target", httpx.MockTransport(target_server)).get("Patient/1")
    assert target_server.token_forms[0]["scope"] == "system/*.cruds"
    assert target_server.assertions()[0][0]["kid"] == "tgt-override"

    monkeypatch.setenv("FHIRGRAPH_SOURCE_ALGORITHM", "HS256")
    with pytest.raises(ConfigError, match="source algorithm must be one of"):
        build_settings({}, config)


def test_the_python_api_takes_the_smart_settings(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    server = SmartServer(rsa_key.public_key())
    src = FhirServer(
        BASE,
        client_id=CLIENT_ID,
        private_key_file=key_file(tmp_path / "key.pem", pem(rsa_key)),
        scope="system/Patient.read",
        transport=httpx.MockTransport(server),
    )
    assert src.client.get("Patient/1")["id"] == "1"
    assert server.token_forms[0]["scope"] == "system/Patient.read"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"client_id": "c", "client_secret": "s", "private_key_file": "k"}, "only one kind of credentials"),
        ({"token": "t", "private_key_file": "k"}, "only one kind of credentials"),
        ({"private_key_file": "k"}, "OAuth2 needs a client_id"),
        ({"client_id": "c"}, "client_id needs client_secret"),
        ({"client_id": "c", "client_secret": "s", "key_id": "k"}, "key_id only apply with private_key_file"),
        ({"token": "t", "scope": "system/*.read"}, "scope only apply to OAuth2"),
        (
            {
                "client_id": "c",
                "client_secret": "s",
                "token_url": TOKEN_URL,
                "oidc_provider_url": "https://x.test/t",
            },
            "token_url and oidc_provider_url",
        ),
        (
            {"client_id": "c", "client_secret": "s", "token_url": "https://u:p@auth.test/t"},
            "holds credentials",
        ),
    ],
)
def test_inconsistent_oauth_settings(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_auth(server="source", base_url=BASE, **settings)
    assert "u:p" not in str(caught.value)


# -- the client-secret flow shares discovery, the cache and the refresh -------------------------
class SecretServer(SmartServer):
    def token(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != "Basic ZmhpcmdyYXBoOnMzY3JldA==":  # fhirgraph:s3cret
            return httpx.Response(401, json=KEYCLOAK_BAD_CLIENT)
        self.issued += 1
        token = f"token-{self.issued}"
        self.live.add(token)
        return httpx.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": 300})


def secret_client(server: SmartServer, secret: str = "s3cret", **settings: str) -> FhirClient:
    auth = build_auth(server="target", base_url=BASE, client_id="fhirgraph", client_secret=secret, **settings)
    assert isinstance(auth, ClientCredentialsAuth)
    return FhirClient(BASE, name="target", auth=auth, transport=httpx.MockTransport(server))


def test_client_secret_with_discovery_and_once_on_401() -> None:
    server = SecretServer(None)
    client = secret_client(server)
    client.get("Patient/1")
    client.get("Patient/1")
    server.revoke()
    client.get("Patient/1")
    assert [str(r.url) for r in server.requests] == [
        f"{BASE}/.well-known/smart-configuration",
        TOKEN_URL,
        f"{BASE}/Patient/1",
        f"{BASE}/Patient/1",
        f"{BASE}/Patient/1",
        TOKEN_URL,
        f"{BASE}/Patient/1",
    ]
    assert "scope" not in urllib.parse.parse_qs(server.token_requests[0].content.decode())
    server.fhir_always_401 = True
    with pytest.raises(FhirTerminalError, match=r"^target server answered 401"):
        client.get("Patient/1")
    assert len(server.token_requests) == 3


def test_client_secret_refused_names_the_server_and_hides_the_secret() -> None:
    server = SecretServer(None)
    client = secret_client(server, "wrong-secret-Zk3", oidc_provider_url=TOKEN_URL)
    with pytest.raises(FhirTerminalError) as caught:
        client.get("Patient/1")
    message = str(caught.value)
    assert message == (
        f"target server's OAuth2 token endpoint {TOKEN_URL} refused the client secret of client 'fhirgraph' "
        "(401 invalid_client: Invalid client or Invalid client credentials); check client_id and client_secret"
    )
    assert [str(r.url) for r in server.requests] == [TOKEN_URL]  # configured: no discovery


def test_a_busy_token_endpoint_is_retried_like_a_read(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    server = SmartServer(rsa_key.public_key())
    busy = [httpx.Response(503, headers={"Retry-After": "0"})]

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL and busy:
            server.requests.append(request)
            return busy.pop()
        return server(request)

    auth = build_auth(
        server="source",
        base_url=BASE,
        client_id=CLIENT_ID,
        private_key_file=key_file(tmp_path / "k", pem(rsa_key)),
    )
    client = FhirClient(BASE, name="source", auth=auth, transport=httpx.MockTransport(handler), max_wait=0.01)
    assert client.get("Patient/1")["id"] == "1"
    assert len(server.token_requests) == 2 and client.retries == 1
