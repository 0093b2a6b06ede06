"""Progress display on stderr: a live line on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class ProgressDisplay:
    """A callable ``(stage, n)`` that counts items per stage and shows a rate."""

    def __init__(
        self, stream: TextIO | None = None, *, totals: dict[str, int] | None = None, every: float = 5.0
    ):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.totals = dict(totals or {})
        self.counts: dict[str, int] = {}
        self.every = every
        self._stage_started: dict[str, float] = {}
        self._last_print = 0.0
        self._current: str | None = None
        self._shown: tuple[str, int] | None = None
        self._noted: str | None = None
        self._lock = threading.Lock()

    def set_total(self, stage: str, total: int) -> None:
        self.totals[stage] = total

    def __call__(self, stage: str, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            if stage != self._current:
                self._finish_line()
                self._current = stage
                self._stage_started.setdefault(stage, now)
            self.counts[stage] = self.counts.get(stage, 0) + n
            if self.live or now - self._last_print >= self.every:
                self._last_print = now
                self._show(stage, now)

    def note(self, stage: str, text: str) -> None:
        """Show what a stage is waiting for, in the server's words (an export job's
        ``X-Progress``), with the time it has waited so far."""
        with self._lock:
            now = time.monotonic()
            self._finish_line()
            self._current = None
            started = self._stage_started.setdefault(stage, now)
            if not self.live and self._noted == text and now - self._last_print < self.every:
                return  # a log file gets a line when the text changes, else every few seconds
            self._last_print, self._noted = now, text
            line = f"{stage:>7}: {text}  {now - started:,.0f}s"
            self.stream.write("\r" + line + "\033[K" if self.live else line + "\n")
            self.stream.flush()

    def _show(self, stage: str, now: float) -> None:
        done = self.counts[stage]
        if not self.live and self._shown == (stage, done):
            return  # a log file gets no repeated line
        self._shown = (stage, done)
        elapsed = now - self._stage_started[stage]
        total = self.totals.get(stage)
        if total:
            width = 24
            filled = min(width, int(width * done / total))
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
        else:
            bar = f"{done}"
        rate = f"{done / elapsed:,.0f}/s" if elapsed >= 1.0 else "-/s"
        line = f"{stage:>7}: {bar} resources  {rate}  {elapsed:,.0f}s"
        if self.live:
            self.stream.write("\r" + line + "\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _finish_line(self) -> None:
        if self._current is not None:
            self._show(self._current, time.monotonic())
            if self.live:
                self.stream.write("\n")
                self.stream.flush()

    def close(self) -> None:
        with self._lock:
            self._finish_line()
            self._current = None
