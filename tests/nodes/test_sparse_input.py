"""Sparse frames through the graph (issue 17, item 4).

A sparse source (``csr``) hands out CSR blocks. A UDF that takes a sparse backend
(``get_backends()``) gets the block sparse; UDFs that take only numpy get one dense copy
of the block, shared by all of them (converted once per block, not once per UDF). Frame
nodes that take sparse input (``sparse_input``) keep the block sparse; before the first
that does not, the block is densified. Every result is checked against numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import detflow as df
from detflow.nodes import ApplyMasksUDF, CoMUDF, PickUDF, SumSigUDF, SumUDF
from detflow.nodes.base import UDF
from detflow.sources.csr import save_csr

_TYPES = {np.ndarray: 1, sp.csr_matrix: 2, sp.csr_array: 3}


def _code(tile) -> int:
    return _TYPES.get(type(tile), 9)


class SeenUDF(UDF):
    """Records, per frame, the type of the block it got and the block's identity.

    The blocks are kept alive for the whole partition, so two UDFs that report the same
    identity for a frame were handed the same object (one conversion, not two).
    """

    def __init__(self, backends=("numpy",)):
        super().__init__(backends=tuple(backends))
        self._keep: list = []

    def get_backends(self):
        return self.params.backends

    def get_preferred_input_dtype(self):
        return self.USE_NATIVE_DTYPE

    def get_result_buffers(self):
        return {"kind": self.buffer(kind="nav", dtype="int64"),
                "ident": self.buffer(kind="nav", dtype="int64"),
                "total": self.buffer(kind="nav", dtype="float64")}

    def process_tile(self, tile):
        self._keep.append(tile)
        self.results.kind[:] = _code(tile)
        self.results.ident[:] = id(tile)
        flat = tile.reshape(tile.shape[0], -1) if isinstance(tile, np.ndarray) else tile
        self.results.total[:] = np.asarray(flat.sum(axis=1)).reshape(-1)


class SeenSumUDF(SumUDF):
    """The built-in sum, recording the type of block it was given."""

    def get_result_buffers(self):
        return {**super().get_result_buffers(), "kind": self.buffer(kind="nav", dtype="int64")}

    def process_tile(self, tile):
        self.results.kind[:] = _code(tile)
        super().process_tile(tile)

    def merge(self, dest, src):
        super().merge(dest, src)
        dest.kind[:] = src.kind


def frames(nav=(6, 5), sig=(12, 10), seed=4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.random((*nav, *sig)) < 0.08) * rng.integers(1, 400, (*nav, *sig))).astype(np.uint16)


@pytest.fixture
def csr_path(tmp_path: Path) -> tuple[str, np.ndarray]:
    data = frames()
    save_csr(tmp_path / "events.npz", data)
    return str(tmp_path / "events.npz"), data


def test_sparse_and_dense_udfs_side_by_side(ctx, csr_path) -> None:
    path, data = csr_path
    ds = ctx.load("csr", path=path, num_partitions=3)
    dense_a, dense_b, csr, summed = ctx.run_udf(dataset=ds, udf=[
        SeenUDF(), SeenUDF(), SeenUDF(backends=(UDF.BACKEND_SCIPY_CSR,)), SeenSumUDF()])
    want = data.sum(axis=(2, 3))
    for res, code in ((dense_a, 1), (dense_b, 1), (csr, 2)):
        np.testing.assert_array_equal(res["kind"].data, code)
        np.testing.assert_array_equal(res["total"].data, want)
    # both numpy-only UDFs were handed the very same dense block: one conversion per block
    np.testing.assert_array_equal(dense_a["ident"].data, dense_b["ident"].data)
    np.testing.assert_array_equal(summed["kind"].data, 3)  # the built-in takes the source's csr_array
    np.testing.assert_array_equal(summed["intensity"].data, data.sum(axis=(0, 1)))


def test_builtin_udfs_on_sparse_blocks_equal_numpy(ctx, csr_path) -> None:
    path, data = csr_path
    f = data.astype(np.float64)
    ds = ctx.load("csr", path=path, num_partitions=4)
    yy, xx = np.mgrid[:12, :10]
    disk = ((yy - 6) ** 2 + (xx - 5) ** 2 <= 9).astype(np.float32)
    roi = np.zeros((6, 5), bool)
    roi[2, 1:4] = roi[5, 4] = True
    total, sig, masks, com = ctx.run_udf(dataset=ds, udf=[
        SumUDF(), SumSigUDF(), ApplyMasksUDF(mask_factories=[lambda: disk, lambda: np.ones((12, 10))]),
        CoMUDF.with_params(cy=6, cx=5)])
    np.testing.assert_allclose(total["intensity"].data, f.sum(axis=(0, 1)))
    np.testing.assert_allclose(sig["intensity"].data, f.sum(axis=(2, 3)))
    np.testing.assert_allclose(masks["intensity"].data[..., 0], (f * disk).sum(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_allclose(masks["intensity"].data[..., 1], f.sum(axis=(2, 3)), rtol=1e-6)
    s = f.sum(axis=(2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (f * yy).sum(axis=(2, 3)) / s
        cx = (f * xx).sum(axis=(2, 3)) / s
    np.testing.assert_allclose(com["raw_com"].data[..., 0], cy, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(com["raw_com"].data[..., 1], cx, rtol=1e-5, atol=1e-5)
    picked = ctx.run_udf(dataset=ds, udf=PickUDF(), roi=roi)
    np.testing.assert_array_equal(picked["intensity"].data, data[roi])


def dense_only_double(block):
    """A frame function that takes dense blocks only (it says so by failing on anything else)."""
    assert isinstance(block, np.ndarray), type(block)
    return block.astype(np.float64) * 2


def test_frame_nodes_keep_blocks_sparse_until_one_needs_them_dense(executor, csr_path) -> None:
    path, data = csr_path
    g = df.Graph("sparse-chain")
    g.source("csr", path=path)
    g.partition(num_partitions=3)
    g.frames("bin", id="binned", factor=2)  # takes CSR blocks
    g.frames("tests.nodes.test_sparse_input:dense_only_double", id="doubled", input="binned",
             dtype="float64")
    g.udf(SeenUDF(backends=(UDF.BACKEND_NUMPY, UDF.BACKEND_SCIPY_CSR)), id="after_bin", input="binned")
    g.udf(SeenUDF(backends=(UDF.BACKEND_NUMPY, UDF.BACKEND_SCIPY_CSR)), id="after_double", input="doubled")
    g.udf("sum", id="sum_doubled", input="doubled")
    out = g.run(executor=executor)
    binned = data.astype(np.float64).reshape(6, 5, 6, 2, 5, 2).sum(axis=(3, 5))
    np.testing.assert_array_equal(out["after_bin"]["kind"].values, 2)  # still sparse after bin
    np.testing.assert_array_equal(out["after_double"]["kind"].values, 1)  # dense after the dense node
    np.testing.assert_allclose(out["after_bin"]["total"].values, binned.sum(axis=(2, 3)))
    np.testing.assert_allclose(out["after_double"]["total"].values, 2 * binned.sum(axis=(2, 3)))
    np.testing.assert_allclose(out["sum_doubled"]["intensity"].values, 2 * binned.sum(axis=(0, 1)))


def test_a_udf_with_a_roi_and_sync_offset_on_sparse_blocks(ctx, csr_path) -> None:
    path, data = csr_path
    flat = data.reshape(30, -1).astype(np.float64)
    ds = ctx.load("csr", path=path, num_partitions=2, sync_offset=2)
    roi = ds.roi[1:, :]
    dense, csr = ctx.run_udf(dataset=ds, udf=[SeenUDF(), SeenUDF(backends=(UDF.BACKEND_SCIPY_CSR,))], roi=roi)
    want = np.zeros(30)
    want[5:28] = flat[7:30].sum(axis=1)  # the last two positions: no frame, not processed
    for res in (dense, csr):
        np.testing.assert_array_equal(res["total"].data.reshape(-1)[5:], want[5:])
    np.testing.assert_array_equal(csr["kind"].data.reshape(-1)[5:28], 2)


def test_stddev_and_logsum_read_sparse_blocks_as_numpy_does(ctx, csr_path) -> None:
    from detflow.nodes import LogsumUDF, StdDevUDF

    path, data = csr_path
    full = data.copy()
    full[0, 0] += 1  # one frame with no empty pixel: its minimum is not 0
    f = full.astype(np.float64)
    save_csr(path, full)
    ds = ctx.load("csr", path=path, num_partitions=4)
    std, logsum = ctx.run_udf(dataset=ds, udf=[StdDevUDF(), LogsumUDF()])
    np.testing.assert_allclose(std["sum"].data, f.sum(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(std["var"].data, f.var(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(std["std"].data, f.std(axis=(0, 1)), rtol=1e-5)
    mins = f.min(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(logsum["logsum"].data, np.log(f - mins + 1).sum(axis=(0, 1)), rtol=1e-5)
