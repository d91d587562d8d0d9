"""The memory detector: a live stream replayed from an array, for tests and demos.

It behaves like a real detector as far as the live framework can tell: frames arrive
over time (at ``frame_rate`` frames per second, or as fast as they can be copied),
acquisitions run one at a time on a connection, active mode calls the
``on_ready_for_data`` hook before the first frame, passive mode waits for an
acquisition that "someone else" started (here: one is always pending). It can also
fail like one: ``disconnect_after`` frames, the stream stops with a
:class:`~detflow.errors.DetectorDisconnectedError`.

>>> import numpy as np
>>> from detflow import LiveContext
>>> from detflow.nodes import SumUDF
>>> data = np.ones((4, 4, 8, 8), dtype=np.uint16)
>>> with LiveContext.make_with("inline") as ctx:
...     with ctx.make_connection("memory").open(data=data) as conn:
...         aq = ctx.make_acquisition(conn=conn)          # nav_shape from the data
...         float(ctx.run_udf(dataset=aq, udf=SumUDF())["intensity"].data[0, 0])
16.0
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, DetectorDisconnectedError
from detflow.sources.live.base import Hooks, LiveAcquisition, LiveConnection, PendingAcquisition
from detflow.sources.memory import check_array

__all__ = ["MemoryAcquisition", "MemoryConnection"]


class MemoryConnection(LiveConnection):
    """A detector that streams the frames of ``data``.

    Parameters
    ----------
    data
        ``nav + sig`` shaped array (its nav shape is what the detector "announces"),
        or a stack ``(n_frames, *sig)`` with ``nav_dims=1``.
    sig_dims
        Trailing axes that make up one frame (default 2).
    frame_rate
        Frames per second to emulate; ``None``: as fast as the frames can be copied.
    disconnect_after
        Emulate a detector that disconnects after this many frames of an acquisition.
    """

    name: ClassVar[str] = "memory"

    def __init__(
        self,
        data: Any = None,
        *,
        sig_dims: int = 2,
        frame_rate: float | None = None,
        disconnect_after: int | None = None,
    ) -> None:
        super().__init__()
        arr = check_array(data, sig_dims, "memory connection", kinds="biuf")
        if frame_rate is not None and not frame_rate > 0:
            raise ConfigurationError(f"memory connection: parameter 'frame_rate' must be > 0; got {frame_rate}")
        self.sig_shape = tuple(arr.shape[-sig_dims:])
        nav = tuple(arr.shape[:-sig_dims])
        self.nav_shape = nav if len(nav) > 1 else None
        self.frames = np.ascontiguousarray(arr).reshape((-1, *self.sig_shape))
        self.frame_rate = frame_rate
        self.disconnect_after = disconnect_after

    @property
    def nimages(self) -> int:
        return len(self.frames)

    def wait_for_acquisition(self, timeout: float | None = None) -> PendingAcquisition | None:
        """An acquisition is always pending: the whole array, once more."""
        self._check_open()
        return PendingAcquisition(nimages=self.nimages, nav_shape=self.nav_shape)

    def make_acquisition(
        self,
        *,
        nav_shape: Sequence[int] | None = None,
        frames_per_partition: int | None = None,
        pending_aq: PendingAcquisition | None = None,
        hooks: Hooks | None = None,
        **kwargs: Any,
    ) -> MemoryAcquisition:
        if kwargs:
            raise ConfigurationError(f"memory acquisition: unknown parameters {', '.join(sorted(kwargs))}")
        self._check_open()
        return MemoryAcquisition(
            self, sig_shape=self.sig_shape, dtype=self.frames.dtype, nav_shape=nav_shape,
            nimages=self.nimages, detector_nav_shape=self.nav_shape,
            frames_per_partition=frames_per_partition, pending_aq=pending_aq, hooks=hooks,
        )

    def __repr__(self) -> str:
        rate = f" at {self.frame_rate:g} frames/s" if self.frame_rate else ""
        return f"<MemoryConnection {self.nimages} frames of {self.sig_shape} {self.frames.dtype}{rate}>"


class MemoryAcquisition(LiveAcquisition):
    """One replay of a :class:`MemoryConnection`'s frames."""

    conn: MemoryConnection

    def _begin(self) -> None:
        self._pos = 0
        self.ready_for_data()
        self._t0 = time.monotonic()

    def _receive(self, out: np.ndarray) -> int:
        conn = self.conn
        n = min(len(out), conn.nimages - self._pos)
        limit = conn.disconnect_after
        if limit is not None and self._pos + n > limit:
            got = max(0, limit - self._pos)
            out[:got] = conn.frames[self._pos : self._pos + got]
            self._pos += got
            raise DetectorDisconnectedError(
                f"{self.describe()}: the detector disconnected after {self._pos} of {self.meta.n_frames} frames",
                frames_received=self._pos,
            )
        if conn.frame_rate is not None:  # the frames "arrive" when the detector would have sent them
            due = self._t0 + (self._pos + n) / conn.frame_rate
            self.stopping.wait(max(0.0, due - time.monotonic()))
        out[:n] = conn.frames[self._pos : self._pos + n]
        self._pos += n
        return n
