"""Loading while the crawl goes on: ``transfer`` under an ``on_dangling`` policy that cannot stop it.

Under ``drop-reference`` or ``skip-resource`` no dangling reference can abort the transfer, so
nothing needs to wait for the end of the crawl before it is sent. While the crawl runs in the
caller's thread, :class:`Overlap` works in rounds on a thread of its own: at most every
``ROUND_PAUSE``, once every bundle queued has started, it places what is ready
(``plan.place_ready``: resources whose references all lead to placed resources) and queues
their bundles, which are sent meanwhile, each once the bundles it refers to are loaded
(``load.ReadyLoad``). After
the crawl, the plan places the rest (cycles, references to what turned out missing) above the
levels used so far, and the load sends it, deferred updates last.

Exactly once holds as for any load: a bundle is marked ``sending`` before it is sent and a
resumed transfer resends such a bundle as conditional creates. A killed round may leave
resources placed without their bundle node; the next round or the plan writes it first.
Under ``fail`` (the default) there is no overlap: nothing is written before the crawl has
ended and the plan has found no dangling reference.
"""

from __future__ import annotations

import threading
import time

from fhirgraph.graph import Graph
from fhirgraph.load import LoadStats, ReadyLoad
from fhirgraph.plan import next_level, place_ready

#: the time from one round's placing to the next one's (the sends go on meanwhile)
ROUND_PAUSE = 0.5


class Overlap:
    """Rounds that send through ``load``; use as a context manager around the crawl, and call
    :meth:`finish` once it has ended."""

    def __init__(self, graph: Graph, transfer: str, load: ReadyLoad, *, bundle_size: int) -> None:
        self.graph, self.transfer, self.load, self.bundle_size = graph, transfer, load, bundle_size
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fhirgraph-overlap", daemon=True)

    def __enter__(self) -> Overlap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.load.close()

    def finish(self) -> LoadStats:
        """Stop after the round under way; what was loaded, or the error that stopped the rounds."""
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.load.stats

    def _run(self) -> None:
        try:
            level = next_level(self.graph, self.transfer)
            next_round = 0.0
            while not self._stop.is_set() and not self.load.loader.stats.failures:
                # a round places only once every bundle queued has started: what becomes ready
                # meanwhile fills the next round's bundles instead of small ones of its own
                if time.monotonic() >= next_round and not self.load.queue.waiting:
                    placed, level = place_ready(
                        self.graph, self.transfer, bundle_size=self.bundle_size, first_level=level
                    )
                    if placed:
                        self.load.add_placed()
                    next_round = time.monotonic() + ROUND_PAUSE
                # sends go on while the next round waits; a failed one stops the rounds (the plan
                # after the crawl still runs; the load waits for a retry)
                self.load.send(self._stop, max(0.0, next_round - time.monotonic()))
            self.load.drain()
        except BaseException as exc:  # raised in the caller's thread by finish()
            self._error = exc
