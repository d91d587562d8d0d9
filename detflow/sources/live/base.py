"""Live acquisitions: datasets whose partitions arrive over time, with their data.

A detector is reached through a :class:`LiveConnection` (a context manager; one per
detector, reused for many acquisitions). An acquisition (:class:`LiveAcquisition`)
is a :class:`~detflow.sources.base.Source` like any file: ``run_udf``,
``run_udf_iter`` and graphs take it, and it hands out :class:`Partition` objects in
nav order. The difference is *when*: an offline source's partitions are recipes
read by workers, a live source's partitions are received by the driver, frame by
frame, into one buffer per partition, and carry that buffer (staged to shared
memory by the process executors).

Two ways to start an acquisition, as in LiberTEM-live:

* **active**: ``ctx.make_acquisition(conn=conn, nav_shape=..., hooks=MyHooks())``.
  When the run starts the acquisition gets ready to receive, then calls
  ``hooks.on_ready_for_data(env)``: the place to arm and trigger the detector (or
  the scan). Frames are then received and processed.
* **passive**: ``pending = conn.wait_for_acquisition(timeout)`` waits until someone
  else starts one (a :class:`PendingAcquisition`, with the frame count the detector
  announced); ``ctx.make_acquisition(conn=conn, pending_aq=pending)`` processes it.

The navigation shape is decided once, when the acquisition is made, in this order
(:func:`determine_nav_shape`):

1. a concrete ``nav_shape`` given by the caller;
2. ``hooks.on_determine_nav_shape(env)``, if it returns a shape;
3. the detector's own idea of the scan (Merlin's ``ScanY``/``ScanX``);
4. ``nav_shape`` with ``-1`` placeholders, filled from the frame count;
5. a square, where the frame count is a square number;
6. otherwise an error that says what was known.

Receiving runs in a background thread, a few partitions ahead of processing, so the
socket is drained at the detector's pace while workers compute. A detector that goes
silent or disconnects ends the run with a :class:`~detflow.errors.DetectorError`
saying how many frames arrived, *after* every frame that did arrive has been
processed and merged (the last partition is cut short), so partial results and the
sinks' contents are kept.
"""

from __future__ import annotations

import abc
import logging
import math
import queue
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np

from detflow.errors import ConfigurationError, DetectorError
from detflow.sources.base import DatasetMeta, FrameReader, Partition, PartitionPlan, Source
from detflow.sources.readers import ArrayReader

__all__ = [
    "DetermineNavShapeEnv",
    "EncodedFrames",
    "Hooks",
    "LiveAcquisition",
    "LiveConnection",
    "LivePartitions",
    "PendingAcquisition",
    "ReadyForDataEnv",
    "determine_nav_shape",
    "live_partition_frames",
]

log = logging.getLogger("detflow.live")

#: native bytes per live partition when none is given: big enough that per-partition
#: costs vanish, small enough that results show up a few times a second
LIVE_PARTITION_BYTES = 32 * 2**20

#: partitions received ahead of processing (each one buffer of its frames)
PREFETCH = 3


@dataclass(frozen=True)
class PendingAcquisition:
    """An acquisition the detector has announced and not yet sent (passive mode).

    ``nimages`` is the number of frames it will send (``0``: endless, until stopped);
    ``nav_shape`` the scan shape it knows of, if any; ``detector_config`` what else
    it said (for Merlin: the acquisition header's fields).
    """

    nimages: int
    nav_shape: tuple[int, ...] | None = None
    detector_config: dict[str, Any] = field(default_factory=dict, repr=False)
    #: connection-specific state (e.g. the parsed header); not for users
    handle: Any = field(default=None, repr=False, compare=False)


@dataclass
class EncodedFrames:
    """Frames as they came off the wire, for detectors whose frames the workers decode.

    ``blobs`` holds one bytes-like object per frame that arrived;
    ``make_reader(payload, offsets, base, total)`` returns the
    :class:`~detflow.sources.base.FrameReader` that decodes them, where ``payload``
    reads the blobs back to back as flat ``uint8`` (frame ``k`` is bytes
    ``offsets[k]:offsets[k + 1]``) and ``base``, ``total`` are as for any live reader;
    ``error`` is the :class:`~detflow.errors.DetectorError` that ended the reception
    early, if one did (the blobs that arrived are still processed).
    """

    blobs: Sequence[Any]
    make_reader: Callable[[FrameReader, np.ndarray, int, int], FrameReader]
    error: DetectorError | None = None
    #: instead of ``blobs``: the frames already in one flat ``uint8`` payload, with an
    #: index of ``frames + 1`` entries that is handed to ``make_reader`` as ``offsets``
    #: unread (the acquisition defines it: e.g. a CSR ``indptr``)
    packed: tuple[np.ndarray, np.ndarray] | None = None


_ReaderMaker = Callable[[int, int, int], FrameReader]


@dataclass(frozen=True)
class ReadyForDataEnv:
    """What ``Hooks.on_ready_for_data`` gets: the acquisition that is now listening."""

    aq: LiveAcquisition


@dataclass(frozen=True)
class DetermineNavShapeEnv:
    """What ``Hooks.on_determine_nav_shape`` gets.

    ``nimages`` is the announced frame count (``0``: endless); ``shape_hint`` the
    caller's ``nav_shape`` (perhaps with ``-1`` placeholders) or ``None``;
    ``detector_nav_shape`` the detector's own idea, or ``None``.
    """

    nimages: int
    shape_hint: tuple[int, ...] | None
    detector_nav_shape: tuple[int, ...] | None


class Hooks:
    """Callbacks at the points of an acquisition where user code must act.

    Subclass and override what you need::

        class MyHooks(Hooks):
            def on_ready_for_data(self, env):
                control.cmd("STARTACQUISITION")
                control.cmd("SOFTTRIGGER")
    """

    def on_ready_for_data(self, env: ReadyForDataEnv) -> None:  # noqa: B027 - optional hook
        """Active mode: the acquisition listens; arm and trigger the detector here."""

    def on_determine_nav_shape(self, env: DetermineNavShapeEnv) -> Sequence[int] | None:
        """Passive and active mode: return the scan shape, or ``None`` to leave it to the
        detector, the placeholders and the square rule."""
        return None


def determine_nav_shape(
    nav_shape: Sequence[int] | None,
    *,
    nimages: int,
    hooks: Hooks | None = None,
    detector_nav_shape: Sequence[int] | None = None,
    what: str = "live acquisition",
) -> tuple[int, ...]:
    """The scan shape, by the documented order (see the module docstring).

    Examples
    --------
    >>> determine_nav_shape((4, 8), nimages=32)
    (4, 8)
    >>> determine_nav_shape((-1, 8), nimages=32)
    (4, 8)
    >>> determine_nav_shape(None, nimages=32, detector_nav_shape=(2, 16))
    (2, 16)
    >>> determine_nav_shape(None, nimages=36)
    (6, 6)
    """
    hint = None if nav_shape is None else tuple(int(n) for n in nav_shape)
    if hint is not None:
        if not hint or any(n == 0 or n < -1 for n in hint):
            raise ConfigurationError(
                f"{what}: parameter 'nav_shape' must hold positive sizes or -1 placeholders; got {hint}"
            )
        if -1 not in hint:
            return hint
    if hooks is not None:
        shape = hooks.on_determine_nav_shape(
            DetermineNavShapeEnv(nimages=nimages, shape_hint=hint,
                                 detector_nav_shape=_tuple_or_none(detector_nav_shape))
        )
        if shape is not None:
            shape = tuple(int(n) for n in shape)
            if not shape or any(n < 1 for n in shape):
                raise ConfigurationError(
                    f"{what}: Hooks.on_determine_nav_shape returned {shape}; sizes must be positive"
                )
            return shape
    if detector_nav_shape is not None and (hint is None or _fits(hint, detector_nav_shape)):
        return tuple(int(n) for n in detector_nav_shape)
    if hint is not None:
        if hint.count(-1) > 1:
            raise ConfigurationError(f"{what}: nav_shape {hint} may hold one -1 placeholder, not more")
        known = math.prod(n for n in hint if n != -1)
        if nimages <= 0 or nimages % known:
            count = "an endless acquisition" if nimages <= 0 else f"{nimages} frames"
            raise ConfigurationError(
                f"{what}: cannot fill the -1 in nav_shape {hint} from {count}; give a complete nav_shape"
            )
        return tuple(nimages // known if n == -1 else n for n in hint)
    side = math.isqrt(max(nimages, 0))
    if nimages > 0 and side * side == nimages:
        return (side, side)
    count = "an endless acquisition" if nimages <= 0 else f"{nimages} frames, not a square number,"
    raise ConfigurationError(
        f"{what}: cannot determine the scan shape: no nav_shape was given, no hook returned one, the "
        f"detector did not announce one, and {count} does not make a square scan; pass nav_shape="
    )


def _tuple_or_none(shape: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if shape is None else tuple(int(n) for n in shape)


def _fits(hint: tuple[int, ...], shape: Sequence[int]) -> bool:
    return len(hint) == len(shape) and all(h in (-1, s) for h, s in zip(hint, shape, strict=True))


def live_partition_frames(meta: DatasetMeta, frames_per_partition: int | None) -> int:
    """Frames per live partition: the caller's choice, or about 32 MiB of native data."""
    if frames_per_partition is not None:
        if not isinstance(frames_per_partition, int | np.integer) or frames_per_partition < 1:
            raise ConfigurationError(
                f"parameter 'frames_per_partition' must be an integer >= 1; got {frames_per_partition!r}"
            )
        return int(frames_per_partition)
    return max(1, min(meta.n_frames, LIVE_PARTITION_BYTES // max(1, meta.frame_bytes)))


class LiveConnection(abc.ABC):
    """An open link to a detector (data, and control where it has one).

    Use it as a context manager, or call :meth:`close`. One connection serves any
    number of acquisitions, one after the other.
    """

    #: registry name, set by subclasses
    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self._closed = False
        self._busy = threading.Lock()

    @classmethod
    def open(cls, **kwargs: Any) -> Self:
        """Connect (LiberTEM-live's ``ctx.make_connection(kind).open(...)``)."""
        return cls(**kwargs)

    @abc.abstractmethod
    def wait_for_acquisition(self, timeout: float | None = None) -> PendingAcquisition | None:
        """Passive mode: wait up to ``timeout`` seconds for an acquisition to start;
        ``None`` if none did."""

    @abc.abstractmethod
    def make_acquisition(
        self,
        *,
        nav_shape: Sequence[int] | None = None,
        frames_per_partition: int | None = None,
        pending_aq: PendingAcquisition | None = None,
        hooks: Hooks | None = None,
        **kwargs: Any,
    ) -> LiveAcquisition:
        """An acquisition on this connection (see :meth:`LiveContext.make_acquisition`)."""

    def close(self) -> None:
        """Close every socket; acquisitions made on it can no longer run."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError(f"this {self.name} connection is closed; open a new one")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiveAcquisition(Source):
    """One acquisition of a live detector, as a dataset.

    Subclasses implement :meth:`_begin` (get ready to receive, call
    :meth:`ready_for_data`, wait for the detector to start), :meth:`_receive` (fill a
    buffer with the next frames) and :meth:`_end`. The base class decides the shapes,
    cuts the frames into partitions and runs the receiving thread.
    """

    #: marks sources whose partitions arrive over time (the lowering streams them)
    is_live: ClassVar[bool] = True
    #: frames arrive encoded (:meth:`_receive_encoded`, not :meth:`_receive`): partitions
    #: carry the encoded bytes and the worker that reads a partition decodes it
    encoded: ClassVar[bool] = False
    #: ``_receive_encoded(n, allocate=)`` takes an allocator of the partition's payload
    #: (``allocate(nbytes)`` gives a flat ``uint8`` array, shared memory where the run
    #: wants it) and returns ``packed=(that array, index)``: the payload is written in
    #: place, never copied again on the way to the workers
    receives_into: ClassVar[bool] = False

    def __init__(
        self,
        conn: LiveConnection,
        *,
        sig_shape: Sequence[int],
        dtype: Any,
        nav_shape: Sequence[int] | None = None,
        nimages: int = 0,
        detector_nav_shape: Sequence[int] | None = None,
        frames_per_partition: int | None = None,
        pending_aq: PendingAcquisition | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.conn = conn
        self.hooks = hooks if hooks is not None else Hooks()
        self.pending_aq = pending_aq
        self.nimages = int(nimages)
        nav = determine_nav_shape(
            nav_shape, nimages=self.nimages, hooks=self.hooks,
            detector_nav_shape=detector_nav_shape, what=self.describe(),
        )
        n_frames = math.prod(nav)
        if self.nimages > 0 and n_frames != self.nimages:
            raise ConfigurationError(
                f"{self.describe()}: nav_shape {nav} holds {n_frames} frames, but the detector will send "
                f"{self.nimages}; give a nav_shape of {self.nimages} frames"
            )
        self.meta = DatasetMeta(nav_shape=nav, sig_shape=tuple(sig_shape), dtype=dtype)
        self.sync_offset = 0
        self._native_frame_size = self.meta.frame_size
        self._fpp = live_partition_frames(self.meta, frames_per_partition)
        self.partition_sizing = (self._fpp, None)
        self._used = False
        #: set when the run is over or abandoned; ``_receive`` implementations that wait
        #: (for a frame rate, say) should wait on it
        self.stopping = threading.Event()
        #: close the connection with the acquisition (set for sources opened from a graph file)
        self.owns_connection = False

    @property
    def mode(self) -> str:
        """``"active"`` or ``"passive"``."""
        return "active" if self.pending_aq is None else "passive"

    def _open(self) -> Any:  # pragma: no cover - live sources are not opened from a file
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.conn.name} acquisition"

    def close(self) -> None:
        """Stop a run that is still receiving; close the connection if this acquisition owns it."""
        self.stopping.set()
        if self.owns_connection:
            self.conn.close()

    # --- for subclasses -----------------------------------------------------------
    def ready_for_data(self) -> None:
        """Call the active-mode hook (subclasses call this from :meth:`_begin`)."""
        if self.pending_aq is None:
            self.hooks.on_ready_for_data(ReadyForDataEnv(aq=self))

    @abc.abstractmethod
    def _begin(self) -> None:
        """Get ready to receive; in active mode call :meth:`ready_for_data`; return once
        the detector has started sending (or raise a DetectorError)."""

    @abc.abstractmethod
    def _receive(self, out: np.ndarray) -> int:
        """Receive the next ``len(out)`` frames into ``out``; the count that arrived.

        Return fewer only when the detector ended the acquisition early; raise a
        :class:`~detflow.errors.DetectorError` when it failed, with ``frames_received``
        counting the frames of the whole acquisition that arrived (those of ``out``
        that did are then still processed).
        """

    def _receive_encoded(self, n: int) -> EncodedFrames:
        """For ``encoded`` acquisitions: the next ``n`` frames as they arrived.

        Fewer only when the detector ended or failed (then ``error`` says why, unless
        it ended the acquisition normally).
        """
        raise NotImplementedError(f"{type(self).__name__} sets 'encoded' but has no _receive_encoded")

    def _end(self, ok: bool) -> None:  # noqa: B027 - optional hook
        """The run is over (``ok``: all frames arrived); release per-acquisition state."""

    # --- the Source interface ------------------------------------------------------
    def get_num_partitions(self, plan: PartitionPlan | None = None) -> int:
        return len(self._ranges(plan))

    def _ranges(self, plan: PartitionPlan | None) -> list[slice]:
        fpp = self._fpp
        if plan is not None and plan.frames_per_partition is not None:
            fpp = int(plan.frames_per_partition)
        elif plan is not None and plan.num_partitions is not None:
            fpp = math.ceil(self.meta.n_frames / plan.num_partitions)
        return PartitionPlan(frames_per_partition=fpp).ranges(self.meta)

    def partitions(self, plan: PartitionPlan | None = None, *, shared: bool = False) -> LivePartitions:
        """Start the acquisition; partitions in nav order as their frames arrive.

        ``shared``: receive into shared-memory segments that worker processes map by
        name (no copy on the way to them); the caller then calls
        :meth:`LivePartitions.release` with each partition's index once its result is
        back. An acquisition runs once: a second call is an error.
        """
        self.conn._check_open()
        if self._used:
            raise ConfigurationError(
                f"{self.describe()} has already run; make a new acquisition for the next one"
            )
        self._used = True
        return LivePartitions(self, self._ranges(plan), shared=shared)

    def task_feed(self, plan: PartitionPlan | None, make_task: Callable[[Partition], Any], *,
                  keep: Callable[[slice], bool] | None = None, shared: bool = False) -> Any:
        """The source hook a driver runs a live source through: tasks made by
        ``make_task`` as partitions arrive, skipping those ``keep`` rejects (no frame in the
        ROI; they are received, as the detector sends them all, and dropped)."""
        from detflow.sources.live.tasks import LiveTaskFeed

        return LiveTaskFeed(self, plan, make_task, keep=keep, shared=shared)


class LivePartitions(Iterator[Partition]):
    """The partitions of a running acquisition, received by a background thread.

    Iterating blocks until the next partition is complete; :meth:`ready` says whether
    that would block, so a driver can keep collecting results meanwhile. When the
    detector fails, iteration yields the frames that did arrive (the last partition
    cut short) and then stops; :attr:`error` holds the failure, for the caller to
    raise once those frames are processed.
    """

    def __init__(self, aq: LiveAcquisition, ranges: list[slice], *, shared: bool = False) -> None:
        self.aq = aq
        self.ranges = ranges
        self.shared = shared
        self._releases: dict[int, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.frames_received = 0
        self._queue: queue.Queue[Partition | BaseException | None] = queue.Queue(maxsize=PREFETCH)
        self._stop = aq.stopping
        self._done = False
        self._thread = threading.Thread(target=self._run, name=f"detflow-{aq.conn.name}-receiver", daemon=True)
        self._thread.start()

    # receiver thread ----------------------------------------------------------------
    def _run(self) -> None:
        aq = self.aq
        meta = aq.meta
        total = meta.n_frames * meta.frame_size
        ok = False
        try:
            with aq.conn._busy:
                try:
                    aq._begin()
                    for index, frames in enumerate(self.ranges):
                        if self._stop.is_set():
                            return
                        n = frames.stop - frames.start
                        receive = self._receive_encoded if aq.encoded else self._receive_decoded
                        got, failure, make_reader = receive(index, n)
                        self.frames_received += got
                        if got:
                            part = Partition(
                                index=index, frames=slice(frames.start, frames.start + got), meta=meta,
                                reader=make_reader(frames.start * meta.frame_size, got * meta.frame_size, total),
                            )
                            if not self._put(part):
                                return
                        else:
                            self.release(index)
                        if failure is not None:
                            raise failure
                        if got < n:
                            raise DetectorError(
                                f"{aq.describe()}: the detector ended the acquisition after "
                                f"{self.frames_received} of {meta.n_frames} frames",
                                frames_received=self.frames_received,
                            )
                    ok = True
                finally:
                    aq._end(ok)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            traceback.clear_frames(err.__traceback__)  # finished frames may hold a shared buffer
            if isinstance(err, DetectorError) and err.frames_received is None:
                err.frames_received = self.frames_received
            self._put(err)
        finally:
            self._put(None)

    def _receive_decoded(self, index: int, n: int) -> tuple[int, DetectorError | None, _ReaderMaker]:
        """Receive ``n`` decoded frames into a buffer of partition ``index``."""
        buf, make_reader = self._buffer(index, n)
        failure = None
        try:
            got = self.aq._receive(buf)
        except DetectorError as err:  # keep the frames of this partition that did arrive
            # the traceback's frames hold ``buf``: let go of it (it may be a shared segment)
            traceback.clear_frames(err.__traceback__)
            failure = err
            got = 0
            if err.frames_received is not None:
                got = min(n, max(0, err.frames_received - self.frames_received))
        del buf  # a shared segment must have no view left here once it can be released
        return got, failure, make_reader

    def _receive_encoded(self, index: int, n: int) -> tuple[int, DetectorError | None, _ReaderMaker]:
        """Receive ``n`` encoded frames; their blobs go back to back into one payload."""
        if self.aq.receives_into:
            return self._receive_in_place(index, n)
        enc = self.aq._receive_encoded(n)
        if enc.packed is not None:
            packed, offsets = enc.packed
            got = min(n, len(offsets) - 1)
            payload_size = packed.size
        else:
            got = min(n, len(enc.blobs))
            sizes = np.fromiter((memoryview(b).nbytes for b in enc.blobs[:got]), dtype=np.int64, count=got)
            offsets = np.zeros(got + 1, dtype=np.int64)
            np.cumsum(sizes, out=offsets[1:])
            payload_size = int(offsets[-1])
        payload_reader: FrameReader
        if self.shared and got:
            from detflow import shm

            payload, name, release = shm.allocate(payload_size, np.uint8)
            with self._lock:
                self._releases[index] = release
            payload_reader = shm.SharedArrayReader(name, base=0, count=payload.size, dtype=payload.dtype,
                                                   total=payload.size)
        elif enc.packed is not None:
            payload = enc.packed[0]  # already this partition's own buffer
            payload_reader = ArrayReader(payload)
        else:
            payload = np.empty(payload_size, dtype=np.uint8)
            payload_reader = ArrayReader(payload)
        if enc.packed is not None:
            if payload is not enc.packed[0]:
                payload[:] = enc.packed[0]
        else:
            for blob, lo, hi in zip(enc.blobs[:got], offsets[:-1], offsets[1:], strict=True):
                payload[lo:hi] = np.frombuffer(blob, dtype=np.uint8)
        del payload
        enc.packed = None  # a shared segment now holds the frames; let the heap copy go

        def encoded_reader(base: int, count: int, total: int) -> FrameReader:
            return enc.make_reader(payload_reader, offsets, base, total)

        return got, enc.error, encoded_reader

    def _receive_in_place(self, index: int, n: int) -> tuple[int, DetectorError | None, _ReaderMaker]:
        """Receive ``n`` encoded frames into a payload this side allocates (``receives_into``)."""
        made: list[tuple[np.ndarray, FrameReader]] = []

        def allocate(nbytes: int) -> np.ndarray:
            if made:
                raise RuntimeError(f"{self.aq.describe()}: allocate() may be called once per partition")
            if self.shared:
                from detflow import shm

                array, name, release = shm.allocate(max(1, nbytes), np.uint8)
                with self._lock:
                    self._releases[index] = release
                made.append((array, shm.SharedArrayReader(name, base=0, count=array.size, dtype=array.dtype,
                                                          total=array.size)))
            else:
                array = np.empty(max(1, nbytes), dtype=np.uint8)
                made.append((array, ArrayReader(array)))
            return array

        enc = self.aq._receive_encoded(n, allocate=allocate)  # type: ignore[call-arg]
        assert enc.packed is not None and made and enc.packed[0] is made[0][0], \
            "receives_into: _receive_encoded must return packed=(the allocated array, index)"
        offsets = enc.packed[1]
        got = min(n, len(offsets) - 1)
        payload_reader = made[0][1]
        enc.packed = None
        made.clear()  # no view of a shared segment stays here

        def in_place_reader(base: int, count: int, total: int) -> FrameReader:
            return enc.make_reader(payload_reader, offsets, base, total)

        return got, enc.error, in_place_reader

    def _buffer(self, index: int, n: int) -> tuple[np.ndarray, Callable[[int, int, int], FrameReader]]:
        """Where partition ``index`` (``n`` frames) is received, and how its reader is made."""
        meta = self.aq.meta
        if not self.shared:
            flat = np.empty(n * meta.frame_size, dtype=meta.dtype)

            def heap_reader(base: int, count: int, total: int) -> FrameReader:
                return ArrayReader(flat[:count], base=base, total=total)

            return flat.reshape((n, *meta.sig_shape)), heap_reader
        from detflow import shm

        array, name, release = shm.allocate(n * meta.frame_size, meta.dtype)
        with self._lock:
            self._releases[index] = release

        def shared_reader(base: int, count: int, total: int) -> FrameReader:
            return shm.SharedArrayReader(name, base=base, count=count, dtype=meta.dtype, total=total)

        return array.reshape((n, *meta.sig_shape)), shared_reader

    def release(self, index: int) -> None:
        """Partition ``index`` is done with: give its shared segment back (if it has one)."""
        with self._lock:
            release = self._releases.pop(index, None)
        if release is not None:
            release()

    def _put(self, item: Partition | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # consumer side --------------------------------------------------------------------
    def ready(self) -> bool:
        """Would ``next()`` return at once?"""
        return self._done or not self._queue.empty()

    def __next__(self) -> Partition:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, Partition):
            return item
        self._done = True
        if item is not None:
            self.error = item
            self._stop.set()
        raise StopIteration

    def close(self) -> None:
        """Stop receiving (the run ended or was abandoned); wait for the thread."""
        self._done = True
        self._stop.set()
        self._thread.join(timeout=30)
        if self._thread.is_alive():  # pragma: no cover - a _receive ignoring its timeout
            log.warning("%s: the receiving thread did not stop within 30 s", self.aq.describe())
            return
        with self._lock:
            releases = list(self._releases.values())
            self._releases.clear()
        for release in releases:
            release()
