from __future__ import annotations

import io

from fhirgraph.progress import ProgressDisplay


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_output_has_periodic_lines_without_repeats() -> None:
    out = io.StringIO()
    progress = ProgressDisplay(out, totals={"load": 10}, every=0.0)
    for _ in range(5):
        progress("load", 2)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and "10/10" in lines[-1] and len(set(lines)) == 5


def test_terminal_output_redraws_one_line_per_stage() -> None:
    out = Tty()
    progress = ProgressDisplay(out)
    progress("crawl", 3)
    progress("crawl", 4)
    progress("load", 7)
    progress.close()
    text = out.getvalue()
    assert text.count("\n") == 2
    assert "crawl:" in text and "7 resources" in text


def test_a_note_shows_the_servers_words_once_per_change_in_a_log() -> None:
    out = io.StringIO()
    progress = ProgressDisplay(out, every=60.0)
    progress.note("export", "Build in progress - Status set to BUILDING")
    progress.note("export", "Build in progress - Status set to BUILDING")
    progress.note("export", "Build in progress - Status set to READY")
    progress("crawl", 5)
    progress.close()
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0].strip() for line in lines[:2]] == [
        "export: Build in progress - Status set to BUILDING",
        "export: Build in progress - Status set to READY",
    ]
    assert "crawl: 5 resources" in lines[-1]
