"""The live entry point, in the manner of LiberTEM-live's ``LiveContext``.

A :class:`LiveContext` is a :class:`~detflow.api.Context` (``run_udf``,
``run_udf_iter``, ``load`` for files all work) that also connects to detectors.
Its default executor is ``pipelined``: worker processes fed partitions through
shared memory, which is what keeps up with a detector; one per core where the
workers decode the frames, one per core but the one this process needs to receive
them otherwise (:func:`live_workers`).

>>> import numpy as np
>>> from detflow import LiveContext
>>> from detflow.nodes import SumUDF
>>> with LiveContext.make_with("inline") as ctx:
...     with ctx.make_connection("memory").open(data=np.ones((6, 6, 4, 4))) as conn:
...         pending = conn.wait_for_acquisition(timeout=1)            # passive mode
...         aq = ctx.make_acquisition(conn=conn, pending_aq=pending)
...         aq.shape
Shape(nav=(6, 6), sig=(4, 4))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detflow.api import Context
from detflow.errors import ConfigurationError
from detflow.executors.base import Executor, default_cpus, make_executor
from detflow.registry import CONNECTIONS
from detflow.sources.live.base import Hooks, LiveAcquisition, LiveConnection, PendingAcquisition

__all__ = ["LiveContext", "live_workers"]


def live_workers(encoded: bool = False) -> int:
    """Worker processes for a live run.

    Raw frames (``encoded=False``: Merlin) are copied off the socket by this process at
    up to a core's worth of work, so one worker per remaining core keeps up best
    (measured on 2 cores with ``benchmarks/bench_live.py``: SumUDF at about 19,600
    frames/s with one worker against 18,200 with two). Encoded frames (DECTRIS
    bitshuffle-LZ4, ASI's sparse chunks) are only received here and decoded in the
    workers, which then do most of the work: one worker per core.
    """
    return default_cpus() if encoded else max(1, default_cpus() - 1)


class LiveContext(Context):
    """Connects to detectors and runs UDFs over their acquisitions as they arrive.

    Parameters
    ----------
    executor
        An executor object, or ``None`` for the pipelined executor with
        :func:`live_workers` processes. That one is started when it is first needed:
        at the first :meth:`make_acquisition`, with the worker count that suits the
        acquisition (one per core where the workers decode the frames), or when
        :attr:`executor` is first read.
    """

    def __init__(self, executor: Executor | None = None, *, plot_class: Any = None) -> None:
        self._executor: Executor | None = None
        super().__init__(executor if executor is not None else _LATER, plot_class=plot_class)

    @property
    def executor(self) -> Executor:
        """The executor (the default one is started here if no acquisition has started it)."""
        if self._executor is None:
            self._start_default(encoded=False)
        assert self._executor is not None
        return self._executor

    @executor.setter
    def executor(self, value: Executor) -> None:
        self._executor = None if value is _LATER else value

    def _start_default(self, encoded: bool) -> None:
        self._executor = make_executor("pipelined", cpus=live_workers(encoded))

    @classmethod
    def make_with(cls, spec: str = "pipelined", *, cpus: int | None = None, plot_class: Any = None,
                  **kwargs: Any) -> LiveContext:
        """A live context on the executor ``spec`` (default ``"pipelined"``; for it, ``cpus``
        defaults to :func:`live_workers`: without other arguments, the executor is started
        at the first acquisition, with the count that suits it)."""
        if cpus is None and spec == "pipelined":
            if not kwargs:
                return cls(plot_class=plot_class)
            cpus = live_workers()
        return cls(make_executor(spec, cpus=cpus, **kwargs), plot_class=plot_class)

    def make_connection(self, kind: str) -> type[LiveConnection]:
        """The connection class of detector ``kind``; call ``.open(...)`` on it.

        Known kinds: ``memory`` (replays an array), ``merlin`` (Quantum Detectors
        Merlin, or ``detflow sim merlin``) and ``dectris`` (a DECTRIS detector, or
        ``detflow sim dectris``).
        """
        cls = CONNECTIONS.get(kind.lower())
        if not (isinstance(cls, type) and issubclass(cls, LiveConnection)):
            raise ConfigurationError(f"detector {kind!r} is registered as {cls!r}, which is not a connection class")
        return cls

    def make_acquisition(
        self,
        *,
        conn: LiveConnection,
        nav_shape: Sequence[int] | None = None,
        frames_per_partition: int | None = None,
        pending_aq: PendingAcquisition | None = None,
        hooks: Hooks | None = None,
        **kwargs: Any,
    ) -> LiveAcquisition:
        """An acquisition on ``conn``, to pass to ``run_udf`` as the dataset.

        Active mode (no ``pending_aq``): ``hooks.on_ready_for_data`` starts the
        detector once the run listens. Passive mode: ``pending_aq`` from
        ``conn.wait_for_acquisition()``. ``nav_shape`` may hold one ``-1`` placeholder;
        see :func:`~detflow.sources.live.base.determine_nav_shape` for the order in
        which the scan shape is decided.
        """
        if not isinstance(conn, LiveConnection):
            raise ConfigurationError(
                f"make_acquisition: parameter 'conn' must be a connection from make_connection(...).open(); "
                f"got {type(conn).__name__}"
            )
        aq = conn.make_acquisition(
            nav_shape=nav_shape, frames_per_partition=frames_per_partition, pending_aq=pending_aq,
            hooks=hooks, **kwargs,
        )
        if self._executor is None:
            self._start_default(encoded=aq.encoded)
        return aq

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()

    def __enter__(self) -> LiveContext:
        return self

    def __repr__(self) -> str:
        shown = "(pipelined, started at the first acquisition)" if self._executor is None else repr(self._executor)
        return f"<LiveContext executor={shown}>"


#: stands for the default executor until it is started
_LATER: Any = object()
