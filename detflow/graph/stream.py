"""detflow's wrapper around a streamz pipeline: partial results → merge → nodes → subscribers.

streamz carries each partition's partial result through the merge step (every UDF
node of the pass), then along the graph's own edges: a result node is a stream node
downstream of the nodes it reads (:meth:`ResultStream.node`), and a sink subscribes
downstream of its inputs (:meth:`ResultStream.subscribe` with ``at``), so it sees each
update after the nodes it shows were brought up to date. Its quirks stay in here:

* a branch with no sink is garbage-collected, so this object holds every sink node;
* streamz has no end-of-stream signal, so ``start``/``finish`` are called on the
  subscribers directly, around the stream;
* the stream runs synchronously in the driver thread (no event loop), which keeps
  the per-element cost to a function call or two; elements are partitions, not frames.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from detflow.graph.events import RunInfo, Subscriber, Update

if TYPE_CHECKING:
    from detflow.nodes.runner import PartialResult

__all__ = ["ResultStream", "RunInfo", "Update"]


def _import_streamz() -> Any:
    """streamz, imported without the dask.distributed integration detflow does not use.

    streamz's import tries ``distributed`` and its own dask streams, which cost more
    than the rest of a small run's start-up. Both read as absent for that one import
    (the driver makes the stream before any worker runs), unless imported already;
    ``import distributed`` and ``import streamz.dask`` work as usual afterwards.
    """
    if "streamz" in sys.modules:
        return sys.modules["streamz"]
    hidden = [m for m in ("distributed", "streamz.dask") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("streamz")
    finally:
        for m in hidden:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]


class ResultStream:
    """Partial results in; merged updates out to every subscribed sink."""

    def __init__(self, merge: Callable[[PartialResult], Update]) -> None:
        streamz = _import_streamz()
        self._source = streamz.Stream(stream_name="partials")
        self._merged = self._source.map(merge)
        self._last: list[Update] = []
        self._keep = [self._merged.sink(self._last_update)]
        self._sinks: list[Subscriber] = []
        #: the stream node of each graph node; UDF nodes of the pass are the merge step itself
        self._nodes: dict[str, Any] = {}

    def _last_update(self, update: Update) -> None:
        self._last[:] = [update]

    def node(self, node_id: str, inputs: tuple[str, ...], step: Callable[[Update], Any]) -> None:
        """A graph node downstream of ``inputs`` (ids of earlier :meth:`node` calls; others
        are the merge step): ``step(update)`` runs on every update, after theirs."""
        parents = [self._nodes[i] for i in inputs if i in self._nodes] or [self._merged]
        upstream = parents[0] if len(parents) == 1 else parents[0].zip(*parents[1:]).map(lambda ups: ups[0])

        def run(update: Update) -> Update:
            step(update)
            return update

        self._nodes[node_id] = upstream.map(run)
        self._keep.append(self._nodes[node_id].sink(lambda _: None))  # streamz drops branches without a sink

    def subscribe(self, sink: Subscriber, *, at: tuple[str, ...] = ()) -> None:
        """``sink`` sees every update, after the nodes ``at`` (its inputs) ran on it."""
        self._sinks.append(sink)
        parents = [self._nodes[i] for i in at if i in self._nodes]
        upstream = (self._merged if not parents else parents[0] if len(parents) == 1
                    else parents[0].zip(*parents[1:]).map(lambda ups: ups[0]))
        self._keep.append(upstream.sink(sink.update))

    def start(self, info: RunInfo) -> None:
        for sink in self._sinks:
            sink.start(info)

    def emit(self, partial: PartialResult) -> Update:
        self._source.emit(partial)
        return self._last[0]

    def finish(self, results: Any) -> None:
        """Tell every sink the run ended (``results`` is ``None`` if it failed)."""
        errors = []
        for sink in self._sinks:
            try:
                sink.finish(results)
            except Exception as err:  # one broken sink must not keep the others open
                errors.append(err)
        for node in self._keep:
            node.destroy()
        if errors:
            raise errors[0]
