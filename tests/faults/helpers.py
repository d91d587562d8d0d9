"""Shared tools of the fault tests: a scripted TCP peer, byte trickling, Merlin messages.

A fault is one more case in ``test_sockets.py`` (peers), ``test_files.py`` (inputs on
disk) or ``test_processes.py`` (signals, killed processes), built from these pieces.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType

import numpy as np

from detflow.sources.live.merlin.protocol import encode_message
from detflow.sources.mib_write import encode_frames, frame_header, hdr_text

__all__ = ["Peer", "frame_message", "header_message", "trickle"]


def header_message(n_frames: int, depth: int = 12, scan: tuple[int, int] | None = None) -> bytes:
    """A Merlin acquisition-header message as the data port sends it."""
    return encode_message(hdr_text(n_frames=n_frames, counter_depth=depth, scan=scan).encode("latin-1"))


def frame_message(frame: np.ndarray, sequence: int = 1, depth: int = 12) -> bytes:
    """One Merlin frame message (MQ1 header and pixels) for a ``(h, w)`` frame."""
    pixels = encode_frames(frame[None], counter_depth=depth, raw=False)[0]
    sig = (int(frame.shape[0]), int(frame.shape[1]))
    return encode_message(frame_header(sequence, sig_shape=sig, counter_depth=depth) + pixels.tobytes())


def trickle(conn: socket.socket, data: bytes, interval: float, stop: threading.Event) -> bool:
    """Send ``data`` one byte every ``interval`` s until done (True) or ``stop`` is set (False).

    A peer like this never leaves a receiver silent for long, so only a timeout
    that bounds a whole message (not each ``recv``) can end the wait.
    """
    for i in range(len(data)):
        if stop.wait(interval):
            return False
        try:
            conn.sendall(data[i : i + 1])
        except OSError:  # the receiver gave up and closed: what the tests want
            return False
    return True


Script = Callable[[socket.socket, "Peer"], None]


class Peer:
    """A TCP server on 127.0.0.1, port 0, that runs ``script(conn, peer)`` for one client.

    ``stop`` tells a script to give up (set on leaving the ``with`` block);
    ``finished`` is set when the script returned by itself, so a test can tell
    "the client gave up first" from "the peer ran out of things to send".
    ``received`` collects what a script chooses to record.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.port: int = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.finished = threading.Event()
        self.received = bytearray()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fault-peer", daemon=True)

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                self.script(conn, self)
                if not self.stop.is_set():
                    self.finished.set()
        except OSError:
            pass  # the client went away: the point of most scripts
        except BaseException as err:  # reported by __exit__
            self.error = err

    def recv_message(self, conn: socket.socket) -> bytes:
        """One MPX message from the client (its payload), recorded in ``received``."""
        head = _recv_exactly(conn, 15)
        payload = _recv_exactly(conn, int(head[4:14]) - 1)
        self.received += head + payload
        return payload

    def __enter__(self) -> Peer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop.set()
        self._thread.join(30)
        self.listener.close()
        assert not self._thread.is_alive(), "the scripted peer did not finish"
        if self.error is not None and exc is None:
            raise self.error


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = conn.recv(n - len(buf))
        if not data:
            raise ConnectionResetError("client closed")
        buf += data
    return bytes(buf)
