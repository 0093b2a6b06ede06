"""Addresses of the local stack (stack/config.env), for the tests, the demo and the benchmarks."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from fhirgraph.graph import GraphSettings

ROOT = Path(__file__).resolve().parents[2]


def stack_config(root: Path = ROOT) -> dict[str, str]:
    """Values of stack/config.env after the shell has expanded them (environment overrides apply)."""
    script = f'set -a; . "{root}/stack/config.env"; env -0'
    output = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    return dict(item.split("=", 1) for item in output.decode().split("\0") if "=" in item)


CONFIG = stack_config()
SOURCE_URL = f"http://127.0.0.1:{CONFIG['HAPI_SOURCE_PORT']}/fhir"
TARGET_URL = f"http://127.0.0.1:{CONFIG['HAPI_TARGET_PORT']}/fhir"
# A target that validates request bodies; runs only after `stack/up validating`.
VALIDATING_URL = f"http://127.0.0.1:{CONFIG['HAPI_VALIDATING_PORT']}/fhir"
NEO4J = GraphSettings(
    uri=f"bolt://127.0.0.1:{CONFIG['NEO4J_BOLT_PORT']}",
    user=CONFIG["NEO4J_USER"],
    password=CONFIG["NEO4J_PASSWORD"],
)

# The protected pair and their authorization server; run only after `stack/up protected`.
PROTECTED_SOURCE_URL = f"http://127.0.0.1:{CONFIG['HAPI_PROTECTED_SOURCE_PORT']}/fhir"
PROTECTED_TARGET_URL = f"http://127.0.0.1:{CONFIG['HAPI_PROTECTED_TARGET_PORT']}/fhir"
KEYCLOAK_URL = f"http://127.0.0.1:{CONFIG['KEYCLOAK_PORT']}"
KEYCLOAK_REALM = "fhirgraph"


@dataclass(frozen=True)
class ProtectedStack:
    """Addresses and development credentials of `stack/up protected` (stack/keycloak/fhirgraph-realm.json).

    Every client uses the client-credentials grant and may ask for the scopes
    ``system/*.read`` and ``system/*.write`` (optional scopes: a token carries in its ``scope``
    claim what was asked for, nothing when nothing was).
    """

    source_url: str
    """protected-source: no referential integrity, like the plain source."""
    target_url: str
    """protected-target: referential integrity, like the plain target."""
    keycloak_url: str
    issuer: str
    """Every token's ``iss``; the servers accept no other."""
    token_endpoint: str
    jwks_uri: str
    secret_client_id: str
    """Authenticates with client_secret_basic (or _post) and ``client_secret``."""
    client_secret: str
    jwt_client_id: str
    """Authenticates with private_key_jwt: an RS384-signed assertion, key ``private_key_path``, header kid ``kid``."""
    private_key_path: Path
    public_jwk_path: Path
    kid: str
    short_client_id: str
    """A client-secret client whose access tokens live ``short_token_lifespan`` seconds."""
    short_token_lifespan: int
    revocable_client_id: str
    """A client-secret client that tests may disable (`set_client_enabled`); nothing else uses it."""
    admin_user: str
    admin_password: str
    read_scope: str = "system/*.read"
    write_scope: str = "system/*.write"


def protected_stack(config: dict[str, str] | None = None) -> ProtectedStack:
    """The addresses of `stack/up protected` (the kid is read from the key files it generated)."""
    config = config or CONFIG
    keycloak = f"http://127.0.0.1:{config['KEYCLOAK_PORT']}"
    issuer = f"{keycloak}/realms/{KEYCLOAK_REALM}"
    keys = Path(config["STACK_DIR"]) / "keycloak"
    kid_file = keys / "jwt-kid"
    return ProtectedStack(
        source_url=f"http://127.0.0.1:{config['HAPI_PROTECTED_SOURCE_PORT']}/fhir",
        target_url=f"http://127.0.0.1:{config['HAPI_PROTECTED_TARGET_PORT']}/fhir",
        keycloak_url=keycloak,
        issuer=issuer,
        token_endpoint=f"{issuer}/protocol/openid-connect/token",
        jwks_uri=f"{issuer}/protocol/openid-connect/certs",
        secret_client_id="fhirgraph-secret",
        client_secret=config["KEYCLOAK_CLIENT_SECRET"],
        jwt_client_id="fhirgraph-jwt",
        private_key_path=keys / "jwt-private.pem",
        public_jwk_path=keys / "jwt-public.jwk.json",
        kid=kid_file.read_text().strip() if kid_file.exists() else "",
        short_client_id="fhirgraph-short",
        short_token_lifespan=int(config["KEYCLOAK_SHORT_TOKEN_LIFESPAN"]),
        revocable_client_id="fhirgraph-revocable",
        admin_user=config["KEYCLOAK_ADMIN_USER"],
        admin_password=config["KEYCLOAK_ADMIN_PASSWORD"],
    )


def set_client_enabled(stack: ProtectedStack, client_id: str, enabled: bool) -> None:
    """Disable (or enable again) a client of the realm through Keycloak's admin REST API.

    A disabled client gets no more tokens (401 ``invalid_client``); tokens it already has
    stay valid until they expire (the FHIR servers check signatures, not Keycloak). By hand::

        TOKEN=$(curl -s -d grant_type=password -d client_id=admin-cli -d username=admin \\
                -d password=fhirgraph-dev http://127.0.0.1:8180/realms/master/protocol/openid-connect/token | jq -r .access_token)
        ID=$(curl -s -H "Authorization: Bearer $TOKEN" \\
             "http://127.0.0.1:8180/admin/realms/fhirgraph/clients?clientId=fhirgraph-revocable" | jq -r '.[0].id')
        curl -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
             -d '{"enabled": false}' "http://127.0.0.1:8180/admin/realms/fhirgraph/clients/$ID"
    """
    with httpx.Client(base_url=stack.keycloak_url, timeout=30) as http:
        login = http.post(
            "/realms/master/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": stack.admin_user,
                "password": stack.admin_password,
            },
        )
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        found = http.get(
            f"/admin/realms/{KEYCLOAK_REALM}/clients", params={"clientId": client_id}, headers=headers
        )
        found.raise_for_status()
        clients = found.json()
        if not clients:
            raise LookupError(f"no client {client_id!r} in realm {KEYCLOAK_REALM}")
        http.put(
            f"/admin/realms/{KEYCLOAK_REALM}/clients/{clients[0]['id']}",
            json={"enabled": enabled},
            headers=headers,
        ).raise_for_status()
