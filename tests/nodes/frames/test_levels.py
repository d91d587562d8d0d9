"""threshold and cast against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from detflow.errors import ParameterError
from detflow.nodes.frames import frame_node_class
from tests.nodes.frames.cases import DTYPES, apply_checked, blockwise, check_sparse, make_block


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", [90, 100.5, 0, 6000])
def test_threshold_zero_mode_equals_numpy(dtype, level) -> None:
    block = make_block(dtype, 5, 7, 3, seed=3)
    node = frame_node_class("threshold")(level=level)
    out = apply_checked(node, block)
    ref = np.asarray(block).copy()
    ref[ref.astype(np.float64) < level] = 0
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(blockwise(node, block), out)
    check_sparse(node, make_block(dtype, 4, 7, 3, seed=4, density=0.3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", [1, 100.5, 2000])
def test_threshold_counting_equals_numpy(dtype, level) -> None:
    block = make_block(dtype, 5, 3, 9, seed=5)
    node = frame_node_class("threshold")(level=level, mode="count")
    out = apply_checked(node, block)
    ref = (np.asarray(block).astype(np.float64) >= level).astype(dtype)
    np.testing.assert_array_equal(out, ref)
    assert set(np.unique(out)) <= {0, 1}
    np.testing.assert_array_equal(blockwise(node, block), out)
    check_sparse(node, make_block(dtype, 4, 3, 9, seed=6, density=0.3), array_api=True)


def test_threshold_nan() -> None:
    block = np.array([[[np.nan, 1.0, 9.0]]], dtype=np.float32)
    np.testing.assert_array_equal(frame_node_class("threshold")(level=5).apply(block), [[[np.nan, 0, 9]]])
    np.testing.assert_array_equal(frame_node_class("threshold")(level=5, mode="count").apply(block), [[[0, 0, 1]]])


def test_threshold_parameters() -> None:
    with pytest.raises(ParameterError, match="parameter 'level' is required"):
        frame_node_class("threshold")()
    with pytest.raises(ParameterError, match="parameter 'level' must be a finite number; got inf"):
        frame_node_class("threshold")(level=float("inf"))
    with pytest.raises(ParameterError, match="parameter 'mode' must be one of \\['zero', 'count'\\]"):
        frame_node_class("threshold")(level=1, mode="binary")
    import scipy.sparse as sp

    with pytest.raises(ParameterError, match="parameter 'level' must be > 0 to count on sparse frames"):
        frame_node_class("threshold")(level=0, mode="count").apply(sp.csr_matrix(np.ones((1, 4))), sig_shape=(2, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ["float32", "uint16", "int16", "float64"])
def test_cast_equals_numpy(dtype, target) -> None:
    block = make_block(dtype, 4, 5, 5, seed=7)
    node = frame_node_class("cast")(dtype=target)
    out = apply_checked(node, block)
    np.testing.assert_array_equal(out, np.asarray(block).astype(target))
    np.testing.assert_array_equal(blockwise(node, block), out)
    check_sparse(node, make_block(dtype, 3, 5, 5, seed=8, density=0.3))


def test_cast_parameter() -> None:
    with pytest.raises(ParameterError, match="parameter 'dtype' must be a numpy dtype"):
        frame_node_class("cast")(dtype="float33")
    with pytest.raises(ParameterError, match="parameter 'dtype' is required"):
        frame_node_class("cast")()


@pytest.mark.parametrize("dtype", DTYPES)
def test_threshold_at_the_level(dtype) -> None:
    block = np.array([[[4, 5, 6]]], dtype=dtype)
    np.testing.assert_array_equal(frame_node_class("threshold")(level=5).apply(block), [[[0, 5, 6]]])
    np.testing.assert_array_equal(frame_node_class("threshold")(level=5, mode="count").apply(block), [[[0, 1, 1]]])
