"""A DECTRIS simulator: the SIMPLON REST API and the ZeroMQ stream, serving a recording.

Two servers (``shared/reference/protocols.md`` 2.2-2.3):

* **REST** (``api_port``, default 8910): ``http.server`` on its own threads. Detector
  configuration (``x_pixels_in_detector``, ``y_pixels_in_detector``,
  ``bit_depth_image``, ``nimages``, ``ntrigger``, ``trigger_mode``, ``count_time``,
  ``frame_time``, ``compression``, ...; the pixel sizes and bit depth are read-only),
  status (``state``: ``idle`` or ``ready`` while armed), stream configuration
  (``mode``, ``header_detail``), and the commands ``arm`` (answers the ``sequence
  id``), ``trigger``, ``disarm``, ``abort``, ``cancel``, ``initialize``. Unknown
  names are 404, bad values 400, each with an ``{"error": ...}`` body that says why.
* **stream** (``data_port``, default 9999): a ZeroMQ PUSH socket. On ``arm``: the
  ``dheader-1.0`` part and the configuration as one message (as a DCU sends them),
  then per image one four-part message (``dimage-1.0``, ``dimage_d-1.0``, the blob,
  ``dconfig-1.0``), then ``dseries_end-1.0``.

**Trigger modes.** A series holds ``ntrigger`` images (``exte``, ``inte``) or
``nimages * ntrigger`` (``exts``, ``ints``), the first that many frames of the
recording (more than it holds is an error at ``arm``). With an external trigger
(``exte``, ``exts``) the images follow the header at once, as if the triggers came
in; with an internal one, each ``trigger`` sends one image (``inte``) or
``nimages`` (``ints``). ``disarm``, ``abort`` and ``cancel`` end the series where it
is (the footer follows what was sent): the images of every trigger before them, or
of an external-trigger series as far as it got.

**Faults**, for tests: ``garbage`` sends junk parts before each series' header;
``stop_after=k`` ends each series after ``k`` images, without its footer (a detector
that stops mid-series); ``frame_jump=(k, d)`` numbers image ``k`` and after as ``k + d``.

One thread owns the PUSH socket (ZeroMQ sockets are not thread-safe); the REST
threads hand it commands through a queue and never wait for the stream, so a
``trigger`` returns while its images are still being sent, as on a detector.

Examples
--------
>>> import numpy as np
>>> with DectrisSimulator(np.zeros((8, 32, 32), np.uint16), api_port=0, data_port=0) as sim:
...     sim.recording.n_frames, sim.recording.encoding, sim.api_port > 0, sim.data_port > 0
(8, 'bs16-lz4<', True, True)
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import numpy as np

from detflow.errors import ConfigurationError, import_optional
from detflow.sources.live.dectris import cbor
from detflow.sources.live.dectris.codec import LZ4_H5
from detflow.sources.live.dectris.control import TRIGGER_MODES, image_count
from detflow.sources.live.dectris.recording import (
    COMPRESSION,
    DectrisRecording,
    compression_encoding,
    from_array,
    load_recording,
)
from detflow.sources.live.serve import serve_until_stopped

__all__ = ["DectrisSimulator", "run_simulator"]

log = logging.getLogger(__name__)

API_VERSION = "1.8.0"
#: the stream's ``format`` setting: the JSON parts of ``dheader-1.0`` and so on, or CBOR messages
STREAM_FORMATS = ("legacy", "cbor")
#: the largest REST request body the simulator reads (a configuration value)
_MAX_REQUEST_BYTES = 1 << 20
_POLL = 0.05
_GARBAGE = [b"\x00\x01 not a dectris part", b'{"htype": "something-else-1.0"}', b"MPX,0000000013,junk"]
_READ_ONLY = {"x_pixels_in_detector", "y_pixels_in_detector", "bit_depth_image", "bit_depth_readout",
              "description", "detector_number", "software_version"}
_URL = re.compile(r"^/(detector|stream|filewriter|monitor)/api/([^/]+)/(config|status|command)/([A-Za-z0-9_]+)/?$")


class _HTTPError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message
        super().__init__(message)


class DectrisSimulator:
    """Serve a recording (a path, an array or a :class:`DectrisRecording`) as a DECTRIS detector.

    Parameters
    ----------
    source
        A ``.npy``, an HDF5 master file or a stream dump (see
        :mod:`~detflow.sources.live.dectris.recording`), an array of frames, or a recording.
    host, api_port, data_port
        Where to listen; port 0 picks a free one (see :attr:`api_port`, :attr:`data_port`).
    encoding
        Blob encoding of an array or ``.npy`` source (default ``bs{8,16,32}-lz4<``).
    trigger_mode
        The trigger mode to start in, with the image count set to the recording's
        frames (default: the recording's own, ``exte`` for arrays).
    garbage, stop_after, frame_jump
        Faults to inject (see the module docstring).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | np.ndarray | DectrisRecording,
        *,
        host: str = "127.0.0.1",
        api_port: int = 8910,
        data_port: int = 9999,
        encoding: str | None = None,
        trigger_mode: str | None = None,
        garbage: bool = False,
        stop_after: int | None = None,
        frame_jump: tuple[int, int] | None = None,
        stream_format: str = "legacy",
    ) -> None:
        if isinstance(source, DectrisRecording):
            self.recording = source
        elif isinstance(source, np.ndarray):
            self.recording = from_array(source, encoding)
        else:
            self.recording = load_recording(source, encoding=encoding)
        self.host = host
        self.garbage, self.stop_after, self.frame_jump = garbage, stop_after, frame_jump
        self.config: dict[str, Any] = dict(self.recording.config)
        if trigger_mode is not None:
            mode = trigger_mode
            if mode not in TRIGGER_MODES:
                raise ConfigurationError(f"dectris simulator: parameter 'trigger_mode' must be one of "
                                         f"{', '.join(TRIGGER_MODES)}; got {trigger_mode!r}")
            n = self.recording.n_frames
            self.config.update(trigger_mode=mode, ntrigger=n if mode in ("exte", "inte") else 1,
                               nimages=1 if mode in ("exte", "inte") else n)
        if stream_format not in STREAM_FORMATS:
            raise ConfigurationError(f"dectris simulator: parameter 'stream_format' must be one of "
                                     f"{', '.join(STREAM_FORMATS)}; got {stream_format!r}")
        self.stream_config: dict[str, Any] = {"mode": "enabled", "header_detail": "basic", "format": stream_format}
        self.state = "idle"
        self.series = 0
        self.series_sent: list[int] = []  # images sent per finished series, for tests
        self.current: _Series | None = None  # the series armed last, read by progress displays
        self._lock = threading.Lock()
        self._commands: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._abort = threading.Event()
        self._stop = threading.Event()
        self._zmq_ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._want_data_port = int(data_port)
        self.data_port = 0
        self._http = _make_http_server(self, host, int(api_port))
        self.api_port = int(self._http.server_address[1])
        self._threads = [
            threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": _POLL},
                             name="dectris-sim-rest", daemon=True),
            threading.Thread(target=self._stream_loop, name="dectris-sim-stream", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self._zmq_ready.wait(30)
        if self._startup_error is not None:
            self.close()
            raise self._startup_error

    # --- the REST side (runs on the HTTP server's threads) -----------------------------
    def get(self, module: str, kind: str, name: str) -> Any:
        with self._lock:
            if module == "stream" and kind == "config":
                table = self.stream_config
            elif module == "detector" and kind == "config":
                table = self.config
            elif module in ("detector", "stream") and kind == "status":
                table = {"state": self.state if module == "detector" else "ready", "series_id": self.series}
            else:
                raise _HTTPError(404, f"{module}/{kind} is not simulated")
            if name not in table:
                raise _HTTPError(404, f"{module} {kind} has no parameter {name!r}; known: {', '.join(sorted(table))}")
            value = table[name]
        return {"value": value, "value_type": _type_name(value), "access_mode": "r" if name in _READ_ONLY else "rw"}

    def put_config(self, module: str, name: str, value: Any) -> Any:
        with self._lock:
            if module == "stream":
                allowed = {"mode": ("enabled", "disabled"), "header_detail": ("all", "basic", "none"),
                           "format": STREAM_FORMATS}
                if name not in allowed:
                    raise _HTTPError(404, f"stream config has no parameter {name!r}; known: mode, header_detail, "
                                          "format")
                if value not in allowed[name]:
                    raise _HTTPError(400, f"stream {name} must be one of {', '.join(allowed[name])}; got {value!r}")
                self.stream_config[name] = value
                return [name]
            if module != "detector":
                raise _HTTPError(404, f"{module} config is not simulated")
            if name not in self.config:
                raise _HTTPError(404, f"detector config has no parameter {name!r}")
            if name in _READ_ONLY:
                raise _HTTPError(400, f"detector config {name!r} is read-only")
            if self.state != "idle":
                raise _HTTPError(400, f"cannot set {name!r} while the detector is armed (series {self.series}); "
                                      "disarm first")
            self.config[name] = _checked(name, value)
            return [name]

    def command(self, name: str, value: Any) -> Any:
        with self._lock:
            if name == "arm":
                if self.state != "idle":
                    raise _HTTPError(400, f"the detector is already armed (series {self.series}); disarm first")
                mode = self.config["trigger_mode"]
                n = image_count(mode, self.config["nimages"], self.config["ntrigger"])
                if n > self.recording.n_frames:
                    raise _HTTPError(400, f"a series of {n} images ({mode}, nimages {self.config['nimages']}, "
                                          f"ntrigger {self.config['ntrigger']}) is more than the "
                                          f"{self.recording.n_frames} frames of {self.recording.source}")
                self.series += 1
                self.state = "ready"
                self._abort.clear()
                self._commands.put(("arm", (self.series, n, mode, dict(self.config), dict(self.stream_config))))
                return {"sequence id": self.series}
            if name == "trigger":
                if self.state != "ready":
                    raise _HTTPError(400, "trigger needs an armed detector; arm first")
                if self.config["trigger_mode"] not in ("inte", "ints"):
                    raise _HTTPError(400, f"trigger is for internal triggering (inte, ints); trigger_mode is "
                                          f"{self.config['trigger_mode']!r}")
                self._commands.put(("trigger", None))
                return {}
            if name in ("disarm", "abort", "cancel"):
                if self.state == "ready":
                    self._abort.set()
                    self._commands.put(("end", None))
                return {"sequence id": self.series}
            if name in ("initialize", "hv_reset"):
                return {}
        raise _HTTPError(404, f"unknown command {name!r}")

    # --- the stream side (one thread owns the PUSH socket) -----------------------------
    def _stream_loop(self) -> None:
        zmq = import_optional("zmq", "the DECTRIS simulator")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDTIMEO, int(_POLL * 1000))
            endpoint = f"tcp://{self.host}:{self._want_data_port or '*'}"
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as err:
                raise ConfigurationError(f"dectris simulator: cannot listen on {self.host}:{self._want_data_port} "
                                         f"(data port): {err}") from None
            endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self.data_port = int(endpoint.rsplit(":", 1)[1])
        except BaseException as err:  # noqa: BLE001 - reported by __init__
            self._startup_error = err
            sock.close()
            ctx.term()
            self._zmq_ready.set()
            return
        self._zmq_ready.set()
        self._sock = sock
        try:
            self._serve()
        finally:
            sock.close()
            ctx.term()

    def _serve(self) -> None:
        series = None
        while not self._stop.is_set():
            try:
                what, arg = self._commands.get(timeout=_POLL)
            except queue.Empty:
                continue
            if what == "arm":
                number, n, mode, config, stream = arg
                if stream["mode"] != "enabled":
                    series = _Series(number, n, mode, config, [], [], "<")
                    continue
                compression = str(config.get("compression", "bslz4"))
                cbor = stream.get("format") == "cbor"
                enc = compression_encoding(compression, self.recording.dtype)
                if cbor and compression == "lz4":
                    enc = LZ4_H5  # the CBOR stream's lz4 has the HDF5 filter's framing
                series = self.current = _Series(number, n, mode, config, self.recording.blobs_as(enc)[:n],
                                                self.recording.hashes(enc)[:n], enc, cbor=cbor)
                self._send_header(series, stream["header_detail"])
                if mode in ("exte", "exts"):  # a disarm while these go out cuts the series short
                    self._send_images(series, n, interruptible=True)
            elif what == "trigger" and series is not None:
                self._send_images(series, 1 if series.mode == "inte" else int(series.config["nimages"]))
            elif what == "end" and series is not None:
                self._finish(series)
                series = None
            if series is not None and series.sent >= series.n:
                self._finish(series)
                series = None

    def _send_header(self, s: _Series, detail: str) -> None:
        if self.garbage:
            for part in _GARBAGE:
                self._send([part])
        if s.cbor:
            h, w = self.recording.sig_shape
            c = s.config
            self._send([cbor.dumps({
                "type": "start", "series_id": s.number, "series_unique_id": f"detflow-sim-{s.number}",
                "number_of_images": s.n, "image_size_x": w, "image_size_y": h,
                "image_dtype": self.recording.dtype.name, "channels": ["threshold_1"],
                "count_time": float(c.get("count_time", 0.001)), "frame_time": float(c.get("frame_time", 0.001)),
                "arm_date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})])
            return
        head = json.dumps({"htype": "dheader-1.0", "header_detail": detail, "series": s.number}).encode()
        if detail == "none":
            self._send([head])
        else:
            self._send([head, json.dumps(s.config).encode()])

    def _send_images(self, s: _Series, count: int, *, interruptible: bool = False) -> None:
        h, w = self.recording.sig_shape
        info = json.dumps({"htype": "dimage_d-1.0", "shape": [w, h], "type": self.recording.dtype.name,
                           "encoding": s.encoding}).encode()
        frame_ns = int(float(s.config.get("frame_time", 0.001)) * 1e9)
        end = min(s.n, s.sent + count)
        if self.stop_after is not None:
            end = min(end, self.stop_after)
        jump = self.frame_jump
        if s.cbor:
            self._send_cbor_images(s, end, frame_ns, interruptible)
            return
        heads = [b'{"htype":"dimage-1.0","series":%d,"frame":%d,"hash":"%s"}' % (
            s.number, i if jump is None or i < jump[0] else i + jump[1], s.hashes[i].encode())
            for i in range(s.sent, end)]
        tails = [b'{"htype":"dconfig-1.0","start_time":%d,"stop_time":%d,"real_time":%d}' % (
            i * frame_ns, (i + 1) * frame_ns, frame_ns) for i in range(s.sent, end)]
        first, blobs, abort, stop = s.sent, s.blobs, self._abort, self._stop
        for i in range(first, end):
            if (interruptible and abort.is_set()) or stop.is_set():
                return
            if not self._send([heads[i - first], info, blobs[i], tails[i - first]]):
                return
            s.sent = i + 1
        if self.stop_after is not None and s.sent >= self.stop_after:
            s.n = s.sent  # the detector stopped: no more images, and no footer
            s.silent = True

    def _send_cbor_images(self, s: _Series, end: int, frame_ns: int, interruptible: bool) -> None:
        shape, dtype, jump = self.recording.sig_shape, self.recording.dtype, self.frame_jump
        abort, stop = self._abort, self._stop
        for i in range(s.sent, end):
            if (interruptible and abort.is_set()) or stop.is_set():
                return
            number = i if jump is None or i < jump[0] else i + jump[1]
            msg = cbor.image_message(s.number, number, shape, dtype, s.encoding, s.blobs[i],
                                     (i * frame_ns, (i + 1) * frame_ns, frame_ns))
            if not self._send([msg]):
                return
            s.sent = i + 1
        if self.stop_after is not None and s.sent >= self.stop_after:
            s.n = s.sent
            s.silent = True

    def _finish(self, s: _Series) -> None:
        if not s.silent and s.blobs and s.cbor:
            self._send([cbor.dumps({"type": "end", "series_id": s.number,
                                    "series_unique_id": f"detflow-sim-{s.number}"})])
        elif not s.silent and s.blobs:
            self._send([json.dumps({"htype": "dseries_end-1.0", "series": s.number}).encode()])
        with self._lock:
            self.series_sent.append(s.sent)
            if self.series == s.number:
                self.state = "idle"

    def _send(self, parts: list[Any]) -> bool:
        zmq = import_optional("zmq", "the DECTRIS simulator")
        while not self._stop.is_set():
            try:
                self._sock.send_multipart(parts)
                return True
            except zmq.Again:  # no client, or it is behind: wait, but keep looking at the stop flag
                continue
        return False

    # --- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop both servers and join their threads."""
        self._stop.set()
        if self._threads[0].is_alive():
            self._http.shutdown()
        self._http.server_close()
        for t in self._threads:
            if t.is_alive():
                t.join(30)

    def __enter__(self) -> DectrisSimulator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Series:
    def __init__(self, number: int, n: int, mode: str, config: dict[str, Any], blobs: list[bytes],
                 hashes: list[str], encoding: str, *, cbor: bool = False) -> None:
        self.number, self.n, self.mode, self.config, self.cbor = number, n, mode, config, cbor
        self.blobs, self.hashes, self.encoding = blobs, hashes, encoding
        self.sent = 0
        self.silent = False


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "uint", float: "float", str: "string"}.get(type(value), "string")


def _checked(name: str, value: Any) -> Any:
    """A PUT value as the detector would take it, or a 400 saying why not."""
    if name in ("nimages", "ntrigger"):
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 1:
            raise _HTTPError(400, f"{name} must be an integer >= 1; got {value!r}")
        return int(value)
    if name == "trigger_mode":
        if value not in TRIGGER_MODES:
            raise _HTTPError(400, f"trigger_mode must be one of {', '.join(TRIGGER_MODES)}; got {value!r}")
        return value
    if name == "compression":
        if value not in COMPRESSION:
            raise _HTTPError(400, f"compression must be one of {', '.join(COMPRESSION)}; got {value!r}")
        return value
    if name in ("count_time", "frame_time"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise _HTTPError(400, f"{name} must be a number of seconds > 0; got {value!r}")
        return float(value)
    return value


def _make_http_server(sim: DectrisSimulator, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dectris sim rest: " + format, *args)

        def _answer(self, code: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _handle(self, method: str) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > _MAX_REQUEST_BYTES:  # never read (or allocate) what a client merely announces
                    self.close_connection = True
                    raise _HTTPError(413, f"request body of {length} bytes is above the limit of "
                                          f"{_MAX_REQUEST_BYTES} bytes")
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                if path.rstrip("/") == "/detector/api/version":
                    self._answer(200, {"value": API_VERSION, "value_type": "string"})
                    return
                m = _URL.match(path)
                if m is None:
                    raise _HTTPError(404, f"no such resource: {path}")
                module, version, kind, name = m.groups()
                if version != API_VERSION:
                    raise _HTTPError(404, f"API version {version} is not served; this simulator speaks {API_VERSION}")
                value = None
                if raw:
                    try:
                        value = json.loads(raw).get("value")
                    except (ValueError, AttributeError):
                        raise _HTTPError(400, 'the body must be JSON {"value": ...}') from None
                if method == "GET":
                    if kind == "command":
                        raise _HTTPError(405, "commands are PUT")
                    self._answer(200, sim.get(module, kind, name))
                elif kind == "config":
                    self._answer(200, sim.put_config(module, name, value))
                elif kind == "command" and module == "detector":
                    self._answer(200, sim.command(name, value))
                else:
                    raise _HTTPError(405, f"PUT {module}/{kind} is not allowed")
            except _HTTPError as err:
                self._answer(err.code, {"error": err.message})

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._handle("GET")

        def do_PUT(self) -> None:  # noqa: N802
            self._handle("PUT")

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as err:
        raise ConfigurationError(f"dectris simulator: cannot listen on {host}:{port} (api port): {err}") from None
    server.daemon_threads = True
    return server


class _ReplayProgress:
    """A progress bar (on stderr) per series the simulator sends, polled from its main loop."""

    def __init__(self, sim: DectrisSimulator) -> None:
        self.sim = sim
        self.series: _Series | None = None
        self.bar: Any = None

    def poll(self) -> None:
        from tqdm.auto import tqdm

        s = self.sim.current
        if s is not None and s is not self.series and s.sent:  # a new series (perhaps all sent since the last look)
            self.close()
            self.series = s
            self.bar = tqdm(total=s.n, unit="frame", desc=f"series {s.number}", leave=True)
        if self.bar is not None and self.series is not None:
            self.bar.update(self.series.sent - self.bar.n)
            if self.series.sent >= self.series.n:
                self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_simulator(path: str, *, host: str = "127.0.0.1", api_port: int = 8910, data_port: int = 9999,
                  encoding: str | None = None, trigger_mode: str | None = None, stream_format: str = "legacy",
                  echo: Callable[[str], None] = print, progress: bool = False) -> None:
    """Run a simulator until Ctrl-C or SIGTERM (``detflow sim dectris``), printing its ports;
    with ``progress``, a progress bar of each series' images sent."""
    sim = DectrisSimulator(path, host=host, api_port=api_port, data_port=data_port, encoding=encoding,
                           trigger_mode=trigger_mode, stream_format=stream_format)

    def describe() -> list[str]:
        lines: list[str] = []
        rec = sim.recording
        lines.append(f"dectris simulator: {rec.source} ({rec.n_frames} frames of {rec.sig_shape[1]}x{rec.sig_shape[0]} "
                     f"{rec.dtype.name}, {rec.encoding}, trigger_mode {sim.config['trigger_mode']}, "
                     f"stream format {stream_format})")
        lines.append(f"api port: {sim.host}:{sim.api_port}")
        lines.append(f"data port: {sim.host}:{sim.data_port}")
        return lines

    serve_until_stopped(sim, "dectris", describe, echo, _ReplayProgress if progress else None)
