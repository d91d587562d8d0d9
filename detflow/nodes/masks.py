"""Mask factories with LiberTEM's signatures, and the mask stacks ``ApplyMasksUDF`` uses.

Coordinates follow LiberTEM: factories take ``(x, y)`` order (``centerX, centerY``,
``imageSizeX, imageSizeY``) and return arrays shaped ``(imageSizeY, imageSizeX)``;
a pixel ``(y, x)`` lies at distance ``d = hypot(y - centerY, x - centerX)``. A pixel is
inside a circle when ``d <= radius`` and inside a ring when ``radius_inner < d <= radius``.

Examples
--------
>>> circular(2, 2, 5, 5, 1).astype(int)
array([[0, 0, 0, 0, 0],
       [0, 0, 1, 0, 0],
       [0, 1, 1, 1, 0],
       [0, 0, 1, 0, 0],
       [0, 0, 0, 0, 0]])
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from detflow.errors import ParameterError, did_you_mean, import_optional, unknown_name_text

__all__ = [
    "MaskStack",
    "bounding_radius",
    "circular",
    "gradient_x",
    "gradient_y",
    "is_sparse",
    "make_mask_stack",
    "polar_map",
    "radial_bins",
    "rectangular",
    "ring",
]


def _distance2(cx: float, cy: float, w: int, h: int) -> np.ndarray:
    y, x = np.ogrid[0:h, 0:w]
    return (y - cy) ** 2 + (x - cx) ** 2


def circular(
    centerX: float,
    centerY: float,
    imageSizeX: int,
    imageSizeY: int,
    radius: float,
    antialiased: bool = False,
) -> np.ndarray:
    """Disk of ``radius`` around ``(centerY, centerX)``: bool, or float if ``antialiased``."""
    if antialiased:
        return radial_bins(centerX, centerY, imageSizeX, imageSizeY, radius=radius, n_bins=1, use_sparse=False)[0]
    return _distance2(centerX, centerY, imageSizeX, imageSizeY) <= radius * radius


def ring(
    centerX: float,
    centerY: float,
    imageSizeX: int,
    imageSizeY: int,
    radius: float,
    radius_inner: float,
    antialiased: bool = False,
) -> np.ndarray:
    """Annulus ``radius_inner < d <= radius``: bool, or float if ``antialiased``."""
    if antialiased:
        return radial_bins(
            centerX,
            centerY,
            imageSizeX,
            imageSizeY,
            radius=radius,
            radius_inner=radius_inner,
            n_bins=1,
            use_sparse=False,
        )[0]
    d2 = _distance2(centerX, centerY, imageSizeX, imageSizeY)
    return (d2 <= radius * radius) & ~(d2 <= radius_inner * radius_inner)


def rectangular(X: float, Y: float, Width: float, Height: float, imageSizeX: int, imageSizeY: int) -> np.ndarray:
    """Bool rectangle with corners ``(Y, X)`` and ``(Y + Height, X + Width)``.

    As in LiberTEM both corners are included (``|Height| + 1`` rows); negative sizes
    extend up/left, a zero size gives an empty mask; the rectangle is clipped to the image.
    """
    mask = np.zeros((imageSizeY, imageSizeX), dtype=bool)
    if Width == 0 or Height == 0:
        return mask
    y0, y1 = int(min(Y, Y + Height)), int(max(Y, Y + Height))
    x0, x1 = int(min(X, X + Width)), int(max(X, X + Width))
    rows = slice(max(0, y0), max(0, min(y1 + 1, imageSizeY)))
    cols = slice(max(0, x0), max(0, min(x1 + 1, imageSizeX)))
    mask[rows, cols] = True
    return mask


def gradient_x(imageSizeX: int, imageSizeY: int, dtype: Any = np.float32) -> np.ndarray:
    """Each pixel's x coordinate, shaped ``(imageSizeY, imageSizeX)``."""
    return np.broadcast_to(np.arange(imageSizeX, dtype=dtype), (imageSizeY, imageSizeX)).copy()


def gradient_y(imageSizeX: int, imageSizeY: int, dtype: Any = np.float32) -> np.ndarray:
    """Each pixel's y coordinate, shaped ``(imageSizeY, imageSizeX)``."""
    col = np.arange(imageSizeY, dtype=dtype)[:, None]
    return np.broadcast_to(col, (imageSizeY, imageSizeX)).copy()


def _bounding_radius(cx: float, cy: float, w: int, h: int) -> int:
    return int(math.ceil(math.hypot(max(cy, h - cy), max(cx, w - cx)))) + 1


def bounding_radius(centerX: float, centerY: float, imageSizeX: int, imageSizeY: int) -> int:
    """A radius around ``(centerX, centerY)`` that covers the whole frame (as LiberTEM's)."""
    return _bounding_radius(centerX, centerY, imageSizeX, imageSizeY)


def polar_map(centerX: float, centerY: float, imageSizeX: int, imageSizeY: int,
              stretchY: float = 1.0, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Radius and angle of every pixel around ``(centerX, centerY)``: two ``(imageSizeY, imageSizeX)`` maps.

    The angle is ``arctan2(dy, dx)``; ``stretchY`` stretches the radius elliptically in
    the direction ``angle`` (radians, 0: along y), as LiberTEM's ``masks.polar_map``.

    >>> r, phi = polar_map(1, 1, 3, 3)
    >>> float(r[1, 2]), float(phi[2, 1])
    (1.0, 1.5707963267948966)
    """
    y, x = np.mgrid[0:imageSizeY, 0:imageSizeX]
    dy, dx = y - centerY, x - centerX
    if stretchY != 1.0 or angle != 0.0:
        dy, dx = ((dy * np.cos(angle) - dx * np.sin(angle)) / stretchY, dx * np.cos(angle) + dy * np.sin(angle))
    return np.hypot(dy, dx), np.arctan2(dy, dx)


def radial_bins(
    centerX: float,
    centerY: float,
    imageSizeX: int,
    imageSizeY: int,
    radius: float | None = None,
    radius_inner: float = 0,
    n_bins: int | None = None,
    normalize: bool = False,
    use_sparse: bool | None = None,
    dtype: Any = None,
) -> Any:
    """``n_bins`` antialiased rings of equal width between ``radius_inner`` and ``radius``.

    Each pixel's weight in a bin is its overlap with the bin, taking a pixel as one
    unit wide: ``clip(width/2 + 0.5 - |d - r_bin|, 0, 1)``, so that adjacent bins add
    up to 1. Returns ``(n_bins, imageSizeY, imageSizeX)``: dense, or a ``sparse.COO``
    when ``use_sparse`` (by default when a bin covers < 10 % of the image and pydata
    ``sparse`` is installed: ``pip install 'detflow[sparse]'``).
    ``normalize`` scales each bin to sum 1.
    """
    if radius is None:
        radius = _bounding_radius(centerX, centerY, imageSizeX, imageSizeY)
    if n_bins is None:
        n_bins = int(round(radius - radius_inner))
    if n_bins < 1:
        raise ParameterError("n_bins", f"must be >= 1; got {n_bins}")
    width = (radius - radius_inner) / n_bins
    if use_sparse is None:
        bin_area = math.pi * (radius**2 - (radius - width) ** 2)
        use_sparse = bin_area / (imageSizeX * imageSizeY) < 0.1 and importlib.util.find_spec("sparse") is not None
    d = np.sqrt(_distance2(centerX, centerY, imageSizeX, imageSizeY))
    centres = radius_inner + width * (np.arange(n_bins) + 0.5)
    stack = np.clip(width / 2 + 0.5 - np.abs(d[None] - centres[:, None, None]), 0, 1)
    # the centre pixel has d = 0 but covers radii up to ~0.5: give it to the first bin
    yy, xx = int(round(centerY)), int(round(centerX))
    if radius_inner < 0.5 and 0 <= yy < imageSizeY and 0 <= xx < imageSizeX:
        stack[0, yy, xx] = 1 - radius_inner
    if normalize:
        sums = stack.sum(axis=(1, 2), keepdims=True)
        np.divide(stack, sums, out=stack, where=~np.isclose(sums, 0))
    stack = stack.astype(dtype if dtype is not None else np.float64, copy=False)
    if use_sparse:
        return import_optional("sparse", "sparse radial bins (use_sparse=True)").COO.from_numpy(stack)
    return stack


# --- mask stacks for ApplyMasksUDF ----------------------------------------------------


def is_sparse(mask: Any) -> bool:
    """True for scipy.sparse matrices/arrays and pydata ``sparse`` arrays."""
    mod = type(mask).__module__
    return mod.startswith("scipy.sparse") or mod.split(".")[0] == "sparse"


@dataclass(frozen=True)
class MaskStack:
    """Masks flattened for a product with ``(n_frames, n_pixels)`` tiles.

    ``dense`` is ``(n_pixels, n_masks)`` C-contiguous; ``csr`` is a
    ``scipy.sparse.csr_array`` of shape ``(n_masks, n_pixels)``. Exactly one is set.
    """

    count: int
    dtype: np.dtype
    dense: np.ndarray | None = None
    csr: Any = None

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """The dense masks as C-contiguous rows ``(n_masks, n_pixels)``."""
        assert self.dense is not None
        return np.ascontiguousarray(self.dense.T)


def _as_list(factories: Callable[[], Any] | Iterable[Callable[[], Any]]) -> list[Any]:
    if callable(factories):
        made = factories()
        if is_sparse(made) or isinstance(made, np.ndarray):
            return [made] if made.ndim == 2 else [made[i] for i in range(made.shape[0])]
        return list(made)  # a factory returning a list of masks
    return [f() for f in factories]


def make_mask_stack(
    factories: Any, sig_shape: tuple[int, ...], *, use_sparse: Any = None, dtype: Any = None
) -> MaskStack:
    """Call the factories and stack the masks; errors name ``mask_factories``.

    ``use_sparse`` as in LiberTEM: ``None`` uses a sparse product when every mask is
    sparse, ``False`` densifies, anything else makes every mask sparse.
    """
    masks = _as_list(factories)
    if not masks:
        raise ParameterError("mask_factories", "made no masks")
    sig = tuple(int(s) for s in sig_shape)
    for i, m in enumerate(masks):
        if tuple(m.shape) != sig:
            raise ParameterError(
                "mask_factories",
                f"mask {i} must have the dataset's sig_shape {sig}; got shape {tuple(m.shape)}",
            )
    dt = np.dtype(dtype) if dtype is not None else np.result_type(*[m.dtype for m in masks])
    sparse_wanted = all(is_sparse(m) for m in masks) if use_sparse is None else bool(use_sparse)
    if sparse_wanted:
        sp = import_optional("scipy.sparse", "sparse masks (use_sparse)")
        rows = [sp.csr_array(_to_scipy(m).reshape(1, -1)) for m in masks]
        csr = sp.csr_array(sp.vstack(rows).astype(dt))
        csr.sum_duplicates()
        return MaskStack(count=len(masks), dtype=dt, csr=csr)
    dense = np.empty((int(np.prod(sig)), len(masks)), dtype=dt)
    for i, m in enumerate(masks):
        dense[:, i] = _to_dense(m).reshape(-1)
    return MaskStack(count=len(masks), dtype=dt, dense=dense)


def _to_dense(mask: Any) -> np.ndarray:
    if not is_sparse(mask):
        return np.asarray(mask)
    return mask.todense() if type(mask).__module__.startswith("sparse") else mask.toarray()


def _to_scipy(mask: Any) -> Any:
    sp = import_optional("scipy.sparse", "sparse masks")
    if type(mask).__module__.startswith("sparse"):
        return sp.coo_array(mask.to_scipy_sparse())
    return sp.coo_array(mask)


#: declarative masks, as graph files write them: type -> (function, required keys, optional keys)
_SPEC_KINDS: dict[str, tuple[Callable[..., np.ndarray], tuple[str, ...], tuple[str, ...]]] = {}


def _spec_circular(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    return circular(cx, cy, w, h, r)


def _spec_ring(h: int, w: int, cx: float, cy: float, r: float, ri: float) -> np.ndarray:
    return ring(cx, cy, w, h, r, ri)


def _spec_rectangular(h: int, w: int, x: int, y: int, width: int, height: int) -> np.ndarray:
    return rectangular(x, y, width, height, w, h)


def _spec_npy(h: int, w: int, path: str) -> np.ndarray:
    return np.load(path)


_SPEC_KINDS.update({
    "circular": (_spec_circular, ("cx", "cy", "r"), ()),
    "ring": (_spec_ring, ("cx", "cy", "r", "ri"), ()),
    "rectangular": (_spec_rectangular, ("x", "y", "width", "height"), ()),
    "npy": (_spec_npy, ("path",), ()),
})


def check_mask_spec(spec: Any, index: int) -> str | None:
    """Why ``spec`` (a ``{type: ..., ...}`` mapping) is not a valid mask, or ``None``."""
    if not isinstance(spec, dict) or "type" not in spec:
        return f"mask {index} must be a mapping with a 'type'; got {spec!r}"
    kind = _SPEC_KINDS.get(spec["type"])
    if kind is None:
        return f"mask {index}: {unknown_name_text('type', spec['type'], _SPEC_KINDS, known_label='known')}"
    _, required, optional = kind
    given = set(spec) - {"type", "name"}  # a name labels the mask axis of the results
    missing = [k for k in required if k not in given]
    unknown = sorted(given - set(required) - set(optional))
    if missing:
        return f"mask {index} ({spec['type']}) needs {', '.join(missing)}"
    if unknown:
        return (f"mask {index} ({spec['type']}): unknown key {unknown[0]!r}; "
                f"{did_you_mean(unknown[0], (*required, *optional))}takes {', '.join((*required, *optional))}")
    return _check_spec_values(spec, index)


#: keys whose values must be numbers > 0 (sizes), and >= 0 (inner radius)
_POSITIVE = ("r", "width", "height")


def _check_spec_values(spec: dict[str, Any], index: int) -> str | None:
    where = f"mask {index} ({spec['type']})"
    if not isinstance(spec.get("name", ""), str):
        return f"{where}: name must be a string; got {spec['name']!r}"
    for key, value in spec.items():
        if key in ("type", "path", "name"):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            return f"{where}: {key} must be a number; got {value!r}"
        if key in _POSITIVE and not value > 0:
            return f"{where}: {key} must be > 0; got {value!r}"
    if spec["type"] == "ring" and not 0 <= spec["ri"] < spec["r"]:
        return f"{where}: the inner radius ri must be >= 0 and smaller than r; got ri={spec['ri']!r}, r={spec['r']!r}"
    return None


def mask_from_spec(spec: dict[str, Any], sig_shape: tuple[int, ...]) -> np.ndarray:
    """A dense mask for ``sig_shape`` from its declaration, e.g.
    ``{"type": "circular", "cx": 64, "cy": 64, "r": 20}``.

    >>> mask_from_spec({"type": "ring", "cx": 2, "cy": 2, "r": 2, "ri": 1}, (5, 5)).astype(int)[2]
    array([1, 0, 0, 0, 1])
    """
    fn, _, _ = _SPEC_KINDS[spec["type"]]
    h, w = sig_shape
    return fn(h, w, **{k: v for k, v in spec.items() if k not in ("type", "name")})

