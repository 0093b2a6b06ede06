"""What a sync counts as a change: the content hash, the versions in a history page, the
seeds a transfer keeps, the conditional update."""

from __future__ import annotations

import pytest

from fhirgraph import jsontext
from fhirgraph.bundle import Entry, Member
from fhirgraph.changes import HistoryEntry, content_hash, history_entries
from fhirgraph.crawl import since_seed
from fhirgraph.seeds import ExplicitSeeds, SearchSeed, parse_seed, seed_from_json, seed_to_json

BASE = "http://src.example/fhir"


def resource(text: str) -> dict[str, object]:
    return dict(jsontext.loads(text))


def test_the_content_hash_ignores_key_order_and_server_metadata() -> None:
    a = resource(
        '{"resourceType":"Observation","id":"1","meta":{"versionId":"1","lastUpdated":"x"},"status":"final","valueQuantity":{"value":7.10}}'
    )
    b = resource(
        '{"valueQuantity":{"value":7.10},"status":"final","resourceType":"Observation","id":"1","meta":{"versionId":"9","source":"#a","lastUpdated":"y"}}'
    )
    assert content_hash(a) == content_hash(b)


@pytest.mark.parametrize(
    "changed",
    [
        '{"resourceType":"Observation","id":"1","status":"final","valueQuantity":{"value":7.1}}',  # 7.10 -> 7.1
        '{"resourceType":"Observation","id":"1","status":"amended","valueQuantity":{"value":7.10}}',
        '{"resourceType":"Observation","id":"1","status":"final","valueQuantity":{"value":7.10},"meta":{"tag":[{"code":"t"}]}}',
    ],
)
def test_the_content_hash_sees_every_change_of_content(changed: str) -> None:
    original = resource(
        '{"resourceType":"Observation","id":"1","status":"final","valueQuantity":{"value":7.10}}'
    )
    assert content_hash(original) != content_hash(resource(changed))


def test_history_entries_give_each_version_and_deletions_by_their_url() -> None:
    page = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {
                "fullUrl": f"{BASE}/Patient/1",
                "request": {"method": "DELETE", "url": "Patient/1/_history/3"},
                "response": {"status": "200 OK", "etag": 'W/"3"'},
            },
            {
                "fullUrl": f"{BASE}/Patient/1",
                "resource": {"resourceType": "Patient", "id": "1", "meta": {"versionId": "2"}},
                "request": {"method": "PUT", "url": "Patient/1"},
            },
            {"fullUrl": f"{BASE}/Patient/2", "request": {"method": "DELETE"}, "response": {"etag": 'W/"5"'}},
        ],
    }
    entries = list(history_entries(page, BASE))
    assert entries == [
        HistoryEntry("Patient/1", "3", None),
        HistoryEntry("Patient/1", "2", {"resourceType": "Patient", "id": "1", "meta": {"versionId": "2"}}),
        HistoryEntry("Patient/2", "5", None),
    ]
    assert [e.deleted for e in entries] == [True, False, True]


@pytest.mark.parametrize(
    "seed",
    [
        parse_seed("Condition?code=44054006&_revinclude=Observation:subject", limit=10),
        parse_seed("Patient/1/$everything?_count=100"),
        ExplicitSeeds(references=("Patient/1", "Observation/2")),
    ],
)
def test_a_seed_kept_by_the_transfer_is_the_same_seed_again(seed: SearchSeed | ExplicitSeeds) -> None:
    assert seed_from_json(seed_to_json(seed)) == seed


def test_a_seed_run_again_looks_only_at_what_changed() -> None:
    assert since_seed(parse_seed("Condition?code=x"), "2026-01-01T00:00:00.000+00:00").params == (
        ("code", "x"),
        ("_lastUpdated", "ge2026-01-01T00:00:00.000+00:00"),
    )
    everything = since_seed(parse_seed("Patient/1/$everything"), "2026-01-01T00:00:00Z")
    assert everything.params[-1] == ("_since", "2026-01-01T00:00:00Z")
    assert since_seed(parse_seed("Condition?code=x"), None).params == (("code", "x"),)


def test_an_update_is_conditional_on_the_version_fhirgraph_wrote() -> None:
    member = Member("t|Patient/1", "Patient/1", "Patient", "{}", ())
    entry = Entry(member, "h", False, {"resource": {}, "request": {"method": "PUT", "url": "Patient/9"}})
    assert entry.conditional_update("2")["request"] == {
        "method": "PUT",
        "url": "Patient/9",
        "ifMatch": 'W/"2"',
    }
    assert entry.conditional_update(None) is entry.bundle_entry
    assert entry.bundle_entry["request"] == {"method": "PUT", "url": "Patient/9"}  # never changed
    create = Entry(member, "h", False, {"resource": {}, "request": {"method": "POST", "url": "Patient"}})
    with pytest.raises(ValueError):
        create.conditional_update("1")
