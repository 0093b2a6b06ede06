"""Security against the real stack: no request leaves for a foreign host, secrets stay secret,
the key file is private, and hostile strings are only ever data to Cypher.

A "foreign host" is a recording listener on 127.0.0.2 (loopback on Linux, but
another host to fhirgraph); misbehaving sources are stubs of our own.
"""

from __future__ import annotations

import base64
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import KEY_ENV
from fhirgraph.staging import open_transfer, reset_transfer
from tests.fakes import CAPABILITY, fhir, outcome, raw, searchset

from .conftest import create_on_source, leaks_in_neo4j, run_cli, transfer_nodes
from .stubs import Request, StubServer, metadata_then, stub_server


def nothing(request: Request) -> httpx.Response:
    return outcome(404, "the foreign listener has nothing")


@pytest.fixture
def foreign() -> Iterator[StubServer]:
    """A listener on another host (127.0.0.2) that must never receive anything."""
    with stub_server(nothing, host="127.0.0.2") as listener:
        yield listener


@pytest.fixture
def secrets_env(stack_env: dict[str, str], run_id: str) -> dict[str, str]:
    """Credentials for both servers (HAPI ignores them), each a unique string to search for."""
    return {
        "FHIRGRAPH_SOURCE_TOKEN": f"source-token-{run_id}-Zq8",
        "FHIRGRAPH_TARGET_USERNAME": f"target-user-{run_id}",
        "FHIRGRAPH_TARGET_PASSWORD": f"target-password-{run_id}-Xk3",
    }


def secret_strings(env: dict[str, str], linkage_key: str) -> list[str]:
    basic = base64.b64encode(
        f"{env['FHIRGRAPH_TARGET_USERNAME']}:{env['FHIRGRAPH_TARGET_PASSWORD']}".encode()
    ).decode()
    return [env["FHIRGRAPH_SOURCE_TOKEN"], env["FHIRGRAPH_TARGET_PASSWORD"], basic, linkage_key]


def assert_no_secret(outputs: list[subprocess.CompletedProcess[str]], secrets: list[str]) -> None:
    for result in outputs:
        for secret in secrets:
            assert secret not in result.stdout and secret not in result.stderr, f"{secret[:8]}... leaked"


def test_foreign_absolute_reference_is_kept_never_fetched_and_no_secret_leaks(
    graph: Graph,
    source: FhirClient,
    target: FhirClient,
    foreign: StubServer,
    secrets_env: dict[str, str],
    linkage_key: str,
    run_id: str,
) -> None:
    p = f"sec-{run_id}"
    foreign_ref = f"{foreign.base}/Practitioner/{p}-elsewhere"
    create_on_source(
        source,
        [
            {"resourceType": "Patient", "id": f"{p}-pat"},
            {
                "resourceType": "Observation",
                "id": f"{p}-obs",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{p}-pat"},
                "performer": [{"reference": foreign_ref}],
                "extension": [
                    {"url": "http://example.org/fhir/ext", "valueReference": {"reference": foreign_ref + "x"}}
                ],
            },
        ],
    )
    name = f"sec-foreign-{run_id}"
    seed = ("--resource", f"Observation/{p}-obs")
    outputs = [
        run_cli("transfer", "--transfer", name, *seed, "--progress", env=secrets_env),
        run_cli("status", "--transfer", name, "--json", env=secrets_env),
        run_cli("verify", "--transfer", name, env=secrets_env),
        run_cli("linkage", "export", "--transfer", name, env=secrets_env),
        # the same transfer once more: everything matched, nothing new
        run_cli("transfer", "--transfer", name, *seed, "--no-progress", env=secrets_env),
    ]
    assert foreign.requests == [], "a request reached the foreign host"

    nodes = transfer_nodes(graph, name)
    assert set(nodes) == {f"Patient/{p}-pat", f"Observation/{p}-obs"}  # no node for the foreign reference
    observation = nodes[f"Observation/{p}-obs"]
    copy = target.read("Observation", observation["target_id"])[1]
    assert copy is not None
    assert copy["performer"] == [{"reference": foreign_ref}]  # kept as it is
    assert copy["extension"][0]["valueReference"]["reference"] == foreign_ref + "x"
    assert copy["subject"]["reference"] == f"Patient/{nodes[f'Patient/{p}-pat']['target_id']}"

    secrets = secret_strings(secrets_env, linkage_key)
    assert_no_secret(outputs, secrets)
    assert leaks_in_neo4j(graph, secrets) == []
    reset_transfer(graph, name)


@pytest.mark.parametrize("host", ["127.0.0.2", "127.0.0.1"], ids=["other-host", "same-host-other-port"])
def test_next_link_to_another_host_stops_the_crawl_and_sends_nothing_there(
    host: str, graph: Graph, secrets_env: dict[str, str], linkage_key: str, run_id: str
) -> None:
    with stub_server(nothing, host=host) as listener:

        def search(request: Request) -> httpx.Response:
            patient = {"resourceType": "Patient", "id": f"stub-{run_id}"}
            page = searchset(
                [{"resource": patient, "search": {"mode": "match"}}], f"{listener.base}/Patient?page=2"
            )
            return fhir(page)

        with stub_server(metadata_then(search)) as stub_source:
            name = f"sec-next-{host}-{run_id}"
            result = run_cli(
                "crawl", "--transfer", name, "--source", stub_source.base, "Patient?_count=1",
                "--no-progress", env=secrets_env, check=False,
            )  # fmt: skip
        assert listener.requests == [], "a request reached the host of the next link"
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "next-page link points to another host" in result.stderr and "refusing" in result.stderr
    # the token did go to the configured source, and only there
    token = secrets_env["FHIRGRAPH_SOURCE_TOKEN"]
    assert {r.headers.get("Authorization") for r in stub_source.requests} == {f"Bearer {token}"}
    assert_no_secret([result], secret_strings(secrets_env, linkage_key))
    reset_transfer(graph, name)


def test_redirect_to_another_host_is_not_followed(
    graph: Graph, foreign: StubServer, secrets_env: dict[str, str], run_id: str
) -> None:
    def redirect(request: Request) -> httpx.Response:
        if request.path.endswith("/metadata"):
            return fhir(CAPABILITY)
        return raw(302, b"", "text/plain", Location=f"{foreign.base}/Patient")

    name = f"sec-redirect-{run_id}"
    with stub_server(redirect) as stub_source:
        result = run_cli(
            "crawl", "--transfer", name, "--source", stub_source.base, "Patient?_count=1", "--no-progress",
            env=secrets_env, check=False,
        )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr and "302" in result.stderr
    assert foreign.requests == []
    assert secrets_env["FHIRGRAPH_SOURCE_TOKEN"] not in result.stderr
    reset_transfer(graph, name)


def test_credentials_never_appear_in_errors(secrets_env: dict[str, str], tmp_path: Path, run_id: str) -> None:
    config = tmp_path / "fhirgraph.toml"
    client_secret = f"client-secret-{run_id}"
    config.write_text(f'[target]\nclient_id = "fhirgraph"\nclient_secret = "{client_secret}"\n')

    with stub_server(lambda request: outcome(401, "invalid token")) as stub_source:
        refused = run_cli(
            "transfer", "--transfer", f"sec-401-{run_id}", "--source", stub_source.base, "Patient?_count=1",
            env=secrets_env, check=False,
        )  # fmt: skip
    assert "401 Unauthorized" in refused.stderr
    half_oauth = run_cli(
        "transfer", "--transfer", f"sec-oauth-{run_id}", "--config", str(config), "Patient?_count=1",
        env={"FHIRGRAPH_TARGET_USERNAME": "", "FHIRGRAPH_TARGET_PASSWORD": ""}, check=False,
    )  # fmt: skip
    assert half_oauth.returncode != 0 and "Traceback" not in half_oauth.stderr
    token = secrets_env["FHIRGRAPH_SOURCE_TOKEN"]
    for result in (refused, half_oauth):
        for secret in (token, secrets_env["FHIRGRAPH_TARGET_PASSWORD"], client_secret):
            assert secret not in result.stdout + result.stderr


def test_generated_key_file_is_private_and_a_readable_one_is_warned_about(
    graph: Graph,
    source: FhirClient,
    stack_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    run_id: str,
) -> None:
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    p = f"sec-key-{run_id}"
    create_on_source(source, [{"resourceType": "Patient", "id": p}])

    first = run_cli("transfer", "--transfer", f"{p}-1", "--resource", f"Patient/{p}", "--no-progress")
    key_file = tmp_path / "config" / "fhirgraph" / "linkage.key"
    assert f"created a new linkage key in {key_file} (mode 0600)" in first.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700

    shared = tmp_path / "shared.key"
    shared.write_text(key_file.read_text())
    shared.chmod(0o644)
    second = run_cli(
        "transfer",
        "--transfer",
        f"{p}-2",
        "--resource",
        f"Patient/{p}",
        "--key-file",
        str(shared),
        "--no-progress",
    )
    assert (
        f"warning: linkage key file {shared} is readable by other users; run `chmod 600 {shared}`"
        in second.stderr
    )

    key = key_file.read_text().strip()
    assert_no_secret([first, second], [key])
    assert leaks_in_neo4j(graph, [key]) == []
    for suffix in ("-1", "-2"):
        reset_transfer(graph, p + suffix)


HOSTILE = "x'}) MATCH (n) DETACH DELETE n //\"` ${evil} \\u0027; CALL db.clearQueryCaches() //"


def test_hostile_strings_are_data_end_to_end(
    graph: Graph, source: FhirClient, target: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    canary = f"sec-canary-{run_id}"
    open_transfer(graph, canary, source="http://canary.invalid/fhir", target="", key_fingerprint=None)
    p = f"sec-hostile-{run_id}"
    create_on_source(
        source,
        [
            {"resourceType": "Patient", "id": f"{p}-pat", "name": [{"text": HOSTILE}]},
            {
                "resourceType": "Observation",
                "id": f"{p}-obs",
                "status": "final",
                "code": {"text": HOSTILE},
                "subject": {"reference": f"Patient/{p}-pat", "display": HOSTILE},
                "extension": [{"url": "http://example.org/fhir/ext", "valueString": HOSTILE}],
            },
        ],
    )
    name = f"{HOSTILE} {run_id}"  # transfer names allow anything but '|' and line breaks
    run_cli("transfer", "--transfer", name, "--resource", f"Observation/{p}-obs", "--no-progress")
    status = json.loads(run_cli("status", "--transfer", name, "--json").stdout)
    assert status["transfer"] == name
    run_cli("verify", "--transfer", name)

    nodes = transfer_nodes(graph, name)
    assert set(nodes) == {f"Patient/{p}-pat", f"Observation/{p}-obs"}
    stored = json.loads(nodes[f"Observation/{p}-obs"]["json"])
    assert stored["subject"]["display"] == HOSTILE and stored["extension"][0]["valueString"] == HOSTILE
    copy = target.read("Observation", nodes[f"Observation/{p}-obs"]["target_id"])[1]
    assert copy is not None and copy["subject"]["display"] == HOSTILE and copy["code"]["text"] == HOSTILE

    alive = graph.query("MATCH (t:Transfer {name: $t}) RETURN count(t) AS c", t=canary)
    assert alive == [{"c": 1}], "the hostile strings harmed another transfer"
    run_cli("reset", "--transfer", name, "--yes")
    assert transfer_nodes(graph, name) == {}
    reset_transfer(graph, canary)


def test_oauth_client_secret_and_access_token_stay_secret(
    graph: Graph, stack_env: dict[str, str], linkage_key: str, run_id: str
) -> None:
    client_secret = f"client-secret-{run_id}-Vb7"
    access_token = f"access-token-{run_id}-Pw2"

    def token_endpoint(request: Request) -> httpx.Response:
        return fhir({"access_token": access_token, "token_type": "Bearer", "expires_in": 300})

    def protected(request: Request) -> httpx.Response:
        if request.headers.get("Authorization") != f"Bearer {access_token}":
            return outcome(401, "no valid token")
        patient = {"resourceType": "Patient", "id": f"oauth-{run_id}"}
        return fhir(searchset([{"resource": patient, "search": {"mode": "match"}}]))

    name = f"sec-oauth-{run_id}"
    with stub_server(token_endpoint) as idp, stub_server(metadata_then(protected)) as stub_source:
        env = {
            "FHIRGRAPH_SOURCE_CLIENT_ID": "fhirgraph",
            "FHIRGRAPH_SOURCE_CLIENT_SECRET": client_secret,
            "FHIRGRAPH_SOURCE_OIDC_PROVIDER_URL": f"{idp.origin}/token",
        }
        crawled = run_cli(
            "crawl",
            "--transfer",
            name,
            "--source",
            stub_source.base,
            "Patient?_count=1",
            "--progress",
            env=env,
        )
        status = run_cli("status", "--transfer", name, "--json", env=env)
        env["FHIRGRAPH_SOURCE_CLIENT_SECRET"] = "a-wrong-secret-" + client_secret[::-1]
        idp.handler = lambda request: raw(401, b'{"error": "invalid_client"}', "application/json")
        refused = run_cli(
            "crawl",
            "--transfer",
            name + "-2",
            "--source",
            stub_source.base,
            "Patient?_count=1",
            env=env,
            check=False,
        )
    assert "OAuth2 token endpoint" in refused.stderr and "401" in refused.stderr
    expected_basic = base64.b64encode(f"fhirgraph:{client_secret}".encode()).decode()
    assert idp.requests[0].headers["Authorization"] == f"Basic {expected_basic}"
    assert all(r.headers.get("Authorization") == f"Bearer {access_token}" for r in stub_source.requests)
    secrets = [
        client_secret,
        access_token,
        expected_basic,
        linkage_key,
        env["FHIRGRAPH_SOURCE_CLIENT_SECRET"],
    ]
    assert_no_secret([crawled, status, refused], secrets)
    assert leaks_in_neo4j(graph, secrets) == []
    reset_transfer(graph, name)
