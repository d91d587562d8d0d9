"""``RunController``: one run of a graph at a time, in a thread, watched by any number of viewers.

The dashboard's state lives here, with no web code, so it can be tested (and used)
on its own. State and policy:

* **One run at a time.** :meth:`RunController.start` runs the graph in a background
  thread that iterates :func:`~detflow.graph.run.run_graph_iter`. Between two merged
  partitions the thread checks the stop flag; :meth:`~RunController.stop` sets it, and
  the thread then closes the run's generator, so the driver loop's own cleanup runs:
  every sink gets ``finish(None)`` (a zarr store stays valid, ``complete: false``),
  the executor is closed. A stop takes effect when the partition in flight merges.
* **Shared, read-only snapshots.** The run's sinks write progress (frames done, the
  same count as the progress bar of ``detflow run``) and images (throttled by a
  :class:`~detflow.sinks.plots.sink.LivePlotSink`) into this object under a lock,
  each image with a version number. Viewers call :meth:`~RunController.snapshot` on
  their own thread (a Panel session's periodic callback) and redraw what changed; no
  viewer's document is ever touched from the run's thread.
* **Re-runs** replace the outputs of this controller's earlier runs (the graph's
  sinks are told to overwrite once a run of it has started).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from detflow.graph import Graph
from detflow.graph.events import RunInfo
from detflow.sinks.plots.base import Channel, LivePlot
from detflow.sinks.plots.sink import LivePlotSink, declared_buffers, select_channels

if TYPE_CHECKING:
    from detflow.executors.base import Executor
    from detflow.graph.events import Update
    from detflow.graph.results import UDFResults
    from detflow.graph.run import RunContext

__all__ = ["ImageState", "RunController", "RunSnapshot", "add_monitor"]

log = logging.getLogger("detflow")

#: run states: idle → running → (stopping →) finished | stopped | failed
STATUSES = ("idle", "running", "stopping", "finished", "stopped", "failed")

_LABELS = {"SignalMonitorUDF": "latest frame", "SumUDF": "sum frame"}


def add_monitor(graph: Graph) -> Graph:
    """``graph`` with a ``signal_monitor`` node (id ``latest_frame``) unless it has one."""
    if any(n.type == "signal_monitor" or type(n.obj).__name__ == "SignalMonitorUDF" for n in graph.udf_nodes()):
        return graph
    g = graph.copy()
    partition = next(n.input for n in g.udf_nodes(include_skipped=True))
    g.udf("signal_monitor", id=g._free_id("latest_frame"), input=partition)
    return g


@dataclass(frozen=True)
class ImageState:
    """The latest array of one channel; ``version`` grows with every new array."""

    data: np.ndarray
    version: int
    frames_done: int
    final: bool


@dataclass(frozen=True)
class RunSnapshot:
    """What a viewer shows, as of one moment."""

    run_id: int
    status: str
    error: str | None
    frames_done: int
    frames_total: int
    partitions_done: int
    partitions_total: int
    images: dict[str, ImageState]
    version: int
    #: seconds since the run started (to its end, once it ended); 0 before the first run
    elapsed: float = 0.0

    @property
    def frame_rate(self) -> float:
        """Frames per second so far (0 until a frame is done)."""
        return self.frames_done / self.elapsed if self.elapsed > 0 and self.frames_done else 0.0


class _SharedImage(LivePlot):
    """The plot class of the controller's runs: stores each array for the viewers."""

    def __init__(self, controller: RunController, channel: Channel, info: RunInfo) -> None:
        super().__init__(channel, info)
        self._controller = controller

    def new_data(self, data: np.ndarray, *, frames_done: int, final: bool = False) -> None:
        super().new_data(data, frames_done=frames_done, final=final)
        self._controller._set_image(self.channel.key, data, frames_done, final)


class _ProgressSink:
    """Every merged partition's counts, into the controller (cheap: no results computed)."""

    def __init__(self, controller: RunController) -> None:
        self._controller = controller

    def start(self, info: RunInfo) -> None:
        self._controller._on_start(info)

    def update(self, update: Update) -> None:
        self._controller._on_update(update.frames_done, update.partitions_done)

    def finish(self, results: UDFResults | None) -> None:
        self._controller._on_finish(results)


class RunController:
    """Runs ``graph`` on demand in a background thread; viewers read :meth:`snapshot`.

    Parameters
    ----------
    graph
        The graph, validated here (a graph that cannot run fails now, before anything
        is served).
    executor
        As for :meth:`Graph.run`: a name or an executor; default the graph's, else threads.
    context
        Where the graph's sinks write (``detflow serve --output-dir``).
    max_rate
        Image updates per second at most.
    monitor
        Add a ``signal_monitor`` node (id ``latest_frame``) if the graph has none,
        so the latest frame can be shown.

    Examples
    --------
    >>> import numpy as np
    >>> g = Graph("demo")
    >>> g.source("memory", data=np.ones((4, 4, 8, 8)))
    'source'
    >>> g.partition(num_partitions=2)
    'partition'
    >>> g.udf("sum")
    'sum'
    >>> ctl = RunController(g, executor="inline")
    >>> [c.title for c in ctl.channels]
    ['latest frame', 'sum frame']
    >>> ctl.start()
    True
    >>> ctl.wait(timeout=60)
    'finished'
    >>> snap = ctl.snapshot(); snap.frames_done, float(snap.images["sum/intensity"].data[0, 0])
    (16, 16.0)
    """

    def __init__(
        self,
        graph: Graph,
        *,
        executor: str | Executor | None = None,
        context: RunContext | None = None,
        max_rate: float | None = 4.0,
        monitor: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.graph = add_monitor(graph) if monitor else graph
        self.executor = executor
        self.context = context
        self.max_rate = max_rate
        self.clock = clock
        compiled = self.graph.validate()
        try:  # the plots follow the last pass (every node's results are there)
            plan = compiled.passes[-1]
            built = {node_id: udf for p in compiled.passes for node_id, udf in p.udfs}
            node_ids = [n for n in compiled.output_ids if n in built]
            udfs = [built[n] for n in node_ids]
            meta, roi = plan.meta, plan.roi
            channels = select_channels(True, [declared_buffers(u, meta) for u in udfs], node_ids,
                                       [type(u).__name__ for u in udfs])
        finally:
            compiled.close()
        self._udfs = udfs
        order = {"SignalMonitorUDF": 0, "SumUDF": 1}
        channels = [dataclasses.replace(c, label=self._label(c, channels)) for c in channels]
        #: the images every viewer shows, the latest frame and the sum frame first
        self.channels: list[Channel] = sorted(channels, key=lambda c: order.get(c.udf_type, 2))
        frames_total = meta.n_frames if roi is None else int(np.count_nonzero(roi))
        #: the run (shapes, totals); replaced when a run starts
        self.info = RunInfo(graph_name=self.graph.name, node_ids=tuple(node_ids), meta=meta, roi=roi,
                            frames_total=frames_total, partitions_total=0)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._restart = False
        self._run_id = 0
        self._status = "idle"
        self._error: str | None = None
        self._frames_done = 0
        self._partitions_done = 0
        self._images: dict[str, ImageState] = {}
        self._version = 0
        self._started: float | None = None
        self._ended: float | None = None
        #: the results when the last run ended (final if it finished), else ``None``
        self.results: UDFResults | None = None

    @staticmethod
    def _label(channel: Channel, channels: list[Channel]) -> str:
        label = _LABELS.get(channel.udf_type)
        if label is None or channel.buffer != "intensity":
            return ""
        same = [c for c in channels if c.udf_type == channel.udf_type and c.buffer == "intensity"]
        return label if len(same) == 1 else f"{label} ({channel.node_id})"

    # --- control ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> bool:
        """Start a run unless one is going; ``False`` if one is."""
        with self._lock:
            if self.running:
                return False
            self._stop.clear()
            self._restart = False
            self._run_id += 1
            self._status = "running"
            self._error = None
            self._frames_done = self._partitions_done = 0
            self._images = {}
            self.results = None
            self._started, self._ended = time.monotonic(), None
            self._bump()
            self._thread = threading.Thread(target=self._run, args=(self._run_id,), daemon=True,
                                            name=f"detflow-dashboard-run-{self._run_id}")
            self._thread.start()
            return True

    def stop(self, *, wait: bool = True, timeout: float | None = 60.0) -> str:
        """Stop the run after the partition in flight; with ``wait``, until it has stopped."""
        with self._lock:
            self._restart = False
            if self.running:
                self._stop.set()
                if self._status == "running":
                    self._status = "stopping"
                    self._bump()
            thread = self._thread
        if wait and thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("dashboard: the run did not stop within %s s", timeout)
        return self.status

    def rerun(self) -> None:
        """Stop the run if one is going, then start a new one (returns at once)."""
        with self._lock:
            if self.running:
                self._stop.set()
                self._restart = True
                if self._status == "running":
                    self._status = "stopping"
                    self._bump()
                return
        self.start()

    def wait(self, timeout: float | None = None) -> str:
        """Wait for the run to end (``timeout`` seconds at most); the status."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status

    def close(self, timeout: float | None = 60.0) -> None:
        """Stop any run; the graph's sinks are left consistent."""
        self.stop(wait=True, timeout=timeout)

    # --- state ------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self._status

    @property
    def frames_done(self) -> int:
        return self._frames_done

    def snapshot(self) -> RunSnapshot:
        with self._lock:
            return RunSnapshot(
                run_id=self._run_id, status=self._status, error=self._error,
                frames_done=self._frames_done, frames_total=self.info.frames_total,
                partitions_done=self._partitions_done, partitions_total=self.info.partitions_total,
                images=dict(self._images), version=self._version,
                elapsed=0.0 if self._started is None else (self._ended or time.monotonic()) - self._started,
            )

    def _bump(self) -> None:
        self._version += 1

    # --- the run's thread ---------------------------------------------------------------
    def _run(self, run_id: int) -> None:
        from detflow.graph.run import default_context, run_graph_iter

        context = self.context or default_context(self.graph)
        plots = LivePlotSink(True, udfs=self._udfs, max_rate=self.max_rate, clock=self.clock, display=False,
                             plot_class=lambda channel, info: _SharedImage(self, channel, info))
        status, error = "finished", None
        gen = run_graph_iter(self.graph, executor=self.executor, context=context,
                             sinks=[_ProgressSink(self), plots])
        try:
            for _ in gen:
                if self._stop.is_set():
                    status = "stopped"
                    break
        except Exception as err:
            log.error("dashboard: run %d failed: %s", run_id, err)
            status, error = "failed", f"{type(err).__name__}: {err}"
        finally:
            try:
                if isinstance(gen, Generator):
                    gen.close()  # a stopped run: the driver's cleanup, sinks told finish(None)
            except Exception as err:
                status, error = "failed", f"{type(err).__name__}: {err}"
            with self._lock:
                self._status = status
                self._error = error
                self._ended = time.monotonic()
                self._bump()
                restart = self._restart and run_id == self._run_id
        if restart:
            threading.Thread(target=self._restart_after, args=(threading.current_thread(),), daemon=True).start()

    def _restart_after(self, thread: threading.Thread) -> None:
        thread.join()
        self.start()

    # called from the run's sinks, in the run's thread
    def _on_start(self, info: RunInfo) -> None:
        with self._lock:
            self.info = info
            if self.context is not None and not self.context.overwrite:
                self.context = dataclasses.replace(self.context, overwrite=True)
            elif self.context is None:
                from detflow.graph.run import default_context

                self.context = default_context(self.graph, overwrite=True)
            self._bump()

    def _on_update(self, frames_done: int, partitions_done: int) -> None:
        with self._lock:
            self._frames_done = frames_done
            self._partitions_done = partitions_done
            self._bump()

    def _on_finish(self, results: UDFResults | None) -> None:
        with self._lock:
            if results is not None:
                self.results = results
                self._frames_done = results.frames_done
                self._partitions_done = results.partitions_done
                self._bump()

    def _set_image(self, key: str, data: np.ndarray, frames_done: int, final: bool) -> None:
        with self._lock:
            old = self._images.get(key)
            self._images[key] = ImageState(data, (old.version + 1) if old else 1, frames_done, final)
            self._bump()

    def __repr__(self) -> str:
        return f"<RunController {self.graph.name!r}: {self.status}, {self.frames_done}/{self.info.frames_total} frames>"
