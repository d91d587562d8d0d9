"""Mask factories against hand-checked literals and an independent meshgrid formula."""

from __future__ import annotations

import numpy as np
import pytest
import sparse

from detflow.nodes import masks


def _dist(cx: float, cy: float, w: int, h: int) -> np.ndarray:
    xx, yy = np.meshgrid(np.arange(w), np.arange(h))
    return np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)


def test_literal_small_masks() -> None:
    # by hand: radius 1 keeps the 4-neighbourhood, 1.5 the 3x3 block (corners at sqrt 2)
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(masks.circular(2, 2, 5, 5, 1)[1:4, 1:4], cross)
    assert masks.circular(2, 2, 5, 5, 1).sum() == 5
    assert masks.circular(2, 2, 5, 5, 1.5).sum() == 9
    # ring 1 < d <= 1.5: only the four diagonal neighbours
    ring = masks.ring(2, 2, 5, 5, 1.5, 1)
    assert sorted(zip(*np.nonzero(ring), strict=True)) == [(1, 1), (1, 3), (3, 1), (3, 3)]
    # x = 1 .. 3, y = 0 .. 1 inclusive, as LiberTEM
    rect = masks.rectangular(1, 0, 2, 1, 5, 3)
    expected = np.zeros((3, 5), dtype=bool)
    expected[0:2, 1:4] = True
    np.testing.assert_array_equal(rect, expected)
    np.testing.assert_array_equal(masks.rectangular(3, 1, -2, -1, 5, 3), expected)
    assert not masks.rectangular(1, 1, 0, 2, 5, 3).any()


@pytest.mark.parametrize(("cx", "cy", "w", "h"), [(7.5, 3.2, 16, 9), (0, 0, 12, 20), (20, 5, 16, 16)])
@pytest.mark.parametrize("r", [0.5, 3, 7.9])
def test_circle_and_ring_against_meshgrid(cx: float, cy: float, w: int, h: int, r: float) -> None:
    d = _dist(cx, cy, w, h)
    circ = masks.circular(cx, cy, w, h, r)
    assert circ.shape == (h, w) and circ.dtype == bool
    np.testing.assert_array_equal(circ, d <= r)
    ring = masks.ring(cx, cy, w, h, r, r / 2)
    np.testing.assert_array_equal(ring, (d > r / 2) & (d <= r))


def test_gradients() -> None:
    np.testing.assert_array_equal(masks.gradient_x(4, 3)[2], [0, 1, 2, 3])
    np.testing.assert_array_equal(masks.gradient_y(4, 3)[:, 1], [0, 1, 2])


def test_radial_bins_partition_unity() -> None:
    bins = masks.radial_bins(35, 37, 80, 80, n_bins=42)
    assert isinstance(bins, sparse.COO) and bins.shape == (42, 80, 80)
    np.testing.assert_allclose(bins.sum(axis=0).todense(), 1)
    dense = masks.radial_bins(40, 41, 80, 80, n_bins=2)
    assert isinstance(dense, np.ndarray) and dense.shape == (2, 80, 80)
    np.testing.assert_allclose(dense.sum(axis=0), 1)
    np.testing.assert_allclose(bins.todense(), masks.radial_bins(35, 37, 80, 80, n_bins=42, use_sparse=False))


def test_radial_bins_normalize_and_antialiased() -> None:
    bins = masks.radial_bins(10, 10, 21, 21, radius=8, radius_inner=2, n_bins=3, normalize=True, dtype=np.float32)
    assert bins.dtype == np.float32
    np.testing.assert_allclose(bins.sum(axis=(1, 2)), 1, rtol=1e-6)
    soft = masks.circular(10, 10, 21, 21, 5, antialiased=True)
    hard = masks.circular(10, 10, 21, 21, 5)
    assert abs(soft.sum() - np.pi * 25) < abs(hard.sum() - np.pi * 25) + 1
    assert np.all((soft > 0) | ~hard)
    soft_ring = masks.ring(10, 10, 21, 21, 5, 2, antialiased=True)
    assert soft_ring[10, 10] == 0 and soft_ring.max() == 1


def test_radial_bins_against_the_formula() -> None:
    # bins of width 2 centred at radii 3, 5, 7 (inner 2, outer 8); by hand along the row y = 10:
    # d = 3 is wholly in bin 0, d = 6 half in bin 1 and half in bin 2, d = 8 half in bin 2
    bins = masks.radial_bins(10, 10, 21, 21, radius=8, radius_inner=2, n_bins=3, use_sparse=False)
    np.testing.assert_allclose(bins[:, 10, 13], [1, 0, 0])
    np.testing.assert_allclose(bins[:, 10, 16], [0, 0.5, 0.5])
    np.testing.assert_allclose(bins[:, 10, 18], [0, 0, 0.5])
    np.testing.assert_allclose(bins[:, 10, 10], [0, 0, 0])  # inside radius_inner
    # every pixel against the documented overlap clip(width/2 + 0.5 - |d - r_bin|, 0, 1)
    d = _dist(10, 10, 21, 21)
    for k, r_bin in enumerate([3.0, 5.0, 7.0]):
        np.testing.assert_allclose(bins[k], np.clip(1.5 - np.abs(d - r_bin), 0, 1), err_msg=f"bin {k}")
