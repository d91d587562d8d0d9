from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import sparse

from detflow.errors import ParameterError
from detflow.nodes import masks
from detflow.nodes.masks_udf import ApplyMasksUDF
from detflow.sources.base import DatasetMeta
from tests.nodes.udf_cases import Case, case_fixture  # noqa: F401


def _mask_list(sig: tuple[int, int]) -> list[np.ndarray]:
    h, w = sig
    weights = np.random.default_rng(5).random(sig)
    return [
        masks.circular(w / 2, h / 2, w, h, 4),
        masks.ring(w / 2 - 1, h / 2, w, h, 6, 2),
        masks.rectangular(1, 2, 5, 3, w, h),
        weights,
    ]


def _expected(case: Case, stack: list[np.ndarray]) -> np.ndarray:
    flat = case.data.reshape(-1, int(np.prod(case.sig))).astype(np.float64)
    per_frame = flat @ np.stack([np.asarray(m, dtype=np.float64).reshape(-1) for m in stack], axis=1)
    return case.expect_nav(per_frame)


@pytest.mark.parametrize("form", ["dense-list", "dense-stack", "scipy", "pydata", "forced-sparse"])
def test_apply_masks_matches_numpy(ctx, case: Case, form: str) -> None:
    stack = _mask_list(case.sig)
    if form == "dense-list":
        udf = ApplyMasksUDF(mask_factories=[lambda m=m: m for m in stack])
    elif form == "dense-stack":
        udf = ApplyMasksUDF(mask_factories=lambda: np.stack(stack))
    elif form == "scipy":
        udf = ApplyMasksUDF(mask_factories=[lambda m=m: sp.csr_matrix(m) for m in stack])
    elif form == "pydata":
        udf = ApplyMasksUDF(mask_factories=lambda: sparse.COO.from_numpy(np.stack(stack)))
    else:
        udf = ApplyMasksUDF(mask_factories=[lambda m=m: m for m in stack], use_sparse=True)
    res = case.run(ctx, udf)["intensity"]
    assert res.data.shape == (*case.nav, len(stack))
    assert res.dtype == np.result_type(case.data.dtype, np.float32, np.float64)
    np.testing.assert_allclose(res.data, _expected(case, stack), rtol=1e-5)


def test_bool_masks_give_float32(ctx) -> None:
    data = np.ones((2, 3, 8, 8), dtype=np.uint16)
    ds = ctx.load("memory", data=data, num_partitions=2)
    udf = ApplyMasksUDF(mask_factories=[lambda: masks.circular(4, 4, 8, 8, 2)])
    res = ctx.run_udf(dataset=ds, udf=udf)["intensity"]
    assert res.dtype == np.float32
    np.testing.assert_array_equal(res.data[..., 0], masks.circular(4, 4, 8, 8, 2).sum())


def test_wrong_mask_shape_is_a_parameter_error() -> None:
    udf = ApplyMasksUDF(mask_factories=[lambda: np.ones((8, 8)), lambda: np.ones((8, 9))])
    meta = DatasetMeta(nav_shape=(2, 2), sig_shape=(8, 8), dtype="uint16")
    with pytest.raises(ParameterError, match=r"mask 1 .*\(8, 8\).*\(8, 9\)") as info:
        udf.validate(meta)
    assert info.value.parameter == "mask_factories"


def test_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="'shifts'"):
        ApplyMasksUDF(mask_factories=[lambda: np.ones((8, 8))], shifts=np.zeros((4, 2)))
    meta = DatasetMeta(nav_shape=(2, 2), sig_shape=(8, 8), dtype="uint16")
    with pytest.raises(ParameterError, match="'use_sparse'"):
        ApplyMasksUDF(mask_factories=[lambda: np.ones((8, 8))], use_sparse="torch").validate(meta)
    with pytest.raises(ParameterError, match="'mask_count'"):
        ApplyMasksUDF(mask_factories=[lambda: np.ones((8, 8))], mask_count=2).validate(meta)
    with pytest.raises(ParameterError, match="'mask_factories'"):
        ApplyMasksUDF(mask_factories=[3]).validate(meta)


@pytest.mark.parametrize("n_masks", [1, 4, 5, 12])
def test_dense_kernel_and_blas_paths_agree_with_numpy(ctx, n_masks: int) -> None:
    """Up to four dense masks take the numba kernel, more take BLAS; both match numpy."""
    rng = np.random.default_rng(n_masks)
    data = rng.integers(0, 4000, size=(4, 5, 24, 20)).astype(np.uint16)
    stack = rng.random((n_masks, 24, 20)).astype(np.float32)
    ds = ctx.load("memory", data=data, num_partitions=3)
    res = ctx.run_udf(dataset=ds, udf=ApplyMasksUDF(mask_factories=lambda: stack))["intensity"]
    expected = data.reshape(20, -1).astype(np.float64) @ stack.reshape(n_masks, -1).T.astype(np.float64)
    np.testing.assert_allclose(res.data.reshape(20, n_masks), expected, rtol=1e-5)


@pytest.mark.parametrize(("n_masks", "use_sparse", "path"), [
    (1, False, "dense kernel"), (4, False, "dense kernel"), (5, False, "blas"), (12, False, "blas"),
    (3, True, "sparse kernel"),
])
def test_kernel_choice(monkeypatch, n_masks: int, use_sparse: bool, path: str) -> None:
    """Which product runs for how many masks, seen by counting the kernels' calls."""
    from detflow.nodes import kernels
    from detflow.nodes.masks import make_mask_stack
    from detflow.nodes.masks_udf import apply_mask_stack

    calls: list[str] = []
    for name, label in (("dense_rows_dot32", "dense kernel"), ("csr_rows_dot", "sparse kernel")):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _o=original, _l=label: (calls.append(_l), _o(*a))[1])
    rng = np.random.default_rng(n_masks)
    tile = rng.integers(0, 4000, size=(6, 8, 10)).astype(np.uint16)
    masks = (rng.random((n_masks, 8, 10)) < 0.3).astype(np.float32)
    stack = make_mask_stack(lambda: masks, (8, 10), use_sparse=use_sparse)
    out = np.zeros((6, n_masks), dtype=np.float64)
    apply_mask_stack(tile, stack, out)
    assert calls == ([] if path == "blas" else [path])
    expected = tile.reshape(6, -1).astype(np.float64) @ masks.reshape(n_masks, -1).T.astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_float64_masks_sum_in_float64(ctx) -> None:
    data = np.full((2, 2, 16, 16), 3, dtype=np.uint32)
    mask = np.full((16, 16), 1 / 3, dtype=np.float64)
    ds = ctx.load("memory", data=data)
    res = ctx.run_udf(dataset=ds, udf=ApplyMasksUDF(mask_factories=[lambda: mask]))["intensity"]
    assert res.dtype == np.float64
    np.testing.assert_allclose(res.data[..., 0], 256.0, rtol=1e-12)
