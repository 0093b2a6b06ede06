"""Deterministic crash points (and pauses) for tests of resumption.

``FHIRGRAPH_CRASH_AT=point[:n]`` kills the process with SIGKILL the *n*-th time
(default the first) execution reaches ``checkpoint(point)``.
``FHIRGRAPH_PAUSE_AT=point:seconds`` sleeps that long the first time execution
reaches ``checkpoint(point)``: a transfer that must outlive something (a short
access token) without sending more data. ``point:seconds:other`` ends the pause
early once another thread reaches ``checkpoint(other)`` (a crawl held until the
load overlapping it has written something back). Nothing happens when the
variables are unset, which is always the case outside the test suite.
"""

from __future__ import annotations

import os
import signal
import threading
import time

CRASH_ENV = "FHIRGRAPH_CRASH_AT"
PAUSE_ENV = "FHIRGRAPH_PAUSE_AT"
_counts: dict[str, int] = {}
_paused: set[str] = set()
_lock = threading.Lock()


_reached: dict[str, threading.Event] = {}


def checkpoint(point: str) -> None:
    with _lock:
        _reached.setdefault(point, threading.Event()).set()
    _pause(point)
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    with _lock:
        _counts[point] = _counts.get(point, 0) + 1
        reached = _counts[point]
    if reached == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _pause(point: str) -> None:
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    name, _, rest = spec.partition(":")
    seconds, _, until = rest.partition(":")
    with _lock:
        if name != point or point in _paused:
            return
        _paused.add(point)
        awaited = _reached.setdefault(until, threading.Event()) if until else None
    if awaited is None:
        time.sleep(float(seconds or 0))
    else:
        awaited.wait(float(seconds or 0))
