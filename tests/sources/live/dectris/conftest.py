"""DECTRIS test helpers: simulators on port 0 (module-scoped), a scripted ZeroMQ sender for
what a well-behaved detector never sends, and a REST server that never answers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from types import TracebackType

import numpy as np
import pytest

from detflow.sources.live.dectris.codec import encode
from detflow.sources.live.dectris.sim import DectrisSimulator

NAV = (6, 8)
SIG = (24, 32)


def random_frames(seed: int, n: int, dtype: type = np.uint16, sig: tuple[int, int] = SIG) -> np.ndarray:
    """Sparse-ish counts with a full-range pixel per frame, so every bit plane is exercised."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    data = rng.poisson(1.5, size=(n, *sig)).astype(dtype)
    data[:, 0, 0] = rng.integers(0, top, size=n, endpoint=True, dtype=dtype)
    return data


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """48 frames of 24x32 uint16 (a 6x8 scan)."""
    return random_frames(5, 48)


@pytest.fixture(scope="module")
def sim(frames: np.ndarray) -> Iterator[DectrisSimulator]:
    """One simulator for the module; tests leave it idle (disarmed) as they found it."""
    with DectrisSimulator(frames, api_port=0, data_port=0) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_thread_left() -> Iterator[None]:
    """No receiving thread of a test outlives it."""
    yield
    left = [t.name for t in threading.enumerate() if t.name == "detflow-dectris-receiver" and t.is_alive()]
    assert not left, f"receiver threads still running: {left}"


def series_parts(frames: np.ndarray, *, series: int = 1, encoding: str = "bs16-lz4<",
                 frame_ids: list[int] | None = None, config: dict | None = None) -> list[list[bytes]]:
    """The messages of one series as a detector sends them (header, images, footer)."""
    n, h, w = frames.shape
    cfg = {"ntrigger": n, "nimages": 1, "trigger_mode": "exte", "x_pixels_in_detector": w,
           "y_pixels_in_detector": h, "bit_depth_image": frames.dtype.itemsize * 8, **(config or {})}
    msgs = [[json.dumps({"htype": "dheader-1.0", "header_detail": "basic", "series": series}).encode(),
             json.dumps(cfg).encode()]]
    info = json.dumps({"htype": "dimage_d-1.0", "shape": [w, h], "type": frames.dtype.name,
                       "encoding": encoding}).encode()
    ids = frame_ids if frame_ids is not None else list(range(n))
    for i, f in zip(ids, frames, strict=True):
        msgs.append([json.dumps({"htype": "dimage-1.0", "series": series, "frame": i, "hash": ""}).encode(), info,
                     encode(f, encoding), b'{"htype":"dconfig-1.0"}'])
    msgs.append([json.dumps({"htype": "dseries_end-1.0", "series": series}).encode()])
    return msgs


class ScriptedPush:
    """A ZeroMQ PUSH socket on port 0 that sends the given messages once a client is there."""

    def __init__(self, messages: list[list[bytes]]) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.messages = messages

    def send(self) -> None:
        for msg in self.messages:
            self.sock.send_multipart(msg)

    def __enter__(self) -> ScriptedPush:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class SilentHTTP:
    """A TCP server that accepts REST requests and never answers (a hung detector API)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.release = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.listener.settimeout(0.1)
        while not self.release.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.conns.append(conn)

    def __enter__(self) -> SilentHTTP:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)
        for c in self.conns:
            c.close()
        self.listener.close()
