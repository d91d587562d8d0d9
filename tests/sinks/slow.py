"""A slow run for dashboard tests: a UDF that sleeps in every partition.

``SlowSumSigUDF(delay=0.1)`` sums each frame (a nav result, so the image fills in as
partitions merge) after sleeping ``delay`` seconds per partition; with many small
partitions a run on a few hundred frames takes a few seconds, long enough to watch.

A test that must act *while* a run is going (Stop, Re-run) does not race the clock:
it holds the run with a :class:`Gate`. ``slow_graph(data, gate=g, hold_from=k)``
makes every partition from index ``k`` on wait until ``g.open()``, so partitions
``0..k-1`` are merged and the run is certainly still going when the test acts.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import numpy as np

from detflow.graph import Graph
from detflow.nodes.base import UDF, BufferDecl

#: the longest a held partition waits for its gate: a test that forgot to open it fails
#: (the run reports a timeout) instead of hanging the suite
GATE_TIMEOUT = 120.0

_GATES: dict[str, threading.Event] = {}
_ids = itertools.count()


class Gate:
    """An event that held partitions wait on, found by name in this process.

    Runs of the dashboard tests use the inline executor, so the UDF runs in the
    test's own process and sees the event the test sets. A gate starts open or shut.
    """

    def __init__(self, *, open: bool = False) -> None:
        self.name = f"gate-{next(_ids)}"
        self.event = threading.Event()
        if open:
            self.event.set()
        _GATES[self.name] = self.event

    def open(self) -> None:
        self.event.set()

    def shut(self) -> None:
        self.event.clear()

    def open_when(self, predicate: Callable[[], bool], timeout: float = GATE_TIMEOUT) -> threading.Thread:
        """Open the gate (from a thread) as soon as ``predicate()`` holds, or after ``timeout``."""

        def watch() -> None:
            deadline = time.monotonic() + timeout
            while not predicate() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.open()

        thread = threading.Thread(target=watch, daemon=True, name=f"{self.name}-opener")
        thread.start()
        return thread


class SlowSumSigUDF(UDF):
    """Per-frame sums, ``delay`` seconds per partition; partitions from ``hold_from`` on
    wait for the gate named ``gate`` (none: no wait)."""

    def __init__(self, delay: float = 0.05, gate: str = "", hold_from: int = 0) -> None:
        super().__init__(delay=delay, gate=gate, hold_from=hold_from)

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        return {"intensity": self.buffer(kind="nav", dtype="float64")}

    def process_partition(self, partition: np.ndarray) -> None:
        held = bool(self.params.gate) and self.meta.partition_index >= self.params.hold_from
        if held and not _GATES[self.params.gate].wait(GATE_TIMEOUT):
            raise TimeoutError(f"gate {self.params.gate!r} was not opened within {GATE_TIMEOUT:g} s")
        time.sleep(self.params.delay)
        self.results.intensity[:] = partition.reshape(len(partition), -1).sum(axis=1)


def slow_graph(data: np.ndarray, *, delay: float = 0.05, frames_per_partition: int = 8,
               roi: np.ndarray | None = None, gate: Gate | None = None, hold_from: int = 0) -> Graph:
    """memory source → partition → ``slow`` (SlowSumSigUDF) and ``sum``."""
    g = Graph("slow")
    g.source("memory", data=data)
    g.partition(frames_per_partition=frames_per_partition, roi=roi)
    held = {} if gate is None else {"gate": gate.name, "hold_from": hold_from}
    g.udf("tests.sinks.slow:SlowSumSigUDF", id="slow", delay=delay, **held)
    g.udf("sum", id="sum")
    return g


def scan(shape: tuple[int, ...] = (16, 16, 8, 8), seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.uint16)
