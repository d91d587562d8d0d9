"""LiberTEM's executor and dataset constructors, built on detflow's.

Each takes LiberTEM's arguments and returns the detflow object that does the job,
so ``InlineJobExecutor(debug=True)`` or ``MemoryDataSet(data=..., num_partitions=4)``
in a ported script or test keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConcurrentJobExecutor",
    "DaskJobExecutor",
    "DelayedJobExecutor",
    "InlineJobExecutor",
    "MemoryDataSet",
    "PipelinedExecutor",
]


def MemoryDataSet(  # noqa: N802 - LiberTEM's class name
    *, data: Any, tileshape: Any = None, num_partitions: int | None = None, sig_dims: int | None = None,
    **kwargs: Any,
) -> Any:
    """An in-memory dataset with LiberTEM's ``MemoryDataSet`` arguments."""
    from detflow.sources.memory import MemorySource

    src = MemorySource(data, sig_dims=2 if sig_dims is None else sig_dims, tileshape=tileshape, **kwargs)
    src.partition_sizing = (None, num_partitions)
    return src


class InlineJobExecutor:
    """``InlineJobExecutor(debug=False, inline_threads=None)``: detflow's inline executor."""

    def __new__(cls, debug: bool = False, inline_threads: int | None = None, **kwargs: Any) -> Any:  # noqa: D102
        from detflow.executors.inline import InlineExecutor

        return InlineExecutor(debug=debug)

    @staticmethod
    def make_local(*args: Any, **kwargs: Any) -> Any:
        return InlineJobExecutor(*args, **kwargs)


class ConcurrentJobExecutor:
    """``ConcurrentJobExecutor.make_local(n_threads=None)``: detflow's threaded executor."""

    @staticmethod
    def make_local(n_threads: int | None = None) -> Any:
        from detflow.executors.threads import ThreadedExecutor

        return ThreadedExecutor(cpus=n_threads)


class DaskJobExecutor:
    """``DaskJobExecutor.make_local()`` / ``.connect(uri)``: detflow's dask executor."""

    @staticmethod
    def make_local(spec: Any = None, cpus: int | None = None, **kwargs: Any) -> Any:
        from detflow.executors.dask_ import DaskExecutor

        if isinstance(spec, dict):  # a LiberTEM cluster spec: count its CPU workers
            cpus = sum(1 for v in spec.values() if "cpu" in str(v).lower()) or cpus
        return DaskExecutor.make_local(cpus=cpus)

    @staticmethod
    def connect(uri: str, **kwargs: Any) -> Any:
        from detflow.executors.dask_ import DaskExecutor

        return DaskExecutor.connect(uri)


class DelayedJobExecutor:
    """``DelayedJobExecutor()``: detflow's dask.delayed executor."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        from detflow.executors.delayed import DelayedExecutor

        return DelayedExecutor()


class PipelinedExecutor:
    """``PipelinedExecutor.make_local()`` (and ``PipelinedExecutor(...)``): detflow's pipelined executor."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        from detflow.executors.pipelined import PipelinedExecutor as Pipelined

        return Pipelined(*args, **kwargs)

    @staticmethod
    def make_local(*args: Any, **kwargs: Any) -> Any:
        from detflow.executors.pipelined import PipelinedExecutor as Pipelined

        return Pipelined.make_local(*args, **kwargs)
