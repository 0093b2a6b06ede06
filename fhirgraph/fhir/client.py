"""HTTP client for one FHIR server: the single place where httpx errors are translated.

Requests go only to the configured base URL's origin (and, for OAuth2, token
requests to the token endpoint, configured or named by the server's SMART
configuration); anything else raises :class:`ForeignHostError` before a byte is
sent. Reads are retried on transient failures, honouring
``Retry-After``; writes are retried only when the caller says they are safe.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from fhirgraph import jsontext
from fhirgraph.errors import (
    FhirError,
    FhirTerminalError,
    FhirTransientError,
    FhirUnreachableError,
    ForeignHostError,
)
from fhirgraph.fhir.auth import TokenAuth
from fhirgraph.jsontext import JSON
from fhirgraph.references import normalise_base

T = TypeVar("T")
Params = Mapping[str, str | int] | Sequence[tuple[str, str]]

FHIR_JSON = "application/fhir+json"
FORM = "application/x-www-form-urlencoded"
# 500 is not here: a server that fails on a request usually fails on it again
TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def operation_outcome_text(payload: Any) -> str:
    """The human text of an OperationOutcome: diagnostics, else details.text, per issue."""
    if not isinstance(payload, dict) or payload.get("resourceType") != "OperationOutcome":
        return ""
    texts = []
    for issue in payload.get("issue", []):
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
        if text:
            texts.append(str(text))
    return "; ".join(texts)


def operation_outcome_issues(payload: Any) -> str:
    """The issues of an OperationOutcome as ``severity code: text (at expression)``, joined by
    ``; ``: the errors (fatal, error) if there are any, else all (servers pad refusals with
    warnings and hints)."""
    if not isinstance(payload, dict) or payload.get("resourceType") != "OperationOutcome":
        return ""
    found = [issue for issue in payload.get("issue", []) if isinstance(issue, dict)]
    errors = [issue for issue in found if issue.get("severity") in ("fatal", "error")]
    issues = []
    for issue in errors or found:
        head = " ".join(str(issue[k]) for k in ("severity", "code") if issue.get(k))
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        where = ", ".join(str(w) for w in (issue.get("expression") or issue.get("location") or []))
        issues.append(f"{head}: {text}" + (f" (at {where})" if where else "") if head else str(text))
    return "; ".join(i for i in issues if i)


@dataclass(frozen=True)
class Reply:
    """A server's answer: its status, its headers and its JSON body (None if empty or not JSON)."""

    status: int
    headers: httpx.Headers
    payload: JSON | None


class FhirClient:
    """A FHIR REST client bound to one server base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str = "server",
        auth: httpx.Auth | None = None,
        timeout: float | httpx.Timeout | None = None,
        transport: httpx.BaseTransport | None = None,
        max_attempts: int = 6,
        max_wait: float = 60.0,
        extra_hosts: Sequence[str] = (),
    ):
        parts = urlsplit(base_url)
        if "@" in parts.netloc:
            # never echo the URL: it holds a secret, which would also end up in Neo4j and reports
            raise FhirTerminalError(
                f"the {name} URL contains credentials (user:password@host); set them in "
                f"FHIRGRAPH_{name.upper()}_USERNAME / _PASSWORD or the config file instead"
            )
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FhirTerminalError(
                f"{name} URL {base_url!r} is not an http(s) URL; give the FHIR base, e.g. http://host/fhir"
            )
        self.base_url = normalise_base(base_url)
        self.name = name
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self._allowed = {origin(self.base_url), *(origin(h) for h in extra_hosts)}
        self._token_auth = auth if isinstance(auth, TokenAuth) else None
        self._retries = 0
        self._retry_lock = threading.Lock()
        self._http = httpx.Client(
            auth=auth,
            timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
            transport=transport,
            headers={"Accept": FHIR_JSON, "User-Agent": "fhirgraph"},
            event_hooks={"request": [self._check_host]},
            follow_redirects=False,
        )

    # -- lifecycle ---------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FhirClient({self.name}: {self.base_url})"

    @property
    def retries(self) -> int:
        """How many requests were repeated after a transient failure."""
        return self._retries

    # -- guard --------------------------------------------------------------
    def _check_host(self, request: httpx.Request) -> None:
        if self._token_auth is not None and self._token_auth.is_token_request(request):
            return  # only the POST to the token endpoint: a bearer token never goes to that host
        if origin(str(request.url)) not in self._allowed:
            raise ForeignHostError(
                f"refused to send a request to {request.url.scheme}://{request.url.host}: "
                f"only the {self.name} server {self.base_url} is allowed"
            )

    def url(self, path: str) -> str:
        if "://" in path:
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    # -- requests ------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: JSON | None = None,
        retry: bool | None = None,
        form: Params | None = None,
        allow_status: Sequence[int] = (),
        exact: bool = False,
        attempts: int | None = None,
    ) -> tuple[int, JSON | None]:
        """Send one request and return ``(status, json)``.

        The body is ``body`` as FHIR JSON or ``form`` as form fields (a search by POST).
        ``retry`` defaults to True for GET and False otherwise; pass True only for
        writes that are idempotent. Statuses in ``allow_status`` are returned
        instead of raised. With ``exact``, decimals keep their text (see jsontext).
        """
        reply = self.exchange(
            method,
            path,
            params=params,
            body=body,
            retry=retry,
            form=form,
            allow_status=allow_status,
            exact=exact,
            attempts=attempts,
        )
        return reply.status, reply.payload

    def exchange(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: JSON | None = None,
        retry: bool | None = None,
        form: Params | None = None,
        allow_status: Sequence[int] = (),
        exact: bool = False,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """:meth:`request`, answering the whole :class:`Reply` (headers too), with ``headers``
        added to the request (``Prefer: respond-async`` for an asynchronous operation)."""
        safe = method == "GET" if retry is None else retry
        url = self.url(path)
        sent: dict[str, str] = dict(headers or {})
        content: bytes | None = None
        if form is not None:
            # a search by POST: fresh results, never one the server cached for the same search
            content = urlencode(form).encode()
            sent |= {"Content-Type": FORM, "Cache-Control": "no-cache"}
        elif body is not None:
            content = jsontext.dumps(body).encode()
            sent["Content-Type"] = FHIR_JSON

        def attempt() -> Reply:
            return self._send(method, url, params, content, sent or None, allow_status, exact)

        if not safe:
            return attempt()
        return self._with_retries(attempt, attempts or self.max_attempts)

    def _with_retries(self, attempt: Callable[[], T], attempts: int) -> T:
        retrying = Retrying(
            retry=retry_if_exception_type(FhirTransientError),
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except FhirTransientError as exc:
            if exc.status is None:
                raise FhirUnreachableError(
                    f"{self.name} server {self.base_url} unreachable after {attempts} attempts: {exc}",
                    url=exc.url,
                ) from exc
            raise FhirTerminalError(
                f"{self.name} server kept failing after {attempts} attempts: {exc}",
                status=exc.status,
                url=exc.url,
            ) from exc

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, FhirTransientError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_wait)
        return float(min(0.5 * 2 ** (state.attempt_number - 1), self.max_wait))

    def _count_retry(self, state: RetryCallState) -> None:
        with self._retry_lock:
            self._retries += 1

    def _send(
        self,
        method: str,
        url: str,
        params: Params | None,
        content: bytes | None,
        headers: dict[str, str] | None,
        allow_status: Sequence[int],
        exact: bool,
    ) -> Reply:
        with self._translated(method, url):
            response = self._http.request(method, url, params=params, content=content, headers=headers)  # type: ignore[arg-type]
            response.read()
        return self._interpret(response, allow_status, exact)

    @contextlib.contextmanager
    def _translated(self, method: str, url: str) -> Iterator[None]:
        """httpx's transport errors as fhirgraph's: a timeout, a refused or broken connection."""
        try:
            yield
        except ForeignHostError:
            raise
        except httpx.TimeoutException as exc:
            raise FhirTransientError(
                f"{self.name} server did not answer {method} {urlsplit(url).path} within "
                f"{self._timeout_seconds(exc):g} s ({type(exc).__name__}); if it is just slow, raise "
                f"`timeout` in [{self.name}] of the config file or FHIRGRAPH_{self.name.upper()}_TIMEOUT",
                url=url,
            ) from exc
        except httpx.ConnectError as exc:
            raise FhirTransientError(f"cannot connect to {self.base_url}: {_reason(exc)}", url=url) from exc
        except httpx.TransportError as exc:
            raise FhirTransientError(
                f"connection to {self.name} server broke ({type(exc).__name__}: {_reason(exc)})", url=url
            ) from exc

    def lines(self, url: str, *, accept: str) -> Iterator[str]:
        """GET ``url`` and yield its body line by line as it arrives (NDJSON): memory stays flat
        whatever the size of the body. Not retried: lines already yielded cannot be taken back, so
        a caller that can repeat its work from the start (staging is idempotent) does so."""
        with (
            self._translated("GET", url),
            self._http.stream("GET", self.url(url), headers={"Accept": accept}) as response,
        ):
            if not 200 <= response.status_code < 300:
                response.read()
                self._interpret(response, (), False)  # raises the server's error
            yield from response.iter_lines()

    @property
    def read_timeout(self) -> float:
        """Seconds to wait for an answer."""
        return self._http.timeout.read or DEFAULT_TIMEOUT.read or 60.0

    def _timeout_seconds(self, exc: httpx.TimeoutException) -> float:
        timeout = self._http.timeout
        limit = {
            httpx.ConnectTimeout: timeout.connect,
            httpx.WriteTimeout: timeout.write,
            httpx.PoolTimeout: timeout.pool,
        }.get(type(exc), timeout.read)
        return limit or 0.0

    def _interpret(self, response: httpx.Response, allow_status: Sequence[int], exact: bool) -> Reply:
        status = response.status_code
        url = str(response.request.url)
        # what a DELETE answers is only informational (HAPI's cancel of an export job has no
        # Content-Type): only the status matters
        strict = 200 <= status < 300 and response.request.method != "DELETE"
        payload = self._parse(response, strict=strict, exact=exact)
        if 200 <= status < 300 or status in allow_status:
            return Reply(status, response.headers, payload)
        outcome = operation_outcome_text(payload)
        detail = f": {outcome}" if outcome else ""
        if status in TRANSIENT_STATUS:
            raise FhirTransientError(
                f"{self.name} server answered {_status_line(response)}{detail}",
                status=status,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                url=url,
            )
        if status == 401:
            raise FhirTerminalError(
                f"{self.name} server answered 401 Unauthorized: check the {self.name} credentials{detail}",
                status=status,
                url=url,
            )
        if status == 413:
            raise FhirTerminalError(
                f"{self.name} server answered 413 Payload Too Large to {response.request.method} "
                f"{response.request.url.path}{detail}; send smaller bundles",
                status=status,
                url=url,
                hint="bundle_size",
                outcome=operation_outcome_issues(payload) or None,
            )
        if status == 403:
            raise FhirTerminalError(
                f"{self.name} server answered 403 Forbidden: the {self.name} credentials lack permission for {response.request.method} {response.request.url.path}{detail}",
                status=status,
                url=url,
            )
        raise FhirTerminalError(
            f"{self.name} server answered {_status_line(response)} to "
            f"{response.request.method} {response.request.url.path}{detail}",
            status=status,
            url=url,
            outcome=operation_outcome_issues(payload) or None,
        )

    def _parse(self, response: httpx.Response, *, strict: bool, exact: bool = False) -> JSON | None:
        if not response.content:
            return None
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if "json" not in ctype:
            if strict:
                kind = "HTML" if "html" in ctype else (ctype or "no content type")
                raise FhirTerminalError(
                    f"{self.name} server {self.base_url} answered {kind} instead of FHIR JSON; "
                    "is this the FHIR base URL (e.g. ending in /fhir)?",
                    status=response.status_code,
                    url=str(response.request.url),
                )
            return None
        try:
            payload = jsontext.loads(response.content) if exact else json.loads(response.content)
        except ValueError:
            if strict:
                # a truncated body is a broken transfer, not a server opinion: worth retrying
                raise FhirTransientError(
                    f"{self.name} server sent malformed JSON for {response.request.url.path}",
                    status=response.status_code,
                    url=str(response.request.url),
                ) from None
            return None
        if not isinstance(payload, dict):
            if strict:
                raise FhirTerminalError(
                    f"{self.name} server sent JSON that is not a FHIR resource", url=str(response.request.url)
                )
            return None
        return payload

    # -- FHIR operations -----------------------------------------------------
    def get(self, path: str, params: Params | None = None, *, exact: bool = False) -> JSON:
        _, payload = self.request("GET", path, params=params, exact=exact)
        if payload is None:
            raise FhirTerminalError(f"{self.name} server sent an empty body for {path}")
        return payload

    def read(self, resource_type: str, resource_id: str, *, exact: bool = False) -> tuple[int, JSON | None]:
        """Read one resource; 404/410 are returned (with the OperationOutcome), not raised."""
        return self.request("GET", f"{resource_type}/{resource_id}", allow_status=(404, 410), exact=exact)

    def pages(
        self, path: str, params: Params | None = None, *, exact: bool = False, post: bool = False
    ) -> Iterator[JSON]:
        """Yield each Bundle page of a search, following ``next`` links on the same server.

        With ``post`` the search is sent as ``POST [path]/_search`` with the parameters as
        form fields, for parameter lists too long for a URL, and with ``Cache-Control:
        no-cache`` so that the server searches afresh instead of answering from a cached
        result of the same search (HAPI reuses results for a minute). A search changes
        nothing, so it is retried like a read.
        """
        if post:
            _, first = self.request("POST", f"{path}/_search", form=params or {}, retry=True, exact=exact)
            if first is None:
                raise FhirTerminalError(f"{self.name} server sent an empty body for {path}/_search")
            page = first
        else:
            page = self.get(path, params, exact=exact)
        while True:
            if page.get("resourceType") != "Bundle":
                raise FhirTerminalError(
                    f"{self.name} server answered a search with {page.get('resourceType')!r}, not a Bundle"
                )
            yield page
            next_url = next(
                (link.get("url") for link in page.get("link", []) if link.get("relation") == "next"), None
            )
            if not next_url:
                return
            if origin(next_url) != origin(self.base_url):
                raise ForeignHostError(
                    f"{self.name} server's next-page link points to another host "
                    f"({urlsplit(next_url).hostname}); refusing to follow it"
                )
            page = self.get(next_url, exact=exact)

    def transaction(self, bundle: JSON, *, retry: bool = False) -> JSON:
        """POST a transaction bundle; retry only if the caller made it idempotent."""
        _, payload = self.request("POST", "", body=bundle, retry=retry)
        if payload is None or payload.get("resourceType") != "Bundle":
            raise FhirTerminalError(f"{self.name} server did not answer the transaction with a Bundle")
        return payload

    def capability_statement(self) -> JSON:
        """``GET [base]/metadata``: proves the base URL is a FHIR server that lets us in."""
        try:
            # two attempts only: a wrong URL or a stopped server should be reported at once
            _, answer = self.request("GET", "metadata", attempts=2)
            if answer is None:
                raise FhirTerminalError(f"{self.name} server sent an empty body for metadata")
            payload = answer
        except FhirError as exc:
            if exc.status in (404, 405):
                raise FhirTerminalError(
                    f"{self.name} server {self.base_url} has no FHIR metadata ({exc.status}); "
                    "is this the FHIR base URL (e.g. ending in /fhir)?",
                    status=exc.status,
                    url=exc.url,
                ) from exc
            raise
        if payload.get("resourceType") != "CapabilityStatement":
            raise FhirTerminalError(
                f"{self.name} server {self.base_url}/metadata is not a CapabilityStatement; is this a FHIR base URL?"
            )
        return payload


def _status_line(response: httpx.Response) -> str:
    """``400 Bad Request``, also when the server sends no reason phrase (HTTP/2, some Tomcats)."""
    reason = response.reason_phrase
    if not reason:
        try:
            reason = HTTPStatus(response.status_code).phrase
        except ValueError:
            reason = ""
    return f"{response.status_code} {reason}".rstrip()


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number or an HTTP date), None if unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused (is the server running?)"
    return text
