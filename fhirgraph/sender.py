"""How the load sends a transaction to the target: the target-side policy that makes a
transfer exactly-once. Only HTTP to the target here; what the load records is its business.

Every copy carries two tags: its linkage hash, and the key's fingerprint (the
same on every copy made with the key). With ``match_existing`` (the default)
the load starts by asking the target, one search per resource type of the
transfer, whether it holds any copy of that type made with this key (an
earlier transfer, say a second cohort sharing Practitioners with the first).
Resources of those types are sent as conditional creates (``ifNoneExist`` on
the linkage tag), which the target answers with the copy it has; all others
as plain creates. Conditional creates cost the target a search per entry
(bench/RESULTS.md), so a transfer into a target without copies made with the
key pays nothing for the safety. A type is asked about once per run, before the
run sends any resource of it: loading while the crawl goes on hands what it was
told to the load after the crawl (:class:`TargetProbe`), whose own question would
find the copies the run has just made.

When the outcome of a send is unknown (a reset, a timeout, a 502/504), the
target may have committed the bundle, may still be working on it, or never got
it. A conditional resend right away could race a send still under way (both
would create), so the sender first looks for the bundle's copies by their
linkage tags, for up to the target's read timeout: if they appear, the send
committed and its answer is rebuilt from them; if not, the bundle is resent
with every entry a conditional create, which is safe to retry. A bundle left
``sending`` by a crash is looked for and resent the same way. A single transfer is
exactly-once with or without ``match_existing``.

A transaction the target refuses for its content (a 400, 409, 412, 413 or 422:
validation on write, a reference it will not resolve, a business rule) is
all or nothing, so one bad resource would cost its whole bundle. ``isolate``
finds the culprits by sending halves, cycles kept whole, until each refused
part is one resource or one cycle; the rest is created as usual.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fhirgraph.bundle import Entry, batch, transaction
from fhirgraph.errors import FhirError, FhirTerminalError, FhirTransientError
from fhirgraph.fhir.client import FhirClient
from fhirgraph.jsontext import JSON
from fhirgraph.linkage import KEY_SYSTEM, copies_by_hash

__all__ = ["REFUSED", "Sender", "TargetProbe"]

#: statuses with which a server refuses a request without processing it
REFUSED = frozenset({429, 503})
#: statuses with which a server refuses what a transaction holds (validation, referential
#: integrity, business rules, size): a smaller part of it may be accepted. Not 401/403 (every
#: part would be refused alike), 404/405 (the URL), 408/429 (try again).
CONTENT_REFUSED = frozenset({400, 409, 412, 413, 422})


def refused_for_content(exc: FhirError) -> bool:
    """Whether the target refused a transaction for what is in it (see :data:`CONTENT_REFUSED`)."""
    return isinstance(exc, FhirTerminalError) and exc.status in CONTENT_REFUSED


@dataclass(frozen=True)
class TargetProbe:
    """What the target answered about copies made with the key: the types asked about, and
    those of them it holds copies of."""

    asked: frozenset[str] = frozenset()
    held: frozenset[str] = frozenset()


class Sender:
    """Sends the transactions of one load to the target; safe to share between threads.

    ``fingerprint`` is the linkage key's (see :attr:`fhirgraph.linkage.LinkageKey.fingerprint`).
    ``settle_seconds`` is how long to look for the copies of a send whose outcome is
    unknown (default: the target's read timeout). ``probe``: what the target answered
    earlier in this run, before anything was sent (not asked again).
    """

    def __init__(
        self,
        target: FhirClient,
        fingerprint: str,
        *,
        settle_seconds: float | None = None,
        probe: TargetProbe | None = None,
    ) -> None:
        self.target = target
        self.fingerprint = fingerprint
        self.settle_seconds = target.read_timeout if settle_seconds is None else settle_seconds
        probe = probe or TargetProbe()
        #: resource types of which the target holds copies made with this key (see the module doc)
        self.held_types: frozenset[str] = probe.held
        self._asked = probe.asked
        self._resent_bundles = 0
        self._isolation_sends = 0
        self._lock = threading.Lock()

    @property
    def resent_bundles(self) -> int:
        """Bundles sent again, as conditional creates, after the target refused a send (429/503)
        or after a send whose outcome was unknown and whose copies were not found."""
        with self._lock:
            return self._resent_bundles

    def probe_target(self, types: Iterable[str]) -> frozenset[str]:
        """The types of which the target holds a copy made with this key, after asking about
        those of ``types`` not asked about before: one search each,
        by POST so that the server does not answer from a cached result. Their resources are
        sent as conditional creates from now on."""
        tag = f"{KEY_SYSTEM}|{self.fingerprint}"
        held = set()
        for rtype in sorted(set(types) - self._asked):
            try:
                _, page = self.target.request(
                    "POST", f"{rtype}/_search", form={"_tag": tag, "_count": 1, "_elements": "id"}, retry=True
                )
            except FhirTransientError:
                raise
            except FhirError as exc:
                raise FhirTerminalError(
                    f"{exc} (asking the target for copies made with this key before loading; "
                    "a target that cannot search by _tag needs match_existing off)",
                    status=exc.status,
                    hint="match_existing",
                ) from exc
            if (page or {}).get("entry"):
                held.add(rtype)
            self._asked = self._asked | {rtype}
        self.held_types = self.held_types | held
        return self.held_types

    @property
    def probe(self) -> TargetProbe:
        """What the target has answered so far (see :meth:`probe_target`)."""
        return TargetProbe(self._asked, self.held_types)

    def send(self, entries: Sequence[Entry], *, outcome_unknown: bool, sent_seconds_ago: float = 0.0) -> JSON:
        """Create ``entries`` on the target in one transaction and return its answer, one
        response per entry in order. ``outcome_unknown``: an earlier send of them may have been
        committed, or be under way (a bundle left ``sending`` by a crash); it began
        ``sent_seconds_ago`` (by Neo4j's clock), which shortens the wait for its outcome once it
        is longer ago than the read timeout."""
        resent = outcome_unknown
        if outcome_unknown:
            # left 'sending' by a crash: that send may still be under way on the target. Its own
            # sender would have waited for an answer (the read timeout), then looked for its copies
            # (settle_seconds): what is left of that is waited now, at most settle_seconds, so a
            # send that began long ago (a resume the next morning) is looked for once
            left = self.settle_seconds + self.target.read_timeout - max(0.0, sent_seconds_ago)
            committed = self._await_outcome(entries, min(self.settle_seconds, left))
            if committed is not None:
                return committed
        elif not all(e.resource_type in self.held_types for e in entries):
            first = [
                e.conditional_create() if e.resource_type in self.held_types else e.bundle_entry
                for e in entries
            ]
            try:
                return self.target.transaction(transaction(first), retry=False)
            except FhirTransientError as exc:
                # 429 and 503 refuse a request unprocessed; after a reset, a timeout or a
                # 502/504 the target may have committed the bundle or still be working on it
                committed = (
                    None if exc.status in REFUSED else self._await_outcome(entries, self.settle_seconds)
                )
                if committed is not None:
                    return committed
                resent = True
        # Every entry a conditional create on its linkage tag: whatever the target already
        # holds (an attempt whose response was lost, a crash before the write-back) is
        # matched, not duplicated. That makes the POST idempotent, so it is safe to retry.
        if resent:
            with self._lock:
                self._resent_bundles += 1
        return self.target.transaction(transaction(e.conditional_create() for e in entries), retry=True)

    def isolate(
        self,
        units: Sequence[Sequence[Entry]],
        refusal: FhirTerminalError,
        *,
        accepted: Callable[[Sequence[Entry], JSON], None],
        rejected: Callable[[Sequence[Entry], FhirTerminalError], None],
    ) -> None:
        """Find what the target refuses in a transaction it refused (``refusal``) for its content.

        ``units`` are the bundle's entries in groups that must be created together (a cycle,
        whose members refer to each other's ``urn:uuid``; any other entry is a unit alone).
        The units are halved and each half sent, recursively, until every refused part is
        one unit: ``accepted(entries, answer)`` is called for each part the target took,
        ``rejected(unit, error)`` for each unit it refused with its own error. With one
        refused unit among *n* that costs about 2·log2(n) sends. Every send is conditional
        on the linkage tags, so a part that an earlier, interrupted isolation created is
        matched, not created again. Any other failure is raised.
        """

        def settle(part: Sequence[Sequence[Entry]], known: FhirTerminalError | None) -> None:
            if known is None:
                flat = [entry for unit in part for entry in unit]
                try:
                    answer = self.target.transaction(
                        transaction(e.conditional_create() for e in flat), retry=True
                    )
                except FhirTerminalError as exc:
                    if not refused_for_content(exc):
                        raise
                    known = exc
                else:
                    accepted(flat, answer)
                    return
                finally:
                    with self._lock:
                        self._isolation_sends += 1
            if len(part) == 1:
                rejected(part[0], known)
                return
            middle = len(part) // 2
            settle(part[:middle], None)
            settle(part[middle:], None)

        settle(units, refusal)

    @property
    def isolation_sends(self) -> int:
        """Transactions sent to find the refused resources of refused bundles."""
        with self._lock:
            return self._isolation_sends

    def send_updates(self, entries: Sequence[Entry]) -> JSON:
        """PUT ``entries`` (built for the update phase) in one transaction and return its answer.
        An update to a given id is idempotent, so it is retried."""
        return self.target.transaction(transaction(e.bundle_entry for e in entries), retry=True)

    def send_batch(self, bundle_entries: Sequence[JSON]) -> list[JSON]:
        """Send updates of copies (a sync) as one batch, each entry on its own, and return the
        target's answer to each (``status``, ``location``, ``outcome``). An update is retried:
        resent after an unknown outcome it meets its own earlier write as a version conflict
        (412), which the caller tells from someone else's by the copy's content."""
        answer = self.target.transaction(batch(bundle_entries), retry=True)
        results = [entry.get("response") or {} for entry in answer.get("entry", [])]
        if len(results) != len(bundle_entries):
            raise FhirTerminalError(
                f"target answered a batch of {len(bundle_entries)} entries with {len(results)}"
            )
        return results

    def read_copy(self, resource_type: str, target_id: str) -> JSON | None:
        """The target's copy as it is now (None if it is gone)."""
        status, copy = self.target.request(
            "GET", f"{resource_type}/{target_id}", allow_status=(404, 410), exact=True
        )
        return copy if status == 200 else None

    def delete(self, resource_type: str, target_id: str) -> FhirTerminalError | None:
        """Delete a copy from the target; the target's refusal (e.g. 409: other resources refer
        to it) is returned, not raised. Deleting a copy already gone is no error, so it is retried."""
        try:
            self.target.request("DELETE", f"{resource_type}/{target_id}", retry=True, allow_status=(404, 410))
        except FhirTerminalError as exc:
            if exc.status in (400, 409, 412, 422):
                return exc
            raise
        return None

    def _await_outcome(self, entries: Sequence[Entry], settle_seconds: float) -> JSON | None:
        """After a send whose outcome is unknown, find out what the target did.

        The target may still be working on the bundle (a timeout, a crash mid-send), so a
        conditional resend right away could race it and both would create. Instead the
        bundle's copies are looked for, with growing pauses, for ``settle_seconds`` (at least
        once): once every entry has one, the send committed (a transaction is all or nothing)
        and its answer is rebuilt from them; otherwise it never arrived and the caller resends.
        """
        deadline = time.monotonic() + settle_seconds
        pause = 0.5
        while True:
            copies = self.copies_on_target(entries)
            if all(e.linkage_hash in copies for e in entries):
                return {"entry": [{"response": copies[e.linkage_hash]} for e in entries]}
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 10.0)

    def copies_on_target(self, entries: Sequence[Entry]) -> dict[str, JSON]:
        """The target's copies of these entries by linkage hash, as transaction answers
        (``200 OK`` with the location): one search per type, by POST (no cached answer)."""
        wanted: dict[str, list[str]] = {}
        for entry in entries:
            wanted.setdefault(entry.resource_type, []).append(entry.linkage_hash)
        found: dict[str, JSON] = {}
        for rtype, hashes in wanted.items():
            for linkage_hash, copies in copies_by_hash(self.target, rtype, hashes, summary=True).items():
                meta = copies[0].get("meta") or {}
                version = meta.get("versionId")
                location = f"{rtype}/{copies[0].get('id')}" + (f"/_history/{version}" if version else "")
                found[linkage_hash] = {"status": "200 OK", "location": location}
        return found
