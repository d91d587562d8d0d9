"""The sparse ``csr`` source: CSR blocks and dense blocks against scipy and numpy; bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

import detflow as df
from detflow.errors import SourceFormatError
from detflow.nodes import SumSigUDF, SumUDF
from detflow.sources.base import PartitionPlan
from detflow.sources.csr import save_csr


def frames(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.random((5, 7, 12, 10)) < 0.1) * rng.integers(1, 500, (5, 7, 12, 10))).astype(np.uint16)


def test_read_sparse_gives_csr_blocks_equal_to_the_frames(tmp_path: Path) -> None:
    data = frames()
    save_csr(tmp_path / "a.npz", data)
    ds = df.Context.make_with("inline").load("csr", path=str(tmp_path / "a.npz"))
    assert (ds.shape.nav, ds.shape.sig, ds.dtype) == ((5, 7), (12, 10), np.uint16)
    flat = data.reshape(35, -1)
    for p in ds.partitions(PartitionPlan(frames_per_partition=6)):
        block = p.read_sparse()
        assert isinstance(block, scipy.sparse.csr_array) and block.shape == (p.n_frames, 120)
        np.testing.assert_array_equal(block.toarray(), flat[p.frames])


def test_a_plain_scipy_file_with_shapes_from_the_caller(tmp_path: Path, ctx: df.Context) -> None:
    data = frames(2)
    scipy.sparse.save_npz(tmp_path / "b.npz", scipy.sparse.csr_matrix(data.reshape(35, -1)))
    assert (scipy.sparse.load_npz(tmp_path / "b.npz") != scipy.sparse.csr_matrix(data.reshape(35, -1))).nnz == 0
    ds = ctx.load("csr", path=str(tmp_path / "b.npz"), nav_shape=(5, 7), sig_shape=(12, 10))
    res = ctx.run_udf(dataset=ds, udf=[SumUDF(), SumSigUDF()])
    np.testing.assert_array_equal(res[0]["intensity"].data, data.sum(axis=(0, 1)))
    np.testing.assert_array_equal(res[1]["intensity"].data, data.sum(axis=(2, 3)))


def test_save_csr_is_readable_by_scipy(tmp_path: Path) -> None:
    data = frames(3)
    save_csr(tmp_path / "c.npz", data)
    np.testing.assert_array_equal(scipy.sparse.load_npz(tmp_path / "c.npz").toarray(), data.reshape(35, -1))


def test_sync_offset_shifts_sparse_blocks_too(tmp_path: Path) -> None:
    data = frames(4)
    save_csr(tmp_path / "d.npz", data)
    ds = df.Context.make_with("inline").load("csr", path=str(tmp_path / "d.npz"), sync_offset=-2)
    expect = np.concatenate([np.zeros((2, 120), np.uint16), data.reshape(35, -1)[:-2]])
    got = scipy.sparse.vstack([p.read_sparse() for p in ds.partitions(PartitionPlan(frames_per_partition=4))])
    np.testing.assert_array_equal(got.toarray(), expect)


def test_read_sparse_on_a_dense_source_is_a_clear_error() -> None:
    ds = df.Context.make_with("inline").load("memory", data=np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="read_sparse.. needs a sparse source.*use read"):
        next(iter(ds.partitions())).read_sparse()


@pytest.mark.parametrize(("arrays", "message"), [
    ({"indptr": np.array([0, 1]), "indices": np.array([0])}, "needs the arrays indptr, indices, data and shape; "
                                                            "data, shape missing"),
    ({"indptr": np.array([0, 2]), "indices": np.array([0]), "data": np.array([1]), "shape": np.array([1, 4])},
     "inconsistent CSR arrays"),
    ({"indptr": np.array([0, 1]), "indices": np.array([9]), "data": np.array([1]), "shape": np.array([1, 4])},
     "column indices must lie in 0:4"),
])
def test_bad_files_name_the_file(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(SourceFormatError, match=f"bad.npz: .*{message}"):
        df.Context.make_with("inline").load("csr", path=str(path))


def test_frames_that_are_not_square_need_a_sig_shape(tmp_path: Path) -> None:
    scipy.sparse.save_npz(tmp_path / "e.npz", scipy.sparse.csr_matrix(np.eye(3, 120, dtype=np.uint8)))
    with pytest.raises(ValueError, match="frames of 120 pixels are not square.*pass sig_shape="):
        df.Context.make_with("inline").load("csr", path=str(tmp_path / "e.npz"))
