"""Bad input is refused with one clear line, a non-zero exit and nothing half-written.

The CLI runs as a subprocess against the real Neo4j and source; the target is a
recording stub (it answers ``/metadata`` and nothing else), so "nothing was
written to the target" is checked exactly, not by counting resources on a
shared server. Misbehaving servers (401, 403, HTML, malformed JSON, 413) are
tiny loopback servers started by the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirgraph import FhirServer
from fhirgraph.errors import ConfigError, FhirError, FhirgraphError
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import KEY_ENV
from fhirgraph.staging import open_transfer, reset_transfer
from tests.fakes import free_port, outcome, raw

from .conftest import NEO4J, SOURCE_URL, TARGET_URL, create_on_source, run_cli
from .stubs import Request, StubServer, metadata_then, stub_server


def refuse_writes(request: Request) -> httpx.Response:
    return outcome(500, "this stub target accepts no writes")


@pytest.fixture
def stub_target() -> Iterator[StubServer]:
    with stub_server(metadata_then(refuse_writes)) as server:
        yield server


def staged(graph: Graph, transfer: str) -> tuple[int, int]:
    """(Transfer nodes, Resource nodes) recorded for ``transfer``."""
    rows = graph.query(
        "OPTIONAL MATCH (t:Transfer {name: $t}) WITH count(t) AS transfers "
        "OPTIONAL MATCH (n:Resource {transfer: $t}) RETURN transfers, count(n) AS resources",
        t=transfer,
    )
    assert rows
    return int(rows[0]["transfers"]), int(rows[0]["resources"])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def assert_refused(result: Any, *expected: str) -> str:
    """Non-zero exit, no traceback, exactly one error line that contains every ``expected``."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


@dataclass(frozen=True)
class Case:
    """A CLI invocation that must be refused. ``{placeholders}`` are filled per test."""

    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    #: files to create under tmp_path: bytes, or None for a directory
    files: dict[str, bytes | None] = field(default_factory=dict)
    #: a stub source answering every request (metadata included) with this
    source_reply: httpx.Response | None = None


HTML = raw(200, b"<!doctype html><html><body>Sign in</body></html>", "text/html; charset=utf-8")
T = ("--transfer", "{transfer}", "--no-progress")

CASES = [
    # seeds
    Case("unknown-type", ("transfer", *T, "Conditions?code=1"), ("'Conditions'", "did you mean Condition?")),
    Case("lowercase-type", ("crawl", *T, "patient?_id=1"), ("did you mean Patient?",)),
    Case("search-not-name-value", ("transfer", *T, "Condition?code"), ("'code'", "not name=value")),
    Case("resource-bad-type", ("transfer", *T, "--resource", "Patients/1"), ("Patients/1", "Type/id")),
    Case(
        "resource-bare-id",
        ("transfer", *T, "--resource", "123"),
        ("bare id", "give e.g. Patient/123", "(--resource)"),
    ),
    Case("resource-bad-id", ("crawl", *T, "--resource", "Patient/a_b"), ("'Patient/a_b'", "A-Z a-z 0-9")),
    Case("resource-urn", ("crawl", *T, "--resource", "urn:uuid:1234"), ("urn:uuid:1234", "Type/id")),
    Case("include-no-param", ("transfer", *T, "Condition?code=1", "--include", "Condition"), ("TYPE:PARAM",)),
    Case(
        "include-bad-type", ("crawl", *T, "Condition?code=1", "--include", "Conditon:subject"), ("Condition",)
    ),
    Case("no-seeds", ("transfer", *T), ("nothing to crawl", "SEARCH")),
    Case(
        "unknown-search-parameter",
        ("transfer", *T, "Condition?no-such-parameter=1"),
        ("400", "no-such-parameter"),
    ),
    Case(
        "limit-zero",
        ("transfer", *T, "Condition?code=1", "--limit", "0"),
        ("--limit", "0 is not in the range"),
    ),
    Case("limit-not-number", ("crawl", *T, "Condition?code=1", "--limit", "ten"), ("--limit", "'ten'")),
    # plan and load options
    Case(
        "bundle-size-zero",
        ("transfer", *T, "Condition?code=1", "--bundle-size", "0"),
        ("bundle size", "at least 1"),
    ),
    Case(
        "bundle-size-negative",
        ("transfer", *T, "Condition?code=1", "--bundle-size", "-5"),
        ("at least 1", "-5"),
    ),
    Case(
        "concurrency-zero",
        ("transfer", *T, "Condition?code=1", "--concurrency", "0"),
        ("concurrency", "at least 1"),
    ),
    Case("concurrency-text", ("load", *T, "--concurrency", "two"), ("--concurrency", "'two'")),
    Case(
        "on-dangling-unknown",
        ("transfer", *T, "Condition?code=1", "--on-dangling", "ignore"),
        ("--on-dangling", "'ignore'"),
    ),
    Case(
        "transfer-name-pipe",
        ("transfer", "--transfer", "a|b", "Condition?code=1"),
        ("invalid transfer name",),
    ),
    Case(
        "transfer-name-empty", ("transfer", "--transfer", "", "Condition?code=1"), ("invalid transfer name",)
    ),
    # servers
    Case(
        "source-not-http",
        ("transfer", *T, "--source", "ftp://example.org/fhir", "Condition?code=1"),
        ("http(s)",),
    ),
    Case(
        "source-unreachable",
        ("transfer", *T, "--source", "http://127.0.0.1:{closed}/fhir", "Condition?code=1"),
        ("unreachable", "connection refused"),
    ),
    Case(
        "target-unreachable",
        ("transfer", *T, "--target", "http://127.0.0.1:{closed}/fhir", "Condition?code=1"),
        ("target server", "unreachable"),
    ),
    Case(
        "source-is-neo4j-browser",
        ("transfer", *T, "--source", "http://127.0.0.1:7474/browser/", "Condition?code=1"),
        ("source server", "is this the FHIR base URL"),
    ),
    Case(
        "source-answers-html",
        ("transfer", *T, "Condition?code=1"),
        ("HTML instead of FHIR",),
        source_reply=HTML,
    ),
    Case(
        "source-401",
        ("transfer", *T, "Condition?code=1"),
        ("401 Unauthorized", "check the source credentials", "Bearer token required"),
        source_reply=outcome(401, "Bearer token required"),
    ),
    Case(
        "source-403",
        ("transfer", *T, "Condition?code=1"),
        ("403 Forbidden", "lack permission", "scope patient/*.read missing"),
        source_reply=outcome(403, "scope patient/*.read missing"),
    ),
    Case(
        "source-malformed-json",
        ("transfer", *T, "Condition?code=1"),
        ("malformed JSON", "kept failing"),
        source_reply=raw(200, b'{"resourceType": "CapabilityStatem'),
    ),
    Case(
        "source-json-not-resource",
        ("transfer", *T, "Condition?code=1"),
        ("not a FHIR resource",),
        source_reply=raw(200, b"[1, 2, 3]"),
    ),
    Case(
        "source-url-with-credentials",
        ("transfer", *T, "--source", "http://fhir:pw-in-url-9Qz@127.0.0.1:8081/fhir", "Condition?code=1"),
        ("contains credentials", "FHIRGRAPH_SOURCE_USERNAME"),
    ),
    Case("same-server", ("transfer", *T, "--target", SOURCE_URL + "/", "Condition?code=1"), ("same server",)),
    Case(
        "no-source",
        ("transfer", *T, "Condition?code=1"),
        ("no source server",),
        env={"FHIRGRAPH_SOURCE_URL": ""},
    ),
    Case(
        "source-timeout-text",
        ("transfer", *T, "Condition?code=1"),
        ("timeout", "'soon'"),
        env={"FHIRGRAPH_SOURCE_TIMEOUT": "soon"},
    ),
    # Neo4j (a user that does not exist: failed logins of the shared `neo4j` user would lock it)
    Case(
        "neo4j-wrong-credentials",
        ("transfer", *T, "Condition?code=1"),
        ("refused the credentials", "'fhirgraph-no-such-user'", "NEO4J_PASSWORD"),
        env={"NEO4J_USER": "fhirgraph-no-such-user", "NEO4J_PASSWORD": "wrong"},
    ),
    Case(
        "neo4j-not-running",
        ("transfer", *T, "--neo4j-uri", "bolt://127.0.0.1:{closed}", "Condition?code=1"),
        ("cannot reach Neo4j", "is it running"),
    ),
    Case("neo4j-bad-uri", ("status", *T[:2], "--neo4j-uri", "http://127.0.0.1:7687"), ("invalid Neo4j URI",)),
    Case(
        "neo4j-no-database", ("status", *T[:2], "--neo4j-database", "nosuchdb"), ("no database 'nosuchdb'",)
    ),
    Case("neo4j-no-password", ("status", *T[:2]), ("no Neo4j password",), env={"NEO4J_PASSWORD": ""}),
    # linkage key
    Case(
        "key-file-missing",
        ("transfer", *T, "Condition?code=1", "--key-file", "{tmp}/absent.key"),
        ("absent.key", "does not exist"),
    ),
    Case(
        "key-file-unreadable",
        ("transfer", *T, "Condition?code=1"),
        ("cannot read linkage key file", "keydir"),
        env={KEY_ENV: "", "FHIRGRAPH_LINKAGE_KEY_FILE": "{tmp}/keydir"},
        files={"keydir": None},
    ),
    Case(
        "key-file-binary",
        ("transfer", *T, "Condition?code=1", "--key-file", "{tmp}/binary.key"),
        ("binary.key", "not text"),
        files={"binary.key": bytes(range(128, 256))},
    ),
    Case(
        "key-file-short",
        ("transfer", *T, "Condition?code=1", "--key-file", "{tmp}/short.key"),
        ("short.key", "fewer than 16"),
        files={"short.key": b"secret\n"},
    ),
    Case("key-env-short", ("transfer", *T, "Condition?code=1"), ("shorter than 16",), env={KEY_ENV: "short"}),
    # config file
    Case(
        "config-unknown-key",
        ("transfer", *T, "--config", "{tmp}/c.toml", "Condition?code=1"),
        ("unknown key 'bundle-size' in [transfer]", "bundle_size"),
        files={"c.toml": b"[transfer]\nbundle-size = 10\n"},
    ),
    Case(
        "config-unknown-section",
        ("transfer", *T, "--config", "{tmp}/c.toml", "Condition?code=1"),
        ("unknown section [server]",),
        files={"c.toml": b'[server]\nurl = "http://x/fhir"\n'},
    ),
    Case(
        "config-invalid-toml",
        ("transfer", *T, "--config", "{tmp}/c.toml", "Condition?code=1"),
        ("not valid TOML",),
        files={"c.toml": b"[transfer\nname = 1\n"},
    ),
    Case(
        "config-wrong-type",
        ("transfer", *T, "--config", "{tmp}/c.toml", "Condition?code=1"),
        ("[transfer] concurrency must be a whole number", "'2'"),
        files={"c.toml": b'[transfer]\nconcurrency = "2"\n'},
    ),
    Case(
        "config-secret-wrong-type",
        ("transfer", *T, "--config", "{tmp}/c.toml", "Condition?code=1"),
        ("[source] token must be a string, not int",),
        files={"c.toml": b"[source]\ntoken = 987654321\n"},
    ),
    Case(
        "config-not-utf8",
        ("transfer", *T, "--config", "{tmp}/c.toml", "Condition?code=1"),
        ("not UTF-8",),
        files={"c.toml": b"[transfer]\nname = '\xff\xfe'\n"},
    ),
    Case(
        "config-unreadable",
        ("transfer", *T, "Condition?code=1"),
        ("cannot read config file",),
        env={"FHIRGRAPH_CONFIG": "{tmp}/confdir"},
        files={"confdir": None},
    ),
    Case(
        "config-missing",
        ("transfer", *T, "--config", "{tmp}/none.toml", "Condition?code=1"),
        ("does not exist",),
    ),
    # stages of a transfer that does not exist
    Case("plan-unknown-transfer", ("plan", *T[:2]), ("no transfer named", "crawl")),
    Case("load-unknown-transfer", ("load", *T), ("no transfer named", "crawl")),
    Case("verify-unknown-transfer", ("verify", *T[:2]), ("no transfer named",)),
    Case("status-unknown-transfer", ("status", *T[:2]), ("no transfer named",)),
    Case("export-unknown-transfer", ("linkage", "export", *T[:2]), ("no transfer named",)),
    Case("reset-unknown-transfer", ("reset", *T[:2], "--yes"), ("no transfer named",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_cli_input_is_refused_cleanly(
    case: Case, graph: Graph, stub_target: StubServer, stack_env: dict[str, str], run_id: str, tmp_path: Path
) -> None:
    for name, content in case.files.items():
        if content is None:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(content)
    transfer = f"bad-{case.id}-{run_id}"
    values = {"transfer": transfer, "closed": str(free_port()), "tmp": str(tmp_path)}
    env = {"FHIRGRAPH_TARGET_URL": stub_target.base, **{k: v.format(**values) for k, v in case.env.items()}}
    args = [arg.format(**values) for arg in case.args]
    if case.source_reply is not None:
        reply = case.source_reply
        with stub_server(lambda request: reply) as stub_source:
            result = run_cli(*args, "--source", stub_source.base, env=env, check=False)
        assert stub_source.requests, "the stub source was never asked"
    else:
        result = run_cli(*args, env=env, check=False)
    assert_refused(result, *case.expect)
    assert "pw-in-url-9Qz" not in result.stderr
    assert staged(graph, transfer) == (0, 0), "a rejected transfer left something in Neo4j"
    assert stub_target.writes() == [], "something was written to the target"


# -- refused later: state of an existing transfer ---------------------------------


def _patient(source: FhirClient, run_id: str) -> str:
    pid = f"bad-{run_id}-pat"
    create_on_source(source, [{"resourceType": "Patient", "id": pid, "name": [{"family": "Bad"}]}])
    return pid


def test_plan_before_crawl_and_load_before_plan(
    graph: Graph, source: FhirClient, stub_target: StubServer, stack_env: dict[str, str], run_id: str
) -> None:
    name = f"bad-order-{run_id}"
    open_transfer(graph, name, source=SOURCE_URL, target="", key_fingerprint=None)
    try:
        assert_refused(run_cli("plan", "--transfer", name, check=False), "not finished crawling", "crawl")
        pid = _patient(source, run_id)
        run_cli("crawl", "--transfer", name, "--resource", f"Patient/{pid}", "--no-progress")
        before = staged(graph, name)
        result = run_cli("load", "--transfer", name, "--target", stub_target.base, check=False)
        assert_refused(result, "has no plan", "fhirgraph plan")
        assert staged(graph, name) == before
        assert stub_target.writes() == []
    finally:
        reset_transfer(graph, name)


def test_resume_with_another_linkage_key_is_refused(
    graph: Graph, source: FhirClient, stack_env: dict[str, str], run_id: str
) -> None:
    name = f"bad-key-{run_id}"
    pid = _patient(source, run_id)
    run_cli("crawl", "--transfer", name, "--resource", f"Patient/{pid}", "--no-progress")
    run_cli("plan", "--transfer", name)
    graph.query("MATCH (t:Transfer {name: $t}) SET t.key_fingerprint = 'from-another-key'", t=name)
    for command in (("load",), ("transfer",)):
        result = run_cli(*command, "--transfer", name, "--no-progress", check=False)
        assert_refused(result, "different linkage key", "same key")
    rows = graph.query("MATCH (n:Resource {transfer: $t}) RETURN n.status AS s", t=name)
    assert {row["s"] for row in rows} == {"planned"}, "nothing may be loaded with the wrong key"


def test_source_reference_with_invalid_form_is_reported_as_dangling(
    graph: Graph, source: FhirClient, stub_target: StubServer, stack_env: dict[str, str], run_id: str
) -> None:
    oid = f"bad-{run_id}-obs"
    # HAPI (the source) stores `Patient/a_b`, although `_` is not allowed in a FHIR id
    create_on_source(
        source,
        [
            {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "Patient/a_b"},
            }
        ],
    )
    name = f"bad-invalid-ref-{run_id}"
    result = run_cli(
        "transfer", "--transfer", name, "--resource", f"Observation/{oid}", "--target", stub_target.base,
        "--no-progress", check=False,
    )  # fmt: skip
    line = assert_refused(
        result, "1 dangling reference", "nothing was written to the target", "--on-dangling"
    )
    assert "Patient/a_b" in line and "invalid reference" in line
    assert f"missing: Observation/{oid} subject -> Patient/a_b" in result.stderr
    assert stub_target.writes() == []
    reset_transfer(graph, name)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            outcome(400, "HAPI-0546: Observation.subject: unknown reference target, from the stub"),
            ("400", "unknown reference target, from the stub"),
        ),
        (
            outcome(413, "transaction bundles may hold at most 1 entry"),
            ("413", "at most 1 entry", "--bundle-size"),
        ),
    ],
    ids=["target-rejects-bundle", "bundle-too-large"],
)
def test_target_rejecting_a_bundle_shows_its_operation_outcome(
    reply: httpx.Response,
    expected: tuple[str, ...],
    graph: Graph,
    source: FhirClient,
    stack_env: dict[str, str],
    run_id: str,
) -> None:
    # The real target has no transaction size limit (and rejects only what the source would
    # not hold either), so a stub plays the target that refuses the POST. With --on-reject stop
    # the refused bundle fails as a whole (the default isolates what is refused: test_refusals).
    pid = _patient(source, run_id)
    name = f"bad-target-{run_id}"
    with stub_server(metadata_then(lambda request: reply)) as target:
        result = run_cli(
            "transfer", "--transfer", name, "--resource", f"Patient/{pid}", "--target", target.base,
            "--no-progress", "--on-reject", "stop", check=False,
        )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    failed = [line for line in result.stdout.splitlines() if "FAILED bundle" in line]
    assert len(failed) == 1
    for text in expected:
        assert text in failed[0]
    assert error_lines(result.stderr) == [
        "Error: 1 bundle(s) failed; see the transfer's status (`fhirgraph status`)"
    ]
    assert [r.method for r in target.writes()] == ["POST"]  # not retried: the rejection is final
    reset_transfer(graph, name)


# -- the Python API -----------------------------------------------------------


@dataclass(frozen=True)
class ApiCase:
    id: str
    kwargs: dict[str, Any]
    expect: str


API_CASES = [
    ApiCase("resource-without-id", {"resources": [{"resourceType": "Patient"}]}, "has no id"),
    ApiCase("resource-empty-id", {"resources": [{"resourceType": "Patient", "id": ""}]}, "has no id"),
    ApiCase("dict-not-resource", {"resources": [{"name": "Ann"}]}, "has no resourceType"),
    ApiCase("string-not-resource", {"resources": ["Patient/1"]}, "is a str, not a FHIR resource"),
    ApiCase("unknown-type", {"resources": [{"resourceType": "Patients", "id": "1"}]}, "did you mean Patient"),
    ApiCase("bad-id", {"resources": [{"resourceType": "Patient", "id": "a b"}]}, "invalid id"),
    ApiCase("no-resources", {"resources": []}, "resources= is empty"),
    ApiCase("query-and-resources", {"resources": [], "query": "Patient?_id=1"}, "exactly one of"),
    ApiCase("neither", {}, "exactly one of"),
    ApiCase("query-unknown-type", {"query": "Conditions?code=1"}, "did you mean Condition"),
    ApiCase("transfer-name", {"query": "Patient?_id=1", "transfer_name": "a|b"}, "invalid transfer name"),
    ApiCase("bundle-size", {"query": "Patient?_id=1", "bundle_size": 0}, "bundle size must be at least 1"),
    ApiCase("concurrency", {"query": "Patient?_id=1", "concurrency": 0}, "concurrency must be at least 1"),
    ApiCase("on-dangling", {"query": "Patient?_id=1", "on_dangling": "ignore"}, "on_dangling must be one of"),
    ApiCase(
        "target-url-string", {"query": "Patient?_id=1", "target_server": TARGET_URL}, "must be a FhirServer"
    ),
    ApiCase("same-server", {"query": "Patient?_id=1", "target_server": SOURCE_URL + "/"}, "same server"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_bad_python_api_input_raises_config_error(
    case: ApiCase, graph: Graph, stack_env: dict[str, str], run_id: str
) -> None:
    name = f"api-bad-{case.id}-{run_id}"
    kwargs = {"transfer_name": name, "neo4j_password": NEO4J.password, **case.kwargs}
    target_url = kwargs.pop("target_server", TARGET_URL)
    target = target_url if case.id == "target-url-string" else FhirServer(target_url)
    with pytest.raises(ConfigError, match=case.expect.replace("|", r"\|")):
        FhirServer(SOURCE_URL).transfer(target, **kwargs)
    assert staged(graph, name) == (0, 0)
    assert staged(graph, "a|b") == (0, 0)


def test_python_api_server_errors_are_fhirgraph_errors(
    graph: Graph, stack_env: dict[str, str], run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FhirError, match="not an http"):
        FhirServer("127.0.0.1:8081/fhir")
    name = f"api-bad-unreachable-{run_id}"
    closed = FhirServer(f"http://127.0.0.1:{free_port()}/fhir")
    with pytest.raises(FhirgraphError, match="connection refused"):
        closed.transfer(FhirServer(TARGET_URL), query="Patient?_id=1", transfer_name=name)
    assert staged(graph, name) == (0, 0)
    monkeypatch.delenv("NEO4J_PASSWORD")
    with pytest.raises(ConfigError, match="no Neo4j password"):
        FhirServer(SOURCE_URL).transfer(FhirServer(TARGET_URL), query="Patient?_id=1", transfer_name=name)
