"""The order the load sends bundles in (fhirgraph.load._send_bundles): each once the bundles
it refers to are done, not a whole level at a time; never more under way than allowed; nothing
new after a failure or a stop. The loader is a fake that records when each bundle starts and
ends, with the dependencies a graph would answer."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from fhirgraph.load import BundleFailure, BundleQueue, LoadStats, _send_bundles


@dataclass
class FakeGraph:
    #: bundle number -> the bundle numbers its resources refer to
    after: dict[int, list[int]]

    def execute(self, query: str, **params: Any) -> list[dict[str, Any]]:
        assert query == "load_bundle_dependencies"
        return [{"number": n, "after": self.after[n]} for n in params["numbers"] if n in self.after]


@dataclass
class FakeLoader:
    graph: FakeGraph
    #: how long sending each bundle takes (default 0.02 s)
    seconds: dict[int, float] = field(default_factory=dict)
    #: bundles whose send fails
    failing: set[int] = field(default_factory=set)
    transfer: str = "t"
    stats: LoadStats = field(default_factory=LoadStats)
    events: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    under_way: int = 0
    most_under_way: int = 0

    def send_bundle(self, number: int, status: str) -> None:
        with self.lock:
            self.events.append(("start", number))
            self.under_way += 1
            self.most_under_way = max(self.most_under_way, self.under_way)
        time.sleep(self.seconds.get(number, 0.02))
        with self.lock:
            self.under_way -= 1
            self.events.append(("end", number))
            if number in self.failing:
                self.stats.failures.append(BundleFailure(number, (), "refused", None))

    def started(self) -> list[int]:
        return [n for kind, n in self.events if kind == "start"]

    def index(self, kind: str, number: int) -> int:
        return self.events.index((kind, number))


def pending(*numbers: int) -> list[dict[str, Any]]:
    return [{"number": n, "level": 0, "status": "planned", "size": 1} for n in numbers]


def send(loader: FakeLoader, numbers: list[int], ahead: int = 4) -> None:
    with ThreadPoolExecutor(max_workers=ahead) as pool:
        _send_bundles(loader, pending(*numbers), pool, ahead)  # type: ignore[arg-type]


def test_a_bundle_goes_once_those_it_refers_to_are_done_not_its_whole_level() -> None:
    # level 0: 1 (slow) and 2; level 1: 3 refers to 2 only, 4 refers to 1
    loader = FakeLoader(FakeGraph({3: [2], 4: [1]}), seconds={1: 0.5})
    send(loader, [1, 2, 3, 4])
    assert sorted(loader.started()) == [1, 2, 3, 4]
    assert loader.index("start", 3) > loader.index("end", 2)
    assert loader.index("start", 3) < loader.index("end", 1)  # did not wait for the slow 1
    assert loader.index("start", 4) > loader.index("end", 1)


def test_no_more_bundles_are_under_way_than_allowed() -> None:
    loader = FakeLoader(FakeGraph({}))
    send(loader, list(range(1, 21)), ahead=3)
    assert sorted(loader.started()) == list(range(1, 21))
    assert loader.most_under_way == 3


def test_bundles_that_could_go_together_go_in_number_order() -> None:
    loader = FakeLoader(FakeGraph({}))
    send(loader, [5, 1, 3, 2, 4], ahead=1)
    assert loader.started() == [1, 2, 3, 4, 5]


def test_a_chain_is_sent_in_its_order() -> None:
    loader = FakeLoader(FakeGraph({2: [1], 3: [2], 4: [3]}))
    send(loader, [1, 2, 3, 4])
    assert loader.events == [(kind, n) for n in (1, 2, 3, 4) for kind in ("start", "end")]


def test_a_bundle_done_earlier_holds_nothing_back() -> None:
    # 7 refers to 6, which is not pending any more (loaded by an earlier run)
    loader = FakeLoader(FakeGraph({7: [6]}))
    send(loader, [7])
    assert loader.started() == [7]


def test_nothing_new_is_sent_once_a_bundle_failed() -> None:
    loader = FakeLoader(FakeGraph({3: [1], 4: [2]}), failing={1}, seconds={2: 0.3})
    send(loader, [1, 2, 3, 4])
    # 2 was under way when 1 failed and finished; what waited for 2 was not sent
    assert loader.started() == [1, 2]
    assert ("end", 2) in loader.events


def test_nothing_new_is_started_once_stopped_and_what_is_under_way_is_waited_for() -> None:
    stop = threading.Event()
    loader = FakeLoader(FakeGraph({}), seconds={1: 0.3})
    with ThreadPoolExecutor(max_workers=2) as pool:
        queue = BundleQueue(loader, pool, 1)  # type: ignore[arg-type]
        queue.add(pending(1, 2, 3))
        queue.start(stop)
        stop.set()
        queue.wait(0.01)  # 1 is not done yet
        queue.start(stop)
        queue.drain()
    assert loader.events == [("start", 1), ("end", 1)]
    assert sorted(queue.waiting) == [2, 3]


def test_bundles_added_while_others_are_under_way_wait_for_those_they_refer_to() -> None:
    loader = FakeLoader(FakeGraph({3: [1], 4: [2]}), seconds={1: 0.3})
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=4) as pool:
        queue = BundleQueue(loader, pool, 4)  # type: ignore[arg-type]
        assert queue.add(pending(1, 2)) == 2
        queue.start(stop)
        queue.wait()  # 2 is done, 1 still under way
        # the next round: 1 and 2 again (1 is not loaded yet) and two new ones
        assert queue.add(pending(1, 3, 4)) == 2
        queue.start(stop)
        while queue.running or queue.waiting:
            queue.wait()
            queue.start(stop)
    assert loader.started() == [1, 2, 4, 3]
    assert loader.index("start", 3) > loader.index("end", 1)


def test_dependencies_that_go_round_are_sent_in_number_order_rather_than_never() -> None:
    loader = FakeLoader(FakeGraph({1: [2], 2: [1]}))
    send(loader, [1, 2])
    assert loader.started() == [1, 2]


def test_an_error_in_a_send_is_raised() -> None:
    loader = FakeLoader(FakeGraph({}))

    def broken(number: int, status: str) -> None:
        raise RuntimeError(f"bundle {number}")

    loader.send_bundle = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="bundle 1"):
        send(loader, [1], ahead=1)


class MembersGraph:
    """A graph that answers every bundle's members with one Patient and takes any write."""

    def execute(self, query: str, **params: Any) -> list[dict[str, Any]]:
        if query == "load_bundle_members":
            number = params["number"]
            return [
                {
                    "uid": f"t|Patient/{number}",
                    "key": f"Patient/{number}",
                    "type": "Patient",
                    "json": json.dumps({"resourceType": "Patient", "id": str(number)}),
                    "refs": [],
                    "target_id": None,
                    "status": "planned",
                }
            ]
        return []


class SlowSender:
    """Sends take 0.1 s; counts how many are under way at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.under_way = 0
        self.most_under_way = 0
        self.sent = 0

    def send(
        self, entries: list[Any], *, outcome_unknown: bool, sent_seconds_ago: float = 0.0
    ) -> dict[str, Any]:
        with self.lock:
            self.under_way += 1
            self.most_under_way = max(self.most_under_way, self.under_way)
        time.sleep(0.1)
        with self.lock:
            self.under_way -= 1
            self.sent += 1
        return {
            "entry": [
                {"response": {"status": "201 Created", "location": f"Patient/c{i}/_history/1"}}
                for i, _ in enumerate(entries)
            ]
        }


@pytest.mark.parametrize("concurrency", [1, 2])
def test_the_loader_sends_no_more_at_once_than_its_concurrency_while_others_prepare(concurrency: int) -> None:
    from fhirgraph.linkage import LinkageKey
    from fhirgraph.load import Loader, _ahead

    sender = SlowSender()
    loader = Loader(
        MembersGraph(),  # type: ignore[arg-type]
        sender,  # type: ignore[arg-type]
        "t",
        LinkageKey(secret=b"k" * 32, origin="test"),
        "http://source.test/fhir",
        concurrency=concurrency,
    )
    with ThreadPoolExecutor(max_workers=_ahead(concurrency)) as pool:
        _send_bundles(loader, pending(*range(1, 9)), pool, _ahead(concurrency))  # type: ignore[arg-type]
    assert sender.sent == 8
    assert sender.most_under_way == concurrency
    assert loader.stats.created == 8
