"""Authentication for FHIR servers: basic, static bearer token, OAuth2 client credentials."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Generator

import httpx

from fhirgraph.errors import ConfigError, FhirTerminalError


class BearerAuth(httpx.Auth):
    def __init__(self, token: str):
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(<hidden>)"


class ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client-credentials grant; the token is cached until shortly before it expires."""

    requires_response_body = True

    def __init__(self, token_url: str, client_id: str, client_secret: str, *, scope: str | None = None):
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    @property
    def token_url(self) -> str:
        return self._token_url

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(token_url={self._token_url!r}, client_id={self._client_id!r})"

    def _token_request(self) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self._scope:
            data["scope"] = self._scope
        basic = base64.b64encode(f"{self._client_id}:{self._client_secret}".encode()).decode()
        return httpx.Request(
            "POST",
            self._token_url,
            data=data,
            headers={"Accept": "application/json", "Authorization": f"Basic {basic}"},
        )

    def _store(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise FhirTerminalError(
                f"the OAuth2 token endpoint {self._token_url} answered {response.status_code}; "
                "check client_id, client_secret and oidc_provider_url",
                status=response.status_code,
                url=self._token_url,
            )
        try:
            payload = response.json()
            token = payload["access_token"]
            lifetime = float(payload.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise FhirTerminalError(
                f"the OAuth2 token endpoint {self._token_url} did not return an access_token "
                "with a numeric expires_in",
                url=self._token_url,
            ) from None
        self._token = str(token)
        # renew a little early so a token never expires in flight
        self._expires_at = time.monotonic() + max(lifetime - 30.0, lifetime / 2)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                response = yield self._token_request()
                self._store(response)
            token = self._token
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            with self._lock:
                self._token = None
                response = yield self._token_request()
                self._store(response)
                token = self._token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


def build_auth(
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    oidc_provider_url: str | None = None,
) -> httpx.Auth | None:
    """Pick the authentication scheme from the credentials given (at most one scheme)."""
    schemes = [
        name
        for name, given in (
            ("username/password", username or password),
            ("token", token),
            ("client credentials", client_id or client_secret or oidc_provider_url),
        )
        if given
    ]
    if len(schemes) > 1:
        raise ConfigError(f"give only one kind of credentials, not {' and '.join(schemes)}")
    if username or password:
        if not (username and password):
            raise ConfigError("basic auth needs both a username and a password")
        return httpx.BasicAuth(username, password)
    if token:
        return BearerAuth(token)
    if client_id or client_secret or oidc_provider_url:
        if not (client_id and client_secret and oidc_provider_url):
            raise ConfigError(
                "OAuth2 client credentials need client_id, client_secret and oidc_provider_url "
                "(the token endpoint URL)"
            )
        return ClientCredentialsAuth(oidc_provider_url, client_id, client_secret)
    return None
