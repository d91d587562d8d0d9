"""The correct node against a numpy computation of dark, gain and neighbour repair."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detflow.errors import ParameterError
from detflow.nodes.frames import frame_node_class
from tests.nodes.frames.cases import DTYPES, apply_checked, blockwise, make_block


def _reference(block, dark, gain, excluded):
    out = (block.astype(np.float64) - dark) * gain
    h, w = block.shape[1:]
    fixed = out.copy()
    for y, x in excluded:
        nb = [(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
        nb = [(a, b) for a, b in nb if 0 <= a < h and 0 <= b < w and (a, b) not in excluded]
        fixed[:, y, x] = np.mean([out[:, a, b] for a, b in nb], axis=0)
    return fixed


@pytest.mark.parametrize("dtype", DTYPES)
def test_correct_equals_numpy(dtype) -> None:
    rng = np.random.default_rng(9)
    h, w = 7, 5
    dark = rng.normal(3.0, 1.0, size=(h, w))
    gain = rng.uniform(0.5, 1.5, size=(h, w))
    excluded = [(0, 0), (3, 2), (3, 3), (6, 4)]
    block = make_block(dtype, 6, h, w, seed=10)
    node = frame_node_class("correct")(dark=dark, gain=gain, excluded_pixels=excluded)
    out = apply_checked(node, block)
    assert out.dtype == np.result_type(dtype, np.float32)
    rtol = 1e-5 if out.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, _reference(np.asarray(block), dark, gain, excluded), rtol=rtol, atol=1e-3)
    np.testing.assert_array_equal(blockwise(node, block), out)


def test_correct_from_npy_paths_and_mask(tmp_path) -> None:
    dark = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "dark.npy", dark)
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 1] = True
    node = frame_node_class("correct")(dark=str(tmp_path / "dark.npy"), excluded_pixels=mask)
    block = make_block("uint16", 2, 3, 4)
    np.testing.assert_allclose(apply_checked(node, block), _reference(np.asarray(block), dark, 1.0, [(1, 1)]),
                               rtol=1e-6)
    back = pickle.loads(pickle.dumps(node))  # the path travels, the worker loads it
    assert back.kwargs["dark"] == str(tmp_path / "dark.npy")
    np.testing.assert_array_equal(back.apply(block), node.apply(block))


def test_no_corrections_passes_frames_through() -> None:
    block = make_block("uint16", 2, 3, 4)
    node = frame_node_class("correct")()
    assert node.output_signature((3, 4), np.dtype("uint16")) == ((3, 4), np.dtype("uint16"))
    np.testing.assert_array_equal(node.apply(block), block)


@pytest.mark.parametrize(
    ("params", "parameter", "text"),
    [
        ({"dark": np.zeros((4, 4))}, "dark", r"must have the frame shape \(3, 4\); got \(4, 4\)"),
        ({"gain": np.zeros((3, 5))}, "gain", r"must have the frame shape \(3, 4\); got \(3, 5\)"),
        ({"dark": np.array([["a"] * 4] * 3)}, "dark", "must be numeric"),
        ({"excluded_pixels": np.zeros((4, 4), bool)}, "excluded_pixels", r"must have the signal shape \(3, 4\)"),
        ({"excluded_pixels": [(3, 0)]}, "excluded_pixels", r"does not fit frames .* lies outside"),
        ({"excluded_pixels": np.ones((3, 4), bool)}, "excluded_pixels", "no valid neighbour"),
    ],
)
def test_wrong_shapes_name_the_parameter(params, parameter, text) -> None:
    with pytest.raises(ParameterError, match=text) as info:
        frame_node_class("correct")(**params).output_signature((3, 4), np.dtype("uint16"))
    assert info.value.parameter == parameter


def test_bad_files_and_values_name_the_parameter(tmp_path) -> None:
    with pytest.raises(ParameterError, match="parameter 'gain' cannot load") as info:
        frame_node_class("correct")(gain=str(tmp_path / "missing.npy"))
    assert info.value.parameter == "gain"
    with pytest.raises(ParameterError, match="parameter 'excluded_pixels' must be a boolean mask"):
        frame_node_class("correct")(excluded_pixels=np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ParameterError, match="parameter 'dark' must be an array or the path"):
        frame_node_class("correct")(dark=3.0)
