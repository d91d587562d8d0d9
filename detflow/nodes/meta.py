"""What a UDF knows about the data it works on: ``self.meta``, as LiberTEM's ``UDFMeta``.

Positions follow LiberTEM's conventions:

* :attr:`UDFMeta.slice` is a :class:`Slice` over the dataset with the navigation
  dimensions flattened *and reduced to the ROI*: ``slice.origin[0]`` is the row of the
  current unit's first frame among the ROI frames, ``slice.shape`` a
  :class:`~detflow.sources.shape.Shape` ``(n_frames, *sig)`` of what the unit holds.
* :attr:`UDFMeta.sig_slice` is the signal part of the current tile (the whole frame,
  unless a UDF asked for tiles cut in the signal dimensions).
* :attr:`UDFMeta.coordinates` are nav coordinates of the frames the unit holds; in
  ``get_task_data`` and ``preprocess`` those of the whole partition.
* :meth:`UDFMeta.get_valid_nav_mask` is ``None`` on workers; in ``merge`` it marks the
  positions merged *before* the partition being merged, in ``get_results`` all merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from detflow.sources.shape import Shape

__all__ = ["Slice", "TilingScheme", "UDFMeta"]


class Slice:
    """An n-dimensional slice: ``origin`` (a tuple) and ``shape`` (a :class:`Shape`).

    Examples
    --------
    >>> s = Slice(origin=(0, 0, 12, 12), shape=Shape((16, 16, 4, 4), sig_dims=2))
    >>> s.get(sig_only=True)
    (slice(12, 16, None), slice(12, 16, None))
    """

    __slots__ = ("origin", "shape")

    def __init__(self, origin: Sequence[int], shape: Shape) -> None:
        self.origin = tuple(int(o) for o in origin)
        if not isinstance(shape, Shape):
            raise ValueError(f"Slice: shape must be a Shape; got {type(shape).__name__}")
        if len(self.origin) != len(shape):
            raise ValueError(f"Slice: origin {self.origin} and shape {tuple(shape)} differ in length")
        self.shape = shape

    def get(self, arr: np.ndarray | None = None, sig_only: bool = False, nav_only: bool = False) -> Any:
        """Python slices for this region (``sig_only``/``nav_only``: that part); ``arr[...]`` if given."""
        n_nav = self.shape.nav.dims
        dims = range(n_nav, len(self.shape)) if sig_only else range(n_nav) if nav_only else range(len(self.shape))
        slices = tuple(slice(self.origin[i], self.origin[i] + self.shape[i]) for i in dims)
        return slices if arr is None else arr[slices]

    def shift(self, other: Slice) -> Slice:
        """This slice relative to ``other``'s origin."""
        return Slice(tuple(a - b for a, b in zip(self.origin, other.origin, strict=True)), self.shape)

    @property
    def nav(self) -> Slice:
        n = self.shape.nav.dims
        return Slice(self.origin[:n], self.shape.nav)

    @property
    def sig(self) -> Slice:
        n = self.shape.nav.dims
        return Slice(self.origin[n:], self.shape.sig)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Slice) and self.origin == other.origin and tuple(self.shape) == tuple(other.shape)

    def __hash__(self) -> int:
        return hash((self.origin, tuple(self.shape)))

    def __repr__(self) -> str:
        return f"<Slice origin={self.origin!r} shape={self.shape!r}>"


@dataclass(frozen=True)
class TilingScheme:
    """The tiles a run cuts frames into: ``depth`` frames of the signal regions in ``slices``.

    ``scheme[i]`` is the :class:`Slice` (signal dimensions only) of tile region ``i``,
    as in LiberTEM's ``TilingScheme``.
    """

    slices: tuple[Slice, ...]
    depth: int

    @property
    def shape(self) -> Shape:
        first = self.slices[0].shape
        return Shape((self.depth, *first), len(first))

    def __getitem__(self, i: int) -> Slice:
        return self.slices[i]

    def __len__(self) -> int:
        return len(self.slices)

    def __iter__(self) -> Any:
        return iter(self.slices)


@dataclass(frozen=True)
class UDFMeta:
    """What a UDF knows about the data it is working on (``self.meta``)."""

    dataset_shape: Shape
    dataset_dtype: np.dtype
    input_dtype: np.dtype
    roi: np.ndarray | None = None
    partition_shape: Shape | None = None
    partition_index: int | None = None  # a detflow extension
    slice: Slice | None = None
    coordinates: np.ndarray | None = None
    sig_slice: Slice | None = None
    corrections: Any = None
    device_class: str = "cpu"
    array_backend: str | None = "numpy"
    threads_per_worker: int | None = 1
    tiling_scheme: TilingScheme | None = None
    tiling_scheme_idx: int = 0
    valid_nav_mask: np.ndarray | None = None  # flat over the ROI positions

    @property
    def nav_shape(self) -> tuple[int, ...]:
        return tuple(self.dataset_shape.nav)

    @property
    def sig_shape(self) -> tuple[int, ...]:
        return tuple(self.dataset_shape.sig)

    def get_valid_nav_mask(self, full_nav: bool = False) -> np.ndarray | None:
        """Flat boolean mask of the positions merged so far (``None`` on workers).

        Over the ROI positions; ``full_nav=True`` spreads it over the whole navigation
        space (``False`` outside the ROI).
        """
        mask = self.valid_nav_mask
        if mask is None or not full_nav or self.roi is None:
            return mask
        full = np.zeros(self.roi.size, dtype=bool)
        full[self.roi.reshape(-1)] = mask
        return full

    def replace(self, **changes: Any) -> UDFMeta:
        return replace(self, **changes)
