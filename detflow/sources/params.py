"""Parameters of sources, declared once as UDFs declare theirs.

Each built-in source lists its parameters in ``params_spec`` (its own first, then
:data:`COMMON_PARAMS`, which every source takes); :func:`open_source` checks what a
user gives against that declaration before the constructor runs, so ``ctx.load``,
graph files and ``--set`` report a misspelled or mistyped source parameter the way
they report a UDF's: ``node 'source' (npy), parameter 'pth': unknown parameter; did
you mean 'path'? npy takes: nav_shape, path, sig_dims, sig_shape, sync_offset``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from detflow.errors import ConfigurationError, ParameterError
from detflow.nodes.params import Param, check_params, positive

__all__ = ["COMMON_PARAMS", "SIG_DIMS", "checked", "open_source", "path_param"]


def _shape(value: Any) -> str | None:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        return f"must be a list of integers, e.g. [32, 32]; got {value!r}"
    if not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in value):
        return f"must be a list of integers, e.g. [32, 32]; got {list(value)!r}"
    return None


def _path(value: Any) -> str | None:
    return None if isinstance(value, str | os.PathLike) else f"must be a file path; got {value!r}"


def path_param(doc: str = "the file") -> Param:
    """The ``path`` parameter most sources take first."""
    return Param("path", object, doc=doc, check=_path)


#: the parameters every source takes, declared once (:class:`Source` applies them)
COMMON_PARAMS: tuple[Param, ...] = (
    Param("nav_shape", object, default=None, check=_shape, doc="navigation shape to present"),
    Param("sig_shape", object, default=None, check=_shape, doc="signal shape to present"),
    Param("sync_offset", int, default=0, doc="> 0 skips frames at the start; < 0 inserts blank ones"),
    Param("allow_short", bool, default=False, doc="read frames the input lacks as zeros instead of refusing"),
)


#: ``sig_dims`` of the sources that read an array of any rank
SIG_DIMS = Param("sig_dims", int, default=2, check=positive, doc="how many trailing axes are the signal")


def open_source(factory: Callable[..., Any], *args: Any, **params: Any) -> Any:
    """``factory(*args, **params)`` after checking ``params`` against its ``params_spec``.

    A source class (or function) that declares ``params_spec`` gets every parameter
    checked by that declaration first, so a misspelled or mistyped parameter is a
    :class:`~detflow.errors.ParameterError` naming it (with the closest known name),
    the same as for a UDF. Positional arguments fill the declared parameters in order.
    Factories that declare nothing are called as they are.

    >>> from detflow.sources.npy import NpySource
    >>> open_source(NpySource, pth="scan.npy")
    Traceback (most recent call last):
    ...
    detflow.errors.ParameterError: parameter 'pth' unknown parameter; did you mean 'path'? npy takes: ...
    """
    spec: tuple[Param, ...] = getattr(factory, "params_spec", ())
    if not spec:
        return factory(*args, **params)
    if len(args) > len(spec):
        raise ConfigurationError(f"{len(args)} positional arguments given; the first {len(spec)} "
                                 f"would be {', '.join(p.name for p in spec)}")
    for p, value in zip(spec, args, strict=False):
        if p.name in params:
            raise ParameterError(p.name, "is given twice, by position and by name")
        params[p.name] = value
    owner = getattr(factory, "name", "") or getattr(factory, "__name__", "source")
    return factory(**check_params(spec, params, owner))


def checked(factory: Any, name: str, value: Any) -> Any:
    """``value`` checked by ``factory``'s declaration of ``name`` (for direct constructor calls)."""
    spec = next(p for p in factory.params_spec if p.name == name)
    try:
        return spec.validate(value)
    except ParameterError as err:
        raise ConfigurationError(f"{factory.name} source, parameter {name!r}: {err.reason}") from err
