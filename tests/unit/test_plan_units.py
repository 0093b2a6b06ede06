"""Pure parts of the planner: cycle detection and bundle packing."""

from __future__ import annotations

from fhirgraph.plan import (
    REFERENCES_PER_ENTRY,
    BundlePacker,
    place_ready_components,
    strongly_connected_components,
)


def normalise(components: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset(c) for c in components}


def test_scc_finds_cycles_of_two_and_three_and_singletons() -> None:
    edges = {
        "enc": ["cond"],
        "cond": ["enc", "pat"],
        "pat": [],
        "a": ["b"],
        "b": ["c"],
        "c": ["a"],
        "obs": ["a"],
    }
    assert normalise(strongly_connected_components(edges)) == {
        frozenset({"enc", "cond"}),
        frozenset({"pat"}),
        frozenset({"a", "b", "c"}),
        frozenset({"obs"}),
    }


def test_scc_is_iterative_on_long_chains() -> None:
    n = 50_000
    edges = {str(i): [str(i + 1)] for i in range(n)}
    edges[str(n)] = ["0"]
    components = strongly_connected_components(edges)
    assert len(components) == 1 and len(components[0]) == n + 1


def test_only_ready_components_are_placed() -> None:
    edges = {"x": ["y"], "y": ["x"], "dep": ["x"]}
    placed, deferred = place_ready_components(edges, level=3, bundle_size=10, cycles_in_one_bundle=True)
    assert {row["uid"] for row in placed} == {"x", "y"}
    assert all(row["level"] == 3 and row["scc"] == "x" for row in placed)
    assert deferred == []


def test_a_cycle_larger_than_a_bundle_is_deferred() -> None:
    edges = {"a": ["b"], "b": ["c"], "c": ["a"]}
    placed, deferred = place_ready_components(edges, level=0, bundle_size=2, cycles_in_one_bundle=True)
    assert {row["uid"] for row in placed} == {"a", "b", "c"}
    assert all(row["scc"] is None for row in placed)
    assert sorted((d["from"], d["to"]) for d in deferred) == [("a", "b"), ("b", "c"), ("c", "a")]


def test_packer_never_splits_a_unit_and_respects_the_size() -> None:
    packer = BundlePacker(bundle_size=3, first_number=10)
    assert packer.add(1) == 10
    assert packer.add(2) == 10
    assert packer.add(2) == 11
    assert packer.add(1) == 11
    packer.close()
    assert packer.add(1) == 12


def test_packer_limits_the_references_of_a_bundle_too() -> None:
    packer = BundlePacker(bundle_size=10, first_number=1)
    limit = 10 * REFERENCES_PER_ENTRY
    assert packer.add(1, 3) == 1
    assert packer.add(1, limit - 3) == 1  # exactly at the limit
    assert packer.add(1, 1) == 2  # one reference more starts a new bundle
    assert packer.add(1, 5 * limit) == 3  # a hub bigger than the limit gets a bundle of its own
    assert packer.add(1, 0) == 4
