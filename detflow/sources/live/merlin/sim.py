"""A Merlin simulator: replays a recorded MIB acquisition over Merlin's own protocol.

Three TCP servers, each on its own thread (``shared/reference/protocols.md`` 1.2-1.4):

* **control** (default 6341): ``GET``/``SET``/``CMD`` as MPX messages, answered with
  Merlin's status codes (0 OK, 1 busy, 2 unrecognised, 3 out of range). Parameters
  live in a dict filled from the recording (``IMAGEX``, ``IMAGEY``, ``COUNTERDEPTH``,
  ``NUMFRAMESTOACQUIRE``, ...); a ``SET`` is stored (range-checked where Merlin
  checks), it does not change what is replayed. Commands: ``STARTACQUISITION``
  (arms; answered 1, busy, while an acquisition runs), ``SOFTTRIGGER``,
  ``STOPACQUISITION`` (ends the acquisition being sent after the current batch).
* **data** (default 6342): one client at a time. Each acquisition is the header
  message (the ``.hdr`` text, without a newline after ``End``) and one message per
  frame, the frame's bytes exactly as in the ``.mib`` files. When:

  - untriggered (default): as soon as a client connects, and again on each
    ``STARTACQUISITION`` while it stays connected;
  - ``wait_trigger``: the header on ``STARTACQUISITION``, the frames on
    ``SOFTTRIGGER`` (or a trigger-port ``TRIGGER``);
  - ``continuous``: acquisition after acquisition, each with its header, until
    ``STOPACQUISITION``, :meth:`MerlinSimulator.stop` or the client disconnecting.

* **trigger** (only with ``trigger_port``): a line ``TRIGGER\\n`` arms if needed and
  triggers; the answer ``FINISH\\n`` comes when that acquisition has been sent.

Frames are sent from memory-mapped files with ``sendmsg``: one call takes a list
of buffers (the constant 15-byte ``MPX`` prefix and a view of each frame's bytes in
the file, a few MiB per call), so the bytes go from the page cache to the socket
without a copy in Python. ``frame_rate`` paces the sending; ``garbage`` sends junk
before the first header of each connection (clients must skip it).

Examples
--------
>>> import os, tempfile, numpy as np
>>> from detflow.sources.mib_write import write_mib
>>> d = tempfile.mkdtemp()
>>> _ = write_mib(os.path.join(d, "scan.hdr"), np.ones((4, 4, 32, 32), np.uint16))
>>> with MerlinSimulator(os.path.join(d, "scan.hdr"), data_port=0, control_port=0) as sim:
...     print(sim.n_frames, sim.layout.describe(), sim.data_port > 0)
16 32x32 U16 (1x1) True
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from detflow.errors import ConfigurationError
from detflow.sources.limits import MAX_MESSAGE_BYTES
from detflow.sources.live.merlin.protocol import (
    PREFIX_BYTES,
    AcquisitionHeader,
    encode_message,
    message_prefix,
)
from detflow.sources.live.serve import serve_until_stopped
from detflow.sources.mib import MibSource
from detflow.sources.mib_decode import MibLayout
from detflow.sources.mib_write import hdr_text

__all__ = ["MerlinSimulator", "run_simulator"]

log = logging.getLogger(__name__)

#: how often blocked threads look at the stop flag (s)
_POLL = 0.05
#: bytes handed to one sendmsg call
_BATCH_BYTES = 8 << 20
#: buffers one sendmsg call may take (IOV_MAX is 1024 on Linux)
_MAX_BUFFERS = 1024
#: what ``garbage=True`` sends before the first header: a cut-off prefix and noise
GARBAGE = b"MPX,00000" + bytes(range(256)) * 4 + b"MPX,0000000012,HD\x00" + b"stale data\r\n" * 8

_COUNTER_DEPTHS = ("1", "6", "12", "24")
_NUMERIC = ("NUMFRAMESTOACQUIRE", "NUMFRAMESPERTRIGGER", "ACQUISITIONTIME", "ACQUISITIONPERIOD",
            "CONTINUOUSRW", "TRIGGERSTART", "TRIGGERSTOP", "FILEFORMAT", "FILEENABLE", "RUNHEADLESS")
_READ_ONLY = ("IMAGEX", "IMAGEY", "SOFTWAREVERSION", "DETECTORSTATUS")
_COMMANDS = ("STARTACQUISITION", "STOPACQUISITION", "SOFTTRIGGER")


class _ClientGone(Exception):
    """The data client disconnected, or the simulator is stopping."""


def _with_fields(text: str, updates: dict[str, str]) -> str:
    """``text`` (an acquisition header) with the values of ``updates`` replaced or added."""
    lines = text.split("\n")
    todo = dict(updates)
    for i, line in enumerate(lines):
        key, sep, _ = line.partition(":")
        if sep and key.strip() in todo:
            lines[i] = f"{key}:\t{todo.pop(key.strip())}" + ("\r" if line.endswith("\r") else "")
    end = next((i for i, line in enumerate(lines) if line.strip(" \t\r\x00").startswith("End")), len(lines))
    lines[end:end] = [f"{k}:\t{v}" for k, v in todo.items()]
    return "\n".join(lines)


class MerlinSimulator:
    """Serve a MIB acquisition as a Merlin detector would.

    Parameters
    ----------
    path
        The acquisition's ``.hdr`` or one of its ``.mib`` files (without a ``.hdr`` a
        header is made up from the frames).
    host
        Address to listen on (loopback by default).
    data_port, control_port, trigger_port
        Ports; 0 picks a free one (see :attr:`data_port`, ... after :meth:`start`).
        No trigger port unless one is given.
    wait_trigger, continuous, frame_rate, garbage
        Modes, as in the module docstring; ``frame_rate`` in frames per second
        (``None``: as fast as the client reads).
    nav_shape
        Send only the first ``prod(nav_shape)`` frames, announcing this scan shape
        (``Frames in Acquisition``, ``ScanY``/``ScanX`` rewritten).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        data_port: int = 6342,
        control_port: int = 6341,
        trigger_port: int | None = None,
        wait_trigger: bool = False,
        continuous: bool = False,
        frame_rate: float | None = None,
        garbage: bool = False,
        nav_shape: Sequence[int] | None = None,
    ) -> None:
        if frame_rate is not None and not frame_rate > 0:
            raise ConfigurationError(f"merlin simulator: frame_rate must be > 0 frames/s; got {frame_rate}")
        self.path = os.fspath(path)
        self.host = host
        self.data_port, self.control_port = int(data_port), int(control_port)
        self.trigger_port = None if trigger_port is None else int(trigger_port)
        self.wait_trigger, self.continuous, self.garbage = bool(wait_trigger), bool(continuous), bool(garbage)
        self.frame_rate = frame_rate
        src = MibSource(self.path, nav_shape=nav_shape)
        self.layout: MibLayout = src.layout
        fb = self.layout.frame_bytes
        self._files = [(p, os.path.getsize(p) // fb) for p in src.files]
        available = sum(n for _, n in self._files)
        self.n_frames = available if nav_shape is None else math.prod(nav_shape)
        if self.n_frames > available:
            raise ConfigurationError(
                f"merlin simulator: nav_shape {tuple(nav_shape or ())} needs {self.n_frames} frames; "
                f"{self.path!r} has {available}"
            )
        self.header_text = self._header(src.hdr_path, nav_shape)
        self.header = AcquisitionHeader.parse(self.header_text, f"{self.path}: acquisition header")
        self._header_message = encode_message(self.header_text.encode("latin-1"))
        self._frame_prefix = message_prefix(fb)
        h, w = self.layout.sig_shape
        self.params: dict[str, str] = {
            "IMAGEX": str(w), "IMAGEY": str(h), "COUNTERDEPTH": str(self.layout.counter_depth),
            "NUMFRAMESTOACQUIRE": str(self.n_frames),
            "NUMFRAMESPERTRIGGER": str(self.header.frames_per_trigger),
            "ACQUISITIONTIME": "0.555", "ACQUISITIONPERIOD": "0.555", "CONTINUOUSRW": "1",
            "TRIGGERSTART": "5" if self.wait_trigger else "0", "TRIGGERSTOP": "0",
            "FILEFORMAT": "2" if self.layout.raw else "0", "FILEENABLE": "0", "RUNHEADLESS": "1",
            "SOFTWAREVERSION": self.header.fields.get("Software Version", "0.75.4.84"),
        }
        self._cv = threading.Condition()
        self._armed = self._triggered = self._running = self._abort = False
        self._finished = 0
        self._stop = threading.Event()
        self._client_connected = threading.Event()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._conns: set[socket.socket] = set()
        self._maps: list[tuple[mmap.mmap, memoryview, int]] = []
        self.acquisitions_sent = 0
        #: frames of the current (or last) acquisition sent so far; read by progress displays
        self.frames_sent = 0

    @property
    def running(self) -> bool:
        """Whether an acquisition is under way (armed, or sending its frames)."""
        return self._running

    @property
    def finished(self) -> int:
        """Acquisitions ended so far (complete or stopped)."""
        return self._finished

    def _header(self, hdr_path: str | None, nav_shape: Sequence[int] | None) -> str:
        if hdr_path is not None:
            with open(hdr_path, "rb") as f:
                text = f.read().decode("latin-1").rstrip("\r\n")
        else:
            text = hdr_text(n_frames=self.n_frames, counter_depth=self.layout.counter_depth,
                            layout=self.layout.assembly.strip(), frames_per_trigger=self.n_frames)
        if nav_shape is not None:
            nav = [int(n) for n in nav_shape]
            updates = {"Frames in Acquisition (Number)": str(self.n_frames),
                       "Frames per Trigger (Number)": str(nav[-1])}
            if len(nav) == 2:
                updates.update(ScanX=str(nav[1]), ScanY=str(nav[0]))
            text = _with_fields(text, updates)
        return text

    def __repr__(self) -> str:
        return (f"MerlinSimulator({self.path!r}, data {self.host}:{self.data_port}, "
                f"control {self.host}:{self.control_port})")

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> MerlinSimulator:
        """Open the files, bind the ports, start serving; returns ``self``."""
        if self._threads:
            return self
        try:
            for p, n in self._files:
                with open(p, "rb") as f:
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self._maps.append((mm, memoryview(mm), n))
            data = self._listen(self.data_port)
            control = self._listen(self.control_port)
            self.data_port, self.control_port = data.getsockname()[1], control.getsockname()[1]
            trigger = None
            if self.trigger_port is not None:
                trigger = self._listen(self.trigger_port)
                self.trigger_port = trigger.getsockname()[1]
        except BaseException:
            self.stop()
            raise
        self._spawn(self._accept_loop, data, self._serve_data, False, name="merlin-sim-data")
        self._spawn(self._accept_loop, control, self._serve_control, True, name="merlin-sim-control")
        if trigger is not None:
            self._spawn(self._accept_loop, trigger, self._serve_trigger, True, name="merlin-sim-trigger")
        log.info("merlin simulator: data %s:%d, control %s:%d%s", self.host, self.data_port, self.host,
                 self.control_port, "" if trigger is None else f", trigger {self.host}:{self.trigger_port}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every socket and join every thread (within about ``timeout`` s)."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        for s in self._listeners:
            s.close()
        deadline = time.monotonic() + timeout
        while True:  # a client thread may have been spawned while joining
            with self._threads_lock:
                waiting = [t for t in self._threads if t.is_alive() and t is not threading.current_thread()]
            if not waiting or time.monotonic() > deadline:
                break
            waiting[0].join(max(0.0, deadline - time.monotonic()))
        for c in list(self._conns):
            c.close()
        alive = [t.name for t in self._threads if t.is_alive()]
        self._threads.clear()
        self._listeners.clear()
        for mm, view, _ in self._maps:
            view.release()
            with contextlib.suppress(BufferError):  # a stuck thread still holds a view: the GC closes it
                mm.close()
        self._maps.clear()
        if alive:  # pragma: no cover - a thread stuck in a system call despite its timeouts
            log.warning("merlin simulator: threads still running after stop(): %s", ", ".join(alive))

    def __enter__(self) -> MerlinSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def wait_for_client(self, timeout: float) -> bool:
        """Whether a data client connected within ``timeout`` s."""
        return self._client_connected.wait(timeout)

    def _listen(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listeners.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, port))
        except OSError as err:
            raise ConfigurationError(f"merlin simulator: cannot listen on {self.host}:{port}: {err}") from err
        s.listen(4)
        s.settimeout(_POLL)
        return s

    def _spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._threads_lock:  # client threads come and go while the simulator runs
            self._threads[:] = [u for u in self._threads if u.is_alive()] + [t]
        t.start()

    def _accept_loop(self, listener: socket.socket, serve: Callable[[socket.socket], None], threaded: bool) -> None:
        """Accept clients until stopped; serve each on this thread or a new one."""
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by stop()
                return
            conn.settimeout(_POLL)
            self._conns.add(conn)
            log.debug("merlin simulator: %s connected from %s:%d", threading.current_thread().name, *peer[:2])
            if threaded:
                self._spawn(self._serve_then_close, serve, conn, name=f"{threading.current_thread().name}-client")
            else:
                self._serve_then_close(serve, conn)

    def _serve_then_close(self, serve: Callable[[socket.socket], None], conn: socket.socket) -> None:
        try:
            serve(conn)
        except (_ClientGone, OSError):
            pass
        finally:
            self._conns.discard(conn)
            conn.close()

    # --- control port -----------------------------------------------------------------
    def _recv_exactly(self, conn: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if self._stop.is_set():
                raise _ClientGone
            try:
                data = conn.recv(min(n - len(buf), 1 << 16))  # recv(n) would allocate n bytes
            except TimeoutError:
                continue
            if not data:
                raise _ClientGone
            buf += data
        return bytes(buf)

    def _serve_control(self, conn: socket.socket) -> None:
        while True:
            prefix = self._recv_exactly(conn, PREFIX_BYTES)
            if not prefix.startswith(b"MPX,") or not prefix[4:14].isdigit():
                log.warning("merlin simulator: control port: not an MPX message: %r; closing", prefix)
                return
            length = int(prefix[4:14]) - 1
            if not 0 <= length <= MAX_MESSAGE_BYTES:
                log.warning("merlin simulator: control port: a request of %d bytes (limit %d); closing",
                            length, MAX_MESSAGE_BYTES)
                return
            payload = self._recv_exactly(conn, length).decode("latin-1")
            reply = self.handle_command(payload)
            self._sendall(conn, [memoryview(encode_message(reply.encode("latin-1")))])

    def handle_command(self, payload: str) -> str:
        """The reply to one control request (``"GET,IMAGEX,0"`` -> ``"GET,IMAGEX,256,0"``)."""
        parts = payload.split(",")
        kind = parts[0].strip().upper()
        name = parts[1].strip().upper() if len(parts) > 1 else ""
        if kind == "GET":
            if name == "DETECTORSTATUS":
                with self._cv:
                    return f"GET,{name},{int(self._running)},0"
            value = self.params.get(name)
            return f"GET,{name},{value},0" if value is not None else f"GET,{name},,2"
        if kind == "SET":
            value = ",".join(parts[2:]).strip()
            return f"SET,{name},{self._set(name, value)}"
        if kind == "CMD":
            return f"CMD,{name},{self._command(name)}"
        return f"{kind},{name},2"

    def _set(self, name: str, value: str) -> int:
        if not name or name in _READ_ONLY:
            return 2
        if name == "COUNTERDEPTH" and value not in _COUNTER_DEPTHS:
            return 3
        if name in _NUMERIC:
            try:
                if float(value) < 0:
                    return 3
            except ValueError:
                return 3
        self.params[name] = value
        return 0

    def _command(self, name: str) -> int:
        if name not in _COMMANDS:
            return 2
        with self._cv:
            if name == "STARTACQUISITION":
                if self._running:
                    return 1
                self._arm()
            elif name == "SOFTTRIGGER":
                if self._running:
                    self._triggered = True
            else:  # STOPACQUISITION; also ends a continuous replay between two acquisitions
                self._abort = True
                if self._armed:  # no data client took it up yet: it ends here
                    self._armed = self._running = self._triggered = False
                    self._finished += 1
            self._cv.notify_all()
        return 0

    def _arm(self) -> None:
        """Under ``_cv``: an acquisition is requested."""
        self._armed = self._running = True
        self._abort = self._triggered = False
        self.frames_sent = 0

    # --- trigger port -----------------------------------------------------------------
    def _serve_trigger(self, conn: socket.socket) -> None:
        line = b""
        while True:
            line += self._recv_exactly(conn, 1)
            if not line.endswith(b"\n"):
                continue
            if line.strip() == b"TRIGGER":
                with self._cv:
                    if not self._running:
                        self._arm()
                    target = self._finished + 1
                    self._triggered = True
                    self._cv.notify_all()
                    while self._finished < target and not self._stop.is_set():
                        self._cv.wait(_POLL)
                if self._stop.is_set():
                    return
                self._sendall(conn, [memoryview(b"FINISH\n")])
            line = b""

    # --- data port --------------------------------------------------------------------
    def _sendall(self, conn: socket.socket, buffers: list[memoryview]) -> None:
        """Send every buffer, whatever the socket takes per call; stop when stopping."""
        while buffers:
            if self._stop.is_set():
                raise _ClientGone
            try:
                sent = conn.sendmsg(buffers[:_MAX_BUFFERS])
            except TimeoutError:
                continue
            except OSError as err:
                raise _ClientGone from err
            done = 0
            while sent and sent >= buffers[done].nbytes:
                sent -= buffers[done].nbytes
                done += 1
            del buffers[:done]
            if sent:
                buffers[0] = buffers[0][sent:]

    def _client_closed(self, conn: socket.socket) -> bool:
        """Whether the data client hung up (it never sends anything; anything it does is dropped)."""
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        try:
            return not conn.recv(4096)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError:
            return True

    def _wait(self, conn: socket.socket, flag: str) -> bool:
        """Wait until ``flag`` (``"_armed"``/``"_triggered"``) is set; False when the
        acquisition was stopped first; raise when the client leaves or the simulator stops."""
        while True:
            with self._cv:
                if getattr(self, flag):
                    self._armed = False  # taken up: STOPACQUISITION now goes through the sender
                    return True
                if flag == "_triggered" and self._abort:
                    return False
                self._cv.wait(_POLL)
            if self._stop.is_set() or self._client_closed(conn):
                raise _ClientGone

    def _serve_data(self, conn: socket.socket) -> None:
        self._client_connected.set()
        if self.garbage:
            self._sendall(conn, [memoryview(GARBAGE)])
        k = 0  # acquisitions started on this connection
        try:
            while not self._stop.is_set():
                with self._cv:
                    auto = (k == 0 and not self.wait_trigger) or (self.continuous and k > 0 and not self._abort)
                    if auto:
                        self._arm()
                        self._armed = False
                if not auto:
                    self._wait(conn, "_armed")
                self._sendall(conn, [memoryview(self._header_message)])
                triggered = True
                if self.wait_trigger and (k == 0 or not self.continuous):
                    triggered = self._wait(conn, "_triggered")
                self._finish(triggered and self._send_frames(conn))
                k += 1
        finally:
            self._finish(False)

    def _finish(self, complete: bool) -> None:
        with self._cv:
            if self._running:
                self._running = self._triggered = False
                self._finished += 1
                if complete:
                    self.acquisitions_sent += 1
                self._cv.notify_all()

    def _send_frames(self, conn: socket.socket) -> bool:
        """Send the acquisition's frames; False when STOPACQUISITION cut it short."""
        fb = self.layout.frame_bytes
        per_batch = max(1, min(_MAX_BUFFERS // 2, _BATCH_BYTES // (fb + PREFIX_BYTES)))
        if self.frame_rate is not None:
            per_batch = max(1, min(per_batch, int(self.frame_rate * 0.02)))
        prefix = memoryview(self._frame_prefix)
        t0 = time.monotonic()
        sent = 0
        for _, view, n_file in self._maps:
            for lo in range(0, n_file, per_batch):
                if sent >= self.n_frames:
                    return True
                with self._cv:
                    if self._abort:
                        return False
                if self.frame_rate is not None and self._stop.wait(max(0.0, t0 + sent / self.frame_rate
                                                                      - time.monotonic())):
                    raise _ClientGone
                hi = min(n_file, lo + per_batch, lo + self.n_frames - sent)
                buffers: list[memoryview] = []
                for i in range(lo, hi):
                    buffers += (prefix, view[i * fb : (i + 1) * fb])
                self._sendall(conn, buffers)
                sent += hi - lo
                self.frames_sent = sent
        return True


class _ReplayProgress:
    """A progress bar per acquisition the simulator replays, polled from its main loop."""

    def __init__(self, sim: MerlinSimulator) -> None:
        self.sim = sim
        self.bar: Any = None
        self.count = 0
        self.finished = sim.finished

    def poll(self) -> None:
        from tqdm.auto import tqdm

        sim = self.sim
        finished = sim.finished  # an acquisition may start and end between two polls
        if self.bar is None and ((sim.running and sim.frames_sent) or finished > self.finished):
            self.count += 1
            self.bar = tqdm(total=sim.n_frames, unit="frame", desc=f"acquisition {self.count}", leave=True)
        if self.bar is not None:
            self.bar.update(sim.frames_sent - self.bar.n)
            if finished > self.finished:
                self.close()
        self.finished = finished

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_simulator(
    path: str,
    *,
    host: str = "127.0.0.1",
    data_port: int = 6342,
    control_port: int = 6341,
    trigger_port: int | None = None,
    wait_trigger: bool = False,
    continuous: bool = False,
    frame_rate: float | None = None,
    garbage: bool = False,
    nav_shape: Sequence[int] | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> None:
    """Run a simulator until Ctrl-C or SIGTERM (``detflow sim merlin``), printing its ports.

    With ``progress``, each acquisition it replays shows a progress bar (on stderr) of
    the frames sent.
    """
    sim = MerlinSimulator(path, host=host, data_port=data_port, control_port=control_port,
                          trigger_port=trigger_port, wait_trigger=wait_trigger, continuous=continuous,
                          frame_rate=frame_rate, garbage=garbage, nav_shape=nav_shape)

    def describe() -> list[str]:
        lines: list[str] = []
        modes = [m for m, on in (("wait-trigger", wait_trigger), ("continuous", continuous),
                                 ("garbage", garbage)) if on]
        lines.append(f"merlin simulator: {sim.path} ({sim.n_frames} frames of {sim.layout.describe()})"
                     + (f", {', '.join(modes)}" if modes else "")
                     + (f", {frame_rate:g} frames/s" if frame_rate else ""))
        lines.append(f"data port: {sim.host}:{sim.data_port}")
        lines.append(f"control port: {sim.host}:{sim.control_port}")
        if sim.trigger_port is not None:
            lines.append(f"trigger port: {sim.host}:{sim.trigger_port}")
        return lines

    serve_until_stopped(sim, "merlin", describe, echo, _ReplayProgress if progress else None)
