"""A protocol-true ASI Timepix3 simulator: replays CSR frames as the detector's stream.

The simulator is a TCP server. Every client that connects gets ``acquisitions``
acquisitions of the same frames (AcquisitionStart, ScanStart with optional metadata,
ArrayChunks of ``chunk_frames`` frames, ScanEnd, AcquisitionEnd), then the connection
stays open until the client closes it (as a detector waiting for the next one). The
stream is encoded once, when the simulator starts, so sending is ``sendall`` of ready
bytes: the sender waits whenever the client does not read (TCP flow control).

Input: a CSR ``.npz`` (:func:`detflow.sources.csr.save_csr`, or ``scipy.sparse.save_npz``
with ``--nav-shape``/``--sig-shape``), a dense ``.npy`` of ``nav + sig`` shape (converted),
or, from Python, a dense array or a ``scipy.sparse`` matrix with its shapes.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from detflow.errors import ConfigurationError
from detflow.sources.live.asi_tpx3.protocol import (
    AcquisitionEnd,
    AcquisitionStart,
    ScanEnd,
    ScanStart,
    code_of,
    pack_chunk,
)
from detflow.sources.live.serve import serve_until_stopped

__all__ = ["AsiTpx3Simulator", "encode_acquisition", "load_frames", "run_simulator"]

VERSION = 7


def load_frames(source: Any, *, nav_shape: Sequence[int] | None = None,
                sig_shape: Sequence[int] | None = None) -> tuple[Any, tuple[int, int], tuple[int, int]]:
    """``(csr_array of (n_frames, frame_size), nav_shape, sig_shape)`` from a path, array or matrix."""
    import scipy.sparse

    from detflow.sources.csr import load_csr

    if isinstance(source, str | bytes) or hasattr(source, "__fspath__"):
        path = str(source)
        if path.endswith(".npz"):
            f = load_csr(path)
            m = scipy.sparse.csr_array((f.values, f.indices, f.indptr), shape=(f.n_frames, f.frame_size))
            nav = tuple(nav_shape) if nav_shape is not None else f.nav_shape
            sig = tuple(sig_shape) if sig_shape is not None else f.sig_shape
            if sig is None:
                side = math.isqrt(f.frame_size)
                sig = (side, side)
            if nav is None:
                nav = (1, f.n_frames)
            return _checked(m, nav, sig, path)
        source = np.load(path, mmap_mode="r")
    if scipy.sparse.issparse(source):
        if nav_shape is None or sig_shape is None:
            raise ConfigurationError("asi_tpx3 simulator: a sparse matrix needs nav_shape= and sig_shape=")
        return _checked(scipy.sparse.csr_array(source), tuple(nav_shape), tuple(sig_shape), "the matrix")
    arr = np.asarray(source)
    if arr.ndim != 4:
        raise ConfigurationError(f"asi_tpx3 simulator: dense frames must be 4D (nav_h, nav_w, sig_h, sig_w); "
                                 f"got shape {arr.shape}")
    nav = tuple(nav_shape) if nav_shape is not None else arr.shape[:2]
    sig = tuple(sig_shape) if sig_shape is not None else arr.shape[2:]
    m = scipy.sparse.csr_array(np.ascontiguousarray(arr).reshape(math.prod(arr.shape[:2]), -1))
    return _checked(m, nav, sig, "the array")


def _checked(m: Any, nav: Sequence[int], sig: Sequence[int], what: str) -> tuple[Any, tuple[int, int], tuple[int, int]]:
    nav2 = tuple(int(n) for n in nav)
    sig2 = tuple(int(n) for n in sig)
    if len(nav2) != 2 or len(sig2) != 2 or math.prod(nav2) != m.shape[0] or math.prod(sig2) != m.shape[1]:
        raise ConfigurationError(f"asi_tpx3 simulator: {what} holds {m.shape[0]} frames of {m.shape[1]} pixels; "
                                 f"nav {nav2} and sig {sig2} must be 2D and match")
    if m.dtype.kind not in "ub" or np.dtype(m.dtype).itemsize > 8:
        m = m.astype(np.uint32) if m.dtype.kind in "if" and (m.data >= 0).all() else m
        if m.dtype.kind not in "ub":
            raise ConfigurationError(f"asi_tpx3 simulator: values must be unsigned integers; got {m.dtype}")
    if m.dtype.kind == "b":
        m = m.astype(np.uint8)
    m.sort_indices()
    return m, nav2, sig2


def encode_acquisition(m: Any, nav: tuple[int, int], sig: tuple[int, int], *, sequence: int = 0,
                       chunk_frames: int = 128, metadata: bytes = b"", indptr_dtype: Any = np.uint32,
                       indices_dtype: Any = np.uint32, value_dtype: Any = None, pad: int = 0) -> Iterator[bytes]:
    """The bytes of one acquisition, header by header and chunk by chunk."""
    if chunk_frames < 1:
        raise ConfigurationError(f"asi_tpx3 simulator: chunk_frames must be >= 1; got {chunk_frames}")
    ipdt, ixdt = np.dtype(indptr_dtype), np.dtype(indices_dtype)
    vdt = np.dtype(m.dtype if value_dtype is None else value_dtype)
    yield AcquisitionStart(VERSION, 0, nav, code_of(ipdt), sig, code_of(ixdt), sequence).pack()
    yield ScanStart(sequence, len(metadata)).pack() + bytes(metadata)
    n = m.shape[0]
    indptr, indices, values = m.indptr, m.indices, m.data.astype(vdt, copy=False)
    for f0 in range(0, n, chunk_frames):
        f1 = min(n, f0 + chunk_frames)
        a, b = int(indptr[f0]), int(indptr[f1])
        head, parts = pack_chunk(indptr[f0:f1 + 1], indices[a:b], values[a:b], indptr_dtype=ipdt,
                                 indices_dtype=ixdt, pad=pad)
        yield head.pack() + b"".join(parts)
    yield ScanEnd(sequence).pack()
    yield AcquisitionEnd(sequence).pack()


class AsiTpx3Simulator:
    """Serve frames as an ASI Timepix3 detector's CSR stream (a context manager).

    Parameters
    ----------
    source
        Path (``.npz`` CSR, ``.npy`` dense), dense 4D array, or ``scipy.sparse`` matrix.
    host, port
        Where to listen (``port=0``: any free port, see :attr:`port`).
    chunk_frames
        Frames per ArrayChunk.
    metadata
        Bytes sent after each ScanStart (its ``metadata_length``).
    acquisitions
        Acquisitions sent to each client that connects.
    indptr_dtype, indices_dtype, value_dtype
        Wire dtypes (``uint8`` to ``uint64``); values default to the data's.
    pad
        Bytes of padding between the parts of each chunk.
    """

    def __init__(self, source: Any, *, host: str = "127.0.0.1", port: int = 8283, chunk_frames: int = 128,
                 metadata: bytes = b"", acquisitions: int = 1, indptr_dtype: Any = np.uint32,
                 indices_dtype: Any = np.uint32, value_dtype: Any = None, pad: int = 0,
                 nav_shape: Sequence[int] | None = None, sig_shape: Sequence[int] | None = None) -> None:
        self.matrix, self.nav_shape, self.sig_shape = load_frames(source, nav_shape=nav_shape, sig_shape=sig_shape)
        self.acquisitions = int(acquisitions)
        self._parts = [
            b"".join(encode_acquisition(self.matrix, self.nav_shape, self.sig_shape, sequence=seq,
                                        chunk_frames=chunk_frames, metadata=metadata, indptr_dtype=indptr_dtype,
                                        indices_dtype=indices_dtype, value_dtype=value_dtype, pad=pad))
            for seq in range(self.acquisitions)
        ]
        self.host = host
        self.listener = socket.create_server((host, int(port)))
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.served = 0  # acquisitions sent whole
        #: bytes sent to each client so far, in the order they connected; read by progress displays
        self.sent: list[int] = []
        self._accept = threading.Thread(target=self._serve, name="asi-tpx3-sim", daemon=True)
        self._accept.start()

    @property
    def n_events(self) -> int:
        return int(self.matrix.nnz)

    @property
    def wire_bytes(self) -> int:
        return sum(len(p) for p in self._parts)

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._clients.append(conn)
            t = threading.Thread(target=self._send, args=(conn,), name="asi-tpx3-sim-send", daemon=True)
            self._threads.append(t)
            t.start()

    def _send(self, conn: socket.socket) -> None:
        client = len(self.sent)
        self.sent.append(0)
        try:
            for blob in self._parts:
                view = memoryview(blob)
                for lo in range(0, len(view), 2**22):  # in pieces, so a stopping simulator stops soon
                    if self._stop.is_set():
                        return
                    piece = view[lo:lo + 2**22]
                    conn.sendall(piece)
                    self.sent[client] += len(piece)
                self.served += 1
        except OSError:
            return

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for c in self._clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> AsiTpx3Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ReplayProgress:
    """A progress bar (on stderr) of the bytes sent to each client, polled from the main loop."""

    def __init__(self, sim: AsiTpx3Simulator) -> None:
        self.sim = sim
        self.bars: list[Any] = []

    def poll(self) -> None:
        from tqdm.auto import tqdm

        sent = list(self.sim.sent)
        while len(self.bars) < len(sent):
            self.bars.append(tqdm(total=self.sim.wire_bytes, unit="B", unit_scale=True,
                                  desc=f"client {len(self.bars) + 1}", leave=True))
        for bar, n in zip(self.bars, sent, strict=False):
            if bar is not None and not bar.disable:
                bar.update(n - bar.n)
        for i, bar in enumerate(self.bars):
            if bar is not None and sent[i] >= self.sim.wire_bytes:
                bar.close()
                self.bars[i] = None

    def close(self) -> None:
        for bar in self.bars:
            if bar is not None:
                bar.close()
        self.bars = [None] * len(self.bars)


def run_simulator(path: str, *, host: str = "127.0.0.1", port: int = 8283, chunk_frames: int = 128,
                  metadata_bytes: int = 0, acquisitions: int = 1, nav_shape: Sequence[int] | None = None,
                  sig_shape: Sequence[int] | None = None, echo: Callable[[str], None] = print,
                  progress: bool = False) -> None:
    """Run a simulator until Ctrl-C or SIGTERM (``detflow sim asi-tpx3``), printing its port;
    with ``progress``, a progress bar of the bytes sent to each client."""
    sim = AsiTpx3Simulator(path, host=host, port=port, chunk_frames=chunk_frames,
                           metadata=bytes(range(256)) * (metadata_bytes // 256) + bytes(metadata_bytes % 256),
                           acquisitions=acquisitions, nav_shape=nav_shape, sig_shape=sig_shape)

    def describe() -> list[str]:
        lines: list[str] = []
        lines.append(f"asi_tpx3 simulator: {path} (nav {sim.nav_shape[0]}x{sim.nav_shape[1]}, sig "
                     f"{sim.sig_shape[0]}x{sim.sig_shape[1]}, {sim.n_events} events, {sim.matrix.dtype}, "
                     f"{chunk_frames} frames per chunk, {acquisitions} acquisition(s) per connection)")
        lines.append(f"data port: {sim.host}:{sim.port}")
        return lines

    serve_until_stopped(sim, "asi_tpx3", describe, echo, _ReplayProgress if progress else None)
