"""docker-compose.yml must describe the same stack as stack/config.env (which stack/up runs)."""

from __future__ import annotations

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
