"""Typed parameter declarations for nodes.

A node declares each parameter once, as a :class:`Param`; validation, parsing of
command-line ``--set`` strings and help text are all derived from that declaration.

Examples
--------
>>> p = Param("r", float, default=1.0, check=positive, doc="radius in pixels")
>>> p.parse("2.5")
2.5
>>> p.validate(-3)
Traceback (most recent call last):
...
detflow.errors.ParameterError: parameter 'r' must be > 0; got -3
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from detflow.errors import ParameterError, did_you_mean

__all__ = [
    "REQUIRED",
    "Param",
    "check_params",
    "in_range",
    "unknown_parameter",
    "non_negative",
    "one_of",
    "positive",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

Check = Callable[[Any], "str | None"]


def positive(value: Any) -> str | None:
    return None if value > 0 else f"must be > 0; got {value!r}"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must be >= 0; got {value!r}"


def in_range(lo: float, hi: float) -> Check:
    def check(value: Any) -> str | None:
        return None if lo <= value <= hi else f"must be between {lo} and {hi}; got {value!r}"

    return check


def one_of(*choices: Any) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {list(choices)}; got {value!r}"

    return check


_NUMERIC = {float: (int, float, np.integer, np.floating), int: (int, np.integer)}


@dataclass(frozen=True)
class Param:
    """One declared node parameter.

    Parameters
    ----------
    name
        The keyword the node takes.
    type
        ``float``, ``int``, ``bool``, ``str``, ``"dtype"``, or ``object`` (anything;
        checked only by ``check``). ``None`` is accepted where ``default`` is ``None``.
    default
        :data:`REQUIRED` if the parameter must be given.
    check
        Optional range check returning an error text, or ``None`` if fine.
    """

    name: str
    type: Any = object
    default: Any = REQUIRED
    doc: str = ""
    check: Check | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def type_name(self) -> str:
        return self.type if isinstance(self.type, str) else getattr(self.type, "__name__", "any")

    def validate(self, value: Any) -> Any:
        """``value`` converted to the declared type; :class:`ParameterError` if it is not."""
        if value is None and self.default is None:
            return None
        given = value
        t = self.type
        if t is bool:
            if not isinstance(value, bool | np.bool_):
                raise ParameterError(self.name, f"must be true or false; got {value!r}")
            value = bool(value)
        elif t in _NUMERIC:
            if isinstance(value, bool) or not isinstance(value, _NUMERIC[t]):
                raise ParameterError(self.name, f"must be {t.__name__}; got {value!r}")
            value = t(value)
            if t is float and math.isnan(value):
                raise ParameterError(self.name, "must be a number; got nan")
        elif t is str:
            if not isinstance(value, str):
                raise ParameterError(self.name, f"must be a string; got {value!r}")
        elif t == "dtype":
            try:
                value = np.dtype(value)
            except TypeError as err:
                raise ParameterError(self.name, f"must be a numpy dtype; got {value!r}") from err
        if self.check is not None:
            # numbers are checked as given, so the message quotes what the user wrote
            problem = self.check(given if t in _NUMERIC else value)
            if problem:
                raise ParameterError(self.name, problem)
        return value

    def parse(self, text: str) -> Any:
        """Parse a command-line string by the declared type, then validate it."""
        if self.type is str or self.type == "dtype":
            return self.validate(text)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ParameterError(self.name, f"cannot parse {text!r}: {err}") from err
        if self.type is float and isinstance(value, str) and value.lower() in ("inf", "+inf"):
            value = math.inf
        return self.validate(value)


def unknown_parameter(name: str, known: Iterable[str], owner: str) -> ParameterError:
    """The error for a parameter ``owner`` does not take, with the closest known name.

    >>> print(unknown_parameter("radius", ["cx", "cy", "r"], "com"))
    parameter 'radius' unknown parameter; did you mean 'r'? com takes: cx, cy, r
    """
    known = sorted(known)
    return ParameterError(name, f"unknown parameter; {did_you_mean(name, known)}{owner} takes: {', '.join(known)}")


def check_params(spec: tuple[Param, ...], given: Mapping[str, Any], owner: str = "this node") -> dict[str, Any]:
    """Validate ``given`` against ``spec``: unknown names, missing required ones, types."""
    known = {p.name: p for p in spec}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise unknown_parameter(unknown[0], known, owner)
    out = {}
    for p in spec:
        if p.name in given:
            out[p.name] = p.validate(given[p.name])
        elif p.required:
            raise ParameterError(p.name, "is required")
    return out
