"""Sources declare their parameters once, as UDFs do; the declaration is what gets checked."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import detflow as df
from detflow.errors import ConfigurationError, GraphValidationError, ParameterError
from detflow.registry import SOURCES
from detflow.sources.base import Source
from detflow.sources.params import COMMON_PARAMS, open_source

BUILTIN_CLASSES = ["npy", "raw", "mib", "hdf5", "zarr", "dask", "memory", "mrc", "tvips"]


@pytest.mark.parametrize("name", BUILTIN_CLASSES)
def test_declaration_matches_the_constructor(name: str) -> None:
    """Every declared name is a keyword of the constructor and the other way round."""
    cls = SOURCES.get(name)
    assert issubclass(cls, Source) and cls.params_spec, name
    declared = [p.name for p in cls.params_spec]
    assert len(declared) == len(set(declared))
    assert {p.name for p in COMMON_PARAMS} <= set(declared)
    taken = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    assert sorted(taken) == sorted(declared)


def test_misspelled_source_parameter_reads_like_a_udf_one(tmp_path) -> None:
    path = tmp_path / "scan.npy"
    np.save(path, np.zeros((2, 2, 4, 4), np.uint16))
    g = df.Graph("g")
    g.source("npy", pth=str(path))
    g.partition()
    g.udf("com", id="com", radius=2.0)
    with pytest.raises(GraphValidationError) as src_err:
        g.validate()
    assert str(src_err.value).startswith(
        "node 'source' (npy), parameter 'pth': unknown parameter; did you mean 'path'? npy takes: "
        "allow_short, nav_shape, path, sig_dims, sig_shape, sync_offset")
    assert src_err.value.parameter == "pth" and src_err.value.node == "source"
    g.nodes["source"].params.clear()
    g.nodes["source"].params["path"] = str(path)
    with pytest.raises(GraphValidationError) as udf_err:
        g.validate()
    # the same shape of message for the UDF
    assert str(udf_err.value).startswith("node 'com' (com), parameter 'radius': unknown parameter; did you mean 'r'? ")


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("npy", {"path": "x.npy", "nav_shape": "4,4"}, "npy source, parameter 'nav_shape': must be a list of integers"),
        ("npy", {"path": "x.npy", "sig_dims": 0}, "npy source, parameter 'sig_dims': must be > 0; got 0"),
        ("npy", {"path": 3}, "npy source, parameter 'path': must be a file path; got 3"),
        ("npy", {}, "npy source, parameter 'path': is required"),
        ("raw", {"path": "x", "dtype": "u2", "sig_shape": (4, 4)}, "raw source, parameter 'nav_shape': is required"),
        ("raw", {"path": "x", "dtype": "u9", "nav_shape": (1,), "sig_shape": (4, 4)},
         "raw source, parameter 'dtype': must be a numpy dtype; got 'u9'"),
        ("raw", {"path": "x", "dtype": "u2", "nav_shape": (1,), "sig_shape": (4, 4), "offset": -1},
         "raw source, parameter 'offset': must be >= 0; got -1"),
        ("zarr", {"path": "x.zarr", "array_pth": "a"}, "did you mean 'array_path'?"),
        ("auto", {"path": "x.npy", "sigdims": 3}, "did you mean 'sig_dims'?"),
    ],
)
def test_ctx_load_checks_the_declaration(tmp_path, kind, kwargs, message) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 2, 4, 4), np.uint16))
    kwargs = {k: (str(tmp_path / v) if k == "path" and isinstance(v, str) else v) for k, v in kwargs.items()}
    ctx = df.Context.make_with("inline")
    with pytest.raises(ConfigurationError) as info:
        ctx.load(kind, **kwargs)
    assert message in str(info.value)


def test_positional_arguments_fill_the_declared_order(tmp_path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((2, 3, 4, 4), np.uint16))
    src = open_source(SOURCES.get("npy"), str(path), sig_dims=3)
    assert src.shape.sig == (3, 4, 4)
    with pytest.raises(ParameterError, match="'path' is given twice"):
        open_source(SOURCES.get("npy"), str(path), path=str(path))


def test_undeclared_factories_are_called_as_they_are() -> None:
    def factory(**kwargs):
        return kwargs

    assert open_source(factory, anything=1) == {"anything": 1}
