"""One DECTRIS acquisition (a series), as a dataset whose workers decode the images.

**Active mode** (no ``pending_aq``): when the run starts, the acquisition sets the
stream to ``mode: enabled``, ``header_detail: basic``, applies the controller's
settings (trigger mode and image count, see
:class:`~.control.DectrisActiveController`), arms the detector (the answer is the
series id), calls ``hooks.on_ready_for_data`` (where the scan, or a software trigger,
is started: :class:`TriggerHooks` triggers ``inte``/``ints`` series itself), and then
waits for the header of *that* series. When the series is over (or failed) it
disarms the detector.

**Passive mode**: the header came with ``conn.wait_for_acquisition()``; nothing is
sent to the detector.

The signal shape and dtype come from the REST API in active mode
(``x_pixels_in_detector``, ``y_pixels_in_detector``, ``bit_depth_image``) and from
the series header in passive mode, and the header (and every image's
``dimage_d-1.0``) is checked against them. Partitions carry the compressed blobs
(:attr:`encoded`); the workers decode them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.errors import ConfigurationError, DetectorError, DetectorProtocolError
from detflow.sources.base import FrameReader
from detflow.sources.live.base import EncodedFrames, Hooks, LiveAcquisition, ReadyForDataEnv
from detflow.sources.live.dectris.codec import EncodedFramesReader
from detflow.sources.live.dectris.control import DectrisActiveController
from detflow.sources.live.dectris.data import SeriesHeader

if TYPE_CHECKING:
    from detflow.sources.live.dectris.connection import DectrisConnection

__all__ = ["DectrisAcquisition", "TriggerHooks"]

log = logging.getLogger("detflow.live.dectris")


class DectrisAcquisition(LiveAcquisition):
    """One DECTRIS series, as a dataset (``ctx.make_acquisition(conn=dectris_conn, ...)``)."""

    encoded = True
    conn: DectrisConnection
    #: seconds to wait for the series header once the run listens (None: the connection's timeout)
    header_timeout: float | None = None
    #: no pending acquisition, yet someone else arms: wait for the next series when the run starts
    listen_only: bool = False

    def __init__(self, conn: Any, *, controller: DectrisActiveController | None = None, **kwargs: Any) -> None:
        super().__init__(conn, **kwargs)
        self.controller = controller
        self.series: int | None = None
        self.header: SeriesHeader | None = kwargs["pending_aq"].handle if kwargs.get("pending_aq") else None

    def describe(self) -> str:
        return f"dectris acquisition from {self.conn.stream.where}"

    def _begin(self) -> None:
        stream = self.conn.stream
        if self.listen_only:
            self.header = stream.read_header(self.header_timeout)
        elif self.pending_aq is None:
            api = self.conn.api
            api.set_stream_config("mode", "enabled")
            api.set_stream_config("header_detail", "basic")
            if self.controller is not None:
                self.controller.apply(api, self.meta.n_frames)
            self.series = api.arm()
            self.ready_for_data()
            self.header = stream.read_header(self.header_timeout, series=self.series)
        else:
            if stream.header is not self.header:
                raise ConfigurationError(
                    f"{self.describe()}: the pending acquisition is no longer the current one (another series was "
                    "started or waited for since); call wait_for_acquisition() again")
            self.series = self.header.series if self.header is not None else None
        header = self.header
        assert header is not None
        if header.sig_shape != self.meta.sig_shape or header.dtype != self.meta.dtype:
            raise DetectorProtocolError(
                f"{self.describe()}: the detector reports {self.meta.sig_shape[1]}x{self.meta.sig_shape[0]} "
                f"{self.meta.dtype} images, but series {header.series} announces "
                f"{header.sig_shape[1]}x{header.sig_shape[0]} {header.dtype}")
        if header.n_images != self.meta.n_frames:
            raise DetectorProtocolError(
                f"{self.describe()}: series {header.series} will send {header.n_images} images "
                f"({_count_settings(header)}), but the scan {self.meta.nav_shape} holds {self.meta.n_frames}; "
                "pass controller=conn.get_active_controller(trigger_mode=...) to set the count from the scan")

    def _receive(self, out: np.ndarray) -> int:  # pragma: no cover - encoded: _receive_encoded is used
        raise NotImplementedError

    def _receive_encoded(self, n: int) -> EncodedFrames:
        blobs: list[Any] = []
        error: DetectorError | None = None
        stream = self.conn.stream
        try:
            stream.read_blobs(n, blobs)
        except DetectorError as err:
            error = err
        return EncodedFrames(blobs, self._make_reader, error)

    def _make_reader(self, payload: FrameReader, offsets: np.ndarray, base: int, total: int) -> FrameReader:
        return EncodedFramesReader(payload, offsets, encoding=self.conn.stream.encoding or "<", dtype=self.meta.dtype,
                                   frame_size=self.meta.frame_size, base=base, total=total, where=self.describe())

    def _end(self, ok: bool) -> None:
        if self.pending_aq is not None or self.listen_only or self.conn.closed:
            return
        try:  # leave the detector idle for the next series, whatever happened to this one
            self.conn.api.disarm()
        except DetectorError as err:
            if ok:
                raise
            log.warning("%s: could not disarm the detector after the failure: %s", self.describe(), err)


def _count_settings(header: SeriesHeader) -> str:
    c = header.config
    if header.format == "cbor":
        return f"number_of_images {c.get('number_of_images')} in its start message"
    return f"{c.get('trigger_mode')}, nimages {c.get('nimages')}, ntrigger {c.get('ntrigger')}"


class TriggerHooks(Hooks):
    """Active mode without external triggers: software-trigger ``inte`` and ``ints`` series.

    ``inte`` gets one ``trigger`` per image, ``ints`` one per ``ntrigger``; external
    trigger modes (``exte``, ``exts``) are left to the hardware (or the simulator).
    """

    def __init__(self, count_time: float | None = None) -> None:
        self.count_time = count_time

    def on_ready_for_data(self, env: ReadyForDataEnv) -> None:
        api = env.aq.conn.api  # type: ignore[attr-defined]
        mode = str(api.get_config("trigger_mode"))
        if mode not in ("inte", "ints"):
            return
        for _ in range(int(api.get_config("ntrigger"))):
            api.trigger(self.count_time if mode == "inte" else None)
