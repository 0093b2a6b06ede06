"""Bulk Data ``$export``: the seeds, and the protocol against an httpx MockTransport handler
acting as the source (kick-off, polling, Retry-After, X-Progress, a failed job, Ctrl-C,
file URLs off the source base, NDJSON read as it arrives)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from click.testing import CliRunner

from fhirgraph import ExportSeed, FhirServer
from fhirgraph.cli import cli
from fhirgraph.errors import ConfigError, FhirTerminalError, ForeignHostError
from fhirgraph.fhir import bulk
from fhirgraph.fhir.client import FhirClient
from fhirgraph.jsontext import dumps
from fhirgraph.seeds import parse_seed, seed_from_json, seed_to_json
from tests.fakes import export_manifest, export_running, fhir, ndjson, outcome

BASE = "http://source.test/fhir"
STATUS = f"{BASE}/$export-poll-status?_jobId=job-1"
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> FhirClient:
    return FhirClient(BASE, name="source", transport=httpx.MockTransport(handler), max_wait=0.01)


class Clock:
    """A clock that moves only when ``sleep`` is called: the waits a poll chose, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# -- seeds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "params"),
    [
        ("$export", "$export", ()),
        ("$export?_type=Patient,Observation", "$export", (("_type", "Patient,Observation"),)),
        (
            "Patient/$export?_since=2026-01-31T12:00:00Z",
            "Patient/$export",
            (("_since", "2026-01-31T12:00:00Z"),),
        ),
        ("Group/g-5/$export", "Group/g-5/$export", ()),
        (
            "Patient/$export?_type=Observation&patient=Patient/1,Patient/a-2&patient=Patient/3",
            "Patient/$export",
            (("_type", "Observation"), ("patient", "Patient/1,Patient/a-2"), ("patient", "Patient/3")),
        ),
        ("Group/g-5/$export?patient=Patient/1", "Group/g-5/$export", (("patient", "Patient/1"),)),
        (
            "$export?_type=Observation&_typeFilter=Observation%3Fcode%3D1234-5",
            "$export",
            (("_type", "Observation"), ("_typeFilter", "Observation?code=1234-5")),
        ),
    ],
)
def test_export_seeds_parse(text: str, path: str, params: tuple[tuple[str, str], ...]) -> None:
    seed = parse_seed(text)
    assert seed == ExportSeed(path, params)
    assert seed_from_json(seed_to_json(seed)) == seed


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("Group/$export", "not a Bulk Data export"),
        ("Observation/$export", "not a Bulk Data export"),
        ("$export?_count=10", "'_count' is not supported"),
        ("$export?_type=Patient,Nonsense", "Nonsense"),
        ("$export?_since=yesterday", "not a FHIR instant"),
        ("$export?_type=Patient&_type=Observation", "at most once"),
        ("$export?_type", "not name=value"),
        ("$export?patient=Patient/1", "not \\$export"),
        ("Patient/$export?patient=Observation/1", "not a Patient reference"),
        ("Patient/$export?patient=Patient/1,", "not a Patient reference"),
    ],
)
def test_bad_export_seeds_are_one_clear_line(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as caught:
        parse_seed(text)
    assert "\n" not in str(caught.value)


def test_an_export_takes_no_limit() -> None:
    with pytest.raises(ConfigError, match="takes no limit"):
        parse_seed("$export?_type=Patient", limit=10)


@pytest.mark.parametrize(
    "args",
    [
        ["crawl", "$export?_count=5"],
        ["crawl", "$export?_type=Patient", "--limit", "5"],
        ["crawl", "$export?_type=Patient", "--include", "Patient:organization"],
    ],
)
def test_the_cli_refuses_a_bad_export_seed_in_one_line(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--source", BASE], env={"NEO4J_URI": "bolt://127.0.0.1:1"})
    assert result.exit_code != 0
    assert result.output.strip().startswith("Error: ")
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


def test_the_python_api_builds_the_same_seed_as_the_string() -> None:
    server = FhirServer(BASE)
    built = server.export(["Patient", "Observation"], since="2026-01-01T00:00:00Z", patients=True)
    assert built == parse_seed("Patient/$export?_type=Patient,Observation&_since=2026-01-01T00:00:00Z")
    assert server.export(group="5") == parse_seed("Group/5/$export")
    assert server.export(["Patient"], patient_ids=["1", "2"]) == parse_seed(
        "Patient/$export?_type=Patient&patient=Patient/1,Patient/2"
    )
    assert server.export(group="5", patient_ids=["1"]) == parse_seed("Group/5/$export?patient=Patient/1")
    with pytest.raises(ConfigError, match="Nonsense"):
        server.export(["Nonsense"])


# -- kick-off ---------------------------------------------------------------------


def test_kick_off_asks_for_a_new_asynchronous_job() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, headers={"Content-Location": STATUS})

    assert bulk.kick_off(client(handler), "Patient/$export", [("_type", "Patient,Observation")]) == STATUS
    (request,) = seen
    assert request.url.path == "/fhir/Patient/$export"
    assert request.url.params["_type"] == "Patient,Observation"
    assert request.headers["Prefer"] == "respond-async"
    assert request.headers["Cache-Control"] == "no-cache"
    assert request.headers["Accept"] == "application/fhir+json"


def test_a_kick_off_naming_patients_posts_them_as_parameters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, headers={"Content-Location": STATUS})

    params = [("_type", "Patient"), ("patient", "Patient/1,Patient/2"), ("_since", "2026-01-31T12:00:00Z")]
    assert bulk.kick_off(client(handler), "Group/5/$export", params) == STATUS
    (request,) = seen
    assert (request.method, request.url.path, request.url.query) == ("POST", "/fhir/Group/5/$export", b"")
    assert request.headers["Prefer"] == "respond-async"
    assert request.headers["Cache-Control"] == "no-cache"
    assert json.loads(request.content) == {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient"},
            {"name": "patient", "valueReference": {"reference": "Patient/1"}},
            {"name": "patient", "valueReference": {"reference": "Patient/2"}},
            {"name": "_since", "valueInstant": "2026-01-31T12:00:00Z"},
        ],
    }


def test_a_server_without_export_is_one_clear_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return outcome(400, "Unknown operation name: $export")

    with pytest.raises(FhirTerminalError, match=r"Unknown operation name: \$export") as caught:
        bulk.kick_off(client(handler), "$export", [])
    assert "\n" not in str(caught.value)


def test_a_status_url_off_the_source_base_is_refused_before_it_is_polled() -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(str(request.url))
        return httpx.Response(202, headers={"Content-Location": "http://evil.test/fhir/status/1"})

    with pytest.raises(ForeignHostError, match=r"evil\.test"):
        bulk.kick_off(client(handler), "$export", [])
    assert hosts == [f"{BASE}/$export"]


# -- polling ------------------------------------------------------------------------


def test_polling_shows_progress_and_honours_retry_after_within_bounds() -> None:
    answers = iter(
        [
            export_running("Build in progress - Status set to BUILDING", retry_after="120"),
            export_running("Build in progress - Status set to BUILDING", retry_after="0.2"),
            export_running("half done", retry_after="120"),
            export_manifest([("Patient", f"{BASE}/Binary/p1")]),
        ]
    )
    clock, shown = Clock(), []

    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == STATUS
        return next(answers)

    found = bulk.poll(client(handler), STATUS, notify=shown.append, sleep=clock.sleep, clock=clock)
    assert found is not None and found.files == (bulk.ExportFile("Patient", f"{BASE}/Binary/p1"),)
    assert shown == ["Build in progress - Status set to BUILDING"] * 2 + ["half done"]
    # 120 s asked, but the job has run for nothing yet: the lower bound; then the 0.2 s asked;
    # then never more than POLL_WAIT_SHARE of the time polled so far
    assert clock.slept == [bulk.MIN_POLL_WAIT, 0.2, bulk.MIN_POLL_WAIT]


def test_a_long_job_is_polled_less_often_up_to_the_ceiling() -> None:
    clock = Clock()
    clock.now = 0.0
    polls = iter([export_running()] * 40 + [export_manifest([])])

    def handler(request: httpx.Request) -> httpx.Response:
        clock.now += 10  # each poll waits on a slow server
        return next(polls)

    bulk.poll(client(handler), STATUS, sleep=clock.sleep, clock=clock)
    assert max(clock.slept) == bulk.MAX_POLL_WAIT
    assert clock.slept == sorted(clock.slept)


def test_a_failed_job_is_one_line_with_the_servers_outcome() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return outcome(500, "Job failed: HAPI-1234: the export ran out of disk")

    with pytest.raises(bulk.ExportFailedError, match="ran out of disk") as caught:
        bulk.poll(client(handler), STATUS, sleep=lambda s: None)
    assert "\n" not in str(caught.value)
    assert "$export job failed (500)" in str(caught.value)


def test_a_job_the_server_no_longer_knows_is_none() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return outcome(404, "Unknown instance ID: job-1")

    assert bulk.poll(client(handler), STATUS, sleep=lambda s: None) is None


def test_ctrl_c_while_polling_cancels_the_job() -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url)))
        if request.method == "DELETE":
            return outcome(202, "Job cancelled")
        return export_running()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bulk.poll(client(handler), STATUS, sleep=interrupted)
    assert seen == [("GET", STATUS), ("DELETE", STATUS)]


@pytest.mark.parametrize(
    ("status", "said"),
    [(202, "cancelled the source server's $export job"), (404, "had already finished")],
)
def test_a_cancel_says_whether_the_job_was_still_running(
    status: int, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    """HAPI answers 404 to the DELETE of a job that completed: its files stay, and the user is
    told. It answers a cancel with an OperationOutcome but no Content-Type."""

    def handler(request: httpx.Request) -> httpx.Response:
        if status == 202:
            return httpx.Response(202, content=b'{"resourceType": "OperationOutcome", "issue": []}')
        return outcome(status, "already cancelled or has completed")

    with caplog.at_level("WARNING", logger="fhirgraph"):
        assert bulk.cancel(client(handler), STATUS)
    assert [r.getMessage() for r in caplog.records if said in r.getMessage()]


@pytest.mark.parametrize(
    ("answer", "released", "warned"),
    [(202, True, False), (404, False, False), (410, False, False), (500, False, True), (None, False, True)],
)
def test_a_finished_job_is_released_at_best(
    answer: int | None, released: bool, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """``DELETE`` after the files were read: 202 released; a server that keeps the files (HAPI:
    404) or forgot the job says nothing; a failure or no answer is a warning, never an error."""
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url)))
        if answer is None:
            raise httpx.ConnectError("connection refused", request=request)
        return outcome(answer, "job-1")

    with caplog.at_level("WARNING", logger="fhirgraph"):
        assert bulk.release(client(handler), STATUS) is released
    assert set(seen) == {("DELETE", STATUS)}
    said = [r.getMessage() for r in caplog.records]
    assert bool(said) is warned, said
    if warned:
        assert "keeps the job's files until it expires them" in said[0]


def test_output_urls_off_the_source_base_are_refused_before_any_file_is_read() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return export_manifest(
            [("Patient", f"{BASE}/Binary/p1"), ("Observation", "http://files.evil.test/o1.ndjson")]
        )

    with pytest.raises(ForeignHostError, match=r"files\.evil\.test"):
        bulk.poll(client(handler), STATUS, sleep=lambda s: None)
    assert seen == [STATUS]


@pytest.mark.parametrize(
    "url",
    [
        "http://source.test/other/Binary/1",  # same host, not under the base path
        "http://source.test/fhir/../admin/Binary/1",
        "https://source.test/fhir/Binary/1",  # another scheme: another origin
        "http://source.test:8080/fhir/Binary/1",
    ],
)
def test_only_urls_under_the_source_base_pass(url: str) -> None:
    with pytest.raises(ForeignHostError):
        bulk.check_on_base(client(lambda r: fhir({})), url, "an export file")


# -- files --------------------------------------------------------------------------


def test_a_file_is_read_line_by_line_as_it_arrives_with_decimals_exact() -> None:
    produced: list[int] = []
    observation = '{"resourceType":"Observation","id":"o1","valueQuantity":{"value":120.00}}'

    def body() -> Iterator[bytes]:
        text = "".join(f'{{"resourceType":"Patient","id":"p{n}"}}\n' for n in range(1000))
        text += observation + "\n\n"
        for start in range(0, len(text), 7):  # chunks that cut lines anywhere
            produced.append(start)
            yield text[start : start + 7].encode()

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept"] == "application/fhir+ndjson"
        return httpx.Response(200, content=body(), headers={"Content-Type": "application/fhir+ndjson"})

    reading = bulk.resources(client(handler), bulk.ExportFile("Patient", f"{BASE}/Binary/p1"))
    first = next(reading)
    assert first == {"resourceType": "Patient", "id": "p0"}
    assert len(produced) < 20  # the first resource came before the body was all there
    rest = list(reading)
    assert len(rest) == 1000
    assert dumps(rest[-1]) == observation


def test_a_broken_line_is_one_clear_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return ndjson(['{"resourceType":"Patient","id":"p1"}', '{"resourceType":'])

    with pytest.raises(FhirTerminalError, match="line 2 of the export file") as caught:
        list(bulk.resources(client(handler), bulk.ExportFile("Patient", f"{BASE}/Binary/p1")))
    assert "\n" not in str(caught.value)


def test_a_file_the_server_refuses_is_its_outcome() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return outcome(404, "Binary/p1 is not known")

    with pytest.raises(FhirTerminalError, match="Binary/p1 is not known"):
        list(bulk.resources(client(handler), bulk.ExportFile("Patient", f"{BASE}/Binary/p1")))


def test_error_files_are_read_as_operation_outcomes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return ndjson(
            [
                '{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception",'
                '"diagnostics":"Observation/o9 could not be read"}]}'
            ]
        )

    found = bulk.ExportManifest(None, (), (bulk.ExportFile("OperationOutcome", f"{BASE}/Binary/e1"),))
    assert bulk.error_texts(client(handler), found) == ["Observation/o9 could not be read"]


def test_a_file_answered_as_its_binary_resource_is_read_from_its_data() -> None:
    content = b'{"resourceType":"Patient","id":"p1"}\n{"resourceType":"Patient","id":"p2"}\n'

    def handler(request: httpx.Request) -> httpx.Response:
        binary = {"resourceType": "Binary", "id": "f1", "contentType": "application/fhir+ndjson"}
        return fhir({**binary, "data": base64.b64encode(content).decode()})

    found = list(bulk.resources(client(handler), bulk.ExportFile("Patient", f"{BASE}/Binary/f1")))
    assert [r["id"] for r in found] == ["p1", "p2"]
