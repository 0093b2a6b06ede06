"""Deterministic crash points for tests of resumption.

``FHIRGRAPH_CRASH_AT=point[:n]`` kills the process with SIGKILL the *n*-th time
(default the first) execution reaches ``checkpoint(point)``. Nothing happens when
the variable is unset, which is always the case outside the test suite.
"""

from __future__ import annotations

import os
import signal
import threading

CRASH_ENV = "FHIRGRAPH_CRASH_AT"
_counts: dict[str, int] = {}
_lock = threading.Lock()


def checkpoint(point: str) -> None:
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
