"""The Python API and the command line build their settings on one path: the same options,
environment and config file give the same settings, whichever interface is used.

Both interfaces end in ``commands.transfer``; the tests put a recorder in its place
(through the public module attribute both of them call) and compare what each passed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from fhirgraph import FhirServer, commands
from fhirgraph.cli import cli
from fhirgraph.config import Settings
from fhirgraph.results import TransferResponse

SOURCE = "http://source.test/fhir"
TARGET = "http://target.test/fhir"
#: what both interfaces must agree on (the servers are the FhirServer objects in the API)
COMPARED = (
    "neo4j",
    "transfer",
    "bundle_size",
    "concurrency",
    "on_dangling",
    "on_reject",
    "key_file",
    "get_missing",
    "match_existing",
    "overlap",
)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Settings, dict[str, Any]]] = []

    def __call__(self, settings: Settings, seeds: object, **kwargs: Any) -> TransferResponse:
        self.calls.append((settings, kwargs))
        return TransferResponse(transfer=settings.transfer, source=SOURCE, target=TARGET)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Recorder:
    for name in list(os.environ):
        if name.startswith(("FHIRGRAPH_", "NEO4J_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./fhirgraph.toml unless a test writes one
    recording = Recorder()
    monkeypatch.setattr(commands, "transfer", recording)
    return recording


def no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected request {request.method} {request.url}")


def through_cli(recorder: Recorder, *args: str, env: dict[str, str] | None = None) -> Settings:
    result = CliRunner().invoke(
        cli, ["transfer", "Patient?_id=1", "--source", SOURCE, "--target", TARGET, *args], env=env
    )
    assert result.exit_code == 0, result.output
    return recorder.calls[-1][0]


def through_api(recorder: Recorder, **kwargs: Any) -> Settings:
    source = FhirServer(SOURCE, transport=httpx.MockTransport(no_network))
    target = FhirServer(TARGET, transport=httpx.MockTransport(no_network))
    source.transfer(target, query="Patient?_id=1", **kwargs)
    return recorder.calls[-1][0]


def compared(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in COMPARED}


def test_options_and_keywords_give_the_same_settings(recorder: Recorder) -> None:
    cli_settings = through_cli(
        recorder,
        "--transfer=t1",
        "--bundle-size=7",
        "--concurrency=3",
        "--on-dangling=skip-resource",
        "--on-reject=drop-reference",
        "--key-file=/k",
        "--no-get-missing",
        "--no-match-existing",
        "--no-overlap",
        "--neo4j-uri=bolt://db.test:7687",
        "--neo4j-user=u",
        "--neo4j-database=d",
    )
    api_settings = through_api(
        recorder,
        transfer_name="t1",
        bundle_size=7,
        concurrency=3,
        on_dangling="skip-resource",
        on_reject="drop-reference",
        key_file="/k",
        get_missing=False,
        match_existing=False,
        overlap=False,
        neo4j_uri="bolt://db.test:7687",
        neo4j_user="u",
        neo4j_database="d",
    )
    assert compared(cli_settings) == compared(api_settings)
    assert api_settings.bundle_size == 7 and api_settings.neo4j.database == "d"
    assert api_settings.on_reject == "drop-reference"
    assert not api_settings.overlap and not cli_settings.overlap


def test_the_environment_reaches_both(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "FHIRGRAPH_TRANSFER": "from-env",
        "FHIRGRAPH_BUNDLE_SIZE": "8",
        "FHIRGRAPH_CONCURRENCY": "4",
        "FHIRGRAPH_ON_DANGLING": "drop-reference",
        "FHIRGRAPH_ON_REJECT": "stop",
        "NEO4J_URI": "neo4j://cluster.test:7687",
        "NEO4J_USER": "env-user",
        "NEO4J_PASSWORD": "env-secret",
        "NEO4J_DATABASE": "envdb",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cli_settings = through_cli(recorder)
    api_settings = through_api(recorder)
    assert compared(cli_settings) == compared(api_settings)
    assert api_settings.transfer == "from-env" and api_settings.bundle_size == 8
    assert api_settings.concurrency == 4 and api_settings.on_dangling == "drop-reference"
    assert api_settings.on_reject == "stop"
    assert (
        api_settings.neo4j.uri == "neo4j://cluster.test:7687" and api_settings.neo4j.password == "env-secret"
    )


CONFIG = """
[neo4j]
uri = "bolt://file.test:7687"
database = "filedb"
password = "file-secret"
[transfer]
name = "from-file"
bundle_size = 9
concurrency = 5
on_dangling = "skip-resource"
on_reject = "drop-reference"
key_file = "/etc/fhirgraph/linkage.key"
get_missing = false
match_existing = false
overlap = false
"""


@pytest.mark.parametrize("how", ["./fhirgraph.toml", "$FHIRGRAPH_CONFIG", "config file argument"])
def test_the_config_file_reaches_both(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    if how == "./fhirgraph.toml":
        (tmp_path / "fhirgraph.toml").write_text(CONFIG)
        cli_settings, api_settings = through_cli(recorder), through_api(recorder)
    elif how == "$FHIRGRAPH_CONFIG":
        (tmp_path / "elsewhere.toml").write_text(CONFIG)
        monkeypatch.setenv("FHIRGRAPH_CONFIG", str(tmp_path / "elsewhere.toml"))
        cli_settings, api_settings = through_cli(recorder), through_api(recorder)
    else:
        (tmp_path / "given.toml").write_text(CONFIG)
        cli_settings = through_cli(recorder, "--config", str(tmp_path / "given.toml"))
        api_settings = through_api(recorder, config_file=str(tmp_path / "given.toml"))
    assert compared(cli_settings) == compared(api_settings)
    assert api_settings.transfer == "from-file" and api_settings.bundle_size == 9
    assert api_settings.concurrency == 5 and api_settings.on_dangling == "skip-resource"
    assert not api_settings.get_missing and not api_settings.match_existing and not api_settings.overlap
    assert api_settings.on_reject == "drop-reference"
    assert api_settings.key_file == "/etc/fhirgraph/linkage.key"
    assert api_settings.neo4j.uri == "bolt://file.test:7687" and api_settings.neo4j.database == "filedb"


def test_precedence_is_the_same_keyword_over_environment_over_file(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "fhirgraph.toml").write_text(CONFIG)
    monkeypatch.setenv("FHIRGRAPH_BUNDLE_SIZE", "8")
    assert through_api(recorder).bundle_size == 8
    assert through_cli(recorder).bundle_size == 8
    assert through_api(recorder, bundle_size=7).bundle_size == 7
    assert through_cli(recorder, "--bundle-size", "7").bundle_size == 7


def test_defaults_are_the_same_and_each_api_call_without_a_name_is_a_new_transfer(
    recorder: Recorder,
) -> None:
    cli_settings = through_cli(recorder)
    first, second = through_api(recorder), through_api(recorder)
    assert cli_settings.transfer == "default"
    assert first.transfer.startswith("api-") and first.transfer != second.transfer
    assert compared(dataclasses.replace(first, transfer="default")) == compared(cli_settings)


def test_the_transfer_gets_the_servers_transports(recorder: Recorder) -> None:
    source_transport = httpx.MockTransport(no_network)
    target_transport = httpx.MockTransport(no_network)
    source = FhirServer(SOURCE, transport=source_transport)
    source.transfer(FhirServer(TARGET, transport=target_transport), query="Patient?_id=1")
    settings, kwargs = recorder.calls[-1]
    assert kwargs["transports"] == {"source": source_transport, "target": target_transport}
    assert settings.source is not None and settings.source.url == SOURCE
    assert settings.target is not None and settings.target.url == TARGET
