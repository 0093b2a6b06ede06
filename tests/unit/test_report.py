"""Report rendering, atomic writing, Browser links and the shipped style (pure logic, no servers)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from fhirgraph.browse import (
    browser_url,
    cypher_literal,
    editor_text,
    parse_params,
    saved_queries,
    saved_query,
    style_sheet,
)
from fhirgraph.errors import ConfigError
from fhirgraph.graph import GraphSettings
from fhirgraph.report import BundleRow, TransferOverview, render_html, throughput_points, write_report


def overview(**changes: object) -> TransferOverview:
    base = TransferOverview(
        transfer="t<1>",
        source="http://s/fhir",
        target="http://t/fhir",
        stages={"crawl": True, "plan": True, "load": False},
        timings={"crawl": 1.25, "plan": 0.5},
        resources={"Observation": {"loaded": 2, "failed": 1}, "Patient": {"loaded": 1}},
        bundles=[
            BundleRow(number=1, level=0, size=1, status="loaded", sent_ms=1000, loaded_ms=2000),
            BundleRow(number=2, level=1, size=2, status="loaded", sent_ms=2000, loaded_ms=4000),
            BundleRow(number=3, level=1, size=1, status="failed", error="HAPI-1094: <bad> & worse"),
        ],
        failures=[{"key": "Observation/3", "bundle": 3, "error": "HAPI-1094: <bad> & worse"}],
        dangling=[],
        last_error="bundle 3: HAPI-1094",
        totals={"loaded": 3, "failed": 1},
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_throughput_points_accumulate_loaded_bundles_from_the_first_send() -> None:
    assert throughput_points(overview().bundles) == [(0.0, 0), (1.0, 1), (3.0, 3)]
    assert throughput_points([BundleRow(number=1, level=0, size=5, status="planned")]) == []


def test_report_is_self_contained_and_escaped() -> None:
    html = render_html(overview())
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not re.search(r"<script|<link|<img|@import|url\(|src=|href=", html, re.IGNORECASE)
    assert "<title>fhirgraph transfer t&lt;1&gt;</title>" in html
    assert "HAPI-1094: &lt;bad&gt; &amp; worse" in html and "<bad>" not in html
    assert "<polyline" in html and "1.0/s on average" in html
    assert "2 of 3 loaded, 1 left (loaded 2, failed 1)" in html
    assert '<td>crawl</td><td>done</td><td class="n">1.2</td>' in html
    assert '<td>load</td><td>open</td><td class="n">-</td>' in html


def test_report_of_a_transfer_without_bundles() -> None:
    html = render_html(overview(bundles=[], failures=[], last_error=None, totals={"crawled": 3}))
    assert "No bundles planned yet." in html and "No bundle has been loaded yet." in html
    assert 'Failures</h2>\n<p class="ok">None.</p>' in html


def test_write_report_is_atomic_and_unwritable_paths_are_config_errors(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    out.write_text("old")
    write_report(out, "new")
    assert out.read_text() == "new" and os.listdir(tmp_path) == ["r.html"]
    with pytest.raises(ConfigError, match=r"cannot write report .*missing"):
        write_report(tmp_path / "missing" / "r.html", "x")
    (tmp_path / "dir.html").mkdir()
    with pytest.raises(ConfigError, match="cannot write report"):
        write_report(tmp_path / "dir.html", "x")
    assert sorted(os.listdir(tmp_path)) == ["dir.html", "r.html"]  # no temporary file left


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("Patient/1", "'Patient/1'"),
        ("o'brien\\x", "'o\\'brien\\\\x'"),
        ("a&b#c", "'a\\u0026b\\u0023c'"),
        ("line\nbreak", "'line\\u000abreak'"),
        (42, "42"),
    ],
)
def test_cypher_literals_survive_browser_url_parsing(value: str | int, literal: str) -> None:
    assert cypher_literal(value) == literal
    assert "&" not in literal and "#" not in literal


def test_params_become_ints_or_strings() -> None:
    assert parse_params(["key=Patient/1", "limit=10", "x=a=b"]) == {
        "key": "Patient/1",
        "limit": 10,
        "x": "a=b",
    }
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_params(["nokey"])


def test_saved_queries_have_a_comment_and_no_characters_browser_would_cut_at() -> None:
    queries = saved_queries()
    assert {q.name for q in queries} >= {"patient", "dangling", "cycles", "failed", "bundles", "unfinished"}
    for query in queries:
        assert query.text.startswith("// ") and query.description, query.name
        assert "&" not in query.text and "#" not in query.text, query.name
        assert "transfer" in query.parameters, query.name
    assert saved_query("patient").parameters == ["transfer", "key"]
    with pytest.raises(ConfigError, match="known: bundles"):
        saved_query("../graph")


def test_editor_text_writes_values_in_or_sets_browser_params() -> None:
    query = saved_query("patient")
    inline = editor_text(query, {"transfer": "t", "key": "Patient/1", "unused": 1})
    assert inline.splitlines()[1] == "// :params {transfer: 't', key: 'Patient/1'}"
    assert "{transfer: 't', key: 'Patient/1'}" in inline.splitlines()[2]
    as_params = editor_text(query, {"transfer": "t", "key": "Patient/1"}, as_params=True)
    assert as_params.startswith(":params {transfer: 't', key: 'Patient/1'};\nMATCH")
    with pytest.raises(ConfigError, match="--param key="):
        editor_text(query, {"transfer": "t"})


def test_browser_url_points_at_the_http_port_with_user_db_and_editor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEO4J_BROWSER_URL", raising=False)
    monkeypatch.setenv("NEO4J_HTTP_PORT", "7575")
    settings = GraphSettings(uri="bolt://db.example:7688", user="ann", password="secret", database="staging")
    url = browser_url(settings, "MATCH (n) RETURN n")
    assert url.startswith("http://db.example:7575/browser/?")
    query = parse_qs(urlsplit(url).query)
    assert query == {
        "dbms": ["bolt://ann@db.example:7688"],
        "db": ["staging"],
        "cmd": ["edit"],
        "arg": ["MATCH (n) RETURN n"],
    }
    assert "secret" not in unquote(url)
    assert browser_url(settings, base="https://b.example/").startswith("https://b.example/browser/?dbms=")
    monkeypatch.setenv("NEO4J_BROWSER_URL", "http://x:1/browser/")
    assert browser_url(settings).startswith("http://x:1/browser/?")
    with pytest.raises(ConfigError, match="invalid Neo4j Browser URL"):
        browser_url(settings, base="ftp://x")


def test_style_sheet_colours_and_captions_common_resource_types() -> None:
    grass = style_sheet()
    rules = dict(re.findall(r"^node\.(\w+) \{\n(.*?)\n\}$", grass, re.MULTILINE | re.DOTALL))
    for rtype in ("Patient", "Encounter", "Observation", "Condition", "Practitioner", "Organization"):
        assert re.search(r"color: #[0-9A-F]{6};", rules[rtype]), rtype
        assert 'caption: "{type} {source_id} {status}";' in rules[rtype]
    colours = [c for body in rules.values() for c in re.findall(r"^  color: (#\w+);", body, re.MULTILINE)]
    assert len(colours) == len(rules)
    assert len(colours) == len(set(colours))  # each type its own colour


def test_report_and_status_show_refused_resources_with_why() -> None:
    refused = [
        {"key": "Observation/o9", "status": "rejected", "error": "422: error processing: <status> missing"},
        {"key": "DiagnosticReport/r", "status": "blocked", "error": "blocked: result[1] -> Observation/o9"},
    ]
    shown = overview(refused=refused)
    html = render_html(shown)
    assert "Refused by the target" in html
    assert (
        "422: error processing: &lt;status&gt; missing" in html
        and "blocked: result[1] -&gt; Observation/o9" in html
    )
    status = shown.summary()
    assert "  rejected Observation/o9: 422: error processing: <status> missing" in status.splitlines()
    assert shown.to_json()["refused"] == refused
    assert 'Refused by the target</h2>\n<p class="ok">None.</p>' in render_html(overview())


def test_status_names_the_transfer_state() -> None:
    shown = overview(state="planned")
    assert shown.summary().splitlines()[1].startswith("  state planned; stages: crawl done (1.2s)")
    assert shown.to_json()["state"] == "planned"


@pytest.mark.parametrize(
    ("flags", "state"),
    [
        ({}, "created"),
        ({"crawl_done": True}, "crawled"),
        ({"crawl_done": True, "plan_started": True}, "planning"),
        ({"crawl_done": True, "plan_started": True, "plan_done": True}, "planned"),
        ({"crawl_done": True, "plan_started": True, "plan_done": True, "load_done": True}, "loaded"),
        ({"plan_started": True}, "created"),  # more crawled into a planned transfer (reopen_crawl)
    ],
)
def test_the_transfer_state_follows_its_transitions(flags: dict[str, bool], state: str) -> None:
    from fhirgraph.staging import TransferRecord

    assert TransferRecord(name="t", source="s", target="t", **flags).state == state  # type: ignore[arg-type]


def test_status_shows_each_worker_its_leases_rate_and_takeovers() -> None:
    workers = [
        {"worker": "a:1:x", "host": "a", "pid": 1, "state": "working", "bundles": 3, "loaded": 600, "created": 600,
         "seconds": 4.0, "seen_seconds_ago": 2, "taken_over": 0, "leases": [{"bundle": 7, "expires_in": 41}]},
        {"worker": "b:2:y", "host": "b", "pid": 2, "state": "working", "bundles": 1, "loaded": 250, "created": 250,
         "seconds": 5.0, "seen_seconds_ago": 75, "taken_over": 1, "leases": []},
    ]  # fmt: skip
    lines = overview(workers=workers).summary().splitlines()
    assert (
        "  worker a:1:x: working, 3 bundles, 600 resources (150/s), seen 2 s ago, holds bundle 7 (41 s left)"
        in lines
    )
    assert (
        "  worker b:2:y: working, 1 bundles, 250 resources (50/s), seen 75 s ago, "
        "1 bundle(s) taken over by others after its lease expired"
    ) in lines
    assert overview(workers=workers).to_json()["workers"] == workers


def test_status_and_report_show_each_generation_and_the_changes_not_applied() -> None:
    generations = [
        {"number": 1, "kind": "transfer", "state": "done", "started": "2026-12-01T10:00:00Z",
         "ended": "2026-12-01T10:05:00Z", "since": None, "created": 10693, "updated": 0, "unchanged": 0,
         "deleted": 0, "removed": 0, "conflicts": 0, "refused": 0},
        {"number": 2, "kind": "sync", "state": "done", "started": "2026-12-02T10:00:00Z",
         "ended": "2026-12-02T10:00:02Z", "since": "2026-12-01T09:59:50.000+00:00", "created": 3,
         "updated": 1, "unchanged": 10689, "deleted": 1, "removed": 0, "conflicts": 1, "refused": 0},
        {"number": 3, "kind": "sync", "state": "running", "started": "2026-12-03T10:00:00Z", "ended": None,
         "since": "2026-12-02T09:59:50.000+00:00", "created": None, "updated": None, "unchanged": None,
         "deleted": None, "removed": None, "conflicts": None, "refused": None},
    ]  # fmt: skip
    pending = [
        {"key": "Observation/o1", "pending": "update", "conflict": True, "why": "changed on the target"},
        {"key": "Observation/o2", "pending": "delete", "conflict": False, "why": "deleted on the source"},
    ]
    o = overview(generations=generations, sync_pending=pending)
    lines = o.summary().splitlines()
    assert "  generation 1 (transfer, 2026-12-01T10:00:00Z .. 2026-12-01T10:05:00Z): created 10693" in lines
    assert (
        "  generation 2 (sync, 2026-12-02T10:00:00Z .. 2026-12-02T10:00:02Z): created 3, updated 1, "
        "unchanged 10689, deleted 1, removed 0, conflicts 1, refused 0"
    ) in lines
    assert "  generation 3 (sync, started 2026-12-03T10:00:00Z): running (sync again to finish it)" in lines
    assert "  conflict Observation/o1: changed on the target" in lines
    assert "  pending delete Observation/o2: deleted on the source" in lines
    assert o.to_json()["generations"] == generations and o.to_json()["sync_pending"] == pending
    page = render_html(o)
    assert "<h2>Generations</h2>" in page and "<h2>Changes not applied</h2>" in page
    assert "10689" in page and "Observation/o1" in page
