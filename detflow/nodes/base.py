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
allocated on workers and must be returned by ``get_results``.

This module holds the contract only; running it is :mod:`detflow.nodes.runner`.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np

from detflow.errors import UDFError
from detflow.nodes.params import Param, check_params
from detflow.sources.base import DatasetMeta, Shape

__all__ = [
    "UDF",
    "BufferDecl",
    "UDFData",
    "UDFMeta",
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


class UDFData(Mapping[str, Any]):
    """Named arrays, readable as attributes: ``self.results``, ``dest``, ``src``, ``task_data``."""

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self.__dict__["_data"] = dict(data or {})

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_data"][name]
        except KeyError:
            raise AttributeError(f"no buffer {name!r}; there are: {sorted(self.__dict__['_data'])}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = value

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {getattr(v, 'shape', '?')}" for k, v in self._data.items())
        return f"UDFData({inner})"


@dataclass(frozen=True)
class FrameSlice:
    """Where the current unit of work lies: frames ``origin : origin + count`` in flat nav order.

    Positions are in the full dataset. With a ROI the range may span frames outside it
    that the tile does not hold; ``meta.coordinates`` lists exactly the frames it holds.
    """

    origin: int
    count: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.count,)

    def as_slice(self) -> slice:
        return slice(self.origin, self.origin + self.count)


@dataclass(frozen=True)
class UDFMeta:
    """What a UDF knows about the data it is working on (``self.meta``)."""

    dataset_shape: Shape
    dataset_dtype: np.dtype
    input_dtype: np.dtype
    roi: np.ndarray | None = None
    partition_shape: Shape | None = None
    partition_index: int | None = None
    slice: FrameSlice | None = None
    coordinates: np.ndarray | None = None
    sig_slice: tuple[builtins.slice, ...] | None = None
    corrections: Any = None
    device_class: str = "cpu"
    array_backend: str = "numpy"
    threads_per_worker: int = 1
    tiling_scheme: Any = None
    tiling_scheme_idx: int = 0

    @property
    def nav_shape(self) -> tuple[int, ...]:
        return self.dataset_shape.nav

    @property
    def sig_shape(self) -> tuple[int, ...]:
        return self.dataset_shape.sig

    def get_valid_nav_mask(self) -> np.ndarray | None:
        """Flat boolean mask of the positions inside the ROI (``None``: all of them)."""
        return None if self.roi is None else self.roi.reshape(-1)

    def replace(self, **changes: Any) -> UDFMeta:
        return replace(self, **changes)


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
    BACKEND_NUMPY: ClassVar[str] = "numpy"
    BACKEND_ALL: ClassVar[tuple[str, ...]] = ("numpy",)

    #: declared parameters; empty means "not declared" (any keyword accepted)
    params_spec: ClassVar[tuple[Param, ...]] = ()
    #: names for the extra dimensions of buffers, used when results become xarray
    extra_dims: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.params = UDFParams(kwargs)
        self.meta: UDFMeta = None  # type: ignore[assignment]  # set before any method runs
        self.results: UDFData = UDFData()
        self.task_data: UDFData = UDFData()

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

    def get_backends(self) -> tuple[str, ...]:
        return (self.BACKEND_NUMPY,)

    def get_method(self) -> str:
        """``"tile"``, ``"frame"`` or ``"partition"``: the first that is implemented."""
        for method in ("tile", "frame", "partition"):
            if getattr(type(self), f"process_{method}") is not getattr(UDF, f"process_{method}"):
                return method
        raise UDFError(f"{type(self).__name__} implements none of process_frame, process_tile, process_partition")

    def get_task_data(self) -> dict[str, Any]:
        """Per-partition data computed on the worker (``self.task_data``)."""
        return {}

    @property
    def xp(self) -> Any:
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
        decls = self.get_result_buffers()
        for name in src:
            decl = decls[name]
            if decl.kind != "nav":
                raise UDFError(
                    f"{type(self).__name__} has a {decl.kind!r} buffer {name!r} but no merge(); "
                    "only nav buffers have a default merge"
                )
            dest[name][:] = src[name]

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
