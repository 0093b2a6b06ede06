"""The test-only pause points (fhirgraph.faults): a pause may end when another point is reached."""

from __future__ import annotations

import threading
import time

import pytest

from fhirgraph import faults


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_paused", set())
    monkeypatch.setattr(faults, "_reached", {})
    monkeypatch.delenv(faults.CRASH_ENV, raising=False)


def paused_for(point: str) -> tuple[threading.Thread, list[float]]:
    took: list[float] = []

    def run() -> None:
        started = time.monotonic()
        faults.checkpoint(point)
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, took


def test_a_pause_ends_when_the_awaited_point_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.PAUSE_ENV, "held:60:released")
    thread, took = paused_for("held")
    time.sleep(0.2)
    assert thread.is_alive()  # held
    faults.checkpoint("released")
    thread.join(timeout=30)
    assert not thread.is_alive() and took[0] < 30


def test_a_point_reached_before_the_pause_does_not_hold_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.PAUSE_ENV, "held:60:released")
    faults.checkpoint("released")
    thread, _ = paused_for("held")
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_pause_holds_only_the_first_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.PAUSE_ENV, "held:0.3")
    first, took_first = paused_for("held")
    first.join()
    second, took_second = paused_for("held")
    second.join()
    assert took_first[0] >= 0.3 > took_second[0]
