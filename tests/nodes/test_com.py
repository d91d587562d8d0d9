from __future__ import annotations

import math

import numpy as np
import pytest

from detflow.errors import ParameterError
from detflow.nodes.com import CoMUDF
from detflow.sources.base import DatasetMeta
from tests.nodes.udf_cases import Case, case_fixture  # noqa: F401


def _reference_com(data: np.ndarray, cy: float, cx: float, r: float, ri: float) -> np.ndarray:
    h, w = data.shape[-2:]
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    d = np.hypot(yy - cy, xx - cx)
    sel = (d <= r) & ((d > ri) if ri > 0 else True)
    flat = data.reshape(-1, h, w).astype(np.float64) * sel
    s = flat.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([(flat * yy).sum(axis=(1, 2)) / s, (flat * xx).sum(axis=(1, 2)) / s], axis=1)


def _grid_derivatives(case: Case, fy: np.ndarray, fx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fy, fx = case.expect_nav(fy), case.expect_nav(fx)  # NaN outside the ROI
    return (
        np.gradient(fy, axis=0) + np.gradient(fx, axis=1),
        np.gradient(fy, axis=1) - np.gradient(fx, axis=0),
    )


@pytest.mark.parametrize(
    ("params", "flip_y", "rot"),
    [({}, False, 0.0), ({"cy": 5.5, "cx": 7.0, "r": 5.0}, True, 30.0), ({"r": 6.0, "ri": 2.5}, False, -75.0)],
)
def test_com_matches_numpy(ctx, case: Case, params: dict, flip_y: bool, rot: float) -> None:
    udf = CoMUDF.with_params(**params, flip_y=flip_y, scan_rotation=rot)
    if len(case.nav) != 2:  # LiberTEM 0.16: "CoMUDF only works with 2D nav shape"
        with pytest.raises(ValueError, match="only works with 2D nav shape"):
            case.run(ctx, udf)
        return
    res = case.run(ctx, udf)
    h, w = case.sig
    cy, cx = params.get("cy", h // 2), params.get("cx", w // 2)
    com = _reference_com(case.data, cy, cx, params.get("r", math.inf), params.get("ri", 0.0))
    assert res["raw_com"].data.shape == (*case.nav, 2)
    assert res["raw_com"].dtype == np.result_type(case.data.dtype, np.float32)
    assert "raw_mask_result" not in res
    np.testing.assert_allclose(res["raw_com"].data, case.expect_nav(com), rtol=1e-5)
    shifts = com - [cy, cx]
    np.testing.assert_allclose(res["raw_shifts"].data, case.expect_nav(shifts), rtol=1e-4, atol=1e-4)
    sy = -shifts[:, 0] if flip_y else shifts[:, 0]
    a = np.deg2rad(rot)
    fy = np.cos(a) * sy + np.sin(a) * shifts[:, 1]
    fx = -np.sin(a) * sy + np.cos(a) * shifts[:, 1]
    tol = {"rtol": 1e-4, "atol": 1e-4}
    np.testing.assert_allclose(res["field"].data, case.expect_nav(np.stack([fy, fx], 1)), **tol)
    np.testing.assert_allclose(res["field_y"].data, case.expect_nav(fy), **tol)
    np.testing.assert_allclose(res["field_x"].data, case.expect_nav(fx), **tol)
    np.testing.assert_allclose(res["magnitude"].data, case.expect_nav(np.hypot(fy, fx)), **tol)
    div, curl = _grid_derivatives(case, fy, fx)
    np.testing.assert_allclose(res["divergence"].data, case.expect_nav(div.reshape(-1)), **tol)
    np.testing.assert_allclose(res["curl"].data, case.expect_nav(curl.reshape(-1)), **tol)


def test_com_literal_rotation(ctx) -> None:
    # one bright pixel one row below the centre: shift (1, 0); +90 degrees gives (0, -1)
    data = np.zeros((2, 2, 9, 9), dtype=np.uint16)
    data[..., 5, 4] = 10
    data[1, 1] = 0  # an empty frame: NaN, not a fake zero shift
    ds = ctx.load("memory", data=data, num_partitions=2)
    straight, rotated, flipped = ctx.run_udf(
        dataset=ds,
        udf=[
            CoMUDF.with_params(),
            CoMUDF.with_params(cy=4, cx=4, scan_rotation=90),
            CoMUDF.with_params(flip_y=True),
        ],
    )
    np.testing.assert_allclose(straight["raw_com"].data[0, 0], [5, 4])
    np.testing.assert_allclose(straight["field"].data[0, 0], [1, 0])
    np.testing.assert_allclose(rotated["field"].data[0, 0], [0, -1], atol=1e-6)
    np.testing.assert_allclose(flipped["field"].data[0, 0], [-1, 0])
    assert np.isnan(straight["raw_com"].data[1, 1]).all()


def test_com_parameter_errors() -> None:
    meta = DatasetMeta(nav_shape=(2, 2), sig_shape=(8, 8), dtype="uint16")
    with pytest.raises(ParameterError, match="'r'") as info:
        CoMUDF.with_params(r=-3).validate(meta)
    assert info.value.parameter == "r"
    with pytest.raises(ParameterError, match="'ri'"):
        CoMUDF.with_params(r=3, ri=4)
    with pytest.raises(ParameterError, match="'ri'"):
        CoMUDF(r=3, ri=-1).validate(meta)
    with pytest.raises(ParameterError, match="'cx'"):
        CoMUDF.with_params(cx=float("nan")).validate(meta)
    CoMUDF.with_params(cy=3, cx=4.5, r=2).validate(meta)
