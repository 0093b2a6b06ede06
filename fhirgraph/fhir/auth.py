"""Authentication for FHIR servers: basic, a static bearer token, and OAuth2 client credentials
with a client secret or, for SMART Backend Services, a signed client assertion.

Both OAuth2 flows get their token from a token endpoint that is either
configured or named by the FHIR server in ``[base]/.well-known/smart-configuration``.
The token is cached until shortly before it expires; a 401 from the FHIR server
fetches a fresh one once and repeats the request. The client's foreign-host
guard lets exactly one more request through besides the FHIR server's own: the
POST to that token endpoint (:meth:`TokenAuth.is_token_request`).

No secret (client secret, private key, assertion, access token) is shown by a
repr or an error message.
"""

from __future__ import annotations

import abc
import base64
import json
import re
import threading
import time
from collections.abc import Callable, Generator
from http import HTTPStatus
from urllib.parse import urlsplit

import httpx

from fhirgraph.errors import ConfigError, FhirTerminalError, FhirTransientError
from fhirgraph.fhir.signing import ASSERTION_TYPE, SigningKey, client_assertion, load_signing_key

SMART_CONFIGURATION = ".well-known/smart-configuration"
#: token endpoint answers worth repeating the request for (as for FHIR requests, see client)
TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})
#: anything shaped like a JWT (an assertion, an access token) is cut out of a server's error text
JWT_SHAPE = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")
Flow = Generator[httpx.Request, httpx.Response, None]


class BearerAuth(httpx.Auth):
    def __init__(self, token: str):
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(<hidden>)"


class TokenAuth(httpx.Auth, abc.ABC):
    """OAuth2 client credentials: an access token from a token endpoint, sent as a bearer token.

    The token endpoint is ``token_url`` or, if that is not given, the ``token_endpoint``
    of the FHIR server's SMART configuration, read once before the first token request.
    A discovered endpoint may be on another host (Keycloak usually is): it is trusted
    because the FHIR server, which we trust with the data, named it.
    """

    requires_response_body = True
    #: what the client proves itself with, for messages
    credential = "the client credentials"
    #: the settings to check when the token endpoint refuses the client
    credential_settings = "client_id"

    def __init__(
        self,
        client_id: str,
        *,
        server: str = "server",
        fhir_base: str | None = None,
        token_url: str | None = None,
        scope: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not token_url and not fhir_base:
            raise ConfigError(f"{server}: OAuth2 needs a token_url or the FHIR base to discover it from")
        if token_url:
            _check_token_url(token_url, server, discovered=False, fhir_base=fhir_base)
        self._client_id = client_id
        self._server = server
        self._fhir_base = fhir_base.rstrip("/") if fhir_base else None
        self._token_url = token_url or None
        self._scope = scope or None
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    @property
    def token_url(self) -> str | None:
        """The token endpoint: configured, or discovered (None until the first request)."""
        return self._token_url

    def is_token_request(self, request: httpx.Request) -> bool:
        """Whether ``request`` is a token request to the token endpoint, the one host besides
        the FHIR server's that the client's guard lets through."""
        return (
            request.method == "POST"
            and self._token_url is not None
            and request.url == httpx.URL(self._token_url)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self._client_id!r}, token_url={self._token_url!r})"

    @abc.abstractmethod
    def _authentication(self, token_url: str) -> tuple[dict[str, str], dict[str, str]]:
        """The form fields and headers that authenticate the client in one token request."""

    def _hidden(self) -> tuple[str, ...]:
        """Secrets that must not appear in a message even if a server repeats them."""
        return ()

    # -- the flow httpx drives ------------------------------------------------
    def auth_flow(self, request: httpx.Request) -> Flow:
        # the lock is held across the token request so that concurrent requests wait for one
        # token instead of each fetching their own
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                yield from self._renew()
            used = self._token
        request.headers["Authorization"] = f"Bearer {used}"
        response = yield request
        if response.status_code != 401:
            return
        # revoked, or expired early: one fresh token and one more try; a second 401 is the caller's
        with self._lock:
            if self._token == used:  # not renewed meanwhile by a concurrent request
                yield from self._renew()
            fresh = self._token
        request.headers["Authorization"] = f"Bearer {fresh}"
        yield request

    def _renew(self) -> Flow:
        token_url = self._token_url
        if token_url is None:
            token_url = yield from self._discover()
        fields, headers = self._authentication(token_url)
        data = {
            "grant_type": "client_credentials",
            **({"scope": self._scope} if self._scope else {}),
            **fields,
        }
        response = yield httpx.Request(
            "POST", token_url, data=data, headers={"Accept": "application/json", **headers}
        )
        self._store(response, token_url)

    def _discover(self) -> Generator[httpx.Request, httpx.Response, str]:
        url = f"{self._fhir_base}/{SMART_CONFIGURATION}"
        response = yield httpx.Request("GET", url, headers={"Accept": "application/json"})
        where = f"{self._server} server {self._fhir_base}"
        how = (
            f"set token_url in [{self._server}] of the config file or "
            f"FHIRGRAPH_{self._server.upper()}_TOKEN_URL to the token endpoint"
        )
        if response.status_code in TRANSIENT_STATUS:
            raise FhirTransientError(
                f"{where} answered {_status(response)} to {url}", status=response.status_code, url=url
            )
        if response.status_code != 200:
            raise FhirTerminalError(
                f"{where} publishes no SMART configuration ({url} answered {_status(response)}); {how}",
                status=response.status_code,
                url=url,
            )
        payload = _json_object(response)
        token_endpoint = payload.get("token_endpoint") if payload is not None else None
        if not isinstance(token_endpoint, str) or not token_endpoint:
            raise FhirTerminalError(
                f"{where}: {url} is not a SMART configuration with a token_endpoint; {how}", url=url
            )
        _check_token_url(token_endpoint, self._server, discovered=True, fhir_base=self._fhir_base)
        self._check_configuration(payload or {}, url)
        self._token_url = token_endpoint
        return token_endpoint

    def _check_configuration(self, configuration: dict[str, object], url: str) -> None:
        """Refuse a SMART configuration that rules out this client's way of authenticating."""

    def _store(self, response: httpx.Response, token_url: str) -> None:
        if response.status_code in TRANSIENT_STATUS:
            raise FhirTransientError(
                f"{self._server} server's OAuth2 token endpoint {token_url} answered {_status(response)}",
                status=response.status_code,
                url=token_url,
            )
        if response.status_code != 200:
            raise self._refused(response, token_url)
        payload = _json_object(response) or {}
        token = payload.get("access_token")
        token_type = str(payload.get("token_type") or "bearer").lower()
        lifetime = _seconds(payload.get("expires_in", 300))
        if not isinstance(token, str) or not token or token_type != "bearer" or lifetime is None:
            raise FhirTerminalError(
                f"{self._server} server's OAuth2 token endpoint {token_url} did not return a bearer "
                "access_token with a numeric expires_in",
                url=token_url,
            )
        self._token = token
        # renew a little early so a token never expires in flight
        self._expires_at = self._clock() + max(lifetime - 30.0, lifetime / 2)

    def _refused(self, response: httpx.Response, token_url: str) -> FhirTerminalError:
        payload = _json_object(response) or {}
        error = str(payload.get("error") or "")
        description = self._clean(str(payload.get("error_description") or ""))
        said = " ".join(part for part in (str(response.status_code), error) if part)
        said += f": {description}" if description else ""
        if error == "invalid_scope":
            advice = (
                f"the client may not have the scope {self._scope!r}; set scope in [{self._server}] "
                f"or FHIRGRAPH_{self._server.upper()}_SCOPE to scopes the client is granted"
            )
        elif error == "unauthorized_client":
            advice = (
                f"check {self.credential_settings}, and that the client may use the client-credentials "
                "grant (Keycloak: enable its service account)"
            )
        else:
            advice = f"check {self.credential_settings}"
        return FhirTerminalError(
            f"{self._server} server's OAuth2 token endpoint {token_url} refused {self.credential} "
            f"of client {self._client_id!r} ({said}); {advice}",
            status=response.status_code,
            url=token_url,
        )

    def _clean(self, text: str) -> str:
        """A server's error text as one short line, with nothing secret in it."""
        text = JWT_SHAPE.sub("<hidden>", " ".join(text.split()))
        for secret in self._hidden():
            text = text.replace(secret, "<hidden>")
        return text[:300]


class ClientCredentialsAuth(TokenAuth):
    """OAuth2 client credentials with a client secret (HTTP Basic at the token endpoint)."""

    credential = "the client secret"
    credential_settings = "client_id and client_secret"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        server: str = "server",
        fhir_base: str | None = None,
        token_url: str | None = None,
        scope: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(
            client_id, server=server, fhir_base=fhir_base, token_url=token_url, scope=scope, clock=clock
        )
        self._client_secret = client_secret

    def _authentication(self, token_url: str) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {"Authorization": f"Basic {self._basic()}"}

    def _basic(self) -> str:
        return base64.b64encode(f"{self._client_id}:{self._client_secret}".encode()).decode()

    def _hidden(self) -> tuple[str, ...]:
        return (self._client_secret, self._basic())


class PrivateKeyJwtAuth(TokenAuth):
    """SMART Backend Services: client credentials where the client authenticates with a JWT
    signed by its private key (``private_key_jwt``), a fresh one for every token request."""

    credential = "the signed client assertion"
    credential_settings = (
        "client_id, private_key_file, key_id and algorithm, and that the authorisation server "
        "holds this key's public half for the client"
    )

    def __init__(
        self,
        client_id: str,
        key: SigningKey,
        *,
        server: str = "server",
        fhir_base: str | None = None,
        token_url: str | None = None,
        scope: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(
            client_id, server=server, fhir_base=fhir_base, token_url=token_url, scope=scope, clock=clock
        )
        self._key = key

    @property
    def key(self) -> SigningKey:
        return self._key

    def __repr__(self) -> str:
        return (
            f"PrivateKeyJwtAuth(client_id={self._client_id!r}, key={self._key!r}, "
            f"token_url={self._token_url!r})"
        )

    def _authentication(self, token_url: str) -> tuple[dict[str, str], dict[str, str]]:
        assertion = client_assertion(self._key, self._client_id, token_url)
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}, {}

    def _check_configuration(self, configuration: dict[str, object], url: str) -> None:
        algorithms = configuration.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(algorithms, list) and algorithms and self._key.algorithm not in algorithms:
            raise FhirTerminalError(
                f"{self._server} server accepts client assertions signed with "
                f"{', '.join(map(str, algorithms))}, not {self._key.algorithm} (its SMART configuration "
                f"{url}); set algorithm in [{self._server}] or use a key of another type",
                url=url,
            )


def build_auth(
    *,
    server: str = "server",
    base_url: str | None = None,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    oidc_provider_url: str | None = None,
    token_url: str | None = None,
    private_key_file: str | None = None,
    key_id: str | None = None,
    algorithm: str | None = None,
    scope: str | None = None,
) -> httpx.Auth | None:
    """Pick the authentication scheme from the credentials given (at most one scheme).

    ``oidc_provider_url`` is the older name of ``token_url``. Without either, the OAuth2
    flows discover the token endpoint from ``base_url``. A private key file is read here,
    so that a missing or unusable key fails before the first request.
    """
    schemes = [
        name
        for name, given in (
            ("username/password", username or password),
            ("token", token),
            ("client_secret", client_secret),
            ("private_key_file", private_key_file),
        )
        if given
    ]
    if len(schemes) > 1:
        raise ConfigError(f"{server}: give only one kind of credentials, not {' and '.join(schemes)}")
    if oidc_provider_url and token_url and oidc_provider_url != token_url:
        raise ConfigError(
            f"{server}: token_url and oidc_provider_url (its older name) differ; give only token_url"
        )
    endpoint = token_url or oidc_provider_url
    oauth_only = [
        name
        for name, given in (
            ("client_id", client_id),
            ("token_url", token_url),
            ("oidc_provider_url", oidc_provider_url),
            ("scope", scope),
        )
        if given
    ]
    key_only = [name for name, given in (("key_id", key_id), ("algorithm", algorithm)) if given]
    if key_only and not private_key_file:
        raise ConfigError(f"{server}: {' and '.join(key_only)} only apply with private_key_file")
    if (username or password) and not (username and password):
        raise ConfigError(f"{server}: basic auth needs both a username and a password")
    if (username or password or token) and oauth_only:
        raise ConfigError(
            f"{server}: {', '.join(oauth_only)} only apply to OAuth2 (client_secret or private_key_file)"
        )
    if username and password:
        return httpx.BasicAuth(username, password)
    if token:
        return BearerAuth(token)
    if client_secret or private_key_file or oauth_only:
        if not client_id:
            raise ConfigError(
                f"{server}: OAuth2 needs a client_id, with client_secret or (SMART Backend Services) "
                "private_key_file"
            )
        if private_key_file:
            key = load_signing_key(private_key_file, key_id=key_id, algorithm=algorithm, server=server)
            return PrivateKeyJwtAuth(
                client_id, key, server=server, fhir_base=base_url, token_url=endpoint, scope=scope
            )
        if not client_secret:
            raise ConfigError(
                f"{server}: client_id needs client_secret (OAuth2 client credentials) or "
                "private_key_file (SMART Backend Services)"
            )
        return ClientCredentialsAuth(
            client_id, client_secret, server=server, fhir_base=base_url, token_url=endpoint, scope=scope
        )
    return None


def _check_token_url(url: str, server: str, *, discovered: bool, fhir_base: str | None) -> None:
    error = FhirTerminalError if discovered else ConfigError
    parts = urlsplit(url)
    if "@" in parts.netloc:  # never echo it: it holds a secret
        raise error(f"{server}: the token endpoint URL holds credentials (user:password@host)")
    named = (
        f"the token endpoint {url!r} named by the {server} server" if discovered else f"{server} token_url"
    )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise error(f"{named} is not an http(s) URL")
    if discovered and parts.scheme == "http" and fhir_base and urlsplit(fhir_base).scheme == "https":
        # a server reached over TLS does not get to send our credentials over plain HTTP
        raise error(f"{named} is plain http, the FHIR server https; refusing to send credentials there")


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds == seconds else None  # not NaN


def _json_object(response: httpx.Response) -> dict[str, object] | None:
    try:
        payload = json.loads(response.content)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _status(response: httpx.Response) -> str:
    try:
        return f"{response.status_code} {HTTPStatus(response.status_code).phrase}"
    except ValueError:
        return str(response.status_code)
