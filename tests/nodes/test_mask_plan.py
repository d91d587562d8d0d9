"""The ApplyMasks kernels against a plain numpy tensordot: every kernel forced, every dtype."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp

import detflow as df
from detflow.errors import ParameterError
from detflow.executors.inline import InlineExecutor
from detflow.nodes import masks
from detflow.nodes.mask_plan import KERNELS, MAX_CLASSES, cached, mask_classes, plan_masks
from detflow.nodes.masks import make_mask_stack
from detflow.nodes.masks_udf import ApplyMasksUDF
from tests.nodes.udf_cases import make_data, make_roi

DTYPES = ["uint8", "uint16", "uint32", "int16", "float32", "float64"]
SIG = (13, 17)


def _rings(n, sig=SIG):
    h, w = sig
    return [masks.ring(w / 2, h / 2, w, h, w / 4 + i, w / 8) for i in range(n)]


def _sectors(n, sig=SIG):
    h, w = sig
    y, x = np.indices(sig)
    angle = (np.arctan2(y - h / 2, x - w / 2) + np.pi) / (2 * np.pi) * n
    return [(angle.astype(int) % n == k) & (np.hypot(y - h / 2, x - w / 2) < w / 2) for k in range(n)]


def _levels(n, sig=SIG):  # few-valued float weights: 0, 0.5 and 2
    rng = np.random.default_rng(3)
    return [rng.choice([0.0, 0.5, 2.0], size=sig) for _ in range(n)]


def _dense(n, sig=SIG):
    return list(np.random.default_rng(4).random((n, *sig)))


def _pixels(n, sig=SIG):  # a few single pixels with arbitrary weights: sparse
    out = []
    for k in range(n):
        m = np.zeros(sig)
        m[k % sig[0], (3 * k) % sig[1]] = 1.0 + k / 7
        out.append(m)
    return out


FAMILIES = {"rings": _rings, "sectors": _sectors, "levels": _levels, "dense": _dense, "pixels": _pixels}


def _tile(dtype, n=9, seed=0):
    data = make_data(dtype, (n,), SIG, seed=seed).reshape(n, -1)
    if np.dtype(dtype).kind == "i":
        data = data - data.dtype.type(40)  # negative values too
    return data


def _reference(tile, mask_list):
    return np.tensordot(tile.astype(np.float64), np.stack(mask_list).reshape(len(mask_list), -1).astype(np.float64),
                        axes=([1], [1]))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_masks", [1, 5, 16])
def test_every_kernel_equals_tensordot(kernel, family, dtype, n_masks) -> None:
    mask_list = FAMILIES[family](n_masks)
    out_dtype = np.result_type(dtype, np.float32)
    stack = make_mask_stack([lambda m=m: m for m in mask_list], SIG, dtype=out_dtype)
    plan = plan_masks(stack, kernel=kernel)
    assert plan.kernel == kernel and f"kernel={kernel!r}" in repr(plan)
    tile = _tile(dtype)
    out = np.zeros((tile.shape[0], n_masks), dtype=out_dtype)
    plan.apply(tile, out)
    rtol = 1e-5 if out_dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, _reference(tile, mask_list), rtol=rtol, atol=1e-3)


@pytest.mark.parametrize("kernel", KERNELS)
def test_sparse_stacks_and_strided_tiles(kernel) -> None:
    mask_list = _rings(6)
    stack = make_mask_stack([lambda m=m: sp.csr_matrix(m) for m in mask_list], SIG, dtype=np.float32)
    assert stack.csr is not None
    tile = _tile("uint16", n=12)[::2]  # every other frame: not contiguous
    out = np.zeros((tile.shape[0], 6), dtype=np.float32)
    plan_masks(stack, kernel=kernel).apply(tile, out)
    np.testing.assert_allclose(out, _reference(tile, mask_list), rtol=1e-5)


def test_class_kernel_adds_into_out_and_runs_in_parallel() -> None:
    mask_list = _sectors(4)
    stack = make_mask_stack([lambda m=m: m for m in mask_list], SIG, dtype=np.float32)
    tile = _tile("uint16", n=40)
    out = np.ones((40, 4), dtype=np.float32)
    plan_masks(stack, kernel="classes", parallel=True).apply(tile, out)
    np.testing.assert_allclose(out, _reference(tile, mask_list) + 1, rtol=1e-5)


def test_integer_class_sums_are_exact() -> None:
    big = np.full((2, 256 * 256), 65535, dtype=np.uint16)  # float32 sums would round
    stack = make_mask_stack([lambda: np.ones((256, 256), bool)], (256, 256), dtype=np.float64)
    out = np.zeros((2, 1))
    plan_masks(stack, kernel="classes").apply(big, out)
    assert out[0, 0] == 65535 * 256 * 256


def test_classes_of_rings() -> None:
    # 16 rings of outer radius w/4 + i around the centre, all with the same inner radius: nested
    mask_list = _rings(16, (64, 64))
    classes = mask_classes(np.stack(mask_list).reshape(16, -1).T)
    assert classes is not None
    w = np.stack(mask_list).reshape(16, -1).T
    distinct = {tuple(row) for row in w.astype(int) if row.any()}
    assert classes.count == len(distinct)
    assert classes.covered == int(w.any(axis=1).sum())  # pixels in no mask are in no run
    covered = np.zeros(w.shape[0], dtype=int)
    for start, stop, label in zip(classes.starts, classes.stops, classes.labels, strict=True):
        assert (w[start:stop] == classes.weights[label]).all()
        covered[start:stop] += 1
    assert covered.max() == 1


def test_too_many_classes() -> None:
    dense = np.random.default_rng(0).random((MAX_CLASSES + 10, 2))
    assert mask_classes(dense) is None
    stack = make_mask_stack([lambda: dense[:, 0].reshape(-1, 2)], (dense.shape[0] // 2, 2))
    with pytest.raises(ParameterError, match="parameter 'kernel' 'classes' needs masks of at most"):
        plan_masks(stack, kernel="classes")
    with pytest.raises(ParameterError, match="parameter 'kernel' must be one of"):
        plan_masks(stack, kernel="gpu")


@pytest.mark.parametrize(
    ("family", "n", "sig", "kernel"),
    [
        ("rings", 16, (256, 256), "classes"),
        ("sectors", 8, (256, 256), "classes"),
        ("dense", 2, (128, 128), "rows"),
        ("dense", 16, (128, 128), "rows"),
        ("dense", 256, (128, 128), "blas"),
        ("pixels", 16, (128, 128), "sparse"),
    ],
)
def test_auto_choice(family, n, sig, kernel, caplog) -> None:
    mask_list = FAMILIES[family](n, sig)
    stack = make_mask_stack([lambda m=m: m for m in mask_list], sig, dtype=np.float32)
    with caplog.at_level(logging.DEBUG, logger="detflow.nodes.mask_plan"):
        plan = plan_masks(stack)
    assert plan.kernel == kernel, plan.estimates
    assert any(f"kernel={kernel!r}" in r.getMessage() and "auto" in r.getMessage() for r in caplog.records)


def test_plan_cache_reuses_equal_keys() -> None:
    made = []

    def make():
        made.append(1)
        return plan_masks(make_mask_stack([lambda: _rings(1)[0]], SIG))

    key = ("test", SIG, "ring-1", object.__name__)
    first = cached(key, make)
    assert cached(key, make) is first and len(made) == 1
    cached(("test", lambda: 0), make)  # cannot be pickled: made afresh
    cached(("test", lambda: 0), make)
    assert len(made) == 3


# --- through the UDF: forced kernels, every dtype, with and without ROI -------------------


@pytest.fixture(scope="module")
def inline_ctx():
    ctx = df.Context(InlineExecutor(debug=True))
    yield ctx
    ctx.close()


@pytest.mark.parametrize("kernel", ["auto", *KERNELS])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_roi", [False, True])
def test_udf_with_each_kernel(inline_ctx, kernel, dtype, with_roi) -> None:
    nav = (3, 5)
    data = make_data(dtype, nav, SIG, seed=2)
    roi = make_roi(nav) if with_roi else None
    specs = [{"type": "ring", "cx": 8, "cy": 6, "r": 4 + i, "ri": 2} for i in range(5)]
    udf = ApplyMasksUDF(masks=specs, kernel=kernel)
    ds = inline_ctx.load("memory", data=data, num_partitions=3)
    res = inline_ctx.run_udf(dataset=ds, udf=udf, roi=roi)["intensity"].data
    mask_list = [masks.ring(8, 6, SIG[1], SIG[0], 4 + i, 2) for i in range(5)]
    ref = _reference(data.reshape(-1, int(np.prod(SIG))), mask_list)
    if roi is not None:
        ref[~roi.reshape(-1)] = np.nan
    np.testing.assert_allclose(res.reshape(-1, 5), ref, rtol=1e-5)


def test_udf_plan_is_visible_and_forced() -> None:
    rings = [lambda i=i: masks.ring(128, 128, 256, 256, 64 + i, 32) for i in range(16)]
    assert ApplyMasksUDF(mask_factories=rings).plan((256, 256)).kernel == "classes"
    forced = ApplyMasksUDF(mask_factories=rings, kernel="blas").plan((256, 256))
    assert forced.kernel == "blas" and repr(forced).startswith("MaskPlan(kernel='blas', masks=16")
    with pytest.raises(ParameterError, match="parameter 'kernel' must be one of"):
        ApplyMasksUDF(mask_factories=rings, kernel="fast").validate(None)


_MADE: list[int] = []


def counted_ring(i: int) -> np.ndarray:
    _MADE.append(i)
    return masks.ring(8, 6, SIG[1], SIG[0], 4 + i, 2)


def test_masks_are_made_once_per_process_for_equal_parameters() -> None:
    import functools

    _MADE.clear()
    make = [functools.partial(counted_ring, i) for i in range(3)]
    for _ in range(4):  # a UDF is rebuilt for every partition
        udf = ApplyMasksUDF(mask_factories=make)
        udf.plan(SIG)
    assert sorted(_MADE) == [0, 1, 2]


def test_declared_npy_mask_is_made_again_when_its_file_changes(tmp_path) -> None:
    path = tmp_path / "mask.npy"
    np.save(path, np.ones(SIG, dtype=bool))
    spec = [{"type": "npy", "path": str(path)}]
    first = ApplyMasksUDF(masks=spec).plan(SIG)
    np.save(path, np.zeros(SIG, dtype=bool) | (np.arange(SIG[1]) < 3))
    import os

    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    second = ApplyMasksUDF(masks=spec).plan(SIG)
    assert second.stack is not first.stack
    tile = _tile("uint16")
    out = np.zeros((tile.shape[0], 1), np.float32)
    second.apply(tile, out)
    np.testing.assert_allclose(out[:, 0], tile.reshape(-1, *SIG)[:, :, :3].sum(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize(("family", "sparse_combine"), [("sectors", True), ("pixels", True), ("rings", False)])
@pytest.mark.parametrize("dtype", ["uint16", "float32", "float64"])
def test_both_ways_of_combining_class_sums(family, sparse_combine, dtype) -> None:
    mask_list = FAMILIES[family](40)
    out_dtype = np.result_type(dtype, np.float32)
    stack = make_mask_stack([lambda m=m: m for m in mask_list], SIG, dtype=out_dtype)
    plan = plan_masks(stack, kernel="classes")
    assert plan.classes is not None and plan.classes.sparse_combine == sparse_combine
    tile = _tile(dtype)
    out = np.zeros((tile.shape[0], 40), dtype=out_dtype)
    plan.apply(tile, out)
    np.testing.assert_allclose(out, _reference(tile, mask_list), rtol=1e-5 if out_dtype == np.float32 else 1e-12,
                               atol=1e-3)
