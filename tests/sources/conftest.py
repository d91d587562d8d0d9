"""Builders for every source type, for the conformance suite.

Each builder writes (or wraps) ``data``, an array of shape ``nav + sig``, with an
independent writer (``np.save``, ``ndarray.tofile``), and returns the keyword
arguments for ``ctx.load(kind, ...)``. A new format adds one builder here and gets
the whole conformance suite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

Builder = Callable[[np.ndarray, Path], tuple[str, dict[str, Any]]]


def _memory(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    return "memory", {"data": data}


def _npy(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    path = tmp / "data.npy"
    np.save(path, data)
    return "npy", {"path": str(path)}


def _raw(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    path = tmp / "data.raw"
    header = b"\x7fHEADER!" * 3
    with open(path, "wb") as f:
        f.write(header)
        data.tofile(f)
    return "raw", {
        "path": str(path), "dtype": data.dtype.str, "nav_shape": data.shape[:-2],
        "sig_shape": data.shape[-2:], "offset": len(header),
    }


BUILDERS: dict[str, Builder] = {"memory": _memory, "npy": _npy, "raw": _raw}


@pytest.fixture(params=sorted(BUILDERS))
def make_source(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    """``make_source(data, **load_kwargs)`` -> a loaded source of each type."""
    import detflow as df

    builder = BUILDERS[request.param]

    def make(data: np.ndarray, **load_kwargs: Any) -> Any:
        kind, kwargs = builder(data, tmp_path)
        return df.Context.make_with("inline").load(kind, **{**kwargs, **load_kwargs})

    make.kind = request.param  # type: ignore[attr-defined]
    return make
