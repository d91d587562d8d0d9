"""Shared-memory transport: in-memory partitions travel to worker processes by name.

A partition of an on-disk dataset is a recipe (path, byte range) and pickles small; a
partition of an array in memory (a ``memory`` dataset, a live stream) carries its
pixels, and pickling those into a pipe costs two copies and the driver's time.
:func:`detflow.executors.staging.stage` instead copies the partition's pixels once into a POSIX shared-memory
segment and swaps the task's reader for a :class:`SharedArrayReader`, which pickles
as ``(segment name, base, count, dtype, total)`` and maps the segment in the worker
that reads it::

    staged, release = stage(task)      # driver: copy into a segment
    send(staged)                       # a few hundred bytes on the wire
    ...                                # worker: staged.partition.read() maps it
    release()                          # driver, when the result is back

Lifetimes:

* The driver creates each segment (``SharedMemory(create=True)``, registered with
  multiprocessing's resource tracker, so even a driver killed with SIGKILL leaves no
  segment behind). A staged segment is *live* until ``release()``, which puts it in
  this process's *pool* of free segments; the next segment asked for that fits reuses
  it. Writing into pages that are already there runs at memory speed (~19 GB/s
  measured), while a fresh segment is faulted in and zeroed page by page on first
  touch (~1.6 GB/s on the same machine): staging is on the driver's critical path,
  so this is what lets a handful of workers be fed from one driver. The pool holds at
  most ``POOL_SEGMENTS`` segments and ``DETFLOW_SHM_POOL_BYTES`` bytes (default
  4 GiB); :func:`trim` unlinks it (executors do on ``close``), :func:`release_all`
  unlinks live and pooled segments alike (also run at exit).
* Because a released segment is reused, call ``release()`` only when nothing will
  read the staged item any more (its result is back, or whatever is still running
  it is being abandoned and its result will be ignored). Each ``release`` acts once;
  calling it again is harmless even after the segment went to another item.
* A worker maps the segment through its own ``mmap`` and hands out numpy views of
  it. The mapping is owned by those views and by a small per-process cache of the
  last ``MAPPED_SEGMENTS`` segments mapped (the pool reuses segments, so the next
  item often lands in one the worker has mapped already, and its pages need no
  faulting in again): it stays valid while any of them holds it, even after the
  driver unlinked the name, and is unmapped when the last goes. A segment's name is
  never reused after it is unlinked, so a cached mapping never shows another's data.
  Workers never register the segment with a resource tracker, so nothing in a
  worker unlinks what the driver still uses.

This module knows arrays and segments only (sources and executors both use it).
Executors decide when to stage and when to release (a result came back, the task
failed, the run or the executor was closed); this module holds no scheduling policy.
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

try:  # the POSIX shm_open that multiprocessing.shared_memory itself uses
    import _posixshmem
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

__all__ = ["SharedArrayReader", "allocate", "live_segments", "pooled_segments", "release_all", "share_array",
           "trim"]

#: prefix of every segment detflow creates; names read ``detflow_<driver pid>_<random>``
PREFIX = "detflow_"

#: most free segments kept for reuse
POOL_SEGMENTS = 16

_LIVE: dict[str, SharedMemory] = {}  # staged, not yet released
_FREE: dict[str, SharedMemory] = {}  # released, ready for reuse; oldest first
_LOCK = threading.Lock()
#: unlinked segments whose memory a view still holds (an error's traceback, say): closed later
_LINGERING: list[SharedMemory] = []
_ATTACHED: list[SharedMemory] = []  # only where there is no shm_open

#: segments a reading process keeps mapped: the driver's pool hands the same few segments
#: out run after run, and a mapping kept saves faulting every page in again (a fresh
#: mapping read about half as fast as a private array, in measurements on a loaded machine)
MAPPED_SEGMENTS = 8
_MAPPED: OrderedDict[str, mmap.mmap] = OrderedDict()
_MAPPED_LOCK = threading.Lock()


def _pool_bytes() -> int:
    return int(os.environ.get("DETFLOW_SHM_POOL_BYTES", 4 * 2**30))


def share_array(
    data: np.ndarray, *, base: int = 0, total: int | None = None
) -> tuple[SharedArrayReader, Callable[[], None]]:
    """Copy the flat ``data`` into a segment; a reader of it and its release."""
    flat = np.ascontiguousarray(data).reshape(-1)
    shm = _segment(max(1, flat.nbytes))
    try:
        np.frombuffer(shm.buf, dtype=flat.dtype, count=flat.size)[:] = flat  # type: ignore[arg-type]
    except BaseException:
        _Release(shm.name)()
        raise
    reader = SharedArrayReader(
        shm.name, base=base, count=flat.size, dtype=flat.dtype,
        total=flat.size + base if total is None else total,
    )
    return reader, _Release(shm.name)


def allocate(count: int, dtype: Any) -> tuple[np.ndarray, str, Callable[[], None]]:
    """A fresh flat array of ``count`` items in a live segment: ``(array, name, release)``.

    For data that is *produced* in the driver (a live detector's frames): write into
    ``array``, then drop every reference to it and send a :class:`SharedArrayReader`
    of segment ``name``; no staging copy is needed. Drop the array before the item can
    be released (the segment may be unlinked then, which needs no view left open).
    """
    dtype = np.dtype(dtype)
    shm = _segment(max(1, count * dtype.itemsize))
    return np.frombuffer(shm.buf, dtype=dtype, count=count), shm.name, _Release(shm.name)  # type: ignore[arg-type]


def _segment(nbytes: int) -> SharedMemory:
    """A live segment of at least ``nbytes``: a pooled one that fits, else a new one."""
    with _LOCK:
        fits = [s for s in _FREE.values() if nbytes <= s.size <= 2 * nbytes]
        if fits:
            shm = min(fits, key=lambda s: s.size)
            del _FREE[shm.name]
            _LIVE[shm.name] = shm
            return shm
    name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(6)}"  # at most 31 chars (macOS)
    shm = SharedMemory(name=name, create=True, size=nbytes)
    with _LOCK:
        _LIVE[shm.name] = shm
    return shm


class _Release:
    """Gives one staged segment back to the pool, once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = False

    def __call__(self) -> None:
        evicted = []
        with _LOCK:
            if self.done:
                return
            self.done = True
            shm = _LIVE.pop(self.name, None)
            if shm is None:  # already unlinked by release_all
                return
            _FREE[shm.name] = shm
            limit = _pool_bytes()
            while _FREE and (len(_FREE) > POOL_SEGMENTS or sum(s.size for s in _FREE.values()) > limit):
                evicted.append(_FREE.pop(next(iter(_FREE))))
        for old in evicted:
            _unlink(old)


def _unlink(shm: SharedMemory) -> None:
    with _MAPPED_LOCK:
        _MAPPED.pop(shm.name, None)  # a mapping this process read through, if any
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()  # the name goes now; no other process can attach any more
    try:
        shm.close()
    except BufferError:  # a view is still alive (a kept traceback): the memory goes with it
        with _LOCK:
            _LINGERING.append(shm)


def _close_lingering() -> None:
    with _LOCK:
        waiting = list(_LINGERING)
        _LINGERING.clear()
    for shm in waiting:
        try:
            shm._mmap.close()  # type: ignore[attr-defined]  # close() already dropped its buffer
        except BufferError:
            with _LOCK:
                _LINGERING.append(shm)


def live_segments() -> list[str]:
    """Names of the segments staged in this process and not yet released."""
    with _LOCK:
        return sorted(_LIVE)


def pooled_segments() -> list[str]:
    """Names of the released segments this process keeps for reuse."""
    with _LOCK:
        return sorted(_FREE)


def trim() -> None:
    """Unlink the pool of free segments (live ones are left alone)."""
    with _LOCK:
        free = list(_FREE.values())
        _FREE.clear()
    for shm in free:
        _unlink(shm)
    _close_lingering()


def release_all() -> None:
    """Unlink every segment of this process, live or pooled (run at exit)."""
    with _LOCK:
        every = [*_LIVE.values(), *_FREE.values()]
        _LIVE.clear()
        _FREE.clear()
    for shm in every:
        _unlink(shm)


atexit.register(release_all)


@dataclass(frozen=True)
class SharedArrayReader:
    """Pixels ``base:base + count`` of a flat stream of ``total``, in a shared segment.

    Implements :class:`~detflow.sources.base.FrameReader`; pickles as its five fields
    and maps the segment by name on first read in each process.
    """

    name: str
    base: int
    count: int
    dtype: np.dtype
    total: int
    _view: list[np.ndarray] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    def __reduce__(self) -> tuple[Any, ...]:
        return (SharedArrayReader, (self.name, self.base, self.count, self.dtype.str, self.total))

    @property
    def n_pixels(self) -> int:
        return self.total

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        lo, hi = start - self.base, stop - self.base
        if lo < 0 or hi > self.count:
            raise IndexError(
                f"pixels {start}:{stop} lie outside this reader's range "
                f"{self.base}:{self.base + self.count}"
            )
        return self._array()[lo:hi]

    def restrict(self, start: int, stop: int) -> SharedArrayReader:
        return self

    def _array(self) -> np.ndarray:
        if not self._view:
            self._view.append(attach(self.name, self.dtype, self.count))
        return self._view[0]


def attach(name: str, dtype: np.dtype, count: int) -> np.ndarray:
    """Map segment ``name`` as a flat writable array that owns the mapping.

    The array (and every view of it) keeps the ``mmap`` alive; the segment is unmapped
    when the last one is gone. Attaching never registers the segment with a resource
    tracker, so this process will not unlink it.
    """
    nbytes = np.dtype(dtype).itemsize * count
    if _posixshmem is not None:
        with _MAPPED_LOCK:
            mm = _MAPPED.get(name)
            if mm is not None and len(mm) >= nbytes:
                _MAPPED.move_to_end(name)
                return np.frombuffer(mm, dtype=dtype, count=count)
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"shared-memory segment {name!r} is gone: the driver released it "
                "(the run was closed or failed) before this worker read it"
            ) from err
        try:
            mm = mmap.mmap(fd, max(1, nbytes, os.fstat(fd).st_size))
        finally:
            os.close(fd)
        with _MAPPED_LOCK:
            _MAPPED[name] = mm
            while len(_MAPPED) > MAPPED_SEGMENTS:
                _MAPPED.popitem(last=False)  # unmapped once its last view is gone
        return np.frombuffer(mm, dtype=dtype, count=count)
    # no shm_open (Windows): the segment lives while a handle is open; keep it for good
    shm = SharedMemory(name)  # pragma: no cover
    _ATTACHED.append(shm)  # pragma: no cover
    return np.frombuffer(shm.buf, dtype=dtype, count=count)  # type: ignore[arg-type]  # pragma: no cover
