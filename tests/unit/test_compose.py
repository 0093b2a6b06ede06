"""docker-compose.yml must describe the same stack as stack/config.env (which stack/up runs)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config() -> dict[str, str]:
    script = f'set -a; . "{ROOT}/stack/config.env"; env -0'
    output = subprocess.run(
        ["bash", "-c", script], capture_output=True, check=True, env={"PATH": "/usr/bin:/bin"}
    ).stdout
    return dict(item.split("=", 1) for item in output.decode().split("\0") if "=" in item)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(compose["services"])


def host_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, and every port bound to loopback only."""
    ports = {}
    for spec in service["ports"]:
        host_ip, host, container = str(spec).split(":")
        assert host_ip == "127.0.0.1", f"{spec} is not bound to loopback"
        ports[int(container)] = int(host)
    return ports


def test_neo4j_matches(services: dict[str, Any], config: dict[str, str]) -> None:
    neo4j = services["neo4j"]
    major_minor = ".".join(config["NEO4J_VERSION"].split(".")[:2])
    assert neo4j["image"] == f"neo4j:{major_minor}-community"
    assert host_ports(neo4j) == {7474: int(config["NEO4J_HTTP_PORT"]), 7687: int(config["NEO4J_BOLT_PORT"])}
    env = neo4j["environment"]
    assert env["NEO4J_server_memory_heap_max__size"] == config["NEO4J_HEAP"]
    assert env["NEO4J_server_memory_pagecache_size"] == config["NEO4J_PAGECACHE"]
    assert env["NEO4J_db_tx__log_rotation_retention__policy"] == config["NEO4J_TX_LOG_RETENTION"]
    assert env["NEO4J_AUTH"] == f"{config['NEO4J_USER']}/${{NEO4J_PASSWORD:-{config['NEO4J_PASSWORD']}}}"


@pytest.mark.parametrize(
    ("name", "port_var", "integrity"),
    [
        ("fhir-source", "HAPI_SOURCE_PORT", "false"),
        ("fhir-target", "HAPI_TARGET_PORT", "true"),
        ("fhir-validating", "HAPI_VALIDATING_PORT", "true"),
    ],
)
def test_hapi_servers_match(
    services: dict[str, Any], config: dict[str, str], name: str, port_var: str, integrity: str
) -> None:
    hapi = services[name]
    assert hapi["image"] == f"hapiproject/hapi:v{config['HAPI_VERSION']}-1"
    assert host_ports(hapi) == {8080: int(config[port_var])}
    env = hapi["environment"]
    assert env["JAVA_TOOL_OPTIONS"] == f"-Xmx{config['HAPI_HEAP']}"
    assert env["hapi.fhir.fhir_version"] == "R4"
    assert env["hapi.fhir.enforce_referential_integrity_on_write"] == integrity
    assert env["hapi.fhir.allow_external_references"] == "true"
    assert env["spring.datasource.url"].startswith("jdbc:h2:file:")
    # $export, as stack/hapi's fhirgraph.bulk-export (default true) offers it.
    assert env["hapi.fhir.bulk_export_enabled"] == "true"
    assert env["hapi.fhir.bulk_export_file_retention_period_hours"] == "2"
    assert "metadata" in " ".join(hapi["healthcheck"]["test"])


def test_only_the_validating_server_validates_and_only_on_demand(services: dict[str, Any]) -> None:
    """Like stack/up: `docker compose up` starts source and target; the validating target
    needs `--profile validating` (stack/up validating)."""
    validating = services["fhir-validating"]
    assert validating["profiles"] == ["validating"]
    assert validating["environment"]["hapi.fhir.validation.requests_enabled"] == "true"
    for name in ("neo4j", "fhir-source", "fhir-target"):
        assert "profiles" not in services[name], f"{name} must start without a profile"
        env = services[name]["environment"]
        assert env.get("hapi.fhir.validation.requests_enabled", "false") == "false", name


REALM_TEMPLATE = ROOT / "stack" / "keycloak" / "fhirgraph-realm.json"
PLACEHOLDERS = {
    "FHIRGRAPH_CLIENT_SECRET",
    "FHIRGRAPH_SHORT_TOKEN_LIFESPAN",
    "FHIRGRAPH_JWT_KID",
    "FHIRGRAPH_JWT_N",
    "FHIRGRAPH_JWT_E",
}


def test_nothing_new_starts_without_a_profile(services: dict[str, Any]) -> None:
    """A plain `docker compose up`, like a plain stack/up, starts Neo4j, source and target only."""
    for name, service in services.items():
        if name not in ("neo4j", "fhir-source", "fhir-target"):
            assert service.get("profiles"), f"{name} would start with a plain `docker compose up`"


def test_keycloak_matches(services: dict[str, Any], config: dict[str, str]) -> None:
    keycloak = services["keycloak"]
    assert keycloak["image"] == f"quay.io/keycloak/keycloak:{config['KEYCLOAK_VERSION']}"
    assert keycloak["profiles"] == ["protected"]
    assert host_ports(keycloak) == {8080: int(config["KEYCLOAK_PORT"])}
    command = keycloak["command"]
    assert command[0] == "start" and "--import-realm" in command
    assert f"--hostname=http://127.0.0.1:{config['KEYCLOAK_PORT']}" in command
    assert {"--db=dev-file", "--cache=local"} <= set(command)
    env = keycloak["environment"]
    assert f"-Xmx{config['KEYCLOAK_HEAP']}" in env["JAVA_OPTS_KC_HEAP"].split()
    assert env["KC_BOOTSTRAP_ADMIN_USERNAME"] == config["KEYCLOAK_ADMIN_USER"]
    assert env["KC_BOOTSTRAP_ADMIN_PASSWORD"] == config["KEYCLOAK_ADMIN_PASSWORD"]
    assert env["FHIRGRAPH_CLIENT_SECRET"] == config["KEYCLOAK_CLIENT_SECRET"]
    assert env["FHIRGRAPH_SHORT_TOKEN_LIFESPAN"] == config["KEYCLOAK_SHORT_TOKEN_LIFESPAN"]
    # The key's placeholders come from the file stack/keycloak-keys (and stack/up) write.
    assert keycloak["env_file"] == [{"path": ".stack/keycloak/jwt.env", "required": False}]
    assert set(env) | {"FHIRGRAPH_JWT_KID", "FHIRGRAPH_JWT_N", "FHIRGRAPH_JWT_E"} >= PLACEHOLDERS
    assert (
        "./stack/keycloak/fhirgraph-realm.json:/opt/keycloak/data/import/fhirgraph-realm.json:ro"
        in keycloak["volumes"]
    )


@pytest.mark.parametrize(
    ("name", "port_var", "integrity"),
    [
        ("fhir-protected-source", "HAPI_PROTECTED_SOURCE_PORT", "false"),
        ("fhir-protected-target", "HAPI_PROTECTED_TARGET_PORT", "true"),
    ],
)
def test_protected_servers_match(
    services: dict[str, Any], config: dict[str, str], name: str, port_var: str, integrity: str
) -> None:
    """Our own HAPI app (the hapiproject/hapi image has no resource server), protected like stack/up's."""
    hapi = services[name]
    assert hapi["build"] == "./stack/hapi" and (ROOT / "stack" / "hapi" / "Dockerfile").is_file()
    assert hapi["profiles"] == ["protected"]
    assert host_ports(hapi) == {8080: int(config[port_var])}
    env = hapi["environment"]
    assert env["JAVA_TOOL_OPTIONS"] == f"-Xmx{config['HAPI_HEAP']}"
    assert env["fhirgraph.referential-integrity"] == integrity
    assert env.get("fhirgraph.bulk-export", "true") == "true"
    issuer = f"http://127.0.0.1:{config['KEYCLOAK_PORT']}/realms/fhirgraph"
    assert env["fhirgraph.oauth2.issuer-uri"] == issuer
    assert env["fhirgraph.oauth2.token-endpoint"] == f"{issuer}/protocol/openid-connect/token"
    assert env["fhirgraph.oauth2.jwk-set-uri"] == (
        "http://keycloak:8080/realms/fhirgraph/protocol/openid-connect/certs"
    )
    assert "metadata" in " ".join(hapi["healthcheck"]["test"])


def test_realm_template_defines_the_smart_clients_and_scopes() -> None:
    text = REALM_TEMPLATE.read_text()
    assert set(re.findall(r"\$\{([A-Z_]+)\}", text)) == PLACEHOLDERS
    realm = json.loads(text)
    assert realm["realm"] == "fhirgraph"
    scopes = {scope["name"]: scope for scope in realm["clientScopes"]}
    assert set(scopes) == {"system/*.read", "system/*.write"}
    assert all(s["attributes"]["include.in.token.scope"] == "true" for s in scopes.values())
    clients = {client["clientId"]: client for client in realm["clients"]}
    assert set(clients) == {"fhirgraph-secret", "fhirgraph-jwt", "fhirgraph-short", "fhirgraph-revocable"}
    for client in clients.values():
        assert client["serviceAccountsEnabled"] and not client["publicClient"]
        assert not client["standardFlowEnabled"] and not client["directAccessGrantsEnabled"]
        assert client["optionalClientScopes"] == ["system/*.read", "system/*.write"]
    jwt_client = clients["fhirgraph-jwt"]
    assert jwt_client["clientAuthenticatorType"] == "client-jwt"
    assert jwt_client["attributes"]["token.endpoint.auth.signing.alg"] == "RS384"
    assert json.loads(jwt_client["attributes"]["jwks.string"])["keys"][0]["kid"] == "${FHIRGRAPH_JWT_KID}"
    assert (
        clients["fhirgraph-short"]["attributes"]["access.token.lifespan"]
        == "${FHIRGRAPH_SHORT_TOKEN_LIFESPAN}"
    )


def test_postgres_matches(services: dict[str, Any], config: dict[str, str]) -> None:
    """The `postgres` profile mirrors HAPI_DB=postgres: PostgreSQL as stack/up runs it."""
    postgres = services["postgres"]
    assert postgres["image"] == f"postgres:{config['POSTGRES_VERSION']}"
    assert postgres["profiles"] == ["postgres"]
    assert host_ports(postgres) == {5432: int(config["POSTGRES_PORT"])}
    env = postgres["environment"]
    assert env["POSTGRES_USER"] == config["POSTGRES_USER"]
    assert env["POSTGRES_PASSWORD"] == config["POSTGRES_PASSWORD"]
    command = postgres["command"]
    assert f"shared_buffers={config['POSTGRES_SHARED_BUFFERS']}" in command
    assert f"max_connections={config['POSTGRES_MAX_CONNECTIONS']}" in command
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    databases = compose["configs"]["postgres-databases"]["content"]
    assert "CREATE DATABASE source;" in databases and "CREATE DATABASE target;" in databases


@pytest.mark.parametrize(
    ("name", "port_var", "database", "integrity"),
    [
        ("fhir-source-postgres", "HAPI_SOURCE_PORT", "source", "false"),
        ("fhir-target-postgres", "HAPI_TARGET_PORT", "target", "true"),
    ],
)
def test_hapi_servers_on_postgres_match(
    services: dict[str, Any], config: dict[str, str], name: str, port_var: str, database: str, integrity: str
) -> None:
    """Like fhir-source/fhir-target, with the datasource and dialect stack/up gives HAPI_DB=postgres."""
    hapi = services[name]
    assert hapi["image"] == f"hapiproject/hapi:v{config['HAPI_VERSION']}-1"
    assert hapi["profiles"] == ["postgres"]
    assert host_ports(hapi) == {8080: int(config[port_var])}
    env = hapi["environment"]
    assert env["JAVA_TOOL_OPTIONS"] == f"-Xmx{config['HAPI_HEAP']}"
    # the same database name as stack/up's (postgres_db: the service name)
    assert env["spring.datasource.url"] == f"jdbc:postgresql://postgres:5432/{database}"
    assert env["spring.datasource.username"] == config["POSTGRES_USER"]
    assert env["spring.datasource.password"] == config["POSTGRES_PASSWORD"]
    assert env["spring.datasource.driverClassName"] == "org.postgresql.Driver"
    assert (
        env["spring.jpa.properties.hibernate.dialect"]
        == "ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect"
    )
    assert env["hapi.fhir.enforce_referential_integrity_on_write"] == integrity
    assert env["hapi.fhir.bulk_export_enabled"] == "true"
    assert hapi["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_the_default_database_is_h2(config: dict[str, str]) -> None:
    """`make demo` and `make test` run on H2 unless HAPI_DB=postgres is set."""
    assert config["HAPI_DB"] == "h2"
