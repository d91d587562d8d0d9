"""The frame-node contract: declared parameters, rebuilding from kwargs, resolving names and paths."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detflow.errors import ConfigurationError, ParameterError, UDFError, UnknownNameError
from detflow.nodes.frames import FrameNode, frame_node_class
from detflow.nodes.frames.function import FunctionFrames
from detflow.nodes.params import Param
from detflow.registry import FRAMES


def double(block: np.ndarray, *, factor: int = 2) -> np.ndarray:
    return block * block.dtype.type(factor)


def shrink(block: np.ndarray) -> np.ndarray:
    return block[:, :1, :1].copy()


class Offset(FrameNode):
    type_name = "offset"
    params_spec = (Param("by", float, default=1.0),)

    def output_signature(self, sig_shape, dtype):
        return tuple(sig_shape), np.result_type(dtype, np.float32)

    def apply(self, block):
        return block + np.float32(self.params.by)


def test_unknown_name_lists_registered_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown frame node 'blur'; known frame nodes: .*function"):
        frame_node_class("blur")


def test_import_path_to_subclass_and_to_function() -> None:
    assert frame_node_class("tests.nodes.frames.test_base:Offset") is Offset
    cls = frame_node_class("tests.nodes.frames.test_base:double")
    assert issubclass(cls, FunctionFrames)
    assert cls is frame_node_class("tests.nodes.frames.test_base:double")  # one class per path
    node = cls(kwargs={"factor": 3})
    out = node.apply(np.ones((2, 3, 4), dtype=np.uint16))
    np.testing.assert_array_equal(out, np.full((2, 3, 4), 3, dtype=np.uint16))


def test_bad_paths_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="cannot import"):
        frame_node_class("tests.nodes.frames.no_such_module:f")
    with pytest.raises(ConfigurationError, match="not a FrameNode subclass"):
        frame_node_class("detflow.nodes.sum:SumUDF")
    with pytest.raises(ConfigurationError, match="not a class or function"):
        frame_node_class("math:pi")


def test_parameters_are_checked_by_name() -> None:
    with pytest.raises(ParameterError, match="parameter 'bye' is not a parameter of this node; known: by"):
        Offset(bye=2)
    with pytest.raises(ParameterError, match="parameter 'by' must be float"):
        Offset(by="two")
    assert Offset().params.by == 1.0
    with pytest.raises(AttributeError, match="Offset has no parameter 'nope'"):
        Offset().params.nope  # noqa: B018


def test_kwargs_rebuild_and_pickle() -> None:
    node = Offset(by=2)
    assert node.kwargs == {"by": 2}
    assert type(node)(**node.kwargs) == node
    back = pickle.loads(pickle.dumps(node))
    assert back == node and back.params.by == 2.0


def test_bound_function_node_pickles_as_function_frames() -> None:
    cls = frame_node_class("tests.nodes.frames.test_base:double")
    node = cls(dtype="uint16")
    assert node.kwargs == {"dtype": "uint16"}  # 'func' is the class's, not a parameter given
    back = pickle.loads(pickle.dumps(node))
    assert type(back) is FunctionFrames
    assert back.params.func == "tests.nodes.frames.test_base:double"
    with pytest.raises(ParameterError, match="parameter 'func' is already bound"):
        cls(func="numpy:negative")


def test_function_declared_signature_is_checked() -> None:
    node = FunctionFrames(func="tests.nodes.frames.test_base:shrink")
    with pytest.raises(UDFError, match=r"'tests.nodes.frames.test_base:shrink' returned shape \(2, 1, 1\)"):
        node.apply(np.zeros((2, 3, 3), dtype=np.float32))
    ok = FunctionFrames(func="tests.nodes.frames.test_base:shrink", sig_shape=[1, 1])
    assert ok.output_signature((3, 3), np.dtype("float32")) == ((1, 1), np.dtype("float32"))
    assert ok.apply(np.ones((2, 3, 3), dtype=np.float32)).shape == (2, 1, 1)
    wrong_dtype = FunctionFrames(func="tests.nodes.frames.test_base:shrink", sig_shape=[1, 1], dtype="float64")
    with pytest.raises(UDFError, match="declared: sig_shape \\(1, 1\\), dtype float64"):
        wrong_dtype.apply(np.ones((2, 3, 3), dtype=np.float32))


def test_function_parameters_checked() -> None:
    with pytest.raises(ParameterError, match="parameter 'func' must be an import path"):
        FunctionFrames(func="double")
    with pytest.raises(ParameterError, match="parameter 'sig_shape' must be a sequence of positive integers"):
        FunctionFrames(func="numpy:negative", sig_shape=[0, 3])
    with pytest.raises(ParameterError, match="parameter 'kwargs' must be a mapping"):
        FunctionFrames(func="numpy:negative", kwargs=[1])
    with pytest.raises(ConfigurationError, match="cannot import"):
        FunctionFrames(func="numpy:no_such_function").output_signature((2, 2), np.dtype("uint8"))


def test_function_on_read_only_block() -> None:
    block = np.arange(12, dtype=np.int16).reshape(1, 3, 4)
    block.setflags(write=False)
    out = frame_node_class("tests.nodes.frames.test_base:double")().apply(block)
    np.testing.assert_array_equal(out, np.arange(12, dtype=np.int16).reshape(1, 3, 4) * 2)


def test_every_registered_frame_node_resolves() -> None:
    for name in FRAMES.names():
        cls = frame_node_class(name)
        assert issubclass(cls, FrameNode) and cls.type_name == name, name
