"""The client side of FHIR Bulk Data Access ``$export``: kick off, poll, cancel, read the files.

An export is an asynchronous job on the source: the kick-off request
(``Prefer: respond-async``) answers 202 with a status URL in ``Content-Location``;
polling it answers 202 (with ``X-Progress`` and ``Retry-After``) while the job
runs, then 200 with a manifest naming NDJSON files, or an error with the
server's OperationOutcome; ``DELETE`` on it cancels the job, or releases the
files of a job that finished. Every URL the
server names (status URL, files) must be on the source base: anything else is
refused before a request is sent, so the source's credentials go nowhere else.
This module speaks the protocol only; the crawl stage decides what to stage.
"""

from __future__ import annotations

import base64
import logging
import posixpath
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from fhirgraph import jsontext
from fhirgraph.errors import FhirError, FhirTerminalError, ForeignHostError
from fhirgraph.fhir.client import FHIR_JSON, FhirClient, operation_outcome_text, origin, retry_after_seconds
from fhirgraph.jsontext import JSON

log = logging.getLogger("fhirgraph")
NDJSON = "application/fhir+ndjson"
#: HAPI asks for ``Retry-After: 120`` whatever the size of the job, so the wait between polls
#: is at most this share of the time the job has run so far (between the bounds below): a job
#: of a few seconds is not kept waiting two minutes, a long one is polled rarely, and the
#: finished job waits for its next poll about 5% of its time on average (a quarter, polled
#: before, lost 4 s of a 30 s job at 50,000 resources; a poll costs the server one read)
POLL_WAIT_SHARE = 0.1
MIN_POLL_WAIT = 1.0
MAX_POLL_WAIT = 30.0

#: told what the job is doing while it runs: the server's ``X-Progress`` text (or "in progress")
Notify = Callable[[str], None]


@dataclass(frozen=True)
class ExportFile:
    """One NDJSON file of an export's manifest: its resource type and URL."""

    type: str
    url: str


@dataclass(frozen=True)
class ExportManifest:
    """What a finished export job produced (the 200 answer of its status URL)."""

    transaction_time: str | None
    files: tuple[ExportFile, ...]
    #: files of OperationOutcomes for what the server could not export
    errors: tuple[ExportFile, ...]


class ExportFailedError(FhirTerminalError):
    """The source's export job failed; the message holds the server's OperationOutcome."""


def kick_off(source: FhirClient, path: str, params: Sequence[tuple[str, str]]) -> str:
    """Start an export job (``path``: ``$export``, ``Patient/$export``, ``Group/<id>/$export``);
    its status URL.

    ``Cache-Control: no-cache`` makes the server start a new job: HAPI otherwise hands back
    an earlier job with the same parameters, whose files may be stale or already gone. With
    ``patient`` the kick-off is a POST of a Parameters resource (the Bulk Data spec allows
    ``patient`` only there; HAPI refuses it in a GET), never repeated: it starts a job.
    """
    headers = {"Accept": FHIR_JSON, "Prefer": "respond-async", "Cache-Control": "no-cache"}
    if any(name == "patient" for name, _ in params):
        reply = source.exchange("POST", path, body=kick_off_parameters(params), headers=headers)
    else:
        reply = source.exchange("GET", path, params=list(params), headers=headers)
    status_url = str(reply.headers.get("Content-Location") or "")
    if reply.status != 202 or not status_url:
        raise FhirTerminalError(
            f"{source.name} server answered {path} with {reply.status} "
            f"{'without a Content-Location' if not status_url else ''}, not 202 Accepted with a status "
            "URL; does it support Bulk Data $export?".replace("  ", " ")
        )
    check_on_base(source, status_url, "the export's status URL")
    return status_url


def kick_off_parameters(params: Sequence[tuple[str, str]]) -> JSON:
    """The kick-off parameters as a Parameters resource: each ``patient`` reference of a
    comma-separated list on its own, ``_since`` as an instant."""
    parameters: list[JSON] = []
    for name, value in params:
        if name == "patient":
            parameters += [
                {"name": name, "valueReference": {"reference": reference.strip()}}
                for reference in value.split(",")
            ]
        else:
            parameters.append({"name": name, "valueInstant" if name == "_since" else "valueString": value})
    return {"resourceType": "Parameters", "parameter": parameters}


def poll(
    source: FhirClient,
    status_url: str,
    *,
    notify: Notify | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_wait: Callable[[], None] | None = None,
) -> ExportManifest | None:
    """Poll the job until it finishes; its manifest, or None if the server no longer knows the
    job (404 or 410: expired, deleted, or the server restarted).

    Waits what ``Retry-After`` asks, bounded by :data:`MIN_POLL_WAIT`, :data:`MAX_POLL_WAIT` and
    :data:`POLL_WAIT_SHARE` of the time polled so far; ``on_wait`` runs before each wait (a crash point for
    the tests). A job that failed raises :class:`ExportFailedError` with the server's words.
    Ctrl-C (``KeyboardInterrupt``) cancels the job (:func:`cancel`) before it goes on up.
    """
    check_on_base(source, status_url, "the export's status URL")
    try:
        return _poll(source, status_url, notify, sleep, clock, on_wait)
    except KeyboardInterrupt:
        cancel(source, status_url)  # Ctrl-C: the user wants the job gone, not just the client
        raise


def _poll(
    source: FhirClient,
    status_url: str,
    notify: Notify | None,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    on_wait: Callable[[], None] | None,
) -> ExportManifest | None:
    started = clock()
    while True:
        try:
            reply = source.exchange(
                "GET", status_url, allow_status=(202, 404, 410), headers={"Accept": FHIR_JSON}
            )
        except FhirTerminalError as exc:
            if exc.status is None or exc.status in (401, 403):
                raise
            raise ExportFailedError(
                f"the {source.name} server's $export job failed ({exc.status}): {exc.outcome or exc}",
                status=exc.status,
                url=exc.url,
            ) from None
        if reply.status in (404, 410):
            return None
        if reply.status != 202:
            return manifest(source, reply.payload)
        if notify is not None:
            notify(reply.headers.get("X-Progress") or "in progress")
        if on_wait is not None:
            on_wait()
        elapsed = clock() - started
        asked = retry_after_seconds(reply.headers.get("Retry-After"))
        ceiling = min(MAX_POLL_WAIT, max(MIN_POLL_WAIT, elapsed * POLL_WAIT_SHARE))
        sleep(min(asked, ceiling) if asked is not None else ceiling)


def manifest(source: FhirClient, payload: JSON | None) -> ExportManifest:
    """Read the 200 answer of a status URL; every file URL must be on the source base, which
    is checked for all of them before any is read."""
    if payload is None or not isinstance(payload.get("output"), list):
        raise FhirTerminalError(f"{source.name} server's export manifest has no 'output' list")

    def files(key: str) -> tuple[ExportFile, ...]:
        found = []
        for item in payload.get(key) or []:
            url = item.get("url") if isinstance(item, dict) else None
            if not isinstance(url, str):
                raise FhirTerminalError(f"{source.name} server's export manifest has a file without a url")
            check_on_base(source, url, "an export file")
            found.append(ExportFile(str(item.get("type") or ""), url))
        return tuple(found)

    return ExportManifest(payload.get("transactionTime"), files("output"), files("error"))


def cancel(source: FhirClient, status_url: str) -> bool:
    """``DELETE`` the job (the server stops it and removes its files); whether the server
    answered. A job that already finished or is unknown counts as cancelled. What happened
    is said on the ``fhirgraph`` log: the user pressed Ctrl-C and wants to know."""
    try:
        reply = source.exchange("DELETE", status_url, retry=True, attempts=2, allow_status=(404, 410))
    except FhirError as exc:
        log.warning("could not cancel the %s server's $export job (%s): %s", source.name, status_url, exc)
        return False
    if reply.status in (404, 410):
        log.warning(
            "the %s server's $export job had already finished; the server keeps its files until it "
            "expires them",
            source.name,
        )
    else:
        log.warning("cancelled the %s server's $export job", source.name)
    return True


def release(source: FhirClient, status_url: str) -> bool:
    """``DELETE`` a finished job whose files were all read, as the Bulk Data specification asks
    of a client done with them, so the server may remove them; whether it took the request.

    A server that keeps a completed job's files (HAPI answers 404) or already expired them
    (404, 410) is left alone without a word. Any other failure is a warning on the
    ``fhirgraph`` log, never an error: everything was staged.
    """
    check_on_base(source, status_url, "the export's status URL")
    try:
        reply = source.exchange("DELETE", status_url, retry=True, attempts=2, allow_status=(404, 410))
    except FhirError as exc:
        log.warning(
            "the %s server did not take the release of its finished $export job (%s): %s; "
            "it keeps the job's files until it expires them",
            source.name,
            status_url,
            exc,
        )
        return False
    return reply.status not in (404, 410)


def resources(source: FhirClient, file: ExportFile) -> Iterator[JSON]:
    """The resources of one NDJSON file, parsed one line at a time as they arrive; decimals
    keep their text (``jsontext``).

    A server that answers with the file's Binary resource instead of its content (HAPI
    does when it takes the ``Accept`` for a FHIR format) is read from the Binary's ``data``,
    which is then in memory whole.
    """
    check_on_base(source, file.url, "an export file")
    for number, resource in enumerate(_parsed(source.lines(file.url, accept=NDJSON), file), start=1):
        if number == 1 and resource.get("resourceType") == "Binary" and file.type != "Binary":
            content = base64.b64decode(str(resource.get("data") or ""))
            yield from _parsed(iter(content.decode("utf-8").splitlines()), file)
            return
        yield resource


def _parsed(lines: Iterator[str], file: ExportFile) -> Iterator[JSON]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            resource = jsontext.loads(line)
        except ValueError:
            raise FhirTerminalError(
                f"line {number} of the export file {file.url} is not JSON", url=file.url
            ) from None
        if not isinstance(resource, dict):
            raise FhirTerminalError(f"line {number} of the export file {file.url} is not a resource")
        yield resource


def error_texts(source: FhirClient, manifest: ExportManifest) -> list[str]:
    """The OperationOutcomes of the manifest's error files, as text."""
    texts: list[str] = []
    for file in manifest.errors:
        texts.extend(filter(None, (operation_outcome_text(outcome) for outcome in resources(source, file))))
    return texts


def check_on_base(source: FhirClient, url: str, what: str) -> None:
    """Refuse ``url`` unless it is under the source's base URL (before anything is sent to it)."""
    path = urlsplit(url).path
    base_path = urlsplit(source.base_url).path.rstrip("/") + "/"
    inside = posixpath.normpath(path) == path.rstrip("/") and path.startswith(base_path)
    if origin(url) != origin(source.base_url) or not inside:
        raise ForeignHostError(
            f"{what} {url} is not on the {source.name} base {source.base_url}; refusing to send it "
            "a request (or the credentials)"
        )
