"""Detector corrections applied to every frame as it is read: dark, gain, bad pixels.

:class:`CorrectionSet` follows LiberTEM's name and semantics. For each tile, on the
worker, right after it is read (:func:`detflow.nodes.runner.run_partition`), so every
UDF sees corrected data and every source gets them:

1. ``frame = (frame - dark) * gain`` (either may be absent);
2. each excluded pixel becomes the mean of its valid neighbours: the up to 8 pixels
   around it (3**d - 1 in d signal dimensions) that lie inside the frame and are not
   excluded themselves. A pixel with no valid neighbour is an error when the set is
   checked against the dataset, unless ``allow_empty=True`` (then it is left as is).

Corrected data is floating point: ``result_type(native dtype, float32)``, so float32
for integer detectors up to 16 bit. The repair table (which neighbours to average
for which pixel) is computed once per process and signal shape; only the arrays the
user gave travel with each task.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from detflow.errors import ConfigurationError

__all__ = ["CorrectionSet"]


def _load_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        try:
            return np.load(path)
        except (OSError, ValueError) as err:
            raise ConfigurationError(f"corrections: {what}: cannot load {path!r} as .npy ({err})") from err
    return np.asarray(value)


class CorrectionSet:
    """Dark frame, gain map and excluded pixels, applied to every frame read.

    Parameters
    ----------
    dark
        Subtracted from every frame; shaped like the signal.
    gain
        Multiplies every frame after the dark is subtracted; shaped like the signal.
    excluded_pixels
        Pixels to repair from their neighbours: a boolean mask shaped like the signal,
        a ``sparse.COO`` of that shape, or a list of ``(y, x)`` coordinates.
    allow_empty
        Leave a pixel whose neighbours are all excluded as it is, instead of raising.

    Examples
    --------
    >>> import numpy as np
    >>> frames = np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3)
    >>> cs = CorrectionSet(dark=np.ones((3, 3)), excluded_pixels=[(1, 1)])
    >>> cs.check((3, 3))
    >>> out = cs.apply(frames)
    >>> out.dtype, float(out[0, 1, 1]), float(out[0, 0, 0])
    (dtype('float32'), 3.0, -1.0)
    """

    def __init__(
        self,
        dark: Any = None,
        gain: Any = None,
        excluded_pixels: Any = None,
        allow_empty: bool = False,
    ) -> None:
        self._dark = None if dark is None else _load_array(dark, "dark")
        self._gain = None if gain is None else _load_array(gain, "gain")
        self.allow_empty = bool(allow_empty)
        self._excluded_mask: np.ndarray | None = None
        self._excluded_coords: np.ndarray | None = None  # (ndim, k)
        self._excluded_shape: tuple[int, ...] | None = None
        if excluded_pixels is not None:
            self._set_excluded(excluded_pixels)
        self._tables: dict[tuple[int, ...], tuple[np.ndarray, ...]] = {}

    def _set_excluded(self, value: Any) -> None:
        if hasattr(value, "coords") and hasattr(value, "shape") and not isinstance(value, np.ndarray):
            self._excluded_coords = np.asarray(value.coords, dtype=np.intp)  # sparse.COO
            self._excluded_shape = tuple(int(s) for s in value.shape)
            return
        arr = _load_array(value, "excluded_pixels")
        if arr.dtype == bool:
            self._excluded_mask = arr
            self._excluded_shape = arr.shape
            self._excluded_coords = np.array(np.nonzero(arr), dtype=np.intp)
            return
        if arr.size == 0:
            self._excluded_coords = np.zeros((2, 0), dtype=np.intp)
            return
        if arr.ndim != 2 or arr.dtype.kind not in "iu":
            raise ConfigurationError(
                "corrections: excluded_pixels must be a boolean mask, a sparse.COO or a list of "
                f"(y, x) integer coordinates; got an array of shape {arr.shape} and dtype {arr.dtype}"
            )
        self._excluded_coords = np.ascontiguousarray(arr.T, dtype=np.intp)

    # --- LiberTEM's accessors --------------------------------------------------------
    def get_dark_frame(self) -> np.ndarray | None:
        return self._dark

    def get_gain_map(self) -> np.ndarray | None:
        return self._gain

    def get_excluded_pixels(self) -> np.ndarray | None:
        """Coordinates of the excluded pixels, shaped ``(sig_dims, k)``."""
        return self._excluded_coords

    def have_corrections(self) -> bool:
        return self._dark is not None or self._gain is not None or (
            self._excluded_coords is not None and self._excluded_coords.shape[1] > 0
        )

    @classmethod
    def coerce(cls, value: Any) -> CorrectionSet | None:
        """A ``CorrectionSet`` from one, from ``None``, or from a mapping (a graph file's
        ``{dark: path.npy, gain: ..., excluded_pixels: [[y, x], ...]}``)."""
        if value is None or isinstance(value, CorrectionSet):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"dark", "gain", "excluded_pixels", "allow_empty"}
            if unknown:
                raise ConfigurationError(
                    f"corrections: unknown key(s) {sorted(unknown)}; expected dark, gain, "
                    "excluded_pixels, allow_empty"
                )
            return cls(**value)
        raise ConfigurationError(
            f"corrections must be a CorrectionSet or a mapping of dark/gain/excluded_pixels; "
            f"got {type(value).__name__}"
        )

    # --- checking and applying -------------------------------------------------------
    def output_dtype(self, native: Any) -> np.dtype:
        """The dtype of corrected frames of ``native`` dtype."""
        native = np.dtype(native)
        return np.result_type(native, np.float32) if self.have_corrections() else native

    def check(self, sig_shape: tuple[int, ...]) -> None:
        """Raise :class:`ConfigurationError` unless the set fits frames of ``sig_shape``."""
        sig_shape = tuple(int(s) for s in sig_shape)
        for name, arr in (("dark", self._dark), ("gain", self._gain)):
            if arr is not None and arr.shape != sig_shape:
                raise ConfigurationError(
                    f"corrections: {name} must have the signal shape {sig_shape}; got {arr.shape}"
                )
            if arr is not None and arr.dtype.kind not in "biuf":
                raise ConfigurationError(f"corrections: {name} must be numeric; got dtype {arr.dtype}")
        if self._excluded_shape is not None and self._excluded_shape != sig_shape:
            raise ConfigurationError(
                f"corrections: excluded_pixels must have the signal shape {sig_shape}; "
                f"got {self._excluded_shape}"
            )
        coords = self._excluded_coords
        if coords is not None and coords.shape[1]:
            if coords.shape[0] != len(sig_shape):
                raise ConfigurationError(
                    f"corrections: excluded_pixels coordinates have {coords.shape[0]} values each; "
                    f"the signal has {len(sig_shape)} dimensions"
                )
            bad = ((coords < 0) | (coords >= np.array(sig_shape)[:, None])).any(axis=0)
            if bad.any():
                raise ConfigurationError(
                    f"corrections: excluded pixel {tuple(int(c) for c in coords[:, bad][:, 0])} lies "
                    f"outside the signal shape {sig_shape}"
                )
            _, _, counts, excluded = self._table(sig_shape)
            empty = excluded[counts == 0]
            if empty.size and not self.allow_empty:
                where = [tuple(int(c) for c in np.unravel_index(i, sig_shape)) for i in empty[:5]]
                raise ConfigurationError(
                    f"corrections: excluded pixel(s) {where} have no valid neighbour to be repaired "
                    "from; pass allow_empty=True to leave them as they are"
                )

    def _table(self, sig_shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        """``(indices, indptr, counts, excluded)``: flat neighbours of each excluded pixel."""
        table = self._tables.get(sig_shape)
        if table is not None:
            return table
        coords = self._excluded_coords
        assert coords is not None
        shape = np.array(sig_shape, dtype=np.intp)
        excluded = np.unique(np.ravel_multi_index(tuple(coords), sig_shape))
        ex_coords = np.array(np.unravel_index(excluded, sig_shape))  # (d, k)
        mask = np.zeros(math.prod(sig_shape), dtype=bool)
        mask[excluded] = True
        offsets = np.array(
            [o for o in itertools.product((-1, 0, 1), repeat=len(sig_shape)) if any(o)], dtype=np.intp
        ).T  # (d, m)
        nb = ex_coords[:, :, None] + offsets[:, None, :]  # (d, k, m)
        inside = ((nb >= 0) & (nb < shape[:, None, None])).all(axis=0)
        nb_flat = np.ravel_multi_index(tuple(np.clip(nb, 0, shape[:, None, None] - 1)), sig_shape)
        valid = inside & ~mask[nb_flat]
        counts = valid.sum(axis=1)
        indices = nb_flat[valid]
        indptr = np.concatenate(([0], np.cumsum(counts)))
        table = (indices, indptr, counts, excluded)
        self._tables[sig_shape] = table
        return table

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Corrected copy of ``frames`` (``(n, *sig_shape)``), in :meth:`output_dtype`."""
        if not self.have_corrections():
            return frames
        dtype = self.output_dtype(frames.dtype)
        out = frames.astype(dtype)  # always a copy: the input may be a view of a file
        if self._dark is not None:
            out -= self._dark.astype(dtype, copy=False)
        if self._gain is not None:
            out *= self._gain.astype(dtype, copy=False)
        coords = self._excluded_coords
        if coords is not None and coords.shape[1] and out.size:
            sig_shape = tuple(out.shape[1:])
            indices, indptr, counts, excluded = self._table(sig_shape)
            flat = out.reshape(len(out), -1)
            has = counts > 0
            if has.any():
                sums = np.add.reduceat(flat[:, indices], indptr[:-1][has], axis=1)
                flat[:, excluded[has]] = sums / counts[has].astype(dtype)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tables"] = {}  # rebuilt where it is used
        return state

    def __repr__(self) -> str:
        parts = [f"dark={self._dark is not None}", f"gain={self._gain is not None}"]
        n = 0 if self._excluded_coords is None else self._excluded_coords.shape[1]
        parts.append(f"excluded_pixels={n}")
        return f"CorrectionSet({', '.join(parts)})"
