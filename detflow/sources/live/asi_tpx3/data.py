"""Receiving the ASI Timepix3 CSR stream: headers, chunks, frames cut into partitions.

State: one TCP socket (the detector, or ``detflow sim asi-tpx3``, is the server), the
byte offset read so far (every error names it), the current acquisition's
:class:`~.protocol.AcquisitionStart`, the frames received of it, and the tail of a
chunk that reached past the last partition (handed to the next one).

Policy:

* Every ``recv`` has the connection's timeout, so silence, garbage and truncation
  all end in a :class:`~detflow.errors.DetectorError` within bounded time; a header
  is checked (tag, dtype codes, sizes against the acquisition's shapes) before
  anything it announces is read.
* ScanStart metadata is read by its length (at most 64 MiB) and kept
  (:attr:`CsrStream.scan_metadata`), never parsed as a header. ScanStart/ScanEnd only frame the chunks: the frames of an
  acquisition are counted across its scans.
* A chunk of any size is read whole into its own buffer (bounded only by
  ``max_chunk_bytes``, a guard against garbage that happens to look like a header),
  then split at partition edges. Converting its parts to the partition's dtypes is
  the only copy before the partition payload is assembled.
* The stream is read only when the receiving thread asks for the next partition, so
  when processing falls behind (the live receive queue is full) the socket is not
  read, the kernel's buffers fill and the sender waits: back-pressure, nothing dropped.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import numpy as np

from detflow.errors import DetectorDisconnectedError, DetectorError, DetectorProtocolError, DetectorTimeoutError
from detflow.sources.limits import check_size
from detflow.sources.live.asi_tpx3.protocol import (
    FORMAT_CSR,
    HEADER_SIZE,
    AcquisitionEnd,
    AcquisitionStart,
    ArrayChunk,
    ScanEnd,
    ScanStart,
    dtype_of,
    unpack,
)

__all__ = ["CsrBlock", "CsrStream"]

#: the largest chunk payload accepted (bigger is taken for garbage)
MAX_CHUNK_BYTES = 2**31
#: the longest ScanStart metadata accepted (longer is taken for garbage)
MAX_METADATA = 64 * 2**20


@dataclass
class CsrBlock:
    """Frames received for one partition: ``indptr`` (from 0, int64), ``indices`` (int32)
    and ``values`` as lists of pieces, concatenated by the caller."""

    indptr: list[np.ndarray]
    indices: list[np.ndarray]
    values: list[np.ndarray]
    n_frames: int = 0
    nnz: int = 0


class CsrStream:
    """The data socket of an ASI Timepix3 detector (or its simulator).

    Parameters
    ----------
    host, port
        Where the detector serves its stream.
    timeout
        Seconds of silence before a :class:`~detflow.errors.DetectorTimeoutError`.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 10.0,
                 max_chunk_bytes: int = MAX_CHUNK_BYTES) -> None:
        self.where = f"asi_tpx3 stream at {host}:{port}"
        self.timeout = float(timeout)
        self.max_chunk_bytes = int(max_chunk_bytes)
        try:
            self.sock = socket.create_connection((host, int(port)), timeout=self.timeout)
        except OSError as err:
            raise DetectorDisconnectedError(
                f"{self.where}: cannot connect ({err}); is the detector (or `detflow sim asi-tpx3`) serving?"
            ) from err
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        self.offset = 0
        self.acquisition: AcquisitionStart | None = None
        self.frames = 0
        self.scan_metadata: bytes = b""
        self.ended = False  # AcquisitionEnd of the current acquisition was read
        self._tail: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        #: bytes of the read that timed out which had arrived (0: the stream is still aligned)
        self.partial_bytes = 0

    # --- bytes -------------------------------------------------------------------------
    def _recv_into(self, view: memoryview, what: str, timeout: float | None = None) -> None:
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        self.partial_bytes = 0
        got, n = 0, len(view)
        while got < n:
            try:
                k = self.sock.recv_into(view[got:])
            except TimeoutError as err:
                self.partial_bytes = got
                raise DetectorTimeoutError(
                    f"{self.where}: nothing for {self.sock.gettimeout():g} s while reading {what} at byte "
                    f"{self.offset + got} ({got} of {n} bytes arrived)", frames_received=self._count()) from err
            except OSError as err:
                raise DetectorDisconnectedError(f"{self.where}: {err} while reading {what} at byte "
                                                f"{self.offset + got}", frames_received=self._count()) from err
            if k == 0:
                raise DetectorDisconnectedError(
                    f"{self.where}: the detector closed the connection at byte {self.offset + got}, {got} of {n} "
                    f"bytes into {what}{self._progress()}", frames_received=self._count())
            got += k
        self.offset += n

    def _count(self) -> int | None:
        return self.frames if self.acquisition is not None else None

    def _progress(self) -> str:
        aq = self.acquisition
        if aq is None:
            return ""
        return f", after {self.frames} of {aq.nav_shape[0] * aq.nav_shape[1]} frames of acquisition {aq.sequence}"

    def read_header(self, timeout: float | None = None) -> object:
        raw = bytearray(HEADER_SIZE)
        at = self.offset
        self._recv_into(memoryview(raw), "a header", timeout)
        return unpack(bytes(raw), offset=at, where=self.where)

    # --- acquisitions ------------------------------------------------------------------
    def read_acquisition_start(self, timeout: float | None = None) -> AcquisitionStart:
        """Wait (``timeout`` s for the first byte) for the next acquisition and check its header."""
        at = self.offset
        head = self.read_header(timeout)
        if not isinstance(head, AcquisitionStart):
            raise DetectorProtocolError(f"{self.where}: byte {at}: expected an AcquisitionStart header; got "
                                        f"{type(head).__name__}")
        if head.format_type != FORMAT_CSR:
            raise DetectorProtocolError(f"{self.where}: byte {at}: AcquisitionStart announces format_type "
                                        f"{head.format_type}; only 0 (CSR) is supported")
        dtype_of(head.indptr_code, "indptr_dtype", f"{self.where}: byte {at}: AcquisitionStart")
        dtype_of(head.indices_code, "indices_dtype", f"{self.where}: byte {at}: AcquisitionStart")
        if min(head.nav_shape) < 1 or min(head.sig_shape) < 1:
            raise DetectorProtocolError(f"{self.where}: byte {at}: AcquisitionStart announces nav {head.nav_shape} "
                                        f"and sig {head.sig_shape}; both must be positive")
        self.acquisition, self.frames, self._tail, self.ended = head, 0, None, False
        return head

    @property
    def n_frames(self) -> int:
        aq = self.acquisition
        return 0 if aq is None else aq.nav_shape[0] * aq.nav_shape[1]

    def read_block(self, n: int, value_dtype: np.dtype) -> tuple[CsrBlock, DetectorError | None]:
        """The next ``n`` frames of the acquisition (fewer at AcquisitionEnd), and the error
        that cut them short, if one did (the frames before it are in the block)."""
        block = CsrBlock([], [], [])
        try:
            self._read_block(block, n, value_dtype)
        except DetectorError as err:
            err.frames_received = self.frames
            return block, err
        return block, None

    def _read_block(self, block: CsrBlock, n: int, value_dtype: np.dtype) -> None:
        if self._tail is not None:
            self._add(block, *self._tail, n, value_dtype)
        while block.n_frames < n and not self.ended:
            at = self.offset
            head = self.read_header()
            if isinstance(head, ArrayChunk):
                self._add(block, *self._read_chunk(head, at), n, value_dtype)
            elif isinstance(head, ScanStart):
                self._skip_metadata(head)
            elif isinstance(head, ScanEnd):
                continue
            elif isinstance(head, AcquisitionEnd):
                self.ended = True
            else:
                raise DetectorProtocolError(
                    f"{self.where}: byte {at}: an AcquisitionStart inside acquisition "
                    f"{self.acquisition.sequence if self.acquisition else '?'}{self._progress()}; expected "
                    "ArrayChunk, ScanStart, ScanEnd or AcquisitionEnd", frames_received=self.frames)

    def finish(self, timeout: float | None = None) -> None:
        """All frames are in: read on to the AcquisitionEnd (ScanEnd allowed before it)."""
        while not self.ended:
            at = self.offset
            head = self.read_header(timeout)
            if isinstance(head, AcquisitionEnd):
                self.ended = True
            elif isinstance(head, ScanEnd | ScanStart):
                if isinstance(head, ScanStart):
                    self._skip_metadata(head)
            else:
                raise DetectorProtocolError(
                    f"{self.where}: byte {at}: {type(head).__name__} after all {self.n_frames} frames of "
                    "the acquisition; expected ScanEnd or AcquisitionEnd", frames_received=self.frames)
        self.acquisition = None

    def _skip_metadata(self, head: ScanStart) -> None:
        left = check_size(head.metadata_length, MAX_METADATA, field="ScanStart metadata_length",
                          where=f"{self.where}: byte {self.offset - HEADER_SIZE}", error=DetectorProtocolError)
        kept = bytearray()
        buf = bytearray(min(left, 2**20))
        while left:
            k = min(left, len(buf))
            self._recv_into(memoryview(buf)[:k], "the ScanStart metadata")
            kept += buf[:k]
            left -= k
        self.scan_metadata = bytes(kept)

    def _read_chunk(self, head: ArrayChunk, at: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        aq = self.acquisition
        assert aq is not None
        where = f"{self.where}: byte {at}: ArrayChunk"
        vdt = dtype_of(head.value_code, "value_dtype", where)
        ipdt = dtype_of(aq.indptr_code, "indptr_dtype", where)
        ixdt = dtype_of(aq.indices_code, "indices_dtype", where)
        size = head.values_offset + head.nnz * vdt.itemsize
        bad = None
        if head.nframes < 1:
            bad = f"nframes {head.nframes}; expected at least 1"
        elif self.frames + head.nframes > self.n_frames:
            bad = (f"{head.nframes} frames after {self.frames}, more than the {self.n_frames} the acquisition "
                   "announced")
        elif head.indices_offset < (head.nframes + 1) * ipdt.itemsize or \
                head.values_offset < head.indices_offset + head.nnz * ixdt.itemsize:
            bad = (f"indices_offset {head.indices_offset} / values_offset {head.values_offset} overlap the "
                   f"indptr ({head.nframes + 1} x {ipdt.name}) or the indices ({head.nnz} x {ixdt.name})")
        elif size > self.max_chunk_bytes:
            bad = f"a payload of {size} bytes, over the limit of {self.max_chunk_bytes} (max_chunk_bytes)"
        if bad is not None:
            raise DetectorProtocolError(f"{where} announces {bad}", frames_received=self.frames)
        raw = np.empty(size, dtype=np.uint8)
        self._recv_into(memoryview(raw.data), f"an ArrayChunk payload of {size} bytes")
        indptr = raw[: (head.nframes + 1) * ipdt.itemsize].view(ipdt)
        indices = raw[head.indices_offset: head.indices_offset + head.nnz * ixdt.itemsize].view(ixdt)
        values = raw[head.values_offset: size].view(vdt)
        frame_size = aq.sig_shape[0] * aq.sig_shape[1]
        if indptr[0] != 0 or indptr[-1] != head.nnz or np.any(indptr[1:] < indptr[:-1]):
            raise DetectorProtocolError(f"{where}: indptr must rise from 0 to nnz {head.nnz}; got "
                                        f"{indptr[0]}..{indptr[-1]}", frames_received=self.frames)
        if head.nnz and int(indices.max()) >= frame_size:
            raise DetectorProtocolError(f"{where}: a pixel index {int(indices.max())} outside the "
                                        f"{aq.sig_shape[0]}x{aq.sig_shape[1]} frame", frames_received=self.frames)
        return indptr.astype(np.int64), indices, values

    def _add(self, block: CsrBlock, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, n: int,
             value_dtype: np.dtype) -> None:
        """Take frames of a chunk into ``block`` up to ``n`` frames; keep the rest as the tail."""
        take = min(n - block.n_frames, len(indptr) - 1)
        cut = int(indptr[take])
        if cut and value_dtype.kind in "iu" and values.dtype != value_dtype and \
                values.dtype.itemsize >= value_dtype.itemsize and \
                int(values[:cut].max()) > np.iinfo(value_dtype).max:
            raise DetectorError(
                f"{self.where}: a value of {int(values[:cut].max())} ({values.dtype.name}) does not fit the "
                f"acquisition's dtype {value_dtype.name}; make the acquisition with dtype='uint64'",
                frames_received=self.frames)
        block.indptr.append(indptr[1: take + 1] + block.nnz)
        block.indices.append(indices[:cut])
        block.values.append(values[:cut])
        block.n_frames += take
        block.nnz += cut
        self.frames += take
        rest = len(indptr) - 1 - take
        self._tail = None if rest == 0 else (indptr[take:] - cut, indices[cut:], values[cut:])

    def close(self) -> None:
        self.sock.close()
