"""Verify compares narratives modulo whitespace between XHTML elements (HAPI re-indents comments)."""

from __future__ import annotations

import json

from fhirgraph.verify import comparable_source, comparable_target, first_difference

# PlanDefinition/KDN5 of the HL7 R4 examples: each write through HAPI 8.8 adds four spaces
# before every XML comment of its narrative.
STORED = '<div xmlns="http://www.w3.org/1999/xhtml">\n  <td>\n      <!-- link -->\n  <b>x</b></td></div>'
REWRITTEN = STORED.replace("      <!--", "          <!--")


def resource(div: str, contained_div: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"resourceType": "PlanDefinition", "text": {"status": "generated", "div": div}}
    if contained_div is not None:
        body["contained"] = [
            {
                "resourceType": "ActivityDefinition",
                "id": "a",
                "text": {"status": "additional", "div": contained_div},
            }
        ]
    return body


def differs(source: dict[str, object], target: dict[str, object]) -> str | None:
    return first_difference(comparable_source(json.dumps(source), {}), comparable_target(target))


def test_whitespace_between_elements_of_a_narrative_is_not_a_difference() -> None:
    assert differs(resource(STORED, STORED), resource(REWRITTEN, REWRITTEN)) is None


def test_any_other_change_to_a_narrative_still_is() -> None:
    assert differs(resource(STORED), resource(STORED.replace("<b>x</b>", "<b>y</b>"))) is not None
    # whitespace where there was none is a change too (only runs of it compare as one space)
    assert differs(resource(STORED), resource(STORED.replace("<b>x</b>", "<b>x </b>"))) is not None
    changed = differs(resource(STORED, STORED), resource(STORED, STORED.replace("link", "lnk")))
    assert changed is not None and changed.startswith("contained[0].text.div")


def test_whitespace_inside_pre_still_counts() -> None:
    pre = '<div xmlns="http://www.w3.org/1999/xhtml"><pre>a  b</pre></div>'
    assert differs(resource(pre), resource(pre.replace("a  b", "a b"))) is not None
