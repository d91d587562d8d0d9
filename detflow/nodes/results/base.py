"""The result-node contract: computations on the merged results of other nodes, on the driver.

A result node takes the results of its input nodes, keyed by input node id and then by
result name (``nav`` results nav-shaped, e.g. ``(ny, nx, ...)``), and returns a mapping
of name to array or scalar. It runs on the driver (or as a dask.delayed task) after a
pass has merged its partitions, and again on partial results during a run: positions
not computed yet are NaN, so every result node tolerates NaN. The names it returns are
known before running (:meth:`ResultNode.output_names`), so references such as
``{ref: disk.cx}`` are checked at validation.

Examples
--------
>>> import numpy as np
>>> from detflow.nodes.results import result_node_class
>>> node = result_node_class("numpy:nanmax")  # a plain function, bound to FunctionResult
>>> node.__mro__[1].__name__
'FunctionResult'
"""

from __future__ import annotations

import builtins
import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, ParameterError
from detflow.nodes.declared import DeclaredNode
from detflow.registry import RESULTS, import_object

__all__ = ["BufferInfo", "ResultNode", "result_node_class"]


@dataclass(frozen=True)
class BufferInfo:
    """A result buffer an input node declares: ``kind`` (``"nav"``, ``"sig"`` or
    ``"single"``), full ``shape`` as ``get_results`` gives it, and ``dtype``."""

    kind: str
    shape: tuple[int, ...]
    dtype: np.dtype


class ResultNode(DeclaredNode):
    """Base class of result nodes; subclasses implement :meth:`compute` and declare
    :attr:`outputs` (or override :meth:`output_names`)."""

    #: the names :meth:`compute` returns
    outputs: ClassVar[tuple[str, ...]] = ()

    def output_names(self) -> tuple[str, ...]:
        """The result names, known before running. An empty tuple means "not declared"
        (a user function without ``outputs``): any reference to it is accepted."""
        return tuple(self.outputs)

    def check_inputs(self, inputs: Mapping[str, Mapping[str, BufferInfo]]) -> None:
        """Check the input nodes' declared buffers (``node id -> name -> BufferInfo``);
        raise :class:`~detflow.errors.ParameterError` naming the parameter at fault."""

    def compute(self, inputs: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
        """``node id -> name -> array`` to ``name -> array or scalar``; tolerates NaN."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute()")

    # helpers for subclasses ----------------------------------------------------------
    def _one_input(self, inputs: Mapping[str, Mapping[str, Any]]) -> tuple[str, Mapping[str, Any]]:
        if len(inputs) != 1:
            raise ConfigurationError(
                f"result node {self.type_name!r} takes exactly one input node; got {len(inputs)}: "
                f"{sorted(inputs)}"
            )
        ((node_id, results),) = inputs.items()
        return node_id, results

    def _buffer(self, inputs: Mapping[str, Mapping[str, Any]], parameter: str) -> tuple[str, Any]:
        """The input's result named by the parameter ``parameter``; an error lists the names there."""
        node_id, results = self._one_input(inputs)
        name = self.params[parameter]
        if name not in results:
            raise ParameterError(
                parameter, f"names the result {name!r}, which input node {node_id!r} does not have; "
                f"it has: {', '.join(sorted(results)) or '(none)'}"
            )
        return node_id, results[name]


def result_node_class(type: str) -> type[ResultNode]:
    """The result-node class for a registry name or an import path.

    ``type`` is a registered name (``"find_disk"``, ``"idpc"``, see
    :data:`detflow.registry.RESULTS`), the import path of a :class:`ResultNode`
    subclass, or the import path of a plain function ``func(results, **kwargs)``:
    then the result is :class:`~detflow.nodes.results.function.FunctionResult` with
    ``func`` bound to that path.

    Examples
    --------
    >>> result_node_class("function").__name__
    'FunctionResult'
    >>> result_node_class("no_such_thing")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    detflow.errors.UnknownNameError: unknown result node 'no_such_thing'; known result nodes: ...function...
    """
    if ":" not in type and "." not in type:
        return _check_result_class(RESULTS.get(type), type)
    try:
        obj = import_object(type)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigurationError(f"result node {type!r}: cannot import it ({err})") from err
    if inspect.isclass(obj):
        return _check_result_class(obj, type)
    if callable(obj):
        return _bound_function_class(type)
    raise ConfigurationError(f"result node {type!r}: names a {obj.__class__.__name__}, not a class or function")


def _check_result_class(cls: Any, name: str) -> builtins.type[ResultNode]:
    if not (inspect.isclass(cls) and issubclass(cls, ResultNode)):
        raise ConfigurationError(
            f"result node {name!r}: {getattr(cls, '__name__', cls)!r} is not a ResultNode subclass"
        )
    return cls


@functools.cache
def _bound_function_class(path: str) -> type[ResultNode]:
    return RESULTS.get("function").bound_to(path)
