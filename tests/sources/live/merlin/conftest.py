"""Merlin test helpers: recordings written with detflow's MIB writer, a simulator on
port 0, and a hand-scripted TCP server for what a well-behaved simulator never sends."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pytest

from detflow.sources.live.merlin.protocol import encode_message
from detflow.sources.live.merlin.sim import MerlinSimulator
from detflow.sources.mib_write import encode_frames, frame_header, hdr_text, write_mib

DTYPES = {1: np.uint8, 6: np.uint8, 12: np.uint16, 24: np.uint32}


def random_frames(rng: np.random.Generator, n: int, sig: tuple[int, int], depth: int,
                  layout: str = "1x1") -> np.ndarray:
    """``n`` frames of random counts that a ``depth``-bit counter holds (gap pixels 0 for 2x2G)."""
    data = rng.integers(0, 2**depth, size=(n, *sig)).astype(DTYPES[depth])
    if layout == "2x2G":
        c = (sig[0] - 2) // 2
        data[:, c : c + 2] = 0
        data[:, :, c : c + 2] = 0
    return data


@dataclass
class Recording:
    """A Merlin acquisition on disk and the frames it was written from."""

    hdr: Path
    frames: np.ndarray  # (n, h, w)
    nav_shape: tuple[int, int]


def record(folder: Path, frames: np.ndarray, nav_shape: tuple[int, int], **kwargs: object) -> Recording:
    write_mib(folder / "scan.hdr", frames.reshape(*nav_shape, *frames.shape[1:]), **kwargs)  # type: ignore[arg-type]
    return Recording(folder / "scan.hdr", frames, nav_shape)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """20 frames of 64x64 12-bit counts, a 4x5 scan, in two .mib files."""
    frames = random_frames(np.random.default_rng(11), 20, (64, 64), 12)
    return record(tmp_path_factory.mktemp("merlin"), frames, (4, 5), frames_per_file=12)


@pytest.fixture(autouse=True)
def _no_thread_left() -> Iterator[None]:
    """Every simulator a test started has joined all its threads by the end of the test."""
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("merlin-sim")]
    assert not left, f"simulator threads still running: {left}"


@pytest.fixture
def sim(recording: Recording) -> Iterator[MerlinSimulator]:
    with MerlinSimulator(recording.hdr, data_port=0, control_port=0) as s:
        yield s


# --- hand-made messages ------------------------------------------------------------------
def header_message(n_frames: int, depth: int = 12, scan: tuple[int, int] | None = None) -> bytes:
    return encode_message(hdr_text(n_frames=n_frames, counter_depth=depth, scan=scan).encode("latin-1"))


def frame_messages(frames: np.ndarray, depth: int = 12, first: int = 1, *,
                   sequences: list[int] | None = None) -> list[bytes]:
    """One MPX message per frame, numbered ``first, first + 1, ...`` or ``sequences``."""
    pixels = encode_frames(frames, counter_depth=depth, raw=False)
    seqs = sequences if sequences is not None else list(range(first, first + len(frames)))
    sig = (int(frames.shape[1]), int(frames.shape[2]))
    return [encode_message(frame_header(s, sig_shape=sig, counter_depth=depth) + p.tobytes())
            for s, p in zip(seqs, pixels, strict=True)]


Script = Callable[[socket.socket, "RawServer"], None]


class RawServer:
    """A TCP server on port 0 that runs ``script(conn, server)`` for each of ``clients``
    connections, in a thread; ``release`` lets a script that holds its connection open
    (to be silent) return. Leaving the ``with`` block releases, closes and joins."""

    def __init__(self, script: Script, clients: int = 1) -> None:
        self.script = script
        self.clients = clients
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.release = threading.Event()
        self.received = bytearray()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for _ in range(self.clients):
                conn, _ = self.listener.accept()
                with conn:
                    self.script(conn, self)
        except BaseException as err:  # reported by __exit__
            self.error = err

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release.set()
        self.thread.join(10)
        self.listener.close()
        assert not self.thread.is_alive(), "the test server did not finish"
        if self.error is not None and exc is None and not isinstance(self.error, (BrokenPipeError,
                                                                                   ConnectionResetError)):
            raise self.error
