"""ASI Timepix3 test helpers: sparse frames, a simulator on port 0 (module-scoped), and a
scripted TCP server for the bytes a well-behaved detector never sends."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.sparse

from detflow.sources.live.asi_tpx3.sim import AsiTpx3Simulator, encode_acquisition

NAV = (6, 8)
SIG = (16, 16)


def sparse_frames(seed: int, nav: tuple[int, int] = NAV, sig: tuple[int, int] = SIG, density: float = 0.05,
                  dtype: type = np.uint16, top: int | None = None) -> np.ndarray:
    """Dense frames with a few events each; some frames empty, one value at the dtype's top."""
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max if top is None else top
    hits = rng.random((*nav, *sig)) < density
    data = (hits * rng.integers(1, min(hi, 1000), size=(*nav, *sig), endpoint=True)).astype(dtype)
    data[0, 1] = 0  # an empty frame
    data[-1, -1, 0, 0] = hi
    return data


def as_csr(frames: np.ndarray) -> scipy.sparse.csr_array:
    return scipy.sparse.csr_array(frames.reshape(frames.shape[0] * frames.shape[1], -1))


def stream_bytes(frames: np.ndarray, **options: object) -> bytes:
    """One acquisition of ``frames`` as the detector sends it."""
    nav, sig = frames.shape[:2], frames.shape[2:]
    return b"".join(encode_acquisition(as_csr(frames), nav, sig, **options))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """A 6x8 scan of 16x16 uint16 frames."""
    return sparse_frames(3)


@pytest.fixture(scope="module")
def sim(frames: np.ndarray) -> Iterator[AsiTpx3Simulator]:
    """Three acquisitions per connection, 5 frames per chunk, 100 bytes of ScanStart metadata."""
    with AsiTpx3Simulator(frames, port=0, chunk_frames=5, metadata=bytes(range(100)), acquisitions=3) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_thread_left() -> Iterator[None]:
    """No receiving thread of a test outlives it."""
    yield
    left = [t.name for t in threading.enumerate() if t.name == "detflow-asi_tpx3-receiver" and t.is_alive()]
    assert not left, f"receiver threads still running: {left}"


class ScriptedServer:
    """Serves ``data`` to the first client; then closes (``hang_up``) or holds the line open."""

    def __init__(self, data: bytes, *, hang_up: bool = True) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.data = data
        self.hang_up = hang_up
        self.done = threading.Event()
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.listener.settimeout(30)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.conn = conn
        try:
            conn.sendall(self.data)
        except OSError:
            return
        if self.hang_up:
            conn.close()
        self.done.set()

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        if self.conn is not None:
            self.conn.close()
        self.thread.join(10)
