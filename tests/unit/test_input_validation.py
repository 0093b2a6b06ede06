"""Bad input refused by pure checks, before any server or database is touched."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fhirgraph.config import build_settings
from fhirgraph.errors import ConfigError, FhirError, GraphError
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph, GraphSettings
from fhirgraph.linkage import KEY_ENV, load_key
from fhirgraph.seeds import ExplicitSeeds, SearchSeed, check_include, check_seeds
from tests.fakes import outcome, raw

BASE = "http://source.test/fhir"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[transfer]\nconcurrency = "2"\n', r"\[transfer\] concurrency must be a whole number, not '2'"),
        ("[transfer]\nbundle_size = true\n", r"bundle_size must be a whole number, not True"),
        ('[transfer]\nget_missing = "no"\n', r"get_missing must be true or false"),
        ("[source]\nurl = 5\n", r"\[source\] url must be a string, not 5"),
        ('[source]\ntimeout = "soon"\n', r"timeout must be a number of seconds"),
        ('[source]\nurl = "http://s/fhir"\ntimeout = 0\n', r"timeout must be more than 0 seconds"),
        ("[neo4j]\npassword = 123456\n", r"password must be a string, not int$"),
        ("[target]\ntoken = [1]\n", r"token must be a string, not list$"),
        ('[transfer]\nname = ""\n', r"invalid transfer name ''"),
    ],
)
def test_config_values_of_the_wrong_type(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fhirgraph.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        build_settings({}, path)


def test_config_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "fhirgraph.toml"
    path.write_bytes(b"[transfer]\nname = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        build_settings({}, path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({("transfer", "name"): ""}, "invalid transfer name"),
        ({("transfer", "name"): "a\nb"}, "invalid transfer name"),
        ({("transfer", "concurrency"): 0}, "concurrency must be at least 1"),
        ({("source", "url"): "http://s/fhir", ("source", "timeout"): "x"}, "source timeout must be a number"),
    ],
)
def test_bad_options(options: dict[tuple[str, str], object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings(options, None)


@pytest.mark.parametrize("include", ["Condition:subject", "Encounter:participant:Practitioner", "*"])
def test_good_includes(include: str) -> None:
    assert check_include(include) == include


@pytest.mark.parametrize(
    ("include", "message"),
    [
        ("Condition", "not TYPE:PARAM"),
        ("Condition:", "not TYPE:PARAM"),
        ("a:b:c:d", "not TYPE:PARAM"),
        ("Conditon:subject", "did you mean Condition"),
        ("Encounter:participant:Practioner", "did you mean Practitioner"),
    ],
)
def test_bad_includes(include: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_include(include)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("Patients/1", "unknown resource type Patients"),
        ("123", "bare id"),
        ("Patient/a_b", "A-Z a-z 0-9"),
        ("#contained", "contained"),
        ("urn:uuid:0b0c7d5e-0000-4000-8000-000000000000", "urn"),
        ("Patient?identifier=x", "conditional"),
        ("http://elsewhere.test/fhir/Patient/1", "foreign"),
        ("", "empty reference"),
    ],
)
def test_bad_explicit_seeds(reference: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_seeds([ExplicitSeeds((reference,))], BASE)


def test_good_seeds() -> None:
    check_seeds([ExplicitSeeds(("Patient/1", f"{BASE}/Observation/2")), SearchSeed("Condition")], BASE)


def fake(reply: httpx.Response) -> FhirClient:
    """A target that answers every request with ``reply``."""
    return FhirClient(
        BASE,
        name="target",
        transport=httpx.MockTransport(lambda request: reply),
        max_wait=0.01,
        max_attempts=2,
    )


@pytest.mark.parametrize(
    ("client", "message"),
    [
        (
            fake(outcome(413, "at most 10 entries")),
            r"413 Payload Too Large.*at most 10 entries; send smaller bundles$",
        ),
        (fake(raw(400, b"{}")), r"answered 400 Bad Request to GET /fhir/metadata$"),
        (fake(raw(404, b"<html/>", "text/html")), r"has no FHIR metadata \(404\); is this the FHIR base URL"),
        (fake(raw(200, b"<html/>", "text/html")), r"answered HTML instead of FHIR JSON"),
        (fake(raw(200, b'{"resourceType": "Capab')), r"kept failing after 2 attempts: .*malformed JSON"),
        (fake(raw(200, b'{"resourceType": "Patient"}')), r"not a CapabilityStatement"),
    ],
)
def test_server_answers_become_clear_errors(client: FhirClient, message: str) -> None:
    with pytest.raises(FhirError, match=message):
        client.capability_statement()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:7474", "127.0.0.1:7687", "bolt//x"])
def test_neo4j_uri_must_be_bolt(uri: str) -> None:
    with pytest.raises(GraphError, match="invalid Neo4j URI"):
        Graph(GraphSettings(uri=uri, password="x"))


def test_key_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "linkage.key"
    path.write_bytes(bytes(range(128, 256)))
    with pytest.raises(ConfigError, match="is not text"):
        load_key(path)


def test_empty_key_variable_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    key, notice = load_key()
    assert notice is not None and "created a new linkage key" in notice
    assert (tmp_path / "fhirgraph" / "linkage.key").stat().st_mode & 0o777 == 0o600
    assert key.secret.decode() not in repr(key)


def test_credentials_in_a_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(FhirError, match="contains credentials") as raised:
        FhirClient("https://user:hunter2-secret@fhir.example.org/fhir", name="source")
    assert "hunter2-secret" not in str(raised.value)
