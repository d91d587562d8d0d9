"""ASI Timepix3 as a live detector: the connection ``LiveContext`` makes, and its acquisitions.

Passive mode only, as the detector is configured and started from outside (Serval,
Accos): ``conn.wait_for_acquisition(timeout)`` reads the next AcquisitionStart and
returns a :class:`~detflow.sources.live.base.PendingAcquisition` whose ``nav_shape``
and sig shape came in band; ``ctx.make_acquisition(conn=conn, pending_aq=pending)``
processes it. A ``nav_shape`` that disagrees with the stream's is an error.

Partitions carry the frames as CSR (values, then int32 pixel indices, in one payload,
shared memory for the process executors) and an ``indptr``; a worker's
``partition.read()`` densifies a block at a time, ``partition.read_sparse()`` hands
the CSR block over as it is (:mod:`detflow.sources.csr`).

**Memory and back-pressure.** The receiving thread holds the partition it fills plus
at most :data:`~detflow.sources.live.base.PREFETCH` (3) finished ones waiting for the
executor, and the executor holds those it is working on; when all are taken the
thread stops reading the socket, the kernel's socket buffers (a few MiB) fill and the
detector's ``send`` waits. Nothing is dropped, and what is buffered is bounded by
``(PREFETCH + 1 + partitions in flight) x frames_per_partition`` frames of events.

In a graph file::

    source: {type: asi_tpx3, params: {data_port: 8283, wait_timeout: 60}}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, DetectorTimeoutError
from detflow.sources.base import FrameReader
from detflow.sources.csr import CsrPayloadReader, payload_indices_offset
from detflow.sources.live.asi_tpx3.data import CsrStream
from detflow.sources.live.asi_tpx3.protocol import AcquisitionStart
from detflow.sources.live.base import EncodedFrames, Hooks, LiveAcquisition, LiveConnection, PendingAcquisition

__all__ = ["AsiTpx3Acquisition", "AsiTpx3Connection", "asi_tpx3_source"]

#: frames per partition when none is given: events are sparse, so partitions hold many
#: more frames than a dense detector's (4096 frames of a 256x256 sensor at ~1000
#: events per frame are ~32 MiB of events)
DEFAULT_FRAMES_PER_PARTITION = 4096


class AsiTpx3Connection(LiveConnection):
    """The data connection to an ASI Timepix3 detector or ``detflow sim asi-tpx3``.

    Parameters
    ----------
    data_host, data_port
        Where the detector serves its CSR stream.
    timeout
        Seconds of silence on the stream before a DetectorTimeoutError.

    Examples
    --------
    >>> import numpy as np
    >>> from detflow import LiveContext
    >>> from detflow.nodes import SumUDF
    >>> from detflow.sources.live.asi_tpx3.sim import AsiTpx3Simulator
    >>> frames = np.zeros((4, 4, 16, 16), np.uint16); frames[..., 3, 5] = 2
    >>> with AsiTpx3Simulator(frames, port=0) as sim, LiveContext.make_with("inline") as ctx:
    ...     with ctx.make_connection("asi_tpx3").open(data_port=sim.port) as conn:
    ...         pending = conn.wait_for_acquisition(10)
    ...         aq = ctx.make_acquisition(conn=conn, pending_aq=pending)
    ...         res = ctx.run_udf(dataset=aq, udf=SumUDF())
    >>> aq.shape.nav, float(res["intensity"].data[3, 5])
    ((4, 4), 32.0)
    """

    name: ClassVar[str] = "asi_tpx3"

    def __init__(self, *, data_host: str = "127.0.0.1", data_port: int = 8283, timeout: float = 10.0) -> None:
        super().__init__()
        if not timeout > 0:
            raise ConfigurationError(f"asi_tpx3 connection: parameter 'timeout' must be > 0 seconds; got {timeout}")
        self.timeout = float(timeout)
        self.stream = CsrStream(data_host, int(data_port), timeout=self.timeout)

    def wait_for_acquisition(self, timeout: float | None = None) -> PendingAcquisition | None:
        """The next acquisition the detector starts, or ``None`` after ``timeout`` s of silence."""
        self._check_open()
        with self._busy:
            try:
                head = self.stream.read_acquisition_start(timeout)
            except DetectorTimeoutError:
                if self.stream.partial_bytes:
                    raise
                return None
        config = {"version": head.version, "sequence": head.sequence, "sig_shape": head.sig_shape,
                  "nav_shape": head.nav_shape}
        return PendingAcquisition(nimages=head.nav_shape[0] * head.nav_shape[1], nav_shape=head.nav_shape,
                                  detector_config=config, handle=head)

    def make_acquisition(
        self,
        *,
        nav_shape: Sequence[int] | None = None,
        frames_per_partition: int | None = None,
        pending_aq: PendingAcquisition | None = None,
        hooks: Hooks | None = None,
        dtype: Any = "uint32",
        **kwargs: Any,
    ) -> AsiTpx3Acquisition:
        """A passive acquisition of ``pending_aq``; ``dtype`` is what the values are received as."""
        if kwargs:
            raise ConfigurationError(f"asi_tpx3 acquisition: unknown parameters {', '.join(sorted(kwargs))}")
        self._check_open()
        if pending_aq is None or not isinstance(pending_aq.handle, AcquisitionStart):
            raise ConfigurationError(
                "asi_tpx3 acquisition: passive mode only (the detector is started from outside): pass "
                "pending_aq=conn.wait_for_acquisition(timeout)")
        head = pending_aq.handle
        if nav_shape is not None:
            hint = tuple(int(n) for n in nav_shape)
            if len(hint) != 2 or any(h not in (-1, s) for h, s in zip(hint, head.nav_shape, strict=True)):
                raise ConfigurationError(
                    f"asi_tpx3 acquisition: parameter 'nav_shape' is {hint}, but the detector announced a "
                    f"{head.nav_shape} scan in its AcquisitionStart; leave nav_shape out, or pass {head.nav_shape}")
        dt = np.dtype(dtype)
        if dt.kind not in "uif":
            raise ConfigurationError(f"asi_tpx3 acquisition: parameter 'dtype' must be numeric; got {dt}")
        return AsiTpx3Acquisition(
            self, sig_shape=head.sig_shape, dtype=dt, nav_shape=head.nav_shape, nimages=pending_aq.nimages,
            frames_per_partition=frames_per_partition if frames_per_partition is not None
            else min(DEFAULT_FRAMES_PER_PARTITION, pending_aq.nimages),
            pending_aq=pending_aq, hooks=hooks,
        )

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        self.stream.close()

    def __repr__(self) -> str:
        return f"<AsiTpx3Connection {self.stream.where}>"


class AsiTpx3Acquisition(LiveAcquisition):
    """One ASI Timepix3 acquisition, as a dataset of sparse frames."""

    encoded = True
    receives_into = True
    conn: AsiTpx3Connection

    def describe(self) -> str:
        return f"asi_tpx3 acquisition from {self.conn.stream.where}"

    def _begin(self) -> None:
        if self.conn.stream.acquisition is not (self.pending_aq.handle if self.pending_aq else None):
            raise ConfigurationError(
                f"{self.describe()}: the pending acquisition is no longer the current one (another was waited "
                "for since); call wait_for_acquisition() again")

    def _receive(self, out: np.ndarray) -> int:  # pragma: no cover - encoded: _receive_encoded is used
        raise NotImplementedError

    def _receive_encoded(self, n: int, allocate: Any = None) -> EncodedFrames:
        """The next ``n`` frames, their values and indices written straight into the
        partition's payload (``allocate``: shared memory on the process executors)."""
        stream = self.conn.stream
        vdt = self.meta.dtype
        block, error = stream.read_block(n, vdt)
        nnz = block.nnz
        ioff = payload_indices_offset(nnz, vdt)
        size = max(8, ioff + 4 * nnz)
        payload = np.empty(size, dtype=np.uint8) if allocate is None else allocate(size)
        if nnz:
            np.concatenate(block.values, out=payload[: nnz * vdt.itemsize].view(vdt), casting="unsafe")
            np.concatenate(block.indices, out=payload[ioff: ioff + 4 * nnz].view(np.int32), casting="unsafe")
        indptr = np.zeros(block.n_frames + 1, dtype=np.int64)
        if block.n_frames:
            np.concatenate(block.indptr, out=indptr[1:])
        # fewer than n frames and no error: an early AcquisitionEnd, which the base class reports
        return EncodedFrames([], self._make_reader, error, packed=(payload, indptr))

    def _make_reader(self, payload: FrameReader, offsets: np.ndarray, base: int, total: int) -> FrameReader:
        fs = self.meta.frame_size
        return CsrPayloadReader(payload, offsets, value_dtype=self.meta.dtype, frame_size=fs, base_frame=base // fs,
                                total=total // fs)

    def _end(self, ok: bool) -> None:
        stream = self.conn.stream
        if ok and not self.conn.closed:
            stream.finish()  # read on to the AcquisitionEnd, ready for the next acquisition
        else:
            stream.acquisition = None


def asi_tpx3_source(*, data_host: str = "127.0.0.1", data_port: int = 8283, nav_shape: Sequence[int] | None = None,
                    frames_per_partition: int | None = None, wait_timeout: float = 60.0,
                    timeout: float = 10.0) -> AsiTpx3Acquisition:
    """An ASI Timepix3 acquisition for a graph's source node; it owns its connection.

    Waits up to ``wait_timeout`` s for the detector to start an acquisition.
    """
    conn = AsiTpx3Connection(data_host=data_host, data_port=data_port, timeout=timeout)
    try:
        pending = conn.wait_for_acquisition(wait_timeout)
        if pending is None:
            raise DetectorTimeoutError(f"asi_tpx3 source: no acquisition started at {conn.stream.where} within "
                                       f"{wait_timeout:g} s (parameter 'wait_timeout')")
        aq = conn.make_acquisition(nav_shape=nav_shape, pending_aq=pending, frames_per_partition=frames_per_partition)
    except BaseException:
        conn.close()
        raise
    aq.owns_connection = True
    return aq
