"""The result-node contract: names and paths, declared outputs, user functions."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detflow.errors import ConfigurationError, ParameterError, UDFError, UnknownNameError
from detflow.nodes.results import BufferInfo, ResultNode, result_node_class
from detflow.nodes.results.function import FunctionResult
from detflow.registry import RESULTS


def centre(results, *, offset=0.0):
    frame = results["intensity"]
    return {"cy": frame.shape[0] / 2 + offset, "total": float(np.nansum(frame))}


def both(inputs):
    return {"n": len(inputs), "ids": sorted(inputs)}


def test_unknown_name_lists_registered_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown result node 'fit'; known result nodes: .*function"):
        result_node_class("fit")


def test_function_by_path_one_input_gets_its_mapping() -> None:
    cls = result_node_class("tests.nodes.results.test_base:centre")
    assert issubclass(cls, FunctionResult)
    node = cls(outputs=["cy", "total"], kwargs={"offset": 1.0})
    assert node.output_names() == ("cy", "total")
    frame = np.array([[1.0, np.nan], [2.0, 3.0]])
    assert node.compute({"s": {"intensity": frame}}) == {"cy": 2.0, "total": 6.0}
    back = pickle.loads(pickle.dumps(node))
    assert type(back) is FunctionResult and back.compute({"s": {"intensity": frame}})["total"] == 6.0


def test_function_several_inputs_get_them_by_node_id() -> None:
    node = FunctionResult(func="tests.nodes.results.test_base:both")
    assert node.output_names() == ()  # not declared: any reference accepted
    assert node.compute({"a": {}, "b": {}}) == {"n": 2, "ids": ["a", "b"]}


def test_function_missing_declared_output_is_named() -> None:
    node = FunctionResult(func="tests.nodes.results.test_base:centre", outputs=["cy", "cx"])
    with pytest.raises(UDFError, match=r"did not return \['cx'\]"):
        node.compute({"s": {"intensity": np.ones((2, 2))}})
    bad = FunctionResult(func="numpy:nanmax")
    with pytest.raises(UDFError, match="expected a mapping"):
        bad.compute({"s": np.ones(3)})


def test_function_parameters_checked() -> None:
    with pytest.raises(ParameterError, match="parameter 'outputs' must be a list of result names"):
        FunctionResult(func="numpy:nanmax", outputs="cx")
    with pytest.raises(ParameterError, match="parameter 'func' is required"):
        FunctionResult()
    with pytest.raises(ConfigurationError, match="cannot import"):
        result_node_class("tests.nodes.results.nowhere:f")
    with pytest.raises(ConfigurationError, match="cannot import"):
        FunctionResult(func="numpy:nowhere").check_inputs({})


def test_buffer_info_is_plain_data() -> None:
    info = BufferInfo("sig", (4, 4), np.dtype("float32"))
    assert info == BufferInfo("sig", (4, 4), np.dtype("float32"))
    with pytest.raises(AttributeError):
        info.kind = "nav"  # type: ignore[misc]


def test_every_registered_result_node_resolves() -> None:
    for name in RESULTS.names():
        cls = result_node_class(name)
        assert issubclass(cls, ResultNode) and cls.type_name == name, name
