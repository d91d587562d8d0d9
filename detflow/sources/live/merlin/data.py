"""Merlin data port client: acquisition headers and frames, received and decoded in bulk.

The stream (default port 6342; format notes in ``shared/reference/protocols.md`` 1.2)
is MPX messages back to back: an acquisition header, then one message per frame, all
frames of an acquisition the same size, then the next acquisition's header on the
same socket. :class:`MerlinDataStream` is the client; its state and policies:

**Receive buffer.** Bytes received but not consumed stay in a small ``bytearray``
(``_pending``): what arrived behind the acquisition header, the first frame peeked
at to learn the layout, frames held over for the next call. Frames themselves are
received straight into a preallocated ``uint8`` buffer of message slots (about
``chunk_bytes`` per chunk, so it stays in cache between receiving and decoding):
each ``recvmsg_into`` call scatters the stream over up to 64 slots, and each slot
is placed so that its pixel data starts 64-byte aligned (frame messages have odd
sizes; packed back to back, most frames' pixels would sit at odd addresses, where
numpy's byte-swapping copy is several times slower). The chunk is then checked
with numpy on the ``(k, message_bytes)`` view of the slots (the ``MPX,<length>,MQ1,``
prefix of every message at once, the six-digit sequence numbers as one matrix
product) and decoded with one :func:`~detflow.sources.mib_decode.decode_frames` call
into the caller's array. Nothing is copied per frame in Python. :meth:`~MerlinDataStream.read_raw`
does the same without decoding, straight into message slots the caller owns (a live
partition's shared segment); :class:`RawFramesReader` decodes them where they are read.

**Where frames go.** A frame goes to the slot of the sequence number it carries:
frame ``s`` (1-based) is acquisition index ``s - 1``. Merlin numbers the frames of an
acquisition 1..N, so a gap in the numbers means frames were lost on the way; their
slots are left zero, the gap is logged as a warning and kept in :attr:`gaps`, and the
frames after it stay where the scan put them (LiberTEM-live instead resyncs to the
numbers and shifts the rest of the scan). Sequence numbers that repeat or go
backwards, or pass ``Frames in Acquisition``, are a
:class:`~detflow.errors.DetectorProtocolError`.

**When an acquisition ends.** When the frame numbered ``Frames in Acquisition``
arrives (0 = endless: never), or when the next acquisition header arrives early
(frames at the end were lost: a warning). :meth:`~MerlinDataStream.read_acquisition_header`
then reads the next acquisition on the same socket.

**Garbage.** Bytes before an acquisition header are skipped: the reader scans for
``MPX,<10 digits>,HDR,`` and logs how many bytes it skipped (stale data of an
earlier, aborted acquisition, say). Between frames there is no safe way back into
step (pixel data can hold any bytes, ``MPX,`` included), so anything that is not the
next frame message (nor an acquisition header) is a ``DetectorProtocolError`` giving
the byte offset and the frame where it happened. So is a frame whose MPX length
differs from the first frame's.

**Failures.** Every wait has a deadline: ``timeout`` bounds the whole acquisition
header, the first frame's header, and each frame in turn (from the end of the one
before), not each ``recv``, so a peer trickling a byte at a time is a
:class:`~detflow.errors.DetectorTimeoutError` as surely as silence (a partly received
frame is kept, so the call may be retried). Lengths the peer announces are checked
against :mod:`detflow.sources.limits` before anything is buffered for them; the peer closing the connection raises
:class:`~detflow.errors.DetectorDisconnectedError`. Both carry ``frames_received`` and
say "N of M frames arrived"; the frames that did arrive have been written to the
caller's array first (up to :attr:`~MerlinDataStream.next_index`).
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from detflow.errors import (
    ConfigurationError,
    DetectorDisconnectedError,
    DetectorError,
    DetectorProtocolError,
    DetectorTimeoutError,
    SourceFormatError,
)
from detflow.sources.base import FrameReader
from detflow.sources.limits import MAX_FRAME_BYTES, MAX_HEADER_BYTES, check_size
from detflow.sources.live.merlin.protocol import (
    HEADER_PATTERN,
    PREFIX_BYTES,
    AcquisitionHeader,
    PortClient,
    message_prefix,
    shown,
)
from detflow.sources.mib_decode import MibLayout, decode_frames, parse_frame_header

__all__ = ["MerlinDataStream", "RawFramesReader"]

log = logging.getLogger(__name__)

_MAGIC = b"MQ1,"
#: ``MPX,<10 digits>,MQ1,``: what every frame message starts with
_CHECK_BYTES = PREFIX_BYTES + len(_MAGIC)
#: the longest header prefix that may be cut off at the end of what was received
_HEADER_PREFIX_KEEP = len(b"MPX,0000000000,HDR,") - 1
#: small reads: headers, peeks, draining
_SMALL_READ = 1 << 16
_POW10 = 10 ** np.arange(5, -1, -1, dtype=np.int64)
#: why a chunk's reception stopped short
_FULL, _END, _HEADER, _GARBAGE, _LENGTH, _EOF, _TIMEOUT = range(7)


class MerlinDataStream(PortClient):
    """A connection to Merlin's data port.

    Parameters
    ----------
    host, port
        Where Merlin (or its simulator) serves data.
    timeout
        Seconds of silence before :class:`~detflow.errors.DetectorTimeoutError`, and
        the default wait for an acquisition header.
    drain
        On connecting, discard whatever arrives during the first 100 ms (stale data).
    chunk_bytes
        About how many bytes to receive before decoding them.

    Attributes
    ----------
    header : AcquisitionHeader or None
        The current acquisition's header.
    gaps : list of (expected, got)
        Sequence-number jumps in the current acquisition: frames ``expected .. got - 1``
        were lost (their slots are zero).
    skipped_bytes, drained_bytes : int
        Bytes skipped before acquisition headers, and discarded by ``drain``, since
        connecting.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from detflow.sources.mib_write import write_mib
    >>> from detflow.sources.live.merlin.sim import MerlinSimulator
    >>> d = tempfile.mkdtemp()
    >>> frames = np.arange(6 * 16 * 16, dtype=np.uint16).reshape(2, 3, 16, 16)
    >>> _ = write_mib(os.path.join(d, "scan.hdr"), frames)
    >>> with MerlinSimulator(os.path.join(d, "scan.hdr"), data_port=0, control_port=0) as sim:
    ...     with MerlinDataStream("127.0.0.1", sim.data_port) as stream:
    ...         header = stream.read_acquisition_header()
    ...         out = np.empty((4, 16, 16), stream.first_frame_layout.dtype)
    ...         counts = [stream.read_frames(out), stream.read_frames(out)]
    >>> header.n_frames, header.scan_shape, counts, stream.acquisition_done
    (6, (2, 3), [4, 2], True)
    >>> bool((out[:2] == frames[1, 1:]).all())
    True
    """

    port_name = "data"

    def __init__(self, host: str = "127.0.0.1", port: int = 6342, *, timeout: float = 5.0, drain: bool = False,
                 chunk_bytes: int = 4 << 20) -> None:
        super().__init__(host, port, timeout)
        self.drain = bool(drain)
        self.chunk_bytes = max(1, int(chunk_bytes))
        self._pending = bytearray()
        self._messages = np.empty((0, 0), dtype=np.uint8)
        self._row_views: list[memoryview] = []
        self._allocated_for: MibLayout | None = None
        self.skipped_bytes = 0
        self.drained_bytes = 0
        self._new_acquisition(None)

    def _new_acquisition(self, header: AcquisitionHeader | None) -> None:
        self.header = header
        self.gaps: list[tuple[int, int]] = []
        self._layout: MibLayout | None = None
        self._msg_bytes = 0
        self._template = np.empty(0, dtype=np.uint8)
        self._frames_received = 0
        self._next_index = 0
        self._last_seq = 0
        self._acq_bytes = 0  # bytes of frame messages consumed in this acquisition
        self._done = header is None

    def _connected(self) -> None:
        """A fresh connection: nothing pending; drain stale bytes if asked to."""
        self._pending = bytearray()
        self.skipped_bytes = self.drained_bytes = 0
        self._new_acquisition(None)
        if self.drain:
            self._drain(0.1)

    def close(self) -> None:
        super().close()
        self._pending = bytearray()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise DetectorDisconnectedError(f"{self.where}: not connected; call connect() first",
                                            frames_received=self._received_or_none())
        return self._sock

    def _drain(self, seconds: float) -> None:
        sock = self._socket()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(_SMALL_READ)
            except TimeoutError:
                break
            if not data:
                self.close()
                raise DetectorDisconnectedError(f"{self.where}: the connection closed while draining stale data")
            self.drained_bytes += len(data)
        sock.settimeout(self.timeout)
        if self.drained_bytes:
            log.info("%s: drained %d bytes of stale data after connecting", self.where, self.drained_bytes)

    # --- state --------------------------------------------------------------------------
    @property
    def frames_received(self) -> int:
        """Frames of the current acquisition that arrived (lost ones not counted)."""
        return self._frames_received

    @property
    def next_index(self) -> int:
        """Acquisition index of the slot the next :meth:`read_frames` call fills first."""
        return self._next_index

    @property
    def acquisition_done(self) -> bool:
        """True when no acquisition is in progress: none yet, or the last one ended."""
        return self._done

    @property
    def n_frames(self) -> int | None:
        """``Frames in Acquisition`` of the current acquisition (0: endless), if any."""
        return None if self.header is None else self.header.n_frames

    def _received_or_none(self) -> int | None:
        return None if self.header is None else self._frames_received

    def _progress(self) -> str:
        if self.header is None:
            return "before any acquisition header"
        n = self.header.n_frames
        if n == 0:
            return f"{self._frames_received} frames of an endless acquisition arrived"
        return f"{self._frames_received} of {n} frames arrived"

    def _fail(self, cls: type[DetectorError], message: str) -> DetectorError:
        return cls(f"{self.where}: {message} ({self._progress()})", frames_received=self._received_or_none())

    # --- small reads: headers and peeks ------------------------------------------------
    def _fill(self, what: str, deadline: float | None = None) -> None:
        """Receive more bytes into ``_pending``, within ``timeout`` (or until ``deadline``)."""
        sock = self._socket()
        wait = self.timeout if deadline is None else deadline - time.monotonic()
        if wait <= 0:
            raise TimeoutError
        sock.settimeout(wait)
        try:
            data = sock.recv(_SMALL_READ)
        except TimeoutError as err:
            raise self._fail(DetectorTimeoutError,
                             f"nothing received for {wait:.3g} s while waiting for {what}") from err
        except OSError as err:
            self.close()
            raise self._fail(DetectorDisconnectedError,
                             f"the connection failed while waiting for {what}: {err}") from err
        finally:
            if self._sock is not None:
                sock.settimeout(self.timeout)
        if not data:
            self.close()
            raise self._fail(DetectorDisconnectedError, f"the connection closed while waiting for {what}")
        self._pending += data

    def read_acquisition_header(self, timeout: float | None = None) -> AcquisitionHeader:
        """Wait (up to ``timeout`` s, default the stream's) for the next acquisition header.

        Bytes before it are skipped with a warning saying how many; so is the rest of
        an acquisition that was not read to its end.
        """
        limit = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + limit
        if not self._done:
            log.warning("%s: skipping the rest of the current acquisition (%s) to the next header",
                        self.where, self._progress())
        skipped = 0
        what = "an acquisition header"
        try:
            while (m := HEADER_PATTERN.search(self._pending)) is None:
                if len(self._pending) > _HEADER_PREFIX_KEEP:
                    skipped += len(self._pending) - _HEADER_PREFIX_KEEP
                    del self._pending[:-_HEADER_PREFIX_KEEP]
                self._fill(what, deadline)
            length = check_size(int(m.group(1)) - 1, MAX_HEADER_BYTES, field="acquisition header length",
                                where=f"{self.where}: acquisition header", error=DetectorProtocolError)
            start, total = m.start(), PREFIX_BYTES + length
            skipped += start
            del self._pending[:start]
            while len(self._pending) < total:
                self._fill("the rest of the acquisition header", deadline)
        except TimeoutError:  # the deadline passed between two reads
            raise DetectorTimeoutError(f"{self.where}: no acquisition header within {limit:.3g} s") from None
        except DetectorTimeoutError as err:
            raise DetectorTimeoutError(f"{self.where}: no acquisition header within {limit:.3g} s") from err
        if skipped:
            self.skipped_bytes += skipped
            log.warning("%s: skipped %d bytes that were not an acquisition header before the next one",
                        self.where, skipped)
        payload = bytes(self._pending[PREFIX_BYTES:total])
        del self._pending[:total]
        header = AcquisitionHeader.parse(payload, f"{self.where}: acquisition header")
        self._new_acquisition(header)
        return header

    @property
    def first_frame_layout(self) -> MibLayout:
        """The layout of the current acquisition's frames, from its first frame header.

        Peeks at the first frame without consuming it (waiting up to ``timeout``).
        """
        if self._layout is None:
            if self.header is None:
                raise DetectorError(f"{self.where}: no acquisition yet; call read_acquisition_header() first")
            self._layout = self._peek_layout()
            self._msg_bytes = PREFIX_BYTES + self._layout.frame_bytes
            self._template = np.frombuffer(message_prefix(self._layout.frame_bytes) + _MAGIC, dtype=np.uint8)
        return self._layout

    def _peek_layout(self) -> MibLayout:
        what = "the first frame"
        min_header = 64  # parse_frame_header's smallest header
        deadline = time.monotonic() + self.timeout  # for the whole first frame header, not each recv
        try:
            return self._peek_layout_until(what, min_header, deadline)
        except TimeoutError:
            raise self._fail(DetectorTimeoutError,
                             f"the first frame's header did not arrive in full within {self.timeout:.3g} s") from None

    def _peek_layout_until(self, what: str, min_header: int, deadline: float) -> MibLayout:
        while len(self._pending) < PREFIX_BYTES + min_header:
            self._fill(what, deadline)
        head = bytes(self._pending[: PREFIX_BYTES + min_header])
        where = f"{self.where}: first frame of the acquisition"
        if HEADER_PATTERN.match(head):
            raise DetectorProtocolError(f"{where}: another acquisition header instead of a frame")
        if not head.startswith(b"MPX,") or head[PREFIX_BYTES:_CHECK_BYTES] != _MAGIC:
            raise DetectorProtocolError(
                f"{where}: expected 'MPX,<10 digits>,MQ1,...' right after the acquisition header; "
                f"got {shown(head)!r}"
            )
        try:
            length = int(head[4:14]) - 1
            header_bytes = int(head[PREFIX_BYTES:].split(b",")[2])
        except (ValueError, IndexError):
            raise DetectorProtocolError(f"{where}: cannot read the message length or frame header size from "
                                        f"{shown(head, 60)!r}") from None
        check_size(length, MAX_FRAME_BYTES, field="frame message length", where=where, error=DetectorProtocolError)
        while len(self._pending) < PREFIX_BYTES + header_bytes:
            self._fill(what, deadline)
        raw = bytes(self._pending[PREFIX_BYTES : PREFIX_BYTES + header_bytes])
        try:
            layout = MibLayout.from_header(parse_frame_header(raw, where), where)
        except SourceFormatError as err:
            raise DetectorProtocolError(str(err)) from err
        if length != layout.frame_bytes:
            raise DetectorProtocolError(
                f"{where}: the MPX message holds {length} bytes, but its frame header says "
                f"{layout.header_bytes} + {layout.data_bytes} bytes ({layout.describe()})"
            )
        return layout

    # --- frames -----------------------------------------------------------------------
    def read_frames(self, out: np.ndarray) -> int:
        """Receive the next ``len(out)`` frames of the acquisition and decode them into ``out``.

        ``out`` has shape ``(n, *sig_shape)`` and the layout's dtype or any dtype that
        holds it (``float32``, ...). ``out[i]`` receives acquisition index
        ``next_index + i``; lost frames leave their slot zero. Returns how many slots
        were filled: ``len(out)``, fewer only when the acquisition ended (0 once it has).
        """
        if self.header is None:
            raise DetectorError(f"{self.where}: no acquisition yet; call read_acquisition_header() first")
        if self._done and self._layout is None or len(out) == 0:
            return 0
        layout = self.first_frame_layout
        if out.ndim != 3 or tuple(out.shape[1:]) != layout.sig_shape:
            raise ConfigurationError(
                f"{self.where}: read_frames needs an array of shape (n, {layout.sig_shape[0]}, "
                f"{layout.sig_shape[1]}) for {layout.describe()} frames; got {out.shape}"
            )
        if out.dtype != layout.dtype and not np.can_cast(layout.dtype, out.dtype, "safe"):
            raise ConfigurationError(
                f"{self.where}: read_frames: {layout.dtype} frames do not fit dtype {out.dtype}; "
                f"use {layout.dtype} or wider"
            )
        if self._done:
            return 0
        n_total = self.header.n_frames
        base = self._next_index
        end = base + len(out) if n_total == 0 else min(base + len(out), n_total)
        chunk_frames = max(1, self.chunk_bytes // self._msg_bytes)
        if self._messages.shape[0] < chunk_frames or self._allocated_for != layout:
            self._allocate(chunk_frames, layout)
        while self._next_index < end and not self._done:
            rows, why = self._receive(min(end - self._next_index, chunk_frames))
            if len(rows):
                self._place(rows, out, base, end)
            if why not in (_FULL, _END):
                self._stopped(why)
        return self._next_index - base

    def _allocate(self, n: int, layout: MibLayout) -> None:
        """The chunk buffer: ``n`` message slots, each placed so that its pixel data
        starts on a 64-byte boundary (numpy's byte-swapping copy is several times
        faster from aligned memory than from the odd offsets of a packed stream)."""
        mb = self._msg_bytes
        lead = -(PREFIX_BYTES + layout.header_bytes) % 64
        stride = -(-(lead + mb) // 64) * 64
        raw = np.empty(n * stride + 64, dtype=np.uint8)
        start = -raw.ctypes.data % 64
        self._messages = raw[start : start + n * stride].reshape(n, stride)[:, lead : lead + mb]
        self._row_views = [memoryview(row) for row in self._messages]  # type: ignore[arg-type]
        self._allocated_for = layout

    def _take_pending(self, limit: int) -> int:
        """Move up to ``limit`` bytes from ``_pending`` into the message slots."""
        take = min(len(self._pending), limit)
        if take:
            data = np.frombuffer(bytes(self._pending[:take]), dtype=np.uint8)
            del self._pending[:take]
            mb = self._msg_bytes
            for r, pos in enumerate(range(0, take, mb)):
                self._messages[r, : min(mb, take - pos)] = data[pos : pos + mb]
        return take

    def _gather(self, row: int, filled: int) -> bytes:
        """The bytes in the message slots from the start of ``row`` up to stream position ``filled``."""
        last, tail = divmod(filled, self._msg_bytes)
        parts = [self._messages[r].tobytes() for r in range(row, last)]
        if tail:
            parts.append(self._messages[last, :tail].tobytes())
        return b"".join(parts)

    def _receive(self, want: int) -> tuple[np.ndarray, int]:
        """Up to ``want`` frame messages, checked: ``(rows (k, message_bytes), why it stopped)``.

        One ``recvmsg_into`` call fills many message slots (scatter); bytes behind the
        rows (a partial frame, the next header, garbage) go back to ``_pending``.
        """
        sock = self._socket()
        mb, template, msgs, views = self._msg_bytes, self._template, self._messages, self._row_views
        filled = self._take_pending(want * mb)
        n_total = self.header.n_frames if self.header is not None else 0
        checked = 0
        why = _FULL
        # the timeout bounds the wait for each whole frame, not each recv: a peer that
        # trickles a byte at a time runs into it as surely as one that falls silent
        deadline = time.monotonic() + self.timeout
        progress = filled // mb
        while True:
            complete = filled // mb
            if complete > progress:
                progress = complete
                deadline = time.monotonic() + self.timeout
            if complete > checked:
                bad = np.flatnonzero((msgs[checked:complete, :_CHECK_BYTES] != template).any(axis=1))
                if bad.size:
                    checked += int(bad[0])
                    why = self._classify(msgs[checked, :_CHECK_BYTES])
                    break
                checked = complete
                if n_total and self._sequences(msgs[complete - 1 : complete])[0] >= n_total:
                    why = _END
                    break
            if checked == want:
                break
            row, offset = divmod(filled, mb)
            if offset:
                head = msgs[row, : min(offset, _CHECK_BYTES)]
                if (head != template[: len(head)]).any():
                    why = self._classify(head) if len(head) == _CHECK_BYTES else _GARBAGE
                    break
            left = deadline - time.monotonic()
            if left <= 0:
                why = _TIMEOUT
                break
            try:
                sock.settimeout(left)
                got = sock.recvmsg_into([views[row][offset:], *views[row + 1 : min(want, row + 64)]])[0]
            except TimeoutError:
                why = _TIMEOUT
                break
            except OSError:
                got = 0
            if got == 0:
                why = _EOF
                break
            filled += got
        if filled > checked * mb:
            self._pending[0:0] = self._gather(checked, filled)
        self._acq_bytes += checked * mb
        return msgs[:checked], why

    @staticmethod
    def _classify(start: np.ndarray) -> int:
        """What stands where the next frame message should start (its first bytes)."""
        head = start[:_CHECK_BYTES].tobytes()
        if HEADER_PATTERN.match(head):
            return _HEADER
        if head.startswith(b"MPX,") and head[4:14].isdigit() and head[PREFIX_BYTES:] == _MAGIC:
            return _LENGTH
        return _GARBAGE

    def _sequences(self, rows: np.ndarray) -> np.ndarray:
        """The sequence numbers of frame messages ``rows``: the six digits after ``MQ1,``."""
        digits = rows[:, _CHECK_BYTES : _CHECK_BYTES + 6].astype(np.int64) - ord("0")
        fixed = ((digits >= 0) & (digits <= 9)).all() and (rows[:, _CHECK_BYTES + 6] == ord(",")).all()
        if fixed:
            return digits @ _POW10
        seqs = np.empty(len(rows), dtype=np.int64)  # more than six digits (a million frames and more)
        for i, row in enumerate(rows):
            field = row[_CHECK_BYTES : _CHECK_BYTES + 24].tobytes().split(b",")[0]
            if not field.isdigit():
                raise self._fail(DetectorProtocolError,
                                 f"frame {self._frames_received + i}: sequence number {shown(field)!r} is not a number")
            seqs[i] = int(field)
        return seqs

    def _place(self, rows: np.ndarray, out: np.ndarray, base: int, end: int) -> None:
        """Decode ``rows`` into the slots of ``out`` their sequence numbers name."""
        lo, hi = self._next_index - base, end - base
        m, slots = self._accept(rows, base, end)
        if m == 0:
            out[lo:hi] = 0
            return
        first, last = int(slots[0]), int(slots[-1])
        out[lo:first] = 0
        if last - first == m - 1:
            self._decode(rows[:m], out[first : last + 1])
        else:
            decoded = np.empty((m, *out.shape[1:]), dtype=out.dtype)
            self._decode(rows[:m], decoded)
            out[first : last + 1] = 0
            out[slots] = decoded
        if m < len(rows):
            out[last + 1 : hi] = 0

    def _accept(self, rows: np.ndarray, base: int, end: int) -> tuple[int, np.ndarray]:
        """Check the sequence numbers of ``rows`` and account for them: ``(m, slots)``,
        the first ``m`` rows belong to slots ``base + slots`` (< ``end``); the rest go back
        to ``_pending`` for a later call. Gaps are logged and kept in :attr:`gaps`."""
        assert self.header is not None and self._layout is not None
        seqs = self._sequences(rows)
        prev = np.concatenate(([self._last_seq], seqs[:-1]))
        back = np.flatnonzero(seqs <= prev)
        if back.size:
            i = int(back[0])
            raise self._fail(DetectorProtocolError,
                             f"frame message {self._frames_received + i} carries sequence number {seqs[i]} after "
                             f"{prev[i]}: sequence numbers must increase within an acquisition")
        n_total = self.header.n_frames
        if n_total and seqs[-1] > n_total:
            raise self._fail(DetectorProtocolError,
                             f"sequence number {seqs[-1]} is beyond the acquisition's {n_total} frames")
        slots = seqs - 1 - base
        m = int(np.searchsorted(slots, end - base))  # rows[m:] belong to a later call
        if m < len(rows):
            self._pending[0:0] = rows[m:].tobytes()
            self._acq_bytes -= (len(rows) - m) * rows.shape[1]
        if m == 0:
            self._next_index = end
            return 0, slots[:0]
        slots, seqs, prev = slots[:m], seqs[:m], prev[:m]
        for j in np.flatnonzero(seqs != prev + 1):
            expected, got = int(prev[j]) + 1, int(seqs[j])
            self.gaps.append((expected, got))
            log.warning("%s: frames %d..%d of the acquisition are missing (sequence number %d followed %d); "
                        "their slots stay zero", self.where, expected, got - 1, got, expected - 1)
        self._next_index = end if m < len(rows) else base + int(slots[-1]) + 1
        self._frames_received += m
        self._last_seq = int(seqs[-1])
        if n_total and self._last_seq == n_total:
            self._done = True
        return m, slots

    # --- frames received undecoded, for the workers to decode --------------------------
    def raw_rows(self, buf: np.ndarray, n: int) -> tuple[np.ndarray, int]:
        """Message slots for ``n`` frames in the flat ``uint8`` array ``buf`` (at least
        :meth:`raw_bytes` ``(n)`` long): ``(rows, data_offset)``, rows ``(n, message_bytes)``
        whose pixel data starts 64-byte aligned, and the byte offset in ``buf`` of the
        first frame header (row ``r``'s is ``data_offset + r * rows.strides[0]``)."""
        layout = self.first_frame_layout
        mb = self._msg_bytes
        lead = -(PREFIX_BYTES + layout.header_bytes) % 64
        stride = -(-(lead + mb) // 64) * 64
        start = -buf.ctypes.data % 64
        rows = buf[start : start + n * stride].reshape(n, stride)[:, lead : lead + mb]
        return rows, start + lead + PREFIX_BYTES

    def raw_bytes(self, n: int) -> int:
        """How long a buffer :meth:`raw_rows` needs for ``n`` frames."""
        layout = self.first_frame_layout
        lead = -(PREFIX_BYTES + layout.header_bytes) % 64
        return n * (-(-(lead + self._msg_bytes) // 64) * 64) + 64

    def read_raw(self, rows: np.ndarray) -> tuple[np.ndarray, DetectorError | None]:
        """Receive the next ``len(rows)`` frames undecoded, straight into the message slots ``rows``.

        Returns ``(where, error)``: ``where[i]`` is the row holding acquisition frame
        ``next_index + i`` as it was before the call, or -1 for a frame that was lost (a
        sequence gap); its length is how many frames the call spans (``len(rows)``, fewer
        only when the acquisition ended or failed). ``error`` is the
        :class:`~detflow.errors.DetectorError` that cut the frames short, if one did;
        the rows before it are received and checked.
        """
        if self.header is None:
            raise DetectorError(f"{self.where}: no acquisition yet; call read_acquisition_header() first")
        if self._done and self._layout is None or len(rows) == 0 or self._done:
            return np.empty(0, dtype=np.int64), None
        self.first_frame_layout  # noqa: B018 - peeks at the layout
        n_total = self.header.n_frames
        base = self._next_index
        end = base + len(rows) if n_total == 0 else min(base + len(rows), n_total)
        where = np.full(end - base, -1, dtype=np.int64)
        saved = self._messages, self._row_views, self._allocated_for
        used = 0
        error: DetectorError | None = None
        try:
            while self._next_index < end and not self._done:
                self._messages = rows[used:]
                self._row_views = [memoryview(row) for row in self._messages]  # type: ignore[arg-type]
                got, why = self._receive(end - self._next_index)
                if len(got):
                    m, slots = self._accept(got, base, end)
                    where[slots] = used + np.arange(m)
                    used += m
                if why not in (_FULL, _END):
                    self._stopped(why)
        except DetectorError as err:
            error = err
        finally:
            self._messages, self._row_views, self._allocated_for = saved
        return where[: self._next_index - base], error

    def _decode(self, rows: np.ndarray, dst: np.ndarray) -> None:
        layout = self._layout
        assert layout is not None
        frames = rows[:, PREFIX_BYTES:]
        if dst.dtype == layout.dtype:
            decode_frames(layout, frames, dst)
        else:
            native = np.empty(dst.shape, dtype=layout.dtype)
            decode_frames(layout, frames, native)
            dst[...] = native

    def _stopped(self, why: int) -> None:
        """Raise, or end the acquisition, for a chunk that stopped short for ``why``."""
        if why == _HEADER:
            assert self.header is not None
            log.warning("%s: the next acquisition header arrived after frame %d of %d: the rest were lost",
                        self.where, self._last_seq, self.header.n_frames)
            self._done = True
            return
        if why == _TIMEOUT:
            raise self._fail(DetectorTimeoutError, f"no complete frame within {self.timeout:.3g} s")
        if why == _EOF:
            self.close()
            raise self._fail(DetectorDisconnectedError, "the connection closed mid-acquisition")
        got = bytes(self._pending[:_CHECK_BYTES])
        expected = self._template.tobytes().decode("latin-1")
        at = (f"at byte {self._acq_bytes} of the acquisition's frame data, where frame message "
              f"{self._frames_received} should start (after sequence number {self._last_seq})")
        if why == _LENGTH:
            raise self._fail(DetectorProtocolError,
                             f"frame size changed mid-acquisition {at}: expected {expected!r} as the first "
                             f"frame had; got {shown(got)!r}")
        raise self._fail(DetectorProtocolError,
                         f"garbage in the frame stream {at}: expected {expected!r}; got {shown(got)!r}; "
                         "frames cannot be resynchronised safely mid-acquisition (pixel data may hold any "
                         "bytes): reconnect and start a new acquisition")


@dataclass(frozen=True)
class RawFramesReader:
    """A :class:`~detflow.sources.base.FrameReader` over Merlin frames as they came off
    the socket (:meth:`MerlinDataStream.read_raw`), decoded when read, in the process
    that reads them (a worker).

    ``payload`` reads the partition's message slots as one flat ``uint8`` stream;
    frame ``k`` of the partition has its frame header at byte ``offsets[k]`` of it
    (``-1``: the frame was lost, it reads as zeros); pixel ``base`` of the
    acquisition's pixel stream is the first pixel of frame 0.
    """

    payload: FrameReader = field(repr=False)
    offsets: np.ndarray = field(repr=False)
    layout: MibLayout
    base: int
    total: int

    @property
    def dtype(self) -> np.dtype:
        return self.layout.dtype

    @property
    def n_pixels(self) -> int:
        return self.total

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        layout = self.layout
        fsize = layout.frame_size
        lo, hi = start - self.base, stop - self.base
        if lo < 0 or hi > len(self.offsets) * fsize:
            raise IndexError(f"pixels {start}:{stop} lie outside this reader's range "
                             f"{self.base}:{self.base + len(self.offsets) * fsize}")
        first, last = lo // fsize, -(-hi // fsize)
        out = np.empty((last - first, *layout.sig_shape), dtype=layout.dtype)
        if last > first:
            buf = self.payload.read_pixels(0, self.payload.n_pixels)
            offs = self.offsets[first:last]
            step = int(offs[1] - offs[0]) if len(offs) > 1 else 0
            if offs[0] >= 0 and (len(offs) == 1 or (step > 0 and (np.diff(offs) == step).all())):
                frames = np.lib.stride_tricks.as_strided(buf[int(offs[0]):], shape=(len(offs), layout.frame_bytes),
                                                         strides=(step, 1), writeable=False)
                decode_frames(layout, frames, out)
            else:  # a gap: frame by frame, the lost ones zero
                for k, off in enumerate(offs):
                    if off < 0:
                        out[k] = 0
                    else:
                        decode_frames(layout, buf[int(off) : int(off) + layout.frame_bytes][None], out[k : k + 1])
        return out.reshape(-1)[lo - first * fsize : hi - first * fsize]

    def restrict(self, start: int, stop: int) -> RawFramesReader:
        return self
