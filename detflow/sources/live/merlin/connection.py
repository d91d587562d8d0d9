"""Merlin as a live detector: the connection and the acquisition.

The data port is connected when the connection opens and stays connected from one
acquisition to the next (Merlin sends each acquisition's header on the same
socket); after an acquisition that failed midway it is reconnected, so the next one
starts clean. The control port is opened on first use (:attr:`MerlinConnection.control`).

The signal shape and dtype of an acquisition come from the control port
(``GET IMAGEX``, ``IMAGEY``, ``COUNTERDEPTH``) and are checked against the first
frame header when the data starts: a detector reconfigured in between is an error
that says what changed, never a wrong image.

In a graph file::

    source: {type: merlin, params: {data_port: 6342, api_port: 6341, nav_shape: [128, 128]}}

waits (``wait_timeout`` seconds, from the start of the run) for an acquisition that
someone else starts; ``trigger: soft`` starts one itself (active: ``STARTACQUISITION``
then ``SOFTTRIGGER`` on the control port). See :func:`merlin_source`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, DetectorError, DetectorProtocolError, DetectorTimeoutError
from detflow.sources.base import FrameReader
from detflow.sources.limits import MAX_FRAME_BYTES, check_size
from detflow.sources.live.base import (
    EncodedFrames,
    Hooks,
    LiveAcquisition,
    LiveConnection,
    PendingAcquisition,
    ReadyForDataEnv,
)
from detflow.sources.live.merlin.control import MerlinControl
from detflow.sources.live.merlin.data import MerlinDataStream, RawFramesReader
from detflow.sources.live.merlin.protocol import AcquisitionHeader

__all__ = ["MerlinAcquisition", "MerlinConnection", "SoftTriggerHooks", "merlin_source"]

log = logging.getLogger("detflow.live.merlin")

#: Merlin's counter depth → the dtype its frames decode to
DEPTH_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8), 6: np.dtype(np.uint8), 12: np.dtype(np.uint16), 24: np.dtype(np.uint32),
}


class MerlinConnection(LiveConnection):
    """Data (and control) connection to a Merlin detector or ``detflow sim merlin``.

    Parameters
    ----------
    api_host, api_port
        The control port (``GET``/``SET``/``CMD``).
    data_host, data_port
        The data port.
    drain
        Discard bytes that arrive in the first 100 ms after connecting (left over
        from an earlier client).
    timeout
        Seconds of silence before a :class:`~detflow.errors.DetectorTimeoutError`,
        for every socket operation.
    """

    name: ClassVar[str] = "merlin"

    def __init__(
        self,
        *,
        api_host: str = "127.0.0.1",
        api_port: int = 6341,
        data_host: str = "127.0.0.1",
        data_port: int = 6342,
        drain: bool = False,
        timeout: float = 10.0,
    ) -> None:
        super().__init__()
        if not timeout > 0:
            raise ConfigurationError(f"merlin connection: parameter 'timeout' must be > 0 seconds; got {timeout}")
        self.api_host, self.api_port = api_host, int(api_port)
        self.timeout = float(timeout)
        self.data = MerlinDataStream(data_host, int(data_port), timeout=self.timeout, drain=drain)
        self._control: MerlinControl | None = None
        self.data.connect()

    @property
    def control(self) -> MerlinControl:
        """The control client (connected on first use), for hooks: ``conn.control.cmd("SOFTTRIGGER")``."""
        self._check_open()
        if self._control is None:
            self._control = MerlinControl(self.api_host, self.api_port, timeout=self.timeout).connect()
        return self._control

    def detector_settings(self) -> tuple[tuple[int, int], np.dtype]:
        """``(sig_shape, dtype)`` as the control port reports them now."""
        ctl = self.control
        width, height, depth = (_int_setting(ctl, name) for name in ("IMAGEX", "IMAGEY", "COUNTERDEPTH"))
        if depth not in DEPTH_DTYPES:
            raise DetectorProtocolError(
                f"merlin at {ctl.where}: COUNTERDEPTH is {depth}; Merlin counts with 1, 6, 12 or 24 bits"
            )
        if width < 1 or height < 1:
            raise DetectorProtocolError(f"merlin at {ctl.where}: IMAGEX x IMAGEY is {width}x{height}; expected >= 1")
        check_size(width * height * DEPTH_DTYPES[depth].itemsize, MAX_FRAME_BYTES,
                   field=f"frame size (IMAGEX {width} x IMAGEY {height} at COUNTERDEPTH {depth})",
                   where=f"merlin at {ctl.where}", error=DetectorProtocolError)
        return (height, width), DEPTH_DTYPES[depth]

    def wait_for_acquisition(self, timeout: float | None = None) -> PendingAcquisition | None:
        """Passive mode: the next acquisition's header, or ``None`` after ``timeout`` s of waiting."""
        self._check_open()
        with self._busy:
            try:
                header = self.data.read_acquisition_header(timeout)
            except DetectorTimeoutError:
                return None
        return PendingAcquisition(
            nimages=header.n_frames, nav_shape=header.scan_shape, detector_config=dict(header.fields),
            handle=header,
        )

    def make_acquisition(
        self,
        *,
        nav_shape: Sequence[int] | None = None,
        frames_per_partition: int | None = None,
        pending_aq: PendingAcquisition | None = None,
        hooks: Hooks | None = None,
        **kwargs: Any,
    ) -> MerlinAcquisition:
        if kwargs:
            raise ConfigurationError(f"merlin acquisition: unknown parameters {', '.join(sorted(kwargs))}")
        self._check_open()
        sig_shape, dtype = self.detector_settings()
        if pending_aq is not None:
            if not isinstance(pending_aq.handle, AcquisitionHeader):
                raise ConfigurationError(
                    "merlin acquisition: parameter 'pending_aq' must come from this connection's "
                    "wait_for_acquisition()"
                )
            nimages, detector_nav = pending_aq.nimages, pending_aq.nav_shape
        else:  # active: the acquisition has not started, so its header is not known yet
            nimages, detector_nav = _frames_to_acquire(self.control), None
        return MerlinAcquisition(
            self, sig_shape=sig_shape, dtype=dtype, nav_shape=nav_shape, nimages=nimages,
            detector_nav_shape=detector_nav, frames_per_partition=frames_per_partition,
            pending_aq=pending_aq, hooks=hooks,
        )

    def reconnect(self) -> None:
        """Drop the data connection and connect again (after a failed acquisition)."""
        self.data.close()
        self.data.connect()

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        self.data.close()
        if self._control is not None:
            self._control.close()
            self._control = None

    def __repr__(self) -> str:
        return f"<MerlinConnection data={self.data.where} control={self.api_host}:{self.api_port}>"


def _int_setting(ctl: MerlinControl, name: str) -> int:
    value = ctl.get(name)
    try:
        return int(float(value))
    except ValueError:
        raise DetectorProtocolError(f"merlin at {ctl.where}: GET {name} answered {value!r}, not a number") from None


def _frames_to_acquire(ctl: MerlinControl) -> int:
    """``NUMFRAMESTOACQUIRE`` if the detector has it set, else 0 (not known)."""
    try:
        return max(0, int(float(ctl.get("NUMFRAMESTOACQUIRE"))))
    except (DetectorError, ValueError):
        return 0


class MerlinAcquisition(LiveAcquisition):
    """One Merlin acquisition, as a dataset.

    Frames are received undecoded, straight from the socket into the partition's
    buffer (shared memory on the process executors), their MPX prefixes and sequence
    numbers checked there; the worker that reads a partition decodes it
    (:class:`~detflow.sources.live.merlin.data.RawFramesReader`), so the receiving
    thread copies nothing itself.
    """

    encoded = True
    receives_into = True
    conn: MerlinConnection
    #: seconds to wait for the acquisition header once the run listens (None: the connection's timeout)
    header_timeout: float | None = None

    def describe(self) -> str:
        return f"merlin acquisition from {self.conn.data.where}"

    def _begin(self) -> None:
        stream = self.conn.data
        if self.pending_aq is None:
            self.ready_for_data()
            header = stream.read_acquisition_header(self.header_timeout)
            if header.n_frames and header.n_frames != self.meta.n_frames:
                raise DetectorProtocolError(
                    f"{self.describe()}: the detector announced {header.n_frames} frames, but the scan "
                    f"{self.meta.nav_shape} holds {self.meta.n_frames}; set NUMFRAMESTOACQUIRE or nav_shape to match"
                )
        elif stream.header is not self.pending_aq.handle:
            raise ConfigurationError(
                f"{self.describe()}: the pending acquisition is no longer the current one (another acquisition "
                "was started or waited for since); call wait_for_acquisition() again"
            )
        layout = stream.first_frame_layout
        if layout.sig_shape != self.meta.sig_shape or layout.dtype != self.meta.dtype:
            raise DetectorProtocolError(
                f"{self.describe()}: the control port reports {self.meta.sig_shape[1]}x{self.meta.sig_shape[0]} "
                f"frames of {self.meta.dtype} (IMAGEX, IMAGEY, COUNTERDEPTH), but the first frame header says "
                f"{layout.describe()}, decoding to {layout.sig_shape[1]}x{layout.sig_shape[0]} {layout.dtype}"
            )

    def _receive(self, out: np.ndarray) -> int:
        return self.conn.data.read_frames(out)

    def _receive_encoded(self, n: int, allocate: Any = None) -> EncodedFrames:
        stream = self.conn.data
        size = stream.raw_bytes(n)
        buf = np.empty(size, dtype=np.uint8) if allocate is None else allocate(size)
        rows, data_offset = stream.raw_rows(buf, n)
        stride = rows.strides[0]
        where, error = stream.read_raw(rows)
        del rows
        if error is not None:  # its traceback's frames hold views of the (shared) buffer
            traceback.clear_frames(error.__traceback__)
        offsets = np.where(where < 0, -1, data_offset + where * stride)
        index = np.append(offsets, 0)  # one more entry than frames, as the base class counts them
        return EncodedFrames([], self._make_reader, error, packed=(buf, index))

    def _make_reader(self, payload: FrameReader, offsets: np.ndarray, base: int, total: int) -> FrameReader:
        layout = self.conn.data.first_frame_layout
        return RawFramesReader(payload, offsets[:-1], layout, base, total)

    def _end(self, ok: bool) -> None:
        stream = self.conn.data
        if stream.gaps:
            lost = sum(got - expected for expected, got in stream.gaps)
            log.warning("%s: %d frame(s) never arrived (sequence gaps %s); their frames are zero",
                        self.describe(), lost, stream.gaps[:10])
        if not ok and not self.conn.closed:
            try:  # the socket is somewhere inside an acquisition: start the next one clean
                self.conn.reconnect()
            except OSError as err:
                log.warning("%s: could not reconnect the data port after the failure: %s", self.describe(), err)


class SoftTriggerHooks(Hooks):
    """Active mode without hardware: ``CMD STARTACQUISITION`` then ``CMD SOFTTRIGGER``."""

    def on_ready_for_data(self, env: ReadyForDataEnv) -> None:
        control = env.aq.conn.control  # type: ignore[attr-defined]
        control.cmd("STARTACQUISITION")
        control.cmd("SOFTTRIGGER")


def merlin_source(
    *,
    data_host: str = "127.0.0.1",
    data_port: int = 6342,
    api_host: str = "127.0.0.1",
    api_port: int = 6341,
    nav_shape: Sequence[int] | None = None,
    trigger: str = "none",
    wait_timeout: float = 60.0,
    timeout: float = 10.0,
    drain: bool = False,
) -> MerlinAcquisition:
    """A Merlin acquisition for a graph's source node; it owns its connection.

    ``trigger: none`` (default) waits up to ``wait_timeout`` s for an acquisition
    that someone else starts. With a complete ``nav_shape`` it waits only once the
    run starts, so validating the graph (``detflow validate``, ``detflow serve``)
    neither blocks nor takes an acquisition; without one it waits right away, since
    the acquisition header decides the scan shape (passive mode). ``trigger: soft``
    arms and soft-triggers the detector itself once the run is listening (active
    mode; ``nav_shape`` or ``NUMFRAMESTOACQUIRE`` must give the frame count).
    """
    if trigger not in ("none", "soft"):
        raise ConfigurationError(f"merlin source: parameter 'trigger' must be 'none' or 'soft'; got {trigger!r}")
    conn = MerlinConnection(api_host=api_host, api_port=api_port, data_host=data_host, data_port=data_port,
                            drain=drain, timeout=timeout)
    complete = nav_shape is not None and -1 not in tuple(nav_shape)
    try:
        if trigger == "soft":
            aq = conn.make_acquisition(nav_shape=nav_shape, hooks=SoftTriggerHooks())
        elif complete:  # someone else starts it; its header is read when the run listens
            aq = conn.make_acquisition(nav_shape=nav_shape)
            aq.header_timeout = wait_timeout
        else:
            pending = conn.wait_for_acquisition(wait_timeout)
            if pending is None:
                raise DetectorTimeoutError(
                    f"merlin source: no acquisition started at {conn.data.where} within {wait_timeout:g} s "
                    "(parameter 'wait_timeout'); start one, or use trigger: soft"
                )
            aq = conn.make_acquisition(nav_shape=nav_shape, pending_aq=pending)
    except BaseException:
        conn.close()
        raise
    aq.owns_connection = True
    return aq
