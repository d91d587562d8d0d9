"""LiberTEM 0.16 conformance: UDF code written against LiberTEM's interface, run on detflow.

Every UDF here is written as a LiberTEM user writes one: imports from ``libertem.*``
(served by :mod:`detflow.compat.libertem`, the one added line), buffers, ``self.meta``,
``merge``, ``get_results``. Each test runs on every executor (the ``ctx`` fixture) and
compares with plain numpy. Expected behaviour is LiberTEM's, read from its source
(``udf/base.py``, ``common/buffers.py``); the numbers in comments cite what it does.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

# the hook must be in place before the libertem imports
# isort: off
import detflow.compat.libertem  # noqa: F401  (the one line a port adds)
from libertem.common import Shape, Slice
from libertem.common.buffers import (
    InvalidMaskError,
    get_bbox,
    get_bbox_slice,
    get_inner_slice,
    reshaped_view,
)
from libertem.common.exceptions import UDFException
from libertem.common.udf import UDFMethod
from libertem.udf.base import UDF, NoOpUDF
from libertem.warnings import UseDiscouragedWarning
# isort: on


def _data(nav=(6, 5), sig=(4, 3), dtype="uint16", seed=3):
    return np.random.default_rng(seed).integers(0, 500, size=(*nav, *sig)).astype(dtype)


def _roi(nav=(6, 5)):
    roi = np.zeros(nav, dtype=bool)
    roi[1:4, 1:4] = True
    roi[5, 0] = True
    return roi


# --- 1. aux data -----------------------------------------------------------------------
class EchoAuxUDF(UDF):
    """Copies its per-frame aux parameter into a nav buffer, by frame, tile or partition."""

    def __init__(self, aux, method="tile"):
        super().__init__(aux=aux, method=method)

    def get_result_buffers(self):
        return {"echo": self.buffer(kind="nav", extra_shape=(2,), dtype="float32")}

    def get_method(self):
        return {"tile": UDFMethod.TILE, "frame": UDFMethod.FRAME, "partition": UDFMethod.PARTITION}[
            self.params.method]

    def process_tile(self, tile):
        assert self.params.aux.shape == (tile.shape[0], 2)
        self.results.echo[:] = self.params.aux

    def process_frame(self, frame):
        assert self.params.aux.shape == (2,)
        self.results.echo[:] = self.params.aux

    def process_partition(self, partition):
        assert self.params.aux.shape == (partition.shape[0], 2)
        self.results.echo[:] = self.params.aux


@pytest.mark.parametrize("method", ["tile", "frame", "partition"])
@pytest.mark.parametrize("with_roi", [False, True])
def test_aux_data_arrives_sliced(ctx, method, with_roi) -> None:
    data = _data()
    aux = np.arange(30 * 2, dtype="float32").reshape(6, 5, 2)
    ds = ctx.load("memory", data=data, num_partitions=3)
    roi = _roi() if with_roi else None
    udf = EchoAuxUDF(aux=EchoAuxUDF.aux_data(data=aux, kind="nav", extra_shape=(2,), dtype="float32"), method=method)
    res = ctx.run_udf(dataset=ds, udf=udf, roi=roi)
    expect = aux if roi is None else np.where(roi[..., None], aux, np.nan)
    np.testing.assert_array_equal(res["echo"].data, expect)


# --- 2. with_mask ----------------------------------------------------------------------
class MaskedResultUDF(UDF):
    """Marks the left column invalid in get_results, as LiberTEM's `udf valid data masking` docs."""

    def get_result_buffers(self):
        return {"s": self.buffer(kind="nav", dtype="float64")}

    def process_tile(self, tile):
        self.results.s[:] = tile.reshape(len(tile), -1).sum(axis=1)

    def get_results(self):
        nav = tuple(self.meta.dataset_shape.nav)
        full = np.zeros(nav, dtype=bool)
        full[:, 1:] = True
        mask = full.reshape(-1) if self.meta.roi is None else full.reshape(-1)[self.meta.roi.reshape(-1)]
        return {"s": self.with_mask(self.results.s, mask)}


def test_with_mask_kept_through_iter_and_final(ctx) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=3)
    roi = _roi()
    parts = []
    for part in ctx.run_udf_iter(dataset=ds, udf=MaskedResultUDF(), roi=roi):
        buf = part.buffers[0]["s"]
        damage = part.damage.data
        np.testing.assert_array_equal(buf.valid_mask, damage & roi & (np.arange(5) >= 1)[None, :])
        parts.append(buf)
    final = parts[-1]
    expect_valid = roi.copy()
    expect_valid[:, 0] = False
    np.testing.assert_array_equal(final.valid_mask, expect_valid)
    np.testing.assert_array_equal(final.masked_data.mask, ~expect_valid)
    np.testing.assert_array_equal(final.raw_masked_data.mask, ~expect_valid[roi])
    assert final.valid_slice_bounding == (slice(1, 4), slice(1, 4))
    np.testing.assert_allclose(final.masked_data.compressed(), data.sum(axis=(2, 3))[expect_valid])


def test_with_mask_shape_mismatch_is_invalid_mask_error() -> None:
    with pytest.raises(InvalidMaskError):
        UDF.with_mask(np.zeros((3, 4)), np.zeros((2,), dtype=bool))
    with pytest.raises(InvalidMaskError):
        UDF.with_mask(np.zeros((3,)), np.zeros((3,), dtype=int))


# --- 3. methods, backends, helpers --------------------------------------------------------
class FrameWhenAskedUDF(UDF):
    """Has process_tile and process_frame; get_method picks frame (LiberTEM >= 0.13)."""

    def get_result_buffers(self):
        return {"n": self.buffer(kind="nav", dtype="int64")}

    def get_method(self):
        return self.UDF_METHOD.FRAME

    def process_tile(self, tile):
        self.results.n[:] = -1

    def process_frame(self, frame):
        assert frame.shape == tuple(self.meta.dataset_shape.sig)
        self.results.n[:] = 1


def test_get_method_overrides_precedence(ctx) -> None:
    ds = ctx.load("memory", data=_data(), num_partitions=2)
    res = ctx.run_udf(dataset=ds, udf=FrameWhenAskedUDF())
    np.testing.assert_array_equal(res["n"].data, 1)
    assert UDF.UDF_METHOD is UDFMethod
    assert EchoAuxUDF(aux=None, method="partition").get_method() is UDFMethod.PARTITION


class BackendProbeUDF(UDF):
    """Declares sparse backends; records which array type it got; sums via forbuf."""

    def get_backends(self):
        return (self.BACKEND_SCIPY_CSR, self.BACKEND_SPARSE_COO, self.BACKEND_NUMPY)

    def get_result_buffers(self):
        return {"sum": self.buffer(kind="sig", dtype="float64"),
                "kind": self.buffer(kind="nav", dtype="int64")}

    def process_tile(self, tile):
        kinds = {self.BACKEND_NUMPY: 0, self.BACKEND_SCIPY_CSR: 1, self.BACKEND_SPARSE_COO: 2}
        assert self.meta.array_backend in kinds
        self.results.kind[:] = kinds[self.meta.array_backend]
        self.results.sum[:] += self.forbuf(tile.sum(axis=0), self.results.sum)

    def merge(self, dest, src):
        dest.sum[:] += src.sum
        dest.kind[:] = src.kind


@pytest.mark.parametrize(("backends", "code"), [
    (None, 0),  # dense data: the UDF gets numpy, no conversion
    (("scipy.sparse.csr_matrix",), 1),
    (("sparse.COO",), 2),
])
def test_backends_restrict_and_convert(ctx, backends, code) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=2)
    res = ctx.run_udf(dataset=ds, udf=BackendProbeUDF(), backends=backends)
    np.testing.assert_array_equal(res["kind"].data, code)
    np.testing.assert_allclose(res["sum"].data, data.sum(axis=(0, 1)))


def test_backend_constants_and_no_common_backend(ctx) -> None:
    assert UDF.BACKEND_NUMPY == "numpy" and UDF.BACKEND_SCIPY_CSR == "scipy.sparse.csr_matrix"
    assert UDF.BACKEND_SPARSE_COO in UDF.BACKEND_ALL and UDF.BACKEND_NUMPY in UDF.CPU_BACKENDS
    ds = ctx.load("memory", data=_data(), num_partitions=2)
    with pytest.raises(Exception, match="no array backend"):
        ctx.run_udf(dataset=ds, udf=FrameWhenAskedUDF(), backends=("sparse.COO",))


def test_noop_udf_runs(ctx) -> None:
    ds = ctx.load("memory", data=_data(), num_partitions=2)
    assert ctx.run_udf(dataset=ds, udf=NoOpUDF()) == {}


def test_buffer_helpers_match_numpy() -> None:
    a = np.zeros((6, 7))
    a[2:4, 1:6] = 1
    assert get_bbox(a) == (2, 3, 1, 5)
    assert get_bbox_slice(a) == (slice(2, 4), slice(1, 6))
    m = np.zeros((5, 3), dtype=bool)
    m[1:3] = True
    m[4] = True
    assert get_inner_slice(m, axis=0) == (slice(1, 3), slice(None))
    b = np.arange(12.0)
    v = reshaped_view(b, (3, 4))
    v[0, 0] = 99
    assert b[0] == 99
    with pytest.raises(AttributeError):
        reshaped_view(np.arange(12.0).reshape(3, 4).T, (12,))


# --- 4. meta -------------------------------------------------------------------------
class MetaProbeUDF(UDF):
    """Checks self.meta against what LiberTEM's UDFMeta gives, and records slice origins."""

    def get_result_buffers(self):
        return {"row": self.buffer(kind="nav", dtype="int64"),
                "coord": self.buffer(kind="nav", extra_shape=(2,), dtype="int64"),
                "ok": self.buffer(kind="single", dtype="int64")}

    def get_task_data(self):
        coords = self.meta.coordinates
        assert coords.shape == (self.meta.partition_shape[0], 2)
        return {"first": coords[0].copy()}

    def process_tile(self, tile):
        m = self.meta
        assert isinstance(m.slice, Slice) and isinstance(m.slice.shape, Shape)
        assert tuple(m.slice.shape.sig) == tuple(m.dataset_shape.sig)
        assert m.slice.shape.nav[0] == tile.shape[0]
        assert m.slice.get(sig_only=True) == tuple(slice(0, s) for s in m.dataset_shape.sig)
        assert m.sig_slice.shape == m.dataset_shape.sig and m.tiling_scheme is not None
        assert m.get_valid_nav_mask() is None  # LiberTEM: only in merge and get_results
        assert m.dataset_dtype == np.dtype("uint16") and m.input_dtype == np.dtype("float32")
        assert m.device_class == "cpu" and m.array_backend == self.BACKEND_NUMPY
        assert m.dataset_shape.sig.size == 12 and m.dataset_shape.nav.dims == 2
        origin = m.slice.origin[0]
        self.results.row[:] = np.arange(origin, origin + tile.shape[0])
        self.results.coord[:] = m.coordinates
        self.results.ok[:] = 1

    def merge(self, dest, src):
        valid = self.meta.get_valid_nav_mask()
        full = self.meta.get_valid_nav_mask(full_nav=True)
        # before this partition merges: its own rows are not yet marked
        assert not valid[src.row].any()
        assert full.shape == (30,) and full.sum() == valid.sum()
        dest.row[:] = src.row
        dest.coord[:] = src.coord
        dest.ok[:] += src.ok

    def get_results(self):
        assert self.meta.get_valid_nav_mask().all()
        return {}


@pytest.mark.parametrize("with_roi", [False, True])
def test_meta_as_libertem(ctx, with_roi) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=3)
    roi = _roi() if with_roi else None
    res = ctx.run_udf(dataset=ds, udf=MetaProbeUDF(), roi=roi)
    n = 30 if roi is None else int(roi.sum())
    # LiberTEM: "navigation dimension flattened and reduced to the ROI"
    np.testing.assert_array_equal(res["row"].raw_data, np.arange(n))
    yy, xx = np.mgrid[:6, :5]
    coords = np.stack([yy, xx], axis=-1).reshape(-1, 2)
    np.testing.assert_array_equal(res["coord"].raw_data, coords if roi is None else coords[roi.reshape(-1)])


# --- 5. buffers, and issue 13 item 5 ----------------------------------------------------
class AssignUDF(UDF):
    """Assigns to buffers instead of writing into them: LiberTEM turns that into `buf[:] = v`."""

    def get_result_buffers(self):
        return {"per_frame": self.buffer(kind="nav", dtype="float64"),
                "total": self.buffer(kind="sig", dtype="float64"),
                "count": self.buffer(kind="single", dtype="int64")}

    def process_frame(self, frame):
        self.results.per_frame = frame.sum()
        self.results.total = self.results.total + frame
        self.results.count = self.results.count + 1

    def merge(self, dest, src):
        dest.per_frame = src.per_frame
        dest.total = dest.total + src.total
        dest.count = dest.count + src.count


def test_assignment_writes_into_buffers(ctx) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=3)
    res = ctx.run_udf(dataset=ds, udf=AssignUDF())
    np.testing.assert_allclose(res["per_frame"].data, data.sum(axis=(2, 3)))
    np.testing.assert_allclose(res["total"].data, data.sum(axis=(0, 1)))
    assert res["count"].data[0] == 30


class RebindWrongShapeUDF(UDF):
    def get_result_buffers(self):
        return {"s": self.buffer(kind="sig", dtype="float32")}

    def process_tile(self, tile):
        self.results.s = np.zeros(7)

    def merge(self, dest, src):
        dest.s[:] += src.s


class AssignUndeclaredUDF(RebindWrongShapeUDF):
    def process_tile(self, tile):
        self.results.not_a_buffer = np.zeros(3)


def test_assignment_that_cannot_write_names_udf_and_buffer(ctx) -> None:
    ds = ctx.load("memory", data=_data(), num_partitions=2)
    with pytest.raises(ValueError, match=r"RebindWrongShapeUDF.*buffer 's'.*\(4, 3\).*\(7,\)"):
        ctx.run_udf(dataset=ds, udf=RebindWrongShapeUDF())
    with pytest.raises(AttributeError, match="AssignUndeclaredUDF: 'not_a_buffer' is not a result buffer"):
        ctx.run_udf(dataset=ds, udf=AssignUndeclaredUDF())


class ResultOnlyUDF(UDF):
    def get_result_buffers(self):
        return {"s": self.buffer(kind="nav", dtype="float32"),
                "double": self.buffer(kind="nav", dtype="float32", use="result_only"),
                "scratch": self.buffer(kind="nav", dtype="float32", use="private"),
                "warned": self.buffer(kind="nav", dtype="bool")}

    def process_tile(self, tile):
        assert self.results.double is None  # LiberTEM: PlaceholderBufferWrapper views are None
        assert "double" in self.results
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            self.results["s"][:] = tile.reshape(len(tile), -1).sum(axis=1)
        self.results.warned[:] = any(issubclass(w.category, UseDiscouragedWarning) for w in seen)
        self.results.scratch[:] = 1

    def get_results(self):
        return {"double": 2 * self.results.s}


def test_result_only_none_on_workers_and_dict_access_warns(ctx) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=2)
    res = ctx.run_udf(dataset=ds, udf=ResultOnlyUDF())
    assert sorted(res) == ["double", "s", "warned"]
    np.testing.assert_allclose(res["double"].data, 2 * data.sum(axis=(2, 3)))
    assert res["warned"].data.all()
    buf = res["s"]
    assert buf.kind == "nav" and buf.extra_shape == () and buf.dtype == np.float32
    assert buf.raw_data.shape == (30,) and buf.valid_mask.all()


class ReturnsUndeclaredUDF(ResultOnlyUDF):
    def get_results(self):
        return {"double": 2 * self.results.s, "surprise": self.results.s}


class ReturnsPrivateUDF(ResultOnlyUDF):
    def get_results(self):
        return {"double": 2 * self.results.s, "scratch": self.results.scratch}


def test_get_results_undeclared_or_private_is_udf_exception(ctx) -> None:
    ds = ctx.load("memory", data=_data(), num_partitions=2)
    with pytest.raises(UDFException, match="'surprise' is not declared"):
        ctx.run_udf(dataset=ds, udf=ReturnsUndeclaredUDF())
    with pytest.raises(UDFException, match="use='private'"):
        ctx.run_udf(dataset=ds, udf=ReturnsPrivateUDF())


class FullNavResultUDF(UDF):
    """Returns a nav-shaped result that covers the whole nav space, also with a ROI."""

    def get_result_buffers(self):
        return {"s": self.buffer(kind="nav", dtype="float32"),
                "grid": self.buffer(kind="nav", dtype="float32", use="result_only")}

    def process_tile(self, tile):
        self.results.s[:] = 1

    def get_results(self):
        return {"grid": np.arange(30, dtype="float32").reshape(self.meta.dataset_shape.nav)}


def test_full_nav_result_with_roi_keeps_values(ctx) -> None:
    ds = ctx.load("memory", data=_data(), num_partitions=2)
    res = ctx.run_udf(dataset=ds, udf=FullNavResultUDF(), roi=_roi())
    # LiberTEM's BufferWrapper.data: a buffer already shaped like the nav space is returned as is
    np.testing.assert_array_equal(res["grid"].data, np.arange(30).reshape(6, 5))


# --- 6. exception types ------------------------------------------------------------------
class SigNoMergeUDF(UDF):
    def get_result_buffers(self):
        return {"s": self.buffer(kind="sig", dtype="float32")}

    def process_tile(self, tile):
        self.results.s[:] += tile.sum(axis=0)


class SingleNoMergeUDF(SigNoMergeUDF):
    def get_result_buffers(self):
        return {"s": self.buffer(kind="single", dtype="float32")}

    def process_tile(self, tile):
        self.results.s[:] += tile.sum()


class NoProcessUDF(UDF):
    def get_result_buffers(self):
        return {"s": self.buffer(kind="nav")}


@pytest.mark.parametrize("cls", [SigNoMergeUDF, SingleNoMergeUDF])
def test_missing_merge_is_not_implemented_error(ctx, cls) -> None:
    ds = ctx.load("memory", data=_data(), num_partitions=2)
    with pytest.raises(NotImplementedError, match="Default merging only works for kind='nav' buffers"):
        ctx.run_udf(dataset=ds, udf=cls())


def test_missing_process_method_is_type_error(ctx) -> None:
    ds = ctx.load("memory", data=_data(), num_partitions=2)
    with pytest.raises(TypeError, match="should implement one of the `process_\\*` methods"):
        ctx.run_udf(dataset=ds, udf=NoProcessUDF())


# --- 12. module paths ----------------------------------------------------------------------
def test_libertem_module_paths_are_served() -> None:
    import importlib

    from detflow.compat.libertem.modules import MODULES
    from detflow.nodes.sum import SumUDF

    for name in MODULES:
        importlib.import_module(name)
    import libertem.udf.sum as lt_sum
    from libertem.api import Context
    from libertem.io.dataset.memory import MemoryDataSet

    assert lt_sum.SumUDF is SumUDF
    with Context.make_with("inline") as c:
        data = _data()
        ds = MemoryDataSet(data=data, tileshape=(2, 4, 3), num_partitions=2, sig_dims=2)
        np.testing.assert_allclose(c.run_udf(dataset=ds, udf=lt_sum.SumUDF())["intensity"].data,
                                   data.sum(axis=(0, 1)))
    with pytest.raises(ModuleNotFoundError, match="not one of the LiberTEM modules detflow serves"):
        importlib.import_module("libertem.io.dataset.k2is")


# --- 3. the built-in UDFs take sparse input, with the same numbers -----------------------
def _builtins():
    import scipy.sparse as sp
    from libertem import masks
    from libertem.udf.com import CoMUDF
    from libertem.udf.logsum import LogsumUDF
    from libertem.udf.masks import ApplyMasksUDF
    from libertem.udf.raw import PickUDF
    from libertem.udf.stddev import StdDevUDF
    from libertem.udf.sum import SumUDF
    from libertem.udf.sumsigudf import SumSigUDF

    return [
        SumUDF(), SumSigUDF(), LogsumUDF(), StdDevUDF(), PickUDF(),
        ApplyMasksUDF(mask_factories=[lambda: masks.circular(1, 2, 3, 4, 1.5), lambda: np.ones((4, 3))]),
        ApplyMasksUDF(mask_factories=[lambda: sp.csr_matrix(masks.circular(1, 2, 3, 4, 1.5))], use_sparse=True),
        CoMUDF.with_params(cy=2.0, cx=1.0, r=2.0),
    ]


@pytest.mark.parametrize("backend", ["scipy.sparse.csr_matrix", "scipy.sparse.csc_matrix", "sparse.COO",
                                     "sparse.GCXS"])
def test_builtin_udfs_take_sparse_input(ctx, backend) -> None:
    data = _data()
    data[data < 300] = 0  # sparse-looking frames
    ds = ctx.load("memory", data=data, num_partitions=3)
    roi = np.zeros((6, 5), dtype=bool)
    roi[2, 1:4] = True  # PickUDF is for small ROIs
    udfs = _builtins()
    dense = ctx.run_udf(dataset=ds, udf=udfs, roi=roi)
    # only this backend is allowed: a UDF that did not take it would fail the run
    sparse_res = ctx.run_udf(dataset=ds, udf=_builtins(), roi=roi, backends=(backend,))
    for i, (d, s) in enumerate(zip(dense, sparse_res, strict=True)):
        assert sorted(d) == sorted(s)
        for name in d:
            np.testing.assert_allclose(s[name].data, d[name].data, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{type(udfs[i]).__name__}.{name} on {backend}")
    np.testing.assert_allclose(dense[0]["intensity"].data, data[roi].sum(axis=0), rtol=1e-6)


# --- 9. CoM: CoMParams, regression, errors, result names ----------------------------------
LIBERTEM_COM_RESULTS = {  # LiberTEM 0.16 CoMUDF.get_result_buffers, minus the private one
    "raw_com": ("nav", (2,)), "raw_shifts": ("nav", (2,)), "field": ("nav", (2,)), "field_y": ("nav", ()),
    "field_x": ("nav", ()), "magnitude": ("nav", ()), "divergence": ("nav", ()), "curl": ("nav", ()),
    "regression": ("single", (3, 2)),
}


def _tilted_disk_data():
    """A disk whose centre moves linearly across the scan: a plane the regression can remove."""
    ny, nx, h, w = 6, 5, 16, 16
    yy, xx = np.mgrid[:h, :w]
    data = np.zeros((ny, nx, h, w), dtype="float32")
    for iy in range(ny):
        for ix in range(nx):
            cy, cx = 7.5 + 0.3 * iy - 0.1 * ix, 7.0 + 0.2 * ix + 0.05 * iy
            data[iy, ix] = 100 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8) + 1
    return data


def _field(data, cy, cx):
    h, w = data.shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    s = data.sum(axis=(2, 3))
    com = np.stack([(data * yy).sum(axis=(2, 3)) / s, (data * xx).sum(axis=(2, 3)) / s], axis=-1)
    return com - [cy, cx]


@pytest.mark.parametrize("with_roi", [False, True])
def test_com_regression_as_libertem(ctx, with_roi) -> None:
    from libertem.udf.com import CoMParams, CoMUDF, RegressionOptions

    data = _tilted_disk_data()
    ds = ctx.load("memory", data=data, num_partitions=3)
    roi = _roi() if with_roi else None
    none, mean, linear, given = ctx.run_udf(dataset=ds, roi=roi, udf=[
        CoMUDF(com_params=CoMParams(cy=7.5, cx=7.0, regression=RegressionOptions.NO_REGRESSION)),
        CoMUDF.with_params(cy=7.5, cx=7.0, regression=RegressionOptions.SUBTRACT_MEAN),
        CoMUDF.with_params(cy=7.5, cx=7.0, regression=RegressionOptions.SUBTRACT_LINEAR),
        CoMUDF.with_params(cy=7.5, cx=7.0, regression=np.array([[0.5, -0.5], [0, 0], [0, 0]])),
    ])
    field = _field(data.astype(np.float64), 7.5, 7.0)
    sel = np.ones((6, 5), dtype=bool) if roi is None else roi
    for res in (none, mean, linear, given):
        assert {k: (v.kind, v.extra_shape) for k, v in res.items()} == LIBERTEM_COM_RESULTS
        assert res["field"].dtype == np.float32 and res["regression"].dtype == np.float64
    np.testing.assert_allclose(none["regression"].data, 0)
    np.testing.assert_allclose(none["field"].data[sel], field[sel], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean["regression"].data[0], field[sel].mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean["field"].data[sel], field[sel] - field[sel].mean(axis=0), atol=1e-4)
    yy, xx = np.nonzero(sel)
    inp = np.stack([np.ones_like(yy), yy, xx], axis=1).astype(np.float64)
    coeffs = np.linalg.lstsq(inp, field[sel], rcond=None)[0]
    np.testing.assert_allclose(linear["regression"].data, coeffs, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(linear["field"].data[sel], 0, atol=1e-3)  # the shift is a plane
    np.testing.assert_allclose(linear["magnitude"].data[sel], 0, atol=1e-3)
    np.testing.assert_allclose(given["field"].data[sel], field[sel] - [0.5, -0.5], atol=1e-4)


def test_com_errors_as_libertem(ctx) -> None:
    from libertem.udf.com import CoMUDF

    with pytest.raises(ValueError):
        CoMUDF.with_params(r=3, ri=4)
    ds1 = ctx.load("memory", data=_data(nav=(30,)), num_partitions=2)
    with pytest.raises(ValueError, match="only works with 2D nav shape"):
        ctx.run_udf(dataset=ds1, udf=CoMUDF.with_params())
    ds = ctx.load("memory", data=_data(), num_partitions=2)
    with pytest.raises(ValueError, match="regression"):
        ctx.run_udf(dataset=ds, udf=CoMUDF.with_params(regression=7))


# --- 10. helpers of LiberTEM's UDF modules --------------------------------------------------
def test_run_stddev_run_logsum_and_auto_monitor(ctx) -> None:
    from libertem.udf.auto import AutoUDF
    from libertem.udf.logsum import run_logsum
    from libertem.udf.stddev import run_stddev

    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=3)
    stats = run_stddev(ctx, ds)
    assert stats["num_frames"] == 30
    np.testing.assert_allclose(stats["std"], data.std(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(stats["mean"], data.mean(axis=(0, 1)), rtol=1e-5)
    logsum = run_logsum(ctx, ds)["logsum"].data
    f = data.astype(np.float64)
    np.testing.assert_allclose(logsum, np.log1p(f - f.min(axis=(2, 3), keepdims=True)).sum(axis=(0, 1)), rtol=1e-5)
    parts = list(ctx.run_udf_iter(dataset=ds, udf=AutoUDF(f=np.max, monitor=True)))
    final = parts[-1].buffers[0]
    assert final["monitor"].kind == "single"
    np.testing.assert_allclose(final["monitor"].data, data[-1, -1].max())  # the last position merged


# --- 8. asyncio API -----------------------------------------------------------------------
def test_sync_false_awaitable_and_async_iterator(ctx) -> None:
    import asyncio

    from libertem.udf.sum import SumUDF

    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=3)

    async def main():
        res = await ctx.run_udf(dataset=ds, udf=SumUDF(), sync=False)
        parts = [p async for p in ctx.run_udf_iter(dataset=ds, udf=SumUDF(), sync=False)]
        return res, parts

    res, parts = asyncio.run(main())
    np.testing.assert_allclose(res["intensity"].data, data.sum(axis=(0, 1)))
    assert len(parts) >= 1 and parts[-1].finished
    np.testing.assert_allclose(parts[-1].buffers[0]["intensity"].data, data.sum(axis=(0, 1)))


# --- 11. datasets ---------------------------------------------------------------------------
def test_dataset_shape_and_partitions(ctx) -> None:
    data = _data()
    ds = ctx.load("memory", data=data, num_partitions=3, io_backend=None)
    assert tuple(ds.shape) == data.shape and len(ds.shape) == 4
    assert ds.shape.nav == (6, 5) and ds.shape.sig == (4, 3)
    assert ds.shape.sig.size == 12 and ds.shape.nav.size == 30 and ds.shape.dims == 4 and ds.shape.sig.dims == 2
    assert ds.get_num_partitions() == 3
    parts = ds.get_partitions()
    assert [p.frames for p in parts] == [slice(0, 10), slice(10, 20), slice(20, 30)]


def test_fem_and_crystallinity_match_numpy(ctx) -> None:
    from libertem.udf.crystallinity import run_analysis_crystall
    from libertem.udf.FEM import run_fem

    data = _data(sig=(12, 10)).astype("float32")
    ds = ctx.load("memory", data=data, num_partitions=3)
    yy, xx = np.mgrid[:12, :10]
    d2 = (yy - 5) ** 2 + (xx - 4) ** 2
    ring = (d2 <= 4.5**2) & ~(d2 <= 1.5**2)
    fem = run_fem(ctx, ds, center=(5, 4), rad_in=1.5, rad_out=4.5)["intensity"].data
    np.testing.assert_allclose(fem, data[..., ring].std(axis=-1), rtol=1e-5)

    f2 = (yy - 6) ** 2 + (xx - 5) ** 2  # rings around the centre of the (shifted) spectrum
    fring = np.fft.fftshift(((f2 <= 4**2) & ~(f2 <= 1**2)).astype(float))[:, :6]
    real = ~((yy - 6) ** 2 + (xx - 5) ** 2 <= 2**2)
    got = run_analysis_crystall(ctx, ds, rad_in=1, rad_out=4, real_center=(6, 5), real_rad=2)["intensity"].data
    want = (np.abs(np.fft.rfft2(data * real)) * fring).sum(axis=(-2, -1))
    np.testing.assert_allclose(got, want, rtol=1e-5)


# --- 7. tiling (the depth of a dataset's tile shape) ------------------------------------------
class TileDepthUDF(UDF):
    def get_result_buffers(self):
        return {"depth": self.buffer(kind="nav", dtype="int64")}

    def process_tile(self, tile):
        assert self.meta.sig_slice.get() == (slice(0, 4), slice(0, 3))
        assert self.meta.tiling_scheme.depth == 2
        self.results.depth[:] = tile.shape[0]


def test_memory_tileshape_sets_tile_depth(ctx) -> None:
    from libertem.io.dataset.memory import MemoryDataSet

    ds = MemoryDataSet(data=_data(), tileshape=(2, 4, 3), num_partitions=3, sig_dims=2)
    res = ctx.run_udf(dataset=ds, udf=TileDepthUDF())
    np.testing.assert_array_equal(res["depth"].data, 2)


# --- 10. the analysis helpers of LiberTEM's Context ------------------------------------------
def test_create_analyses_and_run(ctx) -> None:
    from libertem import masks
    from libertem.api import Context

    lctx = Context(ctx.executor)
    data = _data(sig=(12, 10))
    ds = lctx.load("memory", data=data, num_partitions=3)
    f = data.astype(np.float64)
    h, w = 12, 10
    res = lctx.run(lctx.create_sum_analysis(dataset=ds))
    np.testing.assert_allclose(res.intensity.raw_data, f.sum(axis=(0, 1)))
    assert res.keys() == ["intensity", "intensity_lin"]
    disk = masks.circular(w / 2, h / 2, w, h, min(h, w) / 2 * 0.3)
    res = lctx.run(lctx.create_disk_analysis(dataset=ds))
    np.testing.assert_allclose(res["intensity"].raw_data, (f * disk).sum(axis=(2, 3)), rtol=1e-5)
    ring = masks.ring(4, 5, w, h, 5, 2)
    res = lctx.run(lctx.create_ring_analysis(dataset=ds, cx=4, cy=5, ri=2, ro=5))
    np.testing.assert_allclose(res.intensity.raw_data, (f * ring).sum(axis=(2, 3)), rtol=1e-5)
    res = lctx.run(lctx.create_point_analysis(dataset=ds, x=3, y=7))
    np.testing.assert_allclose(res[0].raw_data, f[..., 7, 3])
    res = lctx.run(lctx.create_mask_analysis(dataset=ds, factories=[lambda: disk, lambda: ring]))
    assert res.keys() == ["mask_0", "mask_1"]
    np.testing.assert_allclose(res.mask_1.raw_data, (f * ring).sum(axis=(2, 3)), rtol=1e-5)
    res = lctx.run(lctx.create_com_analysis(dataset=ds, cx=4.5, cy=5.5, mask_radius=4))
    assert res.keys() == ["field", "magnitude", "divergence", "curl", "x", "y"]
    sel = masks.circular(4.5, 5.5, w, h, 4)
    yy, xx = np.mgrid[:h, :w]
    s = (f * sel).sum(axis=(2, 3))
    np.testing.assert_allclose(res.x.raw_data, (f * sel * xx).sum(axis=(2, 3)) / s - 4.5, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res.y.raw_data, (f * sel * yy).sum(axis=(2, 3)) / s - 5.5, rtol=1e-4, atol=1e-4)
