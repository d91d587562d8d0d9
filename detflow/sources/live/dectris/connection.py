"""DECTRIS as a live detector: the connection that ``LiveContext`` makes.

The ZeroMQ stream is connected when the connection opens and stays connected from one
series to the next (the detector sends every series on it); the REST API is used per
request (:attr:`DectrisConnection.api`). Passive mode only listens: someone else
configures and arms the detector. Active mode configures, arms and (with
:class:`~.acquisition.TriggerHooks`) triggers it; see :mod:`.acquisition`.

In a graph file::

    source: {type: dectris, params: {api_port: 8910, data_port: 9999, nav_shape: [128, 128]}}

waits (``wait_timeout`` seconds) for a series someone else arms; ``trigger: exte`` (or
``inte``, ``exts``, ``ints``) arms one itself in that trigger mode, with the image
count of the scan, and software-triggers the internal modes. See :func:`dectris_source`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from detflow.errors import ConfigurationError, DetectorTimeoutError
from detflow.sources.live.base import Hooks, LiveConnection, PendingAcquisition
from detflow.sources.live.dectris.acquisition import DectrisAcquisition, TriggerHooks
from detflow.sources.live.dectris.codec import image_dtype
from detflow.sources.live.dectris.control import TRIGGER_MODES, DectrisActiveController, SimplonClient
from detflow.sources.live.dectris.data import DectrisStream, SeriesHeader

__all__ = ["DectrisConnection", "dectris_source"]


class DectrisConnection(LiveConnection):
    """Stream (and REST) connection to a DECTRIS detector or ``detflow sim dectris``.

    Parameters
    ----------
    api_host, api_port
        The SIMPLON REST API.
    data_host, data_port
        The ZeroMQ stream.
    timeout
        Seconds of silence on the stream before a
        :class:`~detflow.errors.DetectorTimeoutError`, and each REST request's limit.

    Examples
    --------
    >>> import numpy as np
    >>> from detflow import LiveContext
    >>> from detflow.nodes import SumUDF
    >>> from detflow.sources.live.dectris.sim import DectrisSimulator
    >>> frames = np.ones((16, 32, 32), np.uint16)
    >>> with DectrisSimulator(frames, api_port=0, data_port=0) as sim, LiveContext.make_with("inline") as ctx:
    ...     with ctx.make_connection("dectris").open(api_port=sim.api_port, data_port=sim.data_port) as conn:
    ...         aq = ctx.make_acquisition(conn=conn, nav_shape=(4, 4))       # active: detflow arms
    ...         res = ctx.run_udf(dataset=aq, udf=SumUDF())
    >>> float(res["intensity"].data.sum())
    16384.0
    """

    name: ClassVar[str] = "dectris"

    def __init__(
        self,
        *,
        api_host: str = "127.0.0.1",
        api_port: int = 8910,
        data_host: str = "127.0.0.1",
        data_port: int = 9999,
        timeout: float = 10.0,
    ) -> None:
        super().__init__()
        if not timeout > 0:
            raise ConfigurationError(f"dectris connection: parameter 'timeout' must be > 0 seconds; got {timeout}")
        self.timeout = float(timeout)
        self._api = SimplonClient(api_host, int(api_port), timeout=self.timeout)
        self.stream = DectrisStream(data_host, int(data_port), timeout=self.timeout)

    @property
    def api(self) -> SimplonClient:
        """The REST client, for hooks and controllers: ``conn.api.trigger()``."""
        self._check_open()
        return self._api

    def get_active_controller(
        self,
        trigger_mode: str | None = None,
        *,
        count_time: float | None = None,
        frame_time: float | None = None,
        compression: str | None = None,
    ) -> DectrisActiveController:
        """Settings to apply when an active acquisition starts (``make_acquisition(controller=...)``).

        ``trigger_mode`` is one of ``exte``, ``inte``, ``exts``, ``ints``; the image
        count follows from the scan (``ntrigger`` for ``exte``/``inte``, ``nimages``
        for ``exts``/``ints``). ``None`` leaves a setting as it is.
        """
        return DectrisActiveController(trigger_mode=trigger_mode, count_time=count_time, frame_time=frame_time,
                                       compression=compression)

    def wait_for_acquisition(self, timeout: float | None = None) -> PendingAcquisition | None:
        """Passive mode: the next series' header, or ``None`` after ``timeout`` s of waiting."""
        self._check_open()
        with self._busy:
            try:
                header = self.stream.read_header(timeout)
            except DetectorTimeoutError:
                return None
        return PendingAcquisition(nimages=header.n_images, detector_config=dict(header.config), handle=header)

    def make_acquisition(
        self,
        *,
        nav_shape: Sequence[int] | None = None,
        frames_per_partition: int | None = None,
        pending_aq: PendingAcquisition | None = None,
        hooks: Hooks | None = None,
        controller: DectrisActiveController | None = None,
        **kwargs: Any,
    ) -> DectrisAcquisition:
        if kwargs:
            raise ConfigurationError(f"dectris acquisition: unknown parameters {', '.join(sorted(kwargs))}")
        self._check_open()
        if pending_aq is not None:
            if not isinstance(pending_aq.handle, SeriesHeader):
                raise ConfigurationError("dectris acquisition: parameter 'pending_aq' must come from this "
                                         "connection's wait_for_acquisition()")
            if controller is not None:
                raise ConfigurationError("dectris acquisition: a controller configures an active acquisition; "
                                         "a pending one (passive mode) was armed by someone else")
            header = pending_aq.handle
            sig_shape, dtype, nimages = header.sig_shape, header.dtype, header.n_images
        else:
            sig_shape, depth = self.api.frame_settings()
            dtype = image_dtype(f"uint{depth}", f"dectris at {self.api.where}: bit_depth_image")
            complete = nav_shape is not None and -1 not in tuple(nav_shape)
            # with a controller and a complete scan, the count is set from the scan at the start
            nimages = 0 if controller is not None and complete else self.api.configured_images()
        return DectrisAcquisition(
            self, sig_shape=sig_shape, dtype=dtype, nav_shape=nav_shape, nimages=nimages,
            frames_per_partition=frames_per_partition, pending_aq=pending_aq, hooks=hooks, controller=controller,
        )

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        self.stream.close()

    def __repr__(self) -> str:
        return f"<DectrisConnection data={self.stream.where} api={self._api.where}>"


def dectris_source(
    *,
    api_host: str = "127.0.0.1",
    api_port: int = 8910,
    data_host: str = "127.0.0.1",
    data_port: int = 9999,
    nav_shape: Sequence[int] | None = None,
    trigger: str = "none",
    wait_timeout: float = 60.0,
    timeout: float = 10.0,
) -> DectrisAcquisition:
    """A DECTRIS acquisition for a graph's source node; it owns its connection.

    ``trigger: none`` (default) waits up to ``wait_timeout`` s for a series that
    someone else arms (with a complete ``nav_shape``, only once the run starts).
    ``trigger: exte | inte | exts | ints`` arms one itself in that mode once the run
    listens, with the scan's image count, and software-triggers ``inte``/``ints``.
    """
    if trigger != "none" and trigger not in TRIGGER_MODES:
        raise ConfigurationError(f"dectris source: parameter 'trigger' must be 'none' or one of "
                                 f"{', '.join(TRIGGER_MODES)}; got {trigger!r}")
    conn = DectrisConnection(api_host=api_host, api_port=api_port, data_host=data_host, data_port=data_port,
                             timeout=timeout)
    complete = nav_shape is not None and -1 not in tuple(nav_shape)
    try:
        if trigger != "none":
            aq = conn.make_acquisition(nav_shape=nav_shape, hooks=TriggerHooks(),
                                       controller=conn.get_active_controller(trigger))
        elif complete:
            aq = _later_passive(conn, nav_shape, wait_timeout)
        else:
            pending = conn.wait_for_acquisition(wait_timeout)
            if pending is None:
                raise DetectorTimeoutError(
                    f"dectris source: no series started at {conn.stream.where} within {wait_timeout:g} s "
                    "(parameter 'wait_timeout'); arm the detector, or use trigger: exte")
            aq = conn.make_acquisition(nav_shape=nav_shape, pending_aq=pending)
    except BaseException:
        conn.close()
        raise
    aq.owns_connection = True
    return aq


def _later_passive(conn: DectrisConnection, nav_shape: Sequence[int] | None, wait_timeout: float) -> DectrisAcquisition:
    """A passive acquisition whose header is read when the run starts (validation takes no series)."""
    api = conn.api
    sig_shape, depth = api.frame_settings()
    aq = DectrisAcquisition(conn, sig_shape=sig_shape, dtype=image_dtype(f"uint{depth}"), nav_shape=nav_shape,
                            nimages=0, pending_aq=None, hooks=None)
    aq.listen_only = True
    aq.header_timeout = wait_timeout
    return aq
