"""``memory``: a dataset held in a numpy array (or anything ``np.asarray`` accepts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError
from detflow.sources.base import FrameReader, Source
from detflow.sources.readers import ArrayReader

__all__ = ["MemorySource"]


def check_array(data: Any, sig_dims: int, what: str, kinds: str = "biufc") -> np.ndarray:
    """``data`` as an array of frames with ``sig_dims`` signal axes; a clear error otherwise."""
    if data is None:
        raise ConfigurationError(f"{what}: parameter 'data' is required")
    arr = np.asarray(data)
    if arr.dtype.hasobject or arr.dtype.kind not in kinds:
        raise ConfigurationError(f"{what}: data must be numeric; got dtype {arr.dtype}")
    if not 1 <= sig_dims < arr.ndim:
        raise ConfigurationError(
            f"{what}: parameter 'sig_dims' must be between 1 and {arr.ndim - 1} "
            f"for data of shape {arr.shape}; got {sig_dims}"
        )
    return arr


class MemorySource(Source):
    """A dataset from an array in memory.

    Parameters
    ----------
    data
        Array of shape ``nav_shape + sig_shape``.
    sig_dims
        How many trailing axes are the signal (default 2).

    Examples
    --------
    >>> import numpy as np
    >>> MemorySource(data=np.zeros((4, 5, 16, 16), dtype=np.uint16)).shape
    Shape(nav=(4, 5), sig=(16, 16))
    """

    name: ClassVar[str] = "memory"

    def __init__(
        self,
        data: Any = None,
        *,
        sig_dims: int = 2,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        sync_offset: int = 0,
        allow_short: bool = False,
        tileshape: Sequence[int] | None = None,
    ) -> None:
        arr = check_array(data, sig_dims, "memory source")
        #: LiberTEM's tile shape: its first entry is the tile depth; tiles are always whole frames
        self.tileshape = None if tileshape is None else tuple(int(t) for t in tileshape)
        self._data = np.ascontiguousarray(arr)
        self._sig_dims = sig_dims
        super().__init__(nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        shape = self._data.shape
        nav, sig = shape[: -self._sig_dims], shape[-self._sig_dims :]
        return nav, sig, ArrayReader(self._data.reshape(-1))

    @property
    def data(self) -> np.ndarray:
        return self._data
