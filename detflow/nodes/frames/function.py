"""User functions as frame nodes: ``func(block, **kwargs)`` named by import path.

The function takes a block ``(n, *sig)`` and returns a block ``(n, *sig_shape)`` of
``dtype``; both are declared (they default to the input's), so the graph can check
the chain before any data is read, and every returned block is checked against the
declaration. The function must not write into its input (it may be read-only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, ParameterError, UDFError
from detflow.nodes.frames.base import FrameNode
from detflow.nodes.params import Param
from detflow.registry import import_object

__all__ = ["FunctionFrames"]


def _func_check(value: Any) -> str | None:
    if callable(value):
        return None
    if isinstance(value, str) and (":" in value or "." in value):
        return None
    return f"must be an import path 'package.module:function' or a function; got {value!r}"


def _shape_check(value: Any) -> str | None:
    if value is None:
        return None
    try:
        shape = tuple(int(s) for s in value)
    except (TypeError, ValueError):
        return f"must be a sequence of positive integers; got {value!r}"
    if not shape or any(s <= 0 for s in shape) or any(isinstance(s, bool) for s in value):
        return f"must be a sequence of positive integers; got {value!r}"
    return None


def _mapping_check(value: Any) -> str | None:
    if value is None or (isinstance(value, Mapping) and all(isinstance(k, str) for k in value)):
        return None
    return f"must be a mapping of keyword names to values; got {value!r}"


class FunctionFrames(FrameNode):
    """A user function applied to each block of frames.

    Parameters
    ----------
    func
        ``"package.module:function"`` (or the function itself, if it can be pickled by
        reference), called as ``func(block, **kwargs)``.
    sig_shape
        The signal shape of the blocks it returns (default: the input's).
    dtype
        The dtype of the blocks it returns (default: the input's).
    kwargs
        Keyword arguments for ``func``, kept apart from the node's own parameters.

    Examples
    --------
    >>> import numpy as np
    >>> node = FunctionFrames(func="numpy:flip", kwargs={"axis": 2})
    >>> node.output_signature((2, 3), np.dtype("int16"))
    ((2, 3), dtype('int16'))
    >>> node.apply(np.arange(6, dtype=np.int16).reshape(1, 2, 3))
    array([[[2, 1, 0],
            [5, 4, 3]]], dtype=int16)
    """

    type_name = "function"
    params_spec = (
        Param("func", object, doc="import path 'package.module:function'", check=_func_check),
        Param("sig_shape", object, default=None, doc="signal shape it returns (default: the input's)",
              check=_shape_check),
        Param("dtype", "dtype", default=None, doc="dtype it returns (default: the input's)"),
        Param("kwargs", object, default=None, doc="keyword arguments for the function", check=_mapping_check),
    )
    #: set on the classes :meth:`bound_to` makes
    bound_func: ClassVar[str | None] = None

    def __init__(self, **params: Any) -> None:
        if self.bound_func is not None:
            if "func" in params:
                raise ParameterError("func", f"is already bound to {self.bound_func!r}")
            params = {"func": self.bound_func, **params}
        super().__init__(**params)
        self._func: Callable[..., Any] | None = None

    @classmethod
    def bound_to(cls, path: str) -> type[FunctionFrames]:
        """A subclass whose ``func`` is ``path``; its instances pickle as ``FunctionFrames``."""
        return type(f"FunctionFrames[{path}]", (cls,), {"bound_func": path, "type_name": path,
                                                         "__module__": cls.__module__})

    @property
    def kwargs(self) -> dict[str, Any]:
        kw = dict(self._kwargs)
        if self.bound_func is not None:
            kw.pop("func", None)
        return kw

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_function_frames, (dict(self._kwargs),))

    @property
    def name(self) -> str:
        """The function's name, as errors quote it."""
        f = self.params.func
        return f if isinstance(f, str) else f"{getattr(f, '__module__', '?')}:{getattr(f, '__qualname__', f)}"

    def function(self) -> Callable[..., Any]:
        """The user function, imported on first use."""
        if self._func is None:
            f = self.params.func
            if isinstance(f, str):
                try:
                    f = import_object(f)
                except (ImportError, AttributeError, ValueError) as err:
                    raise ConfigurationError(f"frame function {f!r}: cannot import it ({err})") from err
            if not callable(f):
                raise ParameterError("func", f"{self.name!r} is not callable")
            self._func = f
        return self._func

    def output_signature(self, sig_shape: tuple[int, ...], dtype: np.dtype) -> tuple[tuple[int, ...], np.dtype]:
        self.function()  # an import error shows at validation, not in a worker
        shape = tuple(int(s) for s in sig_shape) if self.params.sig_shape is None else tuple(
            int(s) for s in self.params.sig_shape
        )
        out_dtype = np.dtype(dtype) if self.params.dtype is None else self.params.dtype
        return shape, out_dtype

    def apply(self, block: Any, *, sig_shape: tuple[int, ...] | None = None) -> Any:
        want_shape, want_dtype = self.output_signature(tuple(block.shape[1:]), block.dtype)
        out = self.function()(block, **(self.params.kwargs or {}))
        got_shape = tuple(getattr(out, "shape", ()))
        if not isinstance(out, np.ndarray) or got_shape != (block.shape[0], *want_shape) or out.dtype != want_dtype:
            got = f"shape {got_shape} dtype {getattr(out, 'dtype', type(out).__name__)}"
            raise UDFError(
                f"frame function {self.name!r} returned {got} for a block of {block.shape[0]} frames; "
                f"declared: sig_shape {want_shape}, dtype {want_dtype}; hint: set the node's "
                "'sig_shape' and 'dtype' parameters to what the function returns"
            )
        return out


def _rebuild_function_frames(kwargs: dict[str, Any]) -> FunctionFrames:
    return FunctionFrames(**kwargs)
