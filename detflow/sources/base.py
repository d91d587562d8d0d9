"""Sources, their metadata, and the partitions they are cut into.

A source describes a dataset of ``n_frames`` frames laid out in a navigation grid
(``nav_shape``) with ``sig_shape`` pixels each. It does not read data itself: it hands
out :class:`Partition` recipes, each a contiguous range of frames in nav order plus a
small picklable :class:`FrameReader` that knows how to fetch exactly those frames.
A worker (a thread, a process, a dask worker on another machine) reads its own data.

The frame arithmetic shared by every format lives here, once:

* Readers see the file as a flat stream of pixels (``read_pixels``). The dataset's
  logical frame ``i`` starts at pixel ``(i + sync_offset) * frame_size``; pixels before
  the start or past the end of the stream read as zeros. So ``sync_offset > 0`` skips
  frames (the last ones read as zeros), ``sync_offset < 0`` inserts blank frames, and a
  ``sig_shape`` with a different pixel count re-cuts a contiguous stream into frames of
  the new size. A ``nav_shape`` (given, or from a file's header) with more positions
  than the data has frames is an error naming the source and both counts, never a
  silent run over zeros, unless ``allow_short=True`` asks for the missing frames to
  read as zeros.
* Partitions are cut from the logical frame range by a :class:`PartitionPlan`.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from detflow.errors import ConfigurationError, SourceFormatError
from detflow.sources.limits import format_bytes, physical_memory
from detflow.sources.shape import Shape

if TYPE_CHECKING:
    from detflow.nodes.params import Param

__all__ = [
    "DatasetMeta",
    "FrameReader",
    "Partition",
    "PartitionPlan",
    "RoiHelper",
    "Shape",
    "Source",
    "default_partition_bytes",
]

#: Native bytes per partition when the user gives no size: about 100 ms of work
#: for the built-in UDFs on one core of a laptop-class machine.
_DEFAULT_PARTITION_BYTES = 128 * 2**20


def default_partition_bytes() -> int:
    return int(os.environ.get("DETFLOW_PARTITION_BYTES", _DEFAULT_PARTITION_BYTES))


@dataclass(frozen=True)
class DatasetMeta:
    """Shapes and dtype of a dataset, as the UDFs will see it."""

    nav_shape: tuple[int, ...]
    sig_shape: tuple[int, ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        object.__setattr__(self, "nav_shape", tuple(int(n) for n in self.nav_shape))
        object.__setattr__(self, "sig_shape", tuple(int(n) for n in self.sig_shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def shape(self) -> Shape:
        return Shape(self.nav_shape, self.sig_shape)

    @property
    def n_frames(self) -> int:
        return math.prod(self.nav_shape)

    @property
    def frame_size(self) -> int:
        return math.prod(self.sig_shape)

    @property
    def frame_bytes(self) -> int:
        return self.frame_size * self.dtype.itemsize


@dataclass(frozen=True)
class PartitionPlan:
    """How to cut a dataset into partitions: give at most one of the two sizes.

    With neither, partitions hold about ``DETFLOW_PARTITION_BYTES`` (128 MiB) of native
    data, and there are at least as many as ``min_partitions`` where the data allows.
    """

    frames_per_partition: int | None = None
    num_partitions: int | None = None
    min_partitions: int = 1

    def __post_init__(self) -> None:
        if self.frames_per_partition is not None and self.num_partitions is not None:
            raise ConfigurationError(
                "give frames_per_partition or num_partitions, not both; "
                f"got {self.frames_per_partition} and {self.num_partitions}"
            )
        for name in ("frames_per_partition", "num_partitions"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | np.integer) or value < 1):
                raise ConfigurationError(f"{name} must be an integer >= 1; got {value!r}")

    def ranges(self, meta: DatasetMeta, boundaries: Sequence[int] | None = None) -> list[slice]:
        """The partitions' frame ranges.

        ``boundaries`` are frames where the source's natural blocks start (chunks of a
        compressed file, see :meth:`Source.partition_boundaries`); every inner partition
        edge then moves to the nearest of them, so no block is split between two
        partitions (which would read and decode it twice). Partitions that become empty
        are dropped, so there may be fewer than asked for.
        """
        n = meta.n_frames
        if n == 0:
            return []
        if self.frames_per_partition is not None:
            per = int(self.frames_per_partition)
        elif self.num_partitions is not None:
            per = math.ceil(n / min(int(self.num_partitions), n))
        else:
            per = max(1, default_partition_bytes() // max(1, meta.frame_bytes))
            per = min(per, math.ceil(n / max(1, min(self.min_partitions, n))))
        edges = list(range(0, n, per)) + [n]
        if boundaries is not None:
            edges = _snap_edges(edges, boundaries, n)
        return [slice(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def _snap_edges(edges: list[int], boundaries: Sequence[int], n: int) -> list[int]:
    """Move each inner edge to the nearest boundary (ties go down); keep 0 and ``n``."""
    marks = np.unique(np.clip(np.asarray(list(boundaries) + [0, n], dtype=np.int64), 0, n))
    inner = np.asarray(edges[1:-1], dtype=np.int64)
    pos = np.clip(np.searchsorted(marks, inner), 1, len(marks) - 1)
    lo, hi = marks[pos - 1], marks[pos]
    snapped = np.where(inner - lo <= hi - inner, lo, hi)
    return sorted({0, n, *(int(e) for e in snapped)})


@runtime_checkable
class FrameReader(Protocol):
    """Reads a flat range of pixels of the underlying stream, in its native dtype.

    Must be small and picklable: it travels with each partition to the worker.
    """

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def n_pixels(self) -> int: ...

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        """Pixels ``start:stop`` (``0 <= start <= stop <= n_pixels``), 1-D."""
        ...

    def restrict(self, start: int, stop: int) -> FrameReader:
        """A reader good for (at least) pixels ``start:stop``; same coordinates."""
        ...


@dataclass(frozen=True)
class Partition:
    """A contiguous range of frames of a dataset, with what is needed to read them.

    Cheap to pickle: readers of files carry a path and a layout, not data.
    """

    index: int
    frames: slice
    meta: DatasetMeta
    reader: FrameReader = field(repr=False)
    sync_offset: int = 0
    #: frames per tile the source asks for (LiberTEM's ``tileshape[0]``); None: the runner chooses
    tile_depth: int | None = None
    #: the signal part of the source's tile shape (LiberTEM's ``tileshape[1:]``): tile UDFs
    #: get their tiles cut to it; None: whole frames
    tile_sig_shape: tuple[int, ...] | None = None
    #: the frames (relative to this partition) that the data holds; the others (shifted out
    #: by ``sync_offset``, or past a short file) are not processed at all, as in LiberTEM.
    #: None: every frame (live partitions, or ``allow_short=True``, which reads them as zeros)
    data_frames: slice | None = None

    @property
    def fed_frames(self) -> slice:
        """The frames (relative to this partition) UDFs are fed: :attr:`data_frames` or all."""
        return slice(0, self.n_frames) if self.data_frames is None else self.data_frames

    @property
    def n_frames(self) -> int:
        return self.frames.stop - self.frames.start

    def read(self, dtype: Any = None) -> np.ndarray:
        """All frames, shaped ``(n_frames, *sig_shape)``."""
        return self.read_frames(0, self.n_frames, dtype=dtype)

    def read_sparse(self) -> Any:
        """All frames as a ``scipy.sparse.csr_array`` of shape ``(n_frames, frame_size)``.

        Only for sources that keep frames sparse (readers with ``read_csr``: the
        ``csr`` source, the ASI Timepix3 stream); others raise a ConfigurationError.
        """
        read_csr = getattr(self.reader, "read_csr", None)
        if read_csr is None or self.meta.frame_size != getattr(self.reader, "frame_size", None):
            raise ConfigurationError(
                f"partition {self.index}: read_sparse() needs a sparse source with its native frame size; "
                f"{type(self.reader).__name__} holds dense frames: use read()"
            )
        first = self.frames.start + self.sync_offset
        return read_csr(first, first + self.n_frames)

    @property
    def sparse(self) -> bool:
        """Whether this partition's frames are sparse (CSR) and :meth:`read_sparse_frames` reads them so."""
        return (getattr(self.reader, "read_csr", None) is not None
                and self.meta.frame_size == getattr(self.reader, "frame_size", None))

    def read_sparse_frames(self, start: int, stop: int) -> Any:
        """Frames ``start:stop`` relative to this partition as a ``scipy.sparse.csr_array``
        ``(stop - start, frame_size)``; only where :attr:`sparse` (see :meth:`read_sparse`)."""
        if not self.sparse:
            self.read_sparse()  # raises, naming the partition and the reader
        first = self.frames.start + start + self.sync_offset
        return self.reader.read_csr(first, first + stop - start)  # type: ignore[attr-defined]

    def read_frames(self, start: int, stop: int, dtype: Any = None) -> np.ndarray:
        """Frames ``start:stop`` *relative to this partition*, shaped ``(n, *sig_shape)``.

        Where the range lies inside the underlying stream, this is a view of it
        (a memory map, or the array in memory) when no dtype conversion is asked for.
        """
        meta = self.meta
        fsize = meta.frame_size
        n = stop - start
        first = self.frames.start + start + self.sync_offset
        pix_lo, pix_hi = first * fsize, (first + n) * fsize
        avail_lo = max(pix_lo, 0)
        avail_hi = min(pix_hi, self.reader.n_pixels)
        out_dtype = meta.dtype if dtype is None else np.dtype(dtype)
        if avail_lo == pix_lo and avail_hi == pix_hi:
            flat = self.reader.read_pixels(pix_lo, pix_hi)
            arr = flat.reshape((n, *meta.sig_shape))
            return arr if arr.dtype == out_dtype else arr.astype(out_dtype)
        out = np.zeros((n, *meta.sig_shape), dtype=out_dtype)
        if avail_hi > avail_lo:
            flat_out = out.reshape(-1)
            flat_out[avail_lo - pix_lo : avail_hi - pix_lo] = self.reader.read_pixels(
                avail_lo, avail_hi
            )
        return out


class Source(abc.ABC):
    """A dataset: metadata plus a way to cut it into partitions.

    Subclasses implement :meth:`_open`, which inspects the input and returns the
    native frame shape, the reader and the frame count it has; the common options
    (``nav_shape``, ``sig_shape``, ``sync_offset``) are applied here, the same way for
    every format.

    Parameters
    ----------
    nav_shape
        Navigation shape to present; defaults to the source's own.
    sig_shape
        Signal shape to present; a different pixel count re-cuts the pixel stream.
    sync_offset
        ``> 0`` skips that many frames at the start; ``< 0`` inserts blank frames.
    allow_short
        Read frames the data does not have (a ``nav_shape`` larger than the file, a
        cut-off acquisition) as zeros instead of raising
        :class:`~detflow.errors.SourceFormatError`.
    """

    #: short registry name, set by subclasses
    name: ClassVar[str] = ""
    #: declared parameters (their own, then ``COMMON_PARAMS``); empty: not declared.
    #: ``detflow.sources.params.open_source`` (``ctx.load``, graph files) checks them
    #: before the constructor runs.
    params_spec: ClassVar[tuple[Param, ...]] = ()
    #: file suffixes of the format (``".npy"``), lowercase; ``auto`` falls back on them
    suffixes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def can_open(cls, path: str) -> bool:
        """Whether ``path`` holds this format, judged by its contents (magic bytes).

        ``auto`` asks every registered source, built-in or from an entry point, so a
        third-party format takes part by overriding this (and ``suffixes``). Must be
        cheap, must not raise, and must not need the format's optional dependency.
        """
        return False

    def __init__(
        self,
        *,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        sync_offset: int = 0,
        allow_short: bool = False,
    ) -> None:
        native_nav, native_sig, reader = self._open()
        self._reader = reader
        self._native_frame_size = math.prod(native_sig)
        sig = tuple(int(s) for s in (sig_shape if sig_shape is not None else native_sig))
        if not sig or any(s < 1 for s in sig):
            raise ConfigurationError(f"{self.describe()}: sig_shape must be positive; got {sig}")
        fsize = math.prod(sig)
        if fsize > reader.n_pixels and not allow_short:
            raise SourceFormatError(
                f"{getattr(self, 'path', None) or self.describe()}: sig_shape {sig} needs {fsize} pixels a frame; "
                f"the data holds {reader.n_pixels} pixels in all ({math.prod(native_sig)} a frame as stored)"
            )
        available = reader.n_pixels // fsize
        if nav_shape is None:
            nav = (
                tuple(native_nav)
                if sig == tuple(native_sig) or math.prod(native_nav) == available
                else (available,)
            )
        else:
            nav = tuple(int(s) for s in nav_shape)
        if not nav or any(s < 1 for s in nav):
            raise ConfigurationError(f"{self.describe()}: nav_shape must be positive; got {nav}")
        sync_offset = int(sync_offset)
        if available and not -available < sync_offset < available:
            raise ConfigurationError(
                f"{self.describe()}: sync_offset must be between {-available + 1} and "
                f"{available - 1} (the source has {available} frames); got {sync_offset}"
            )
        self.sync_offset = sync_offset
        self.allow_short = bool(allow_short)
        _check_fits(self, nav, sig)
        # blank frames a negative sync_offset inserts are asked for; any other frame must exist
        wanted = math.prod(nav) + min(sync_offset, 0)
        if wanted > available and not self.allow_short:
            origin = "nav_shape" if nav_shape is not None else "the scan shape the source declares"
            if sig_shape is not None and fsize != self._native_frame_size:
                recut = (f"sig_shape {sig} re-cuts the {tuple(native_sig)} frames as stored"
                         if self._native_frame_size > 1 and len(native_sig) > 1 else "sig_shape sets the frame size")
                hint = f"{recut}; check sig_shape and nav_shape, or give allow_short=True"
            else:
                hint = "give a nav_shape that fits, or allow_short=True to read the missing frames as zeros"
            raise SourceFormatError(
                f"{getattr(self, 'path', None) or self.describe()}: holds {available} frames of {sig} "
                f"{reader.dtype}, but {origin} {nav} needs {wanted}"
                f"{f' (with sync_offset {sync_offset})' if sync_offset < 0 else ''}: {wanted - available} "
                f"missing; {hint}"
            )
        #: (frames_per_partition, num_partitions) chosen at load time; None: default sizing
        self.partition_sizing: tuple[int | None, int | None] = (None, None)
        self.meta = DatasetMeta(nav_shape=nav, sig_shape=sig, dtype=reader.dtype)

    @abc.abstractmethod
    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        """Inspect the input: ``(native_nav_shape, native_sig_shape, reader)``."""

    def describe(self) -> str:
        """Short description used in error messages and graph views."""
        return f"{self.name} source"

    # --- dataset-like conveniences (LiberTEM's DataSet has these) ---------------------
    @property
    def shape(self) -> Shape:
        return self.meta.shape

    @property
    def dtype(self) -> np.dtype:
        return self.meta.dtype

    def _sized_plan(self) -> PartitionPlan:
        fpp, nparts = getattr(self, "partition_sizing", (None, None))
        return PartitionPlan(frames_per_partition=fpp, num_partitions=nparts,
                             min_partitions=getattr(self, "_num_cores", 1))

    def get_num_partitions(self, plan: PartitionPlan | None = None) -> int:
        """How many partitions a run cuts (by default with the sizes given to ``ctx.load``)."""
        return len((plan or self._sized_plan()).ranges(self.meta, self._logical_boundaries()))

    def get_partitions(self) -> list[Partition]:
        """The partitions a run would cut, as LiberTEM's ``DataSet.get_partitions()``."""
        return list(self.partitions(self._sized_plan()))

    @property
    def roi(self) -> RoiHelper:
        """``ds.roi[...]``: a boolean nav-shaped ROI, ``True`` where the index selects (LiberTEM's helper).

        >>> from detflow.sources.memory import MemorySource
        >>> MemorySource(data=np.zeros((2, 3, 4, 4))).roi[1, 1:].astype(int).tolist()
        [[0, 0, 0], [0, 1, 1]]
        """
        return RoiHelper(self.meta.nav_shape)

    def set_num_cores(self, cores: int) -> None:
        """Cut at least ``cores`` partitions where the data allows (LiberTEM's ``set_num_cores``)."""
        self._num_cores = max(1, int(cores))

    def partition_boundaries(self) -> list[int] | None:
        """Native frames where the source's natural blocks start, or ``None``.

        Optional hook for chunked formats (HDF5, zarr, dask): a block is the unit the
        format decodes at once, e.g. one chunk row of a compressed dataset. Frame
        numbers count from the start of the source's own frames, before
        ``sync_offset``; the base class shifts them and the :class:`PartitionPlan`
        moves partition edges onto them. ``None`` (the default): any frame will do.
        """
        return None

    def _logical_boundaries(self) -> list[int] | None:
        native = self.partition_boundaries()
        if native is None or self.meta.frame_size != self._native_frame_size:
            return None  # a re-cut pixel stream has no frame-aligned blocks
        return [b - self.sync_offset for b in native]

    def partitions(self, plan: PartitionPlan | None = None) -> Iterator[Partition]:
        plan = plan or PartitionPlan()
        fsize = self.meta.frame_size
        available = self._reader.n_pixels // fsize
        for index, frames in enumerate(plan.ranges(self.meta, self._logical_boundaries())):
            lo = max(0, (frames.start + self.sync_offset) * fsize)
            hi = min(self._reader.n_pixels, max(lo, (frames.stop + self.sync_offset) * fsize))
            n = frames.stop - frames.start
            first = frames.start + self.sync_offset  # the stream frame of this partition's first
            have = slice(min(max(-first, 0), n), min(max(available - first, 0), n))
            have = slice(have.start, max(have.start, have.stop))
            yield Partition(
                index=index,
                frames=frames,
                meta=self.meta,
                reader=self._reader.restrict(lo, hi),
                sync_offset=self.sync_offset,
                tile_depth=self._tile_depth(),
                tile_sig_shape=self._tile_sig_shape(),
                data_frames=None if self.allow_short or (have.start, have.stop) == (0, n) else have,
            )

    def _tile_depth(self) -> int | None:
        tileshape = getattr(self, "tileshape", None)
        return None if not tileshape else max(1, int(tileshape[0]))

    def _tile_sig_shape(self) -> tuple[int, ...] | None:
        tileshape = getattr(self, "tileshape", None)
        if not tileshape or len(tileshape) != len(self.meta.sig_shape) + 1:
            return None
        return tuple(max(1, int(t)) for t in tileshape[1:])

    def close(self) -> None:  # noqa: B027 - most sources hold nothing open
        """Release what the source holds; partitions already handed out stay valid."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"<{type(self).__name__} nav={m.nav_shape} sig={m.sig_shape} dtype={m.dtype}"
            f"{f' sync_offset={self.sync_offset}' if self.sync_offset else ''}>"
        )


class RoiHelper:
    """Indexing gives a ROI: ``helper[k]`` is a boolean array of the nav shape, ``True`` at ``[k]``."""

    def __init__(self, nav_shape: tuple[int, ...]) -> None:
        self.nav_shape = nav_shape

    def __getitem__(self, k: Any) -> np.ndarray:
        roi = np.zeros(self.nav_shape, dtype=bool)
        roi[k] = True
        return roi


def _check_fits(source: Source, nav: tuple[int, ...], sig: tuple[int, ...]) -> None:
    """Refuse shapes whose smallest result buffers (one float64 per frame, per pixel) cannot fit in memory."""
    memory = physical_memory()
    for what, shape in (("nav_shape", nav), ("sig_shape", sig)):
        need = math.prod(shape) * 8
        if need > memory:
            raise ConfigurationError(
                f"{source.describe()}: {what} {shape} is too large: one float64 result per "
                f"{'scan position' if what == 'nav_shape' else 'pixel'} would need {format_bytes(need)}, "
                f"more than this machine's {format_bytes(memory)} of memory"
            )


def read_head(path: str, n: int, offset: int = 0) -> bytes:
    """``n`` bytes of ``path`` from ``offset`` (fewer at its end); ``b""`` for a folder or an unreadable file."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(n)
    except OSError:
        return b""


def check_frame_layout(what: str, n_bytes: int, itemsize: int, frame_size: int) -> int:
    """Number of whole frames in ``n_bytes``; an error naming ``what`` if they do not fit."""
    frame_bytes = frame_size * itemsize
    if n_bytes % frame_bytes:
        raise SourceFormatError(
            f"{what}: {n_bytes} bytes is not a whole number of frames of {frame_bytes} bytes "
            f"({frame_size} pixels x {itemsize} bytes); check dtype, sig_shape and offset"
        )
    return n_bytes // frame_bytes
