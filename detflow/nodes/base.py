"""The UDF contract: what a user-defined function implements, LiberTEM-compatible.

A UDF declares result buffers, processes data by frame, by tile (a stack of whole
frames) or by partition, and merges per-partition results on the driver. A UDF
written for LiberTEM ports by changing its imports::

    from detflow.nodes import UDF

    class MaxUDF(UDF):
        def get_result_buffers(self):
            return {"maxima": self.buffer(kind="nav", dtype="float32")}

        def process_frame(self, frame):
            self.results.maxima[:] = frame.max()

Buffers, by kind:

* ``nav``: one element (plus ``extra_shape``) per navigation position in the ROI.
  Inside ``process_frame`` it is that frame's element (shape ``(1,)`` without an extra
  shape), inside ``process_tile`` the tile's rows, in ``process_partition``,
  ``postprocess`` and ``merge`` (both ``dest`` and ``src``) the partition's rows, and in
  ``get_results`` the whole dataset, flat and ROI-filtered. The default merge copies
  nav buffers into place.
* ``sig``: shape ``sig_shape + extra_shape``, one per partition, merged by ``merge``.
* ``single``: shape ``extra_shape`` (or ``(1,)``), merged by ``merge``.

``use="private"`` hides a buffer from the user's results; ``use="result_only"`` is not
allocated on workers (it reads as ``None`` there) and must be returned by ``get_results``.
Assigning to a buffer (``self.results.maxima = v``, ``dest.s = src.s``) writes into it, as
in LiberTEM (:mod:`detflow.nodes.buffers`); ``self.meta`` is described in
:mod:`detflow.nodes.meta`, array backends in :mod:`detflow.nodes.backends`.

Contract breaks raise what LiberTEM raises: no ``process_*`` method is a ``TypeError``
(:class:`~detflow.errors.UDFMethodError`), ``sig``/``single`` buffers without ``merge`` a
``NotImplementedError`` (:class:`~detflow.errors.UDFMergeError`).

This module holds the contract only; running it is :mod:`detflow.nodes.runner`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from detflow.errors import UDFError, UDFMergeError, UDFMethodError
from detflow.nodes import backends as _bk
from detflow.nodes.buffers import ArrayWithMask, UDFData
from detflow.nodes.meta import Slice, UDFMeta
from detflow.nodes.params import Param, check_params
from detflow.sources.base import DatasetMeta

__all__ = [
    "UDF",
    "AuxBufferWrapper",
    "BufferDecl",
    "NoOpUDF",
    "Slice",
    "UDFData",
    "UDFMeta",
    "UDFMethod",
    "UDFParams",
    "UDFPostprocessMixin",
    "UDFPreprocessMixin",
]

BufferKind = Literal["nav", "sig", "single"]


@dataclass(frozen=True)
class BufferDecl:
    """A result buffer as declared by ``UDF.buffer``."""

    kind: BufferKind
    extra_shape: tuple[int, ...] = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype("float32"))
    use: str | None = None
    where: str | None = None

    def shape_for(self, meta: DatasetMeta, n_nav: int) -> tuple[int, ...]:
        """Allocation shape: ``n_nav`` rows for nav buffers."""
        if self.kind == "nav":
            return (n_nav, *self.extra_shape)
        if self.kind == "sig":
            return (*meta.sig_shape, *self.extra_shape)
        return self.extra_shape or (1,)

    def allocate(self, meta: DatasetMeta, n_nav: int) -> np.ndarray:
        return np.zeros(self.shape_for(meta, n_nav), dtype=self.dtype)


class UDFParams(Mapping[str, Any]):
    """The keyword arguments of a UDF, readable as attributes (``self.params.cx``)."""

    def __init__(self, kwargs: Mapping[str, Any]) -> None:
        self._kwargs = dict(kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_kwargs"][name]
        except KeyError:
            raise AttributeError(f"UDF has no parameter {name!r}; it was given: {sorted(self._kwargs)}") from None

    def __getitem__(self, name: str) -> Any:
        return self._kwargs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kwargs)

    def __len__(self) -> int:
        return len(self._kwargs)

    def __repr__(self) -> str:
        return f"UDFParams({self._kwargs!r})"


class UDFMethod(enum.StrEnum):
    """The process method a UDF runs with (``UDF.UDF_METHOD``), as LiberTEM's.

    A ``str`` enum: ``UDFMethod.TILE == "tile"``.
    """

    TILE = "tile"
    FRAME = "frame"
    PARTITION = "partition"


class AuxBufferWrapper:
    """Per-frame auxiliary data given to a UDF as a keyword argument (:meth:`UDF.aux_data`).

    On workers ``self.params.<name>`` is the view for the current frame, tile or
    partition (ROI applied), like a ``nav`` result buffer's view.
    """

    def __init__(self, data: np.ndarray, kind: str, extra_shape: tuple[int, ...], dtype: Any) -> None:
        if kind != "nav":
            raise ValueError(f"aux_data: only kind='nav' is supported (as in LiberTEM); got {kind!r}")
        self.kind = kind
        self.extra_shape = tuple(int(e) for e in extra_shape)
        self.dtype = np.dtype(dtype)
        arr = np.asarray(data)
        if arr.dtype != self.dtype:
            raise ValueError(f"aux_data: data has dtype {arr.dtype}; declared {self.dtype}")
        extra = self.extra_shape if self.extra_shape not in ((), (1,)) else ()
        self.data = arr.reshape((-1, *extra))

    def for_frames(self, idx: np.ndarray | slice, frame: bool = False) -> np.ndarray:
        """The rows of flat dataset positions ``idx`` (one frame: LiberTEM's frame view)."""
        rows = self.data[idx]
        if frame and not self.extra_shape:
            return rows.reshape((1,))
        if frame:
            return rows.reshape(self.extra_shape)
        return rows

    def __repr__(self) -> str:
        return f"<AuxBufferWrapper kind={self.kind} dtype={self.dtype} extra_shape={self.extra_shape}>"


class UDF:
    """Base class of user-defined functions.

    Subclasses implement :meth:`get_result_buffers` and one of :meth:`process_frame`,
    :meth:`process_tile` or :meth:`process_partition`; ``merge`` where they have
    ``sig`` or ``single`` buffers. They are re-created on workers as
    ``cls(**kwargs)``, so ``__init__`` takes keywords only and passes them all to
    ``super().__init__``.

    Built-in UDFs also declare :attr:`params_spec` (typed parameters, checked before a
    run and used to parse command-line values) and may override :meth:`validate` for
    checks that need the dataset's shape.
    """

    #: ``get_preferred_input_dtype`` returns this to get frames in the dataset's dtype
    USE_NATIVE_DTYPE: ClassVar[type] = bool
    TILE_DEPTH_DEFAULT: ClassVar[object] = object()
    TILE_DEPTH_MAX: ClassVar[float] = float("inf")
    TILE_SIZE_BEST_FIT: ClassVar[object] = object()
    TILE_SIZE_MAX: ClassVar[float] = float("inf")
    BACKEND_NUMPY: ClassVar[str] = _bk.NUMPY
    BACKEND_CUPY: ClassVar[str] = _bk.CUPY
    BACKEND_CUDA: ClassVar[str] = _bk.CUDA
    BACKEND_SPARSE_COO: ClassVar[str] = _bk.SPARSE_COO
    BACKEND_SPARSE_GCXS: ClassVar[str] = _bk.SPARSE_GCXS
    BACKEND_SPARSE_DOK: ClassVar[str] = _bk.SPARSE_DOK
    BACKEND_SCIPY_COO: ClassVar[str] = _bk.SCIPY_COO
    BACKEND_SCIPY_CSR: ClassVar[str] = _bk.SCIPY_CSR
    BACKEND_SCIPY_CSC: ClassVar[str] = _bk.SCIPY_CSC
    BACKEND_SCIPY_COO_ARRAY: ClassVar[str] = _bk.SCIPY_COO_ARRAY
    BACKEND_SCIPY_CSR_ARRAY: ClassVar[str] = _bk.SCIPY_CSR_ARRAY
    BACKEND_SCIPY_CSC_ARRAY: ClassVar[str] = _bk.SCIPY_CSC_ARRAY
    BACKEND_CUPY_SCIPY_COO: ClassVar[str] = _bk.CUPY_SCIPY_COO
    BACKEND_CUPY_SCIPY_CSR: ClassVar[str] = _bk.CUPY_SCIPY_CSR
    BACKEND_CUPY_SCIPY_CSC: ClassVar[str] = _bk.CUPY_SCIPY_CSC
    #: every backend, in LiberTEM's priority order
    BACKEND_ALL: ClassVar[tuple[str, ...]] = _bk.BACKEND_ALL
    CPU_BACKENDS: ClassVar[frozenset[str]] = _bk.CPU_BACKENDS
    CUDA_BACKENDS: ClassVar[frozenset[str]] = _bk.CUDA_BACKENDS
    CUPY_BACKENDS: ClassVar[frozenset[str]] = _bk.CUPY_BACKENDS
    SPARSE_BACKENDS: ClassVar[frozenset[str]] = _bk.SPARSE_BACKENDS
    DENSE_BACKENDS: ClassVar[frozenset[str]] = _bk.DENSE_BACKENDS
    ND_BACKENDS: ClassVar[frozenset[str]] = _bk.ND_BACKENDS
    D2_BACKENDS: ClassVar[frozenset[str]] = _bk.D2_BACKENDS
    #: the enum ``get_method`` returns
    UDF_METHOD: ClassVar[type[UDFMethod]] = UDFMethod
    #: whether ``process_tile`` takes tiles cut in the signal (LiberTEM's contract: it reads
    #: ``self.meta.sig_slice``); detflow's built-ins say ``False`` and get whole frames
    #: even from a dataset whose tile shape cuts them
    sig_cut_tiles: ClassVar[bool] = True

    #: declared parameters; empty means "not declared" (any keyword accepted)
    params_spec: ClassVar[tuple[Param, ...]] = ()
    #: names for the extra dimensions of buffers, used when results become xarray
    extra_dims: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: xarray attributes of buffers where known (``units``, ``long_name``)
    buffer_attrs: ClassVar[dict[str, dict[str, str]]] = {}
    #: buffers that are internal accumulators (the std-dev UDF's ``varsum``): they stay
    #: in ``run_udf``'s dict, as in LiberTEM, and are left out of xarray results and
    #: stores unless asked for (``to_xarray(internal=True)``, the zarr sink's ``internal``)
    internal_buffers: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.params = UDFParams(kwargs)
        self.meta: UDFMeta = None  # type: ignore[assignment]  # set before any method runs
        self.results: UDFData = UDFData(owner=type(self).__name__)
        self.task_data: UDFData = UDFData(owner=type(self).__name__, write_through=False)
        self._backend = _bk.NUMPY

    def result_coords(self) -> dict[str, list[Any]]:
        """Labels of extra dimensions (``{"mask": names}``), for xarray results; called
        on the driver after a run, with ``self.meta`` set."""
        return {}

    # --- re-instantiation ---------------------------------------------------------
    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self._kwargs)

    def copy(self) -> UDF:
        """A fresh instance built from the same keyword arguments."""
        return type(self)(**self._kwargs)

    copy_for_partition = copy

    def __reduce__(self) -> tuple[Any, ...]:
        # only the keyword arguments travel; everything else is rebuilt on the worker
        return (_rebuild_udf, (type(self), self._kwargs))

    # --- declarations ---------------------------------------------------------------
    @staticmethod
    def buffer(
        kind: BufferKind,
        extra_shape: tuple[int, ...] | int = (),
        dtype: Any = "float32",
        where: str | None = None,
        use: str | None = None,
    ) -> BufferDecl:
        """Declare a result buffer (see the module docstring for the kinds)."""
        if kind not in ("nav", "sig", "single"):
            raise UDFError(f"buffer kind must be 'nav', 'sig' or 'single'; got {kind!r}")
        if use not in (None, "private", "result_only"):
            raise UDFError(f"buffer use must be None, 'private' or 'result_only'; got {use!r}")
        if isinstance(extra_shape, int | np.integer):
            extra_shape = (int(extra_shape),)
        return BufferDecl(
            kind=kind,
            extra_shape=tuple(int(s) for s in extra_shape),
            dtype=np.dtype(dtype),
            use=use,
            where=where,
        )

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        raise NotImplementedError(f"{type(self).__name__} must implement get_result_buffers()")

    def get_preferred_input_dtype(self) -> Any:
        """dtype the UDF wants its data in; the effective one is
        ``np.result_type(native, preferred)``, or native for ``USE_NATIVE_DTYPE``."""
        return np.float32

    def get_tiling_preferences(self) -> dict[str, Any]:
        return {"depth": self.TILE_DEPTH_DEFAULT, "total_size": self.TILE_SIZE_BEST_FIT}

    def get_backends(self) -> Any:
        """Array backends the UDF takes its input in (a subset of :attr:`BACKEND_ALL`)."""
        return (self.BACKEND_NUMPY,)

    def get_method(self) -> UDFMethod:
        """The process method to run: by default the first implemented of tile, frame, partition."""
        for method in UDFMethod:
            if getattr(type(self), f"process_{method.value}") is not getattr(UDF, f"process_{method.value}"):
                return method
        raise UDFMethodError(
            f"{type(self).__name__}: UDF should implement one of the `process_*` methods "
            "(process_tile, process_frame or process_partition)"
        )

    def forbuf(self, arr: Any, target: np.ndarray) -> Any:
        """``arr`` made assignable to the result buffer ``target`` (dense, sig unflattened)."""
        return _bk.make_like(arr, target)

    @staticmethod
    def with_mask(data: Any, mask: np.ndarray | bool) -> ArrayWithMask[Any]:
        """Mark the valid part of a result returned from ``get_results`` (``True`` = valid)."""
        return ArrayWithMask(data, mask)

    @staticmethod
    def aux_data(data: Any, kind: str, extra_shape: tuple[int, ...] = (), dtype: Any = "float32") -> AuxBufferWrapper:
        """Per-frame auxiliary input, passed to the UDF as a keyword argument.

        ``data`` holds one element (of ``extra_shape``) per navigation position; in
        ``process_*`` the parameter reads as the current frame's, tile's or partition's part.
        """
        return AuxBufferWrapper(data, kind, extra_shape, dtype)

    def get_task_data(self) -> dict[str, Any]:
        """Per-partition data computed on the worker (``self.task_data``)."""
        return {}

    @property
    def xp(self) -> Any:
        """The array module of the current backend (numpy: detflow runs on CPUs)."""
        return np

    # --- validation (detflow) ---------------------------------------------------------
    def validate(self, meta: DatasetMeta) -> None:
        """Check parameters against :attr:`params_spec` and the dataset.

        Raise :class:`~detflow.errors.ParameterError` naming the parameter; subclasses
        extend this (calling ``super().validate(meta)``) for shape-dependent checks.
        """
        if self.params_spec:
            check_params(self.params_spec, self._kwargs)

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        return {p.name: p.default for p in cls.params_spec if not p.required}

    # --- processing ---------------------------------------------------------------
    def process_frame(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def process_tile(self, tile: np.ndarray) -> None:
        raise NotImplementedError

    def process_partition(self, partition: np.ndarray) -> None:
        raise NotImplementedError

    def prepare_run(self) -> None:
        """Called once on the driver before any partition runs (``self.meta`` describes
        the dataset, without a partition): the place to create a file that workers
        write into. A detflow extension; LiberTEM has no such hook."""

    def preprocess(self) -> None:
        """Called per partition on the worker, after buffers are allocated."""

    def postprocess(self) -> None:
        """Called per partition on the worker, after the last frame."""

    def cleanup(self) -> None:
        """Called per partition on the worker at the very end."""

    # --- merging and results --------------------------------------------------------
    @property
    def requires_custom_merge(self) -> bool:
        return any(d.kind != "nav" and d.use != "result_only" for d in self.get_result_buffers().values())

    def merge(self, dest: UDFData, src: UDFData) -> None:
        """Merge one partition's results ``src`` into ``dest``.

        The default copies ``nav`` buffers into place (``dest``'s nav buffers are the
        partition's rows); UDFs with ``sig`` or ``single`` buffers must override it.
        """
        if self.requires_custom_merge:
            kinds = sorted({f"{d.kind!r} buffer {k!r}" for k, d in self.get_result_buffers().items()
                            if d.kind != "nav" and d.use != "result_only"})
            raise UDFMergeError(
                f"{type(self).__name__} has {', '.join(kinds)} but no merge(): "
                "Default merging only works for kind='nav' buffers. "
                "Please implement a suitable custom merge function."
            )
        for name in dest:
            s_arr, d_arr = getattr(src, name), getattr(dest, name)
            if not np.can_cast(s_arr.dtype, d_arr.dtype, casting="safe"):
                raise TypeError(f"{type(self).__name__}: buffer {name!r}: unsafe automatic casting "
                                f"from {s_arr.dtype} to {d_arr.dtype}")
            d_arr[:] = s_arr

    def get_results(self) -> dict[str, Any]:
        """Final results from the merged buffers (``self.results``).

        Buffers not returned pass through unchanged; ``result_only`` buffers must be
        returned. ``nav`` results are flat and ROI-filtered, like ``self.results``.
        Must not modify ``self.results``: it may run for every partial result.
        """
        return {}


def _rebuild_udf(cls: type[UDF], kwargs: dict[str, Any]) -> UDF:
    return cls(**kwargs)


class UDFPreprocessMixin:
    """Marker kept for LiberTEM compatibility: ``preprocess`` is always available."""


class UDFPostprocessMixin:
    """Marker kept for LiberTEM compatibility: ``postprocess`` is always available."""


class NoOpUDF(UDF):
    """A UDF that does nothing: for measuring reading alone (as LiberTEM's ``NoOpUDF``)."""

    def __init__(self, preferred_input_dtype: Any = bool) -> None:
        super().__init__(preferred_input_dtype=preferred_input_dtype)

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        return {}

    def get_preferred_input_dtype(self) -> Any:
        return self.params.preferred_input_dtype

    def get_backends(self) -> Any:
        return self.BACKEND_ALL

    def process_tile(self, tile: Any) -> None:
        pass
