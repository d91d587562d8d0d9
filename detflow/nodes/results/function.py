"""User functions as result nodes: ``func(results, **kwargs)`` named by import path.

With one input node the function gets that node's results (name -> array); with several
it gets them keyed by node id. It returns a mapping of name -> array or scalar. When the
node declares ``outputs``, references to it are checked against them before running and
every call must return at least those names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, ParameterError, UDFError
from detflow.nodes.params import Param
from detflow.nodes.results.base import ResultNode
from detflow.registry import import_object

__all__ = ["FunctionResult"]


def _func_check(value: Any) -> str | None:
    if callable(value) or (isinstance(value, str) and (":" in value or "." in value)):
        return None
    return f"must be an import path 'package.module:function' or a function; got {value!r}"


def _outputs_check(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        return f"must be a list of result names; got {value!r}"
    return None


def _mapping_check(value: Any) -> str | None:
    if value is None or (isinstance(value, Mapping) and all(isinstance(k, str) for k in value)):
        return None
    return f"must be a mapping of keyword names to values; got {value!r}"


class FunctionResult(ResultNode):
    """A user function on the merged results of its input node(s).

    Parameters
    ----------
    func
        ``"package.module:function"`` (or the function itself), called as
        ``func(results, **kwargs)``.
    outputs
        The names it returns (optional; given, references to the node are checked).
    kwargs
        Keyword arguments for ``func``, kept apart from the node's own parameters.

    Examples
    --------
    >>> import numpy as np
    >>> def peak(results, *, scale=1.0):
    ...     return {"peak": float(np.nanmax(results["intensity"])) * scale}
    >>> node = FunctionResult(func=peak, outputs=["peak"], kwargs={"scale": 2.0})
    >>> node.compute({"sum": {"intensity": np.array([[1.0, np.nan], [3.0, 2.0]])}})
    {'peak': 6.0}
    """

    type_name = "function"
    params_spec = (
        Param("func", object, doc="import path 'package.module:function'", check=_func_check),
        Param("outputs", object, default=None, doc="the result names it returns", check=_outputs_check),
        Param("kwargs", object, default=None, doc="keyword arguments for the function", check=_mapping_check),
    )
    bound_func: ClassVar[str | None] = None

    def __init__(self, **params: Any) -> None:
        if self.bound_func is not None:
            if "func" in params:
                raise ParameterError("func", f"is already bound to {self.bound_func!r}")
            params = {"func": self.bound_func, **params}
        super().__init__(**params)
        self._func: Callable[..., Any] | None = None

    @classmethod
    def bound_to(cls, path: str) -> type[FunctionResult]:
        """A subclass whose ``func`` is ``path``; its instances pickle as ``FunctionResult``."""
        return type(f"FunctionResult[{path}]", (cls,), {"bound_func": path, "type_name": path,
                                                         "__module__": cls.__module__})

    @property
    def kwargs(self) -> dict[str, Any]:
        kw = dict(self._kwargs)
        if self.bound_func is not None:
            kw.pop("func", None)
        return kw

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_function_result, (dict(self._kwargs),))

    @property
    def name(self) -> str:
        f = self.params.func
        return f if isinstance(f, str) else f"{getattr(f, '__module__', '?')}:{getattr(f, '__qualname__', f)}"

    def function(self) -> Callable[..., Any]:
        if self._func is None:
            f = self.params.func
            if isinstance(f, str):
                try:
                    f = import_object(f)
                except (ImportError, AttributeError, ValueError) as err:
                    raise ConfigurationError(f"result function {f!r}: cannot import it ({err})") from err
            if not callable(f):
                raise ParameterError("func", f"{self.name!r} is not callable")
            self._func = f
        return self._func

    def output_names(self) -> tuple[str, ...]:
        return tuple(self.params.outputs or ())

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        self.function()

    def compute(self, inputs: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
        arg = next(iter(inputs.values())) if len(inputs) == 1 else inputs
        out = self.function()(arg, **(self.params.kwargs or {}))
        if not isinstance(out, Mapping):
            raise UDFError(f"result function {self.name!r} returned a {type(out).__name__}; expected a mapping "
                           "of result name -> array or scalar")
        missing = [n for n in self.output_names() if n not in out]
        if missing:
            raise UDFError(f"result function {self.name!r} did not return {missing} (declared in 'outputs'); "
                           f"it returned: {sorted(out)}")
        return dict(out)


def _rebuild_function_result(kwargs: dict[str, Any]) -> FunctionResult:
    return FunctionResult(**kwargs)
