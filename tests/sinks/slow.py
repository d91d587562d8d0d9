"""A slow run for dashboard tests: a UDF that sleeps in every partition.

``SlowSumSigUDF(delay=0.1)`` sums each frame (a nav result, so the image fills in as
partitions merge) after sleeping ``delay`` seconds per partition; with many small
partitions a run on a few hundred frames takes a few seconds, long enough to watch.
"""

from __future__ import annotations

import time

import numpy as np

from detflow.graph import Graph
from detflow.nodes.base import UDF, BufferDecl


class SlowSumSigUDF(UDF):
    """Per-frame sums, ``delay`` seconds per partition."""

    def __init__(self, delay: float = 0.05) -> None:
        super().__init__(delay=delay)

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        return {"intensity": self.buffer(kind="nav", dtype="float64")}

    def process_partition(self, partition: np.ndarray) -> None:
        time.sleep(self.params.delay)
        self.results.intensity[:] = partition.reshape(len(partition), -1).sum(axis=1)


def slow_graph(data: np.ndarray, *, delay: float = 0.05, frames_per_partition: int = 8,
               roi: np.ndarray | None = None) -> Graph:
    """memory source → partition → ``slow`` (SlowSumSigUDF) and ``sum``."""
    g = Graph("slow")
    g.source("memory", data=data)
    g.partition(frames_per_partition=frames_per_partition, roi=roi)
    g.udf("tests.sinks.slow:SlowSumSigUDF", id="slow", delay=delay)
    g.udf("sum", id="sum")
    return g


def scan(shape: tuple[int, ...] = (16, 16, 8, 8), seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.uint16)
