"""Result buffers as UDF code sees them, with LiberTEM's semantics, and buffer helpers.

:class:`UDFData` is ``self.results``, ``self.task_data`` and the ``dest``/``src`` of
``merge``. Its rules follow LiberTEM 0.16 (``UDFData`` and ``MergeAttrMapping``):

* ``self.results.name`` is the current view of buffer ``name`` (the frame's element, the
  tile's rows, the partition's rows; see :mod:`detflow.nodes.base`); a ``result_only``
  buffer reads as ``None`` on workers.
* ``self.results.name = value`` *writes into* the buffer (``view[:] = value``), in
  ``process_*`` and in ``merge`` alike, so ``dest.s = src.s`` merges. It never rebinds
  the name: a value that does not fit the view is an error naming the UDF, the buffer
  and both shapes, and a name that is not a buffer is an ``AttributeError``.
* ``self.results["name"]`` works, with LiberTEM's :class:`UseDiscouragedWarning`.

``task_data`` is scratch space: assigning there binds the name, as a plain attribute.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

import numpy as np

from detflow.errors import UDFError

__all__ = [
    "ArrayWithMask",
    "BufferAssignmentError",
    "InvalidMaskError",
    "UDFData",
    "UseDiscouragedWarning",
    "get_bbox",
    "get_bbox_slice",
    "get_inner_slice",
    "reshaped_view",
]

T = TypeVar("T")


class UseDiscouragedWarning(UserWarning):
    """Code that works, in a way LiberTEM discourages (dict-style access to buffers)."""


class BufferAssignmentError(UDFError, ValueError):
    """A value assigned to a result buffer does not fit the buffer's current view."""


class UDFData:
    """Named arrays, readable as attributes: ``self.results``, ``dest``, ``src``, ``task_data``.

    Parameters
    ----------
    data
        Name → array (or ``None`` for a ``result_only`` buffer on a worker).
    owner
        Who the buffers belong to, for error messages (the UDF's class name).
    write_through
        ``True`` (result buffers): attribute assignment writes into the array.
        ``False`` (``task_data``): it binds the name.
    """

    def __init__(
        self, data: Mapping[str, Any] | None = None, *, owner: str = "UDF", write_through: bool = True
    ) -> None:
        d = self.__dict__
        d["_data"] = dict(data or {})
        d["_owner"] = owner
        d["_write_through"] = write_through

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.__dict__["_data"][name]
        except KeyError:
            raise AttributeError(
                f"{self.__dict__['_owner']} has no buffer {name!r}; there are: {sorted(self.__dict__['_data'])}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if not self._write_through:
            self._data[name] = value
            return
        if name not in self._data:
            raise AttributeError(
                f"{self._owner}: {name!r} is not a result buffer, so it cannot be assigned; "
                f"declared buffers: {sorted(self._data)} (declare it in get_result_buffers)"
            )
        target = self._data[name]
        if target is None:
            raise BufferAssignmentError(
                f"{self._owner}: buffer {name!r} is use='result_only': it is not allocated on workers; "
                "return it from get_results() instead"
            )
        try:
            target[...] = value
        except (ValueError, TypeError) as err:
            got = getattr(value, "shape", type(value).__name__)
            raise BufferAssignmentError(
                f"{self._owner}: assigning to buffer {name!r} writes into it (as `buf[:] = value`), "
                f"and the value does not fit: buffer view shape {target.shape}, value shape {got}: {err}"
            ) from err

    def __getitem__(self, name: str) -> Any:
        warnings.warn(
            "dict-like access is discouraged, as it can be confusing vs. using attribute access",
            UseDiscouragedWarning,
            stacklevel=2,
        )
        return self._data[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._data.get(name, default)

    def get_buffer(self, name: str) -> Any:
        return self._data[name]

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> Any:
        return self._data.keys()

    def values(self) -> Any:
        return self._data.values()

    def items(self) -> Any:
        return self._data.items()

    def as_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {getattr(v, 'shape', v)}" for k, v in self._data.items())
        return f"UDFData({inner})"


def reshaped_view(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` reshaped, guaranteed a view: raises ``AttributeError`` where a copy would be needed."""
    res = a.view()
    res.shape = shape
    return res


class InvalidMaskError(UDFError, ValueError):
    """A valid mask that does not fit its data (shape or dtype)."""


class ArrayWithMask(Generic[T]):
    """A result with its own valid mask, made by :meth:`UDF.with_mask` in ``get_results``."""

    def __init__(self, arr: T, mask: np.ndarray | bool) -> None:
        shape = np.shape(arr)  # type: ignore[call-overload]
        m = np.asarray([mask]) if isinstance(mask, bool) else np.asarray(mask)
        if m.dtype != np.bool_:
            raise InvalidMaskError(f"with_mask: the mask must have dtype bool; got {m.dtype}")
        try:
            m = np.broadcast_to(m, shape)
        except ValueError:
            raise InvalidMaskError(
                f"with_mask: data and mask must have compatible shapes; got data {shape}, mask {m.shape}"
            ) from None
        self._arr = arr
        self._mask = m

    @property
    def arr(self) -> T:
        return self._arr

    @property
    def mask(self) -> np.ndarray:
        return self._mask


def get_inner_slice(arr: np.ndarray, axis: int = 0) -> tuple[slice, ...]:
    """The first contiguous run along ``axis`` where ``arr`` is non-zero on every other axis."""
    other = tuple(i for i in range(arr.ndim) if i != axis)
    nonzero = np.all(arr != 0, axis=other) if other else arr != 0
    idx = np.flatnonzero(nonzero)
    if idx.size == 0:
        lo, hi = arr.shape[axis], 0
    else:
        lo = hi = int(idx[0])
        while hi + 1 < nonzero.shape[0] and nonzero[hi + 1]:
            hi += 1
        hi += 1
    return tuple(slice(lo, hi) if d == axis else slice(None) for d in range(arr.ndim))


def get_bbox(arr: np.ndarray) -> tuple[int, ...]:
    """``(min_0, max_0, min_1, max_1, ...)``: the inclusive bounding box of the non-zero entries."""
    out: list[int] = []
    for ax in range(arr.ndim):
        others = tuple(i for i in range(arr.ndim) if i != ax)
        nz = np.flatnonzero(np.any(np.abs(arr) >= 1e-8, axis=others) if others else np.abs(arr) >= 1e-8)
        if nz.size == 0:  # empty: LiberTEM reports an inverted box
            out.extend((arr.shape[ax], 0))
        else:
            out.extend((int(nz[0]), int(nz[-1])))
    return tuple(out)


def get_bbox_slice(arr: np.ndarray) -> tuple[slice, ...]:
    """Slices of the bounding box of the non-zero entries (see :func:`get_bbox`)."""
    box = get_bbox(arr)
    return tuple(slice(lo, hi + 1) for lo, hi in zip(box[::2], box[1::2], strict=True))
