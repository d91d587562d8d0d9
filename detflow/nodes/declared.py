"""What frame nodes and result nodes share: parameters declared once, rebuilt from kwargs.

A node class lists its parameters in :attr:`DeclaredNode.params_spec` (the same
:class:`~detflow.nodes.params.Param` declarations the UDFs use). The constructor
checks what it is given against that list (unknown names, missing required ones,
types, ranges) and fills in the defaults; ``self.params`` holds the checked values,
readable as attributes. Only the keyword arguments as given travel between processes:
a worker rebuilds the node as ``cls(**kwargs)``, so anything derived from them
(a loaded dark frame, a compiled table) is rebuilt where it is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detflow.nodes.params import Param, check_params

__all__ = ["DeclaredNode", "NodeParams"]


class NodeParams(Mapping[str, Any]):
    """Checked parameter values, defaults filled in, readable as attributes."""

    def __init__(self, owner: str, values: Mapping[str, Any]) -> None:
        self.__dict__["_owner"] = owner
        self.__dict__["_values"] = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(
                f"{self.__dict__['_owner']} has no parameter {name!r}; it has: {sorted(self._values)}"
            ) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"NodeParams({self._values!r})"


class DeclaredNode:
    """Base of nodes whose parameters are declared in :attr:`params_spec`.

    Raises :class:`~detflow.errors.ParameterError` naming the parameter for an unknown
    keyword, a missing required one, or a value of the wrong type or range.
    """

    #: registry name ("crop", "find_disk"); an import path for user functions
    type_name: ClassVar[str] = ""
    #: the declared parameters
    params_spec: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **params: Any) -> None:
        self._kwargs = dict(params)
        checked = check_params(self.params_spec, params)
        values = {p.name: checked.get(p.name, p.default) for p in self.params_spec}
        self.params = NodeParams(type(self).__name__, values)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments as given; ``type(node)(**node.kwargs)`` is an equal node."""
        return dict(self._kwargs)

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        """Defaults of the optional parameters."""
        return {p.name: p.default for p in cls.params_spec if not p.required}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._kwargs))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return _same(self._kwargs, other._kwargs)

    __hash__ = None  # type: ignore[assignment]  # parameters may be arrays

    def __repr__(self) -> str:
        def short(v: Any) -> str:
            shape = getattr(v, "shape", None)
            return f"<array {shape} {v.dtype}>" if shape is not None and hasattr(v, "dtype") else repr(v)

        inner = ", ".join(f"{k}={short(v)}" for k, v in self._kwargs.items())
        return f"{type(self).__name__}({inner})"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return bool(a == b)


def _rebuild(cls: type[DeclaredNode], kwargs: dict[str, Any]) -> DeclaredNode:
    return cls(**kwargs)
