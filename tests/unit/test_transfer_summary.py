import pytest

from fhirgraph.commands import _overlaps
from fhirgraph.config import build_settings
from fhirgraph.crawl import ChangeStats as FoundChanges
from fhirgraph.load import ChangeStats
from fhirgraph.results import SyncResult, TransferResponse
from fhirgraph.staging import Generation


def response(**fields: object) -> TransferResponse:
    return TransferResponse(
        transfer="t",
        source="http://source/fhir",
        target="http://target/fhir",
        counts={"Patient": {"loaded": 3}},
        **fields,  # type: ignore[arg-type]
    )


def test_the_summary_says_which_types_were_sent_as_conditional_creates_and_what_was_resent() -> None:
    lines = response(conditional_types=["Patient"], resent_bundles=2).summary().splitlines()
    assert (
        "  conditional creates for Patient: the target holds copies of this type made with this linkage key"
        in lines
    )
    assert (
        "  2 bundle(s) sent again as conditional creates: the target refused a send (429/503), "
        "or its outcome was unknown and its copies were not on the target"
    ) in lines


def test_a_plain_transfer_summary_has_no_conditional_or_resend_lines() -> None:
    summary = response().summary()
    assert "conditional" not in summary and "sent again" not in summary
    assert "  loaded 3" in summary.splitlines()


def test_the_summary_says_how_many_were_loaded_while_the_crawl_went_on() -> None:
    lines = response(created=3, loaded_while_crawling=2).summary().splitlines()
    assert "  2 of them loaded while the crawl went on" in lines
    assert "while the crawl" not in response(created=3).summary()


@pytest.mark.parametrize(
    ("changes", "overlaps"),
    [
        ({}, False),  # the default: fail
        ({"on_dangling": "drop-reference"}, True),
        ({"on_dangling": "skip-resource"}, True),
        ({"on_dangling": "drop-reference", "overlap": False}, False),
        ({"on_dangling": "drop-reference", "workers": 2}, False),
    ],
)
def test_a_transfer_overlaps_only_where_no_dangling_reference_can_stop_it(
    changes: dict[str, object], overlaps: bool
) -> None:
    settings = build_settings({}, None).with_(**changes)
    assert _overlaps(settings) is overlaps


def test_print_shows_the_summary_and_repr_stays_short_however_large_the_linkage() -> None:
    linkage = {f"hash{i}": f"Patient/{i}" for i in range(10_000)}
    shown = response(linkage=linkage)
    assert str(shown) == shown.summary()
    assert "hash1" not in repr(shown) and "<10000 entries>" in repr(shown)
    assert len(repr(shown)) < 200


def test_the_summary_says_what_the_plan_dropped_or_skipped_for_what_the_source_lacks() -> None:
    shown = response(dropped_references=5)
    shown.counts["Patient"] = {"dangling": 2}
    assert (
        "  dropped 5 reference(s) to 2 resource(s) the source lacks (saved query: dangling)"
        in shown.summary()
    )
    assert "skipped 4 resource(s)" in response(skipped=4).summary()
    assert "dropped" not in response().summary()


def sync_result(
    counts: dict[str, int], applied: ChangeStats | None = None, delete: bool = False
) -> SyncResult:
    generation = Generation(number=2, state="done", since=None, instant=None, counts=counts)
    return SyncResult("t", generation, FoundChanges(), applied or ChangeStats(), delete=delete)


def test_a_sync_summary_counts_what_its_generation_changed_and_names_the_flags() -> None:
    counts = {
        "created": 3,
        "updated": 1,
        "unchanged": 90,
        "deleted": 1,
        "removed": 0,
        "conflicts": 0,
        "refused": 0,
    }
    result = sync_result(counts)
    lines = result.summary({"delete": "--delete"}).splitlines()
    assert lines[0].startswith(
        "synced transfer t (generation 2): created 3, updated 1, unchanged 90, deleted on the source 1 "
        "(removed from the target 0), conflicts 0, refused 0"
    )
    assert "sync with --delete to remove them" in lines[1]
    assert result.error() is None
    assert "to remove them" not in sync_result({**counts, "deleted": 0, "removed": 1}, delete=True).summary()


def test_a_sync_with_conflicts_ends_in_an_error_pointing_at_overwrite() -> None:
    applied = ChangeStats(
        conflicts=[("Observation/o1", "changed on the target since fhirgraph wrote version 1")]
    )
    result = sync_result({"conflicts": 1}, applied=applied)
    assert (
        "  CONFLICT Observation/o1: changed on the target since fhirgraph wrote version 1" in result.summary()
    )
    error = result.error()
    assert error is not None and error.hint == "overwrite" and "1 update(s) not made" in str(error)
    refused = sync_result({"refused": 2}).error()
    assert refused is not None and refused.hint == "status"
