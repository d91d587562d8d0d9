"""Dataset shapes split into a navigation and a signal part, as LiberTEM's ``Shape``.

A :class:`Shape` *is* the full shape tuple (``tuple(ds.shape) == (*nav, *sig)``,
``len``, indexing and comparison with plain tuples work), and knows where the signal
part starts (``sig_dims``). Its ``nav`` and ``sig`` parts are shapes again, so
``ds.shape.sig.size``, ``ds.shape.nav.dims`` and ``np.zeros(ds.shape.nav)`` all work.

Two spellings build one: LiberTEM's ``Shape((4, 6, 5, 3), sig_dims=2)`` and the
split form ``Shape((4, 6), (5, 3))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["Shape"]


class Shape(tuple[int, ...]):
    """A full dataset shape with its signal dimension count.

    Parameters
    ----------
    shape
        The full shape, or (with ``sig`` given as a sequence) the navigation part.
    sig_dims
        How many trailing dimensions are signal; or the signal shape itself.

    Examples
    --------
    >>> s = Shape((4, 6, 5, 3), sig_dims=2)
    >>> s.nav, s.sig, s.sig.size, s.dims
    ((4, 6), (5, 3), 15, 4)
    >>> Shape((4, 6), (5, 3)) == s
    True
    """

    sig_dims: int

    def __new__(cls, shape: Sequence[int], sig_dims: int | Sequence[int] = 0) -> Shape:
        if isinstance(sig_dims, int):
            full = tuple(int(n) for n in shape)
            n_sig = int(sig_dims)
        else:  # Shape(nav, sig)
            sig = tuple(int(n) for n in sig_dims)
            full = tuple(int(n) for n in shape) + sig
            n_sig = len(sig)
        if not 0 <= n_sig <= len(full):
            raise ValueError(f"Shape: sig_dims must be within 0..{len(full)}; got {n_sig}")
        self = super().__new__(cls, full)
        self.sig_dims = n_sig
        return self

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (tuple(self), self.sig_dims)

    @property
    def nav(self) -> Shape:
        """The navigation part (a shape with no signal dimensions)."""
        return Shape(tuple(self)[: len(self) - self.sig_dims], 0)

    @property
    def sig(self) -> Shape:
        """The signal part (all of it signal)."""
        return Shape(tuple(self)[len(self) - self.sig_dims :], self.sig_dims)

    @property
    def full(self) -> tuple[int, ...]:
        """The full shape as a plain tuple."""
        return tuple(self)

    @property
    def size(self) -> int:
        """Number of elements: the product of all dimensions."""
        return math.prod(self)

    @property
    def dims(self) -> int:
        return len(self)

    def to_tuple(self) -> tuple[int, ...]:
        return tuple(self)

    def flatten_nav(self) -> Shape:
        """The navigation part flattened to one dimension."""
        return Shape((self.nav.size, *self.sig), self.sig_dims)

    def flatten_sig(self) -> Shape:
        """The signal part flattened to one dimension."""
        return Shape((*self.nav, self.sig.size), 1 if self.sig_dims else 0)

    def __add__(self, other: Any) -> tuple[int, ...]:
        return tuple(self) + tuple(other)

    def __repr__(self) -> str:
        if 0 < self.sig_dims < len(self):
            return f"Shape(nav={self.nav.full}, sig={self.sig.full})"
        return repr(tuple(self))
