"""The dashboard: a Panel app that runs a graph and shows its results filling in.

``detflow serve GRAPH.yaml`` (or :func:`detflow.dashboard.serve`) starts a Panel server
on 127.0.0.1. Every browser tab is a Panel session that shows, for the one run that
all sessions share (a :class:`~detflow.dashboard.controller.RunController`):

* the graph as text, start / stop / re-run buttons, the run's status;
* a progress bar of frames done out of frames in the ROI (the count ``detflow run``
  and ``run_udf(progress=True)`` show);
* one image with a colour bar per 2-D result (HoloViews ``DynamicMap`` fed by a
  ``Pipe``): the latest frame (a ``signal_monitor`` node, added as ``latest_frame``
  when the graph has none), the sum frame (a ``sum`` node, if the graph has one), and
  every other 2-D result, NaN (blank) where nothing is computed yet.

Each session polls the controller's snapshot from a periodic callback on its own
document (so Bokeh's document lock is held by the thread that changes it) and redraws
only images whose version changed. Stopping the server stops the run after the
partition in flight and leaves the graph's sinks consistent.

Panel, Bokeh and HoloViews are imported only here (and in ``holoviews_``).
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import logging
import os
import secrets
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

from detflow.dashboard.controller import RunController
from detflow.errors import ConfigurationError, import_optional

if TYPE_CHECKING:
    from detflow.executors.base import Executor
    from detflow.graph import Graph
    from detflow.graph.run import RunContext

__all__ = ["Dashboard", "DashboardServer", "serve"]

log = logging.getLogger("detflow")


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on at ``address`` right now."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _button(label: str, color: str) -> Any:
    import panel as pn

    params = pn.widgets.Button.param
    if "color" in params and "label" in params:  # Panel >= 1.9 names them so
        return pn.widgets.Button(label=label, color=color, width=80)
    return pn.widgets.Button(name=label, button_type=color, width=80)


#: The PNG button: the page's layout (every plot, as shown) drawn into one PNG by BokehJS,
#: downloaded as detflow-dashboard.png; the data URL stays in window.detflowSnapshot.
_SNAPSHOT_JS = """
const root = [...window.Bokeh.index][0];
const url = root.export("png").canvas.toDataURL("image/png");
window.detflowSnapshot = url;
const link = document.createElement("a");
link.href = url;
link.download = "detflow-dashboard.png";
document.body.appendChild(link);
link.click();
link.remove();
"""


class Dashboard:
    """The dashboard of one graph: a shared :class:`RunController` and a Panel app.

    Parameters
    ----------
    graph
        The graph to run (validated now: a graph that cannot run fails here).
    executor, context, max_rate, monitor
        As for :class:`~detflow.dashboard.controller.RunController`.
    refresh_ms
        How often each browser session looks for new data.
    title
        The page title; default: the graph's name.

    Examples
    --------
    >>> import numpy as np
    >>> from detflow.graph import Graph
    >>> g = Graph("demo")
    >>> g.source("memory", data=np.ones((4, 4, 8, 8)))
    'source'
    >>> g.partition(num_partitions=2)
    'partition'
    >>> g.udf("sum")
    'sum'
    >>> with Dashboard(g, executor="inline").serve(port=0, show=False, threaded=True) as server:
    ...     server.dashboard.controller.wait(timeout=60)
    'finished'
    """

    def __init__(
        self,
        graph: Graph,
        *,
        executor: str | Executor | None = None,
        context: RunContext | None = None,
        max_rate: float | None = 4.0,
        monitor: bool = True,
        refresh_ms: int = 250,
        title: str | None = None,
    ) -> None:
        import_optional("panel", "the dashboard")  # before anything starts: the message names the extra
        self.controller = RunController(graph, executor=executor, context=context, max_rate=max_rate,
                                        monitor=monitor)
        self.graph = self.controller.graph
        self.refresh_ms = refresh_ms
        self.title = title or f"detflow: {self.graph.name}"

    # --- one browser session ----------------------------------------------------------
    def app(self) -> Any:
        """The Panel layout of one session (called by the server for each browser tab)."""
        import panel as pn

        from detflow.sinks.plots.holoviews_ import HoloViewsPlot

        ctl = self.controller
        plots = [HoloViewsPlot(channel, ctl.info) for channel in ctl.channels]
        seen = {plot.channel.key: 0 for plot in plots}
        snap = ctl.snapshot()
        progress = pn.indicators.Progress(value=0, max=max(snap.frames_total, 1),
                                          sizing_mode="stretch_width", bar_color="primary")
        progress_text = pn.pane.Str("", name="progress-text", css_classes=["detflow-progress"])
        status = pn.pane.Str("", name="status", css_classes=["detflow-status"])
        start = _button("Start", "primary")
        stop = _button("Stop", "warning")
        rerun = _button("Re-run", "default")
        png = _button("PNG", "default")
        png.js_on_click(code=_SNAPSHOT_JS)
        start.on_click(lambda event: ctl.start())
        stop.on_click(lambda event: ctl.stop(wait=False))
        rerun.on_click(lambda event: ctl.rerun())

        def refresh() -> None:
            snap = ctl.snapshot()
            progress.max = max(snap.frames_total, 1)
            progress.value = min(snap.frames_done, progress.max)
            rate = f", {snap.frame_rate:,.0f} frames/s" if snap.frame_rate else ""
            progress_text.object = f"{snap.frames_done} / {snap.frames_total} frames{rate}"
            text = snap.status if snap.error is None else f"{snap.status}: {snap.error}"
            status.object = f"run {snap.run_id}: {text}" if snap.run_id else "not started"
            busy = snap.status in ("running", "stopping")
            start.disabled = busy
            stop.disabled = snap.status != "running"
            for plot in plots:
                image = snap.images.get(plot.channel.key)
                if image is not None and image.version != seen[plot.channel.key]:
                    seen[plot.channel.key] = image.version
                    plot.new_data(image.data, frames_done=image.frames_done, final=image.final)
                elif image is None and seen[plot.channel.key]:  # a new run: blank again
                    seen[plot.channel.key] = 0
                    plot.new_data(plot.pipe.data * float("nan"), frames_done=0)

        refresh()
        pn.state.add_periodic_callback(refresh, period=self.refresh_ms)
        sidebar = pn.Column(
            pn.pane.Markdown(f"## {self.graph.name}"),
            pn.Row(start, stop, rerun, png),
            progress, progress_text, status,
            # escaped here too: the page renders the pane's text as HTML, where "<array ...>" would vanish as a tag
            pn.pane.Str(html.escape(str(self.graph)), name="graph", styles={"overflow-x": "auto"}, max_width=380),
            width=380,
        )
        images = pn.FlexBox(*[pn.pane.HoloViews(plot.dmap, name=plot.channel.key) for plot in plots])
        return pn.Row(sidebar, images, sizing_mode="stretch_width")

    # --- serving ------------------------------------------------------------------------
    def serve(self, *, port: int = 5006, address: str = "127.0.0.1", show: bool = True,
              autostart: bool = True, threaded: bool = False, password: str | None = None) -> DashboardServer:
        """Serve the dashboard at ``http://{address}:{port}/`` (``port=0``: a free one).

        The dashboard controls a run and shows its data, so on any address but
        loopback a ``password`` is required (Panel's basic auth: the page asks for it);
        on loopback it is optional.

        With ``threaded=False`` (the command line) this blocks until Ctrl-C or SIGTERM,
        then stops the run and the server. With ``threaded=True`` the server runs in a
        background thread; the returned :class:`DashboardServer` stops it (also as a
        context manager).
        """
        server = DashboardServer(self, port=port, address=address, show=show, autostart=autostart,
                                 password=password)
        if threaded:
            server.start_thread()
        else:
            server.run_forever()
        return server


class DashboardServer:
    """A running dashboard server: ``url``, ``port``, :meth:`stop`."""

    def __init__(self, dashboard: Dashboard, *, port: int, address: str, show: bool, autostart: bool,
                 password: str | None = None) -> None:
        if not password:
            self.check_address(address)
        self.password = password or None
        self.dashboard = dashboard
        self.address = address
        self.port = port or free_port(address)
        self.show = show
        self.autostart = autostart
        self._server: Any = None
        self._loop: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @staticmethod
    def check_address(address: str) -> None:
        """Serving without a password is for loopback only: an error for any other address."""
        if not _is_loopback(address):
            raise ConfigurationError(
                f"serve: address {address!r} is reachable from other machines, and the dashboard starts and stops "
                "runs; give a password (--password, or the DETFLOW_SERVE_PASSWORD environment variable), or "
                "serve on 127.0.0.1 and reach it through an SSH tunnel"
            )

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/"

    def _make(self) -> None:
        from panel.io.server import get_server
        from tornado.ioloop import IOLoop

        asyncio.set_event_loop(asyncio.new_event_loop())
        self._loop = IOLoop.current()
        # the pages this server answers may open its websocket; no other site may (it controls the run)
        hosts = {self.address, "localhost", "127.0.0.1"}
        if not _is_loopback(self.address):
            hosts |= {socket.gethostname(), socket.getfqdn()}
        origins = [f"{host}:{self.port}" for host in sorted(hosts)]
        auth: dict[str, Any] = {}
        if self.password is not None:  # the login page asks for it; sessions are signed cookies
            auth = {"basic_auth": self.password, "cookie_secret": secrets.token_hex(32)}
        self._server = get_server(self.dashboard.app, port=self.port, address=self.address,
                                  websocket_origin=origins, loop=self._loop, start=False, show=False,
                                  title=self.dashboard.title, **auth)
        self._server.start()
        if self.show:
            self._server.show("/")
        if self.autostart:
            self.dashboard.controller.start()

    def run_forever(self) -> None:
        """Serve in this thread until Ctrl-C (or SIGTERM, or :meth:`stop`)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise ConfigurationError("serve() without threaded=True blocks this thread, which runs an event loop "
                                     "already (a notebook?); pass threaded=True and stop the server with .stop()")
        self._make()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        login = "password required" if self.password else "no password: loopback only"
        print(f"detflow: serving {self.dashboard.graph.name!r} at {self.url} ({login}; Ctrl-C to stop)",
              flush=True)
        try:
            self._loop.start()
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self._shutdown()
            self._loop.close(all_fds=True)
            asyncio.set_event_loop(None)
            print(f"detflow: server stopped; the run is {self.dashboard.controller.status}", flush=True)

    def start_thread(self, timeout: float = 60.0) -> None:
        def target() -> None:
            try:
                self._make()
            except BaseException as err:
                self._error = err
                self._ready.set()
                return
            self._ready.set()
            self._loop.start()
            self._loop.close(all_fds=True)

        self._thread = threading.Thread(target=target, daemon=True, name="detflow-dashboard-server")
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the dashboard server did not start within {timeout} s")
        if self._error is not None:
            raise self._error

    def _shutdown(self) -> None:
        self.dashboard.controller.close()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the run (sinks left consistent), then the server."""
        self.dashboard.controller.close(timeout=timeout)
        if self._thread is None:
            if self._loop is not None:
                self._loop.add_callback(self._loop.stop)
            return
        loop = self._loop

        def halt() -> None:
            if self._server is not None:
                self._server.stop()
                self._server = None
            loop.stop()

        loop.add_callback(halt)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<DashboardServer {self.url}>"


def serve(graph: Graph, *, port: int = 5006, address: str = "127.0.0.1", show: bool = True,
          autostart: bool = True, threaded: bool = False, executor: str | Executor | None = None,
          context: RunContext | None = None, max_rate: float | None = 4.0,
          monitor: bool = True, password: str | None = None) -> DashboardServer:
    """Serve the dashboard of ``graph``; see :class:`Dashboard` and :meth:`Dashboard.serve`.

    ``password`` defaults to the ``DETFLOW_SERVE_PASSWORD`` environment variable; it is
    required on any address but loopback.
    """
    password = password or os.environ.get("DETFLOW_SERVE_PASSWORD") or None
    if not password:
        DashboardServer.check_address(address)  # before building anything
    dashboard = Dashboard(graph, executor=executor, context=context, max_rate=max_rate, monitor=monitor)
    return dashboard.serve(port=port, address=address, show=show, autostart=autostart, threaded=threaded,
                           password=password)
