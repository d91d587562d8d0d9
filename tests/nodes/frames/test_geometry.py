"""crop, bin, flip, rotate90, transpose against plain numpy."""

from __future__ import annotations

import re

import numpy as np
import pytest

from detflow.errors import ConfigurationError, ParameterError
from detflow.nodes.frames import frame_node_class
from tests.nodes.frames.cases import DTYPES, apply_checked, blockwise, check_sparse, make_block

VIEWS = [
    ("crop", {"y0": 1, "y1": 6, "x0": 2}, lambda b: b[:, 1:6, 2:]),
    ("crop", {"x1": 1}, lambda b: b[:, :, :1]),
    ("flip", {"axis": "y"}, lambda b: b[:, ::-1, :]),
    ("flip", {"axis": "x"}, lambda b: b[:, :, ::-1]),
    ("rotate90", {}, lambda b: np.stack([np.rot90(f) for f in b])),
    ("rotate90", {"k": -1}, lambda b: np.stack([np.rot90(f, -1) for f in b])),
    ("rotate90", {"k": 2}, lambda b: b[:, ::-1, ::-1]),
    ("rotate90", {"k": 7}, lambda b: np.stack([np.rot90(f, 3) for f in b])),
    ("transpose", {}, lambda b: np.stack([f.T for f in b])),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "params", "reference"), VIEWS, ids=[f"{v[0]}-{i}" for i, v in enumerate(VIEWS)])
def test_views_equal_numpy(name, params, reference, dtype) -> None:
    block = make_block(dtype, 7, 7, 5, seed=1)
    node = frame_node_class(name)(**params)
    out = apply_checked(node, block)
    np.testing.assert_array_equal(out, reference(np.asarray(block)))
    np.testing.assert_array_equal(blockwise(node, block), out)
    check_sparse(node, make_block(dtype, 4, 7, 5, density=0.2))


def _bin_reference(block: np.ndarray, fy: int, fx: int, mean: bool) -> np.ndarray:
    n, h, w = block.shape
    out = np.zeros((n, h // fy, w // fx))
    for a in range(h // fy):
        for b in range(w // fx):
            box = block[:, a * fy : (a + 1) * fy, b * fx : (b + 1) * fx].astype(np.float64)
            out[:, a, b] = box.mean(axis=(1, 2)) if mean else box.sum(axis=(1, 2))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("factor", "shape"), [(3, (9, 6)), ([1, 5], (7, 5)), ([3], (3, 9)), (1, (3, 4))])
@pytest.mark.parametrize("method", ["sum", "mean"])
def test_bin_equals_numpy(dtype, factor, shape, method) -> None:
    block = make_block(dtype, 6, *shape, seed=2)
    node = frame_node_class("bin")(factor=factor, method=method)
    fy, fx = node.factors
    out = apply_checked(node, block)
    ref = _bin_reference(np.asarray(block), fy, fx, method == "mean")
    rtol = 1e-6 if out.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=rtol)
    if method == "sum" and np.dtype(dtype).kind != "f":
        assert out.dtype.itemsize == 8  # integer sums cannot overflow
    np.testing.assert_array_equal(blockwise(node, block), out)
    check_sparse(node, make_block(dtype, 3, *shape, density=0.3))
    check_sparse(node, make_block(dtype, 3, *shape, density=0.3), array_api=True)


def test_bin_dtype_parameter() -> None:
    block = make_block("uint16", 2, 4, 4)
    out = apply_checked(frame_node_class("bin")(factor=2, dtype="float32"), block)
    np.testing.assert_allclose(out, _bin_reference(np.asarray(block), 2, 2, False), rtol=1e-6)


def test_views_are_views_not_copies() -> None:
    block = make_block("uint16", 3, 6, 6)
    for name, params, _ in VIEWS:
        out = frame_node_class(name)(**params).apply(block)
        assert np.shares_memory(out, block), name
        assert not out.flags.writeable, name


@pytest.mark.parametrize(
    ("params", "parameter", "text"),
    [
        ({"y1": 8}, "y1", "must be <= the frame height 7; got 8"),
        ({"x0": 5}, "x0", "must be < the box's end x1 = 5 (the frame width); got 5"),
        ({"y0": 3, "y1": 3}, "y0", "must be < the box's end y1 = 3; got 3"),
        ({"x1": 6}, "x1", "must be <= the frame width 5"),
    ],
)
def test_crop_outside_the_frame_names_the_parameter(params, parameter, text) -> None:
    with pytest.raises(ParameterError, match=re.escape(text)) as info:
        frame_node_class("crop")(**params).output_signature((7, 5), np.dtype("uint16"))
    assert info.value.parameter == parameter


def test_bin_not_dividing_names_factor() -> None:
    with pytest.raises(ParameterError, match=r"must divide the frame shape \(7, 6\); got \(2, 2\)") as info:
        frame_node_class("bin")(factor=2).output_signature((7, 6), np.dtype("uint16"))
    assert info.value.parameter == "factor"
    for bad in (0, [2, 0], [1, 2, 3], 1.5, True, "2"):
        with pytest.raises(ParameterError, match="parameter 'factor' must be a positive integer or a pair"):
            frame_node_class("bin")(factor=bad)
    with pytest.raises(ParameterError, match="parameter 'method' must be one of"):
        frame_node_class("bin")(method="max")


def test_other_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="parameter 'axis' must be one of \\['y', 'x'\\]"):
        frame_node_class("flip")(axis="z")
    with pytest.raises(ParameterError, match="parameter 'axis' is required"):
        frame_node_class("flip")()
    with pytest.raises(ParameterError, match="parameter 'k' must be int"):
        frame_node_class("rotate90")(k=1.5)
    with pytest.raises(ParameterError, match="parameter 'y0' must be >= 0"):
        frame_node_class("crop")(y0=-1)


@pytest.mark.parametrize("name", ["crop", "bin", "transpose", "rotate90"])
def test_frames_not_2d_are_refused(name) -> None:
    with pytest.raises(ConfigurationError, match=f"frame node '{name}' needs 2-D frames; got the signal shape"):
        frame_node_class(name)().output_signature((4, 4, 4), np.dtype("uint8"))


def test_sparse_needs_its_frame_shape() -> None:
    import scipy.sparse as sp

    csr = sp.csr_matrix(np.ones((2, 12)))
    with pytest.raises(ParameterError, match="sig_shape"):
        frame_node_class("flip")(axis="x").apply(csr)
    with pytest.raises(ParameterError, match="the sparse block has 12 columns"):
        frame_node_class("flip")(axis="x").apply(csr, sig_shape=(5, 5))
    with pytest.raises(ParameterError, match="sig_shape"):
        frame_node_class("bin")().apply(csr)
