"""LiberTEM's radial-Fourier and pick analyses (issue 15, item 10) through the compat route.

Numbers are checked against numpy formulas on every executor, and, where the LiberTEM
venv of the benchmarks is there, against LiberTEM 0.16 itself run on the same data.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

# isort: off
import detflow.compat.libertem  # noqa: F401
from libertem import masks
from libertem.api import Context
# isort: on

LT_PYTHON = Path(__file__).resolve().parents[2] / "benchmarks" / ".venv-libertem" / "bin" / "python"


def _data(nav=(5, 4), sig=(14, 12), dtype="float32"):
    return np.random.default_rng(8).integers(0, 300, size=(*nav, *sig)).astype(dtype)


def _coefficients(data, cx, cy, ri, ro, n_bins, max_order):
    """sum(frame * ring * exp(i o phi)) per bin and order, the definition LiberTEM uses."""
    h, w = data.shape[-2:]
    rings = np.asarray(masks.radial_bins(cx, cy, w, h, radius=ro, radius_inner=ri, n_bins=n_bins,
                                         use_sparse=False), dtype=np.float64)
    yy, xx = np.mgrid[:h, :w]
    phi = np.arctan2(yy - cy, xx - cx)
    orders = np.arange(max_order + 1)
    kernel = rings[:, None] * np.exp(1j * orders[:, None, None] * phi)  # (bins, orders, h, w)
    return np.einsum("...yx,boyx->bo...", data.astype(np.float64), kernel)


def test_radial_fourier_analysis_equals_the_fourier_series(ctx) -> None:
    data = _data()
    lctx = Context(ctx.executor)
    ds = lctx.load("memory", data=data, num_partitions=3)
    res = lctx.run(lctx.create_radial_fourier_analysis(dataset=ds, cx=6, cy=7, ri=1, ro=6, n_bins=2, max_order=4))
    want = _coefficients(data, 6, 7, 1, 6, 2, 4)
    assert res.raw_results.shape == (2, 5, 5, 4)
    np.testing.assert_allclose(res.raw_results, want, rtol=1e-4, atol=1e-2)
    keys = res.keys()
    assert keys[:6] == ["dominant_0", "absolute_0_0", "absolute_0_1", "absolute_0_2", "absolute_0_3", "absolute_0_4"]
    assert len(keys) == 2 * (1 + 3 * 5)
    np.testing.assert_allclose(res.absolute_1_3.raw_data, np.abs(want[1, 3]), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(res.phase_0_2.raw_data, np.angle(want[0, 2]), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(res.complex_0_0.raw_data, want[0, 0], rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(res.complex_1_2.raw_data, want[1, 2] / np.maximum(1, np.abs(want[1, 0])),
                               rtol=1e-4, atol=1e-4)
    absolute = np.abs(want[:, 1:])
    dominant = np.argmax(absolute, axis=1) + 1
    dominant[np.all(absolute < absolute.reshape(2, -1).max(axis=1)[:, None, None, None] * 0.2, axis=1)] = 0
    np.testing.assert_array_equal(res.dominant_0.raw_data, dominant[0])


def test_pick_analysis_gives_the_frame(ctx) -> None:
    data = _data(nav=(3, 4, 5), sig=(6, 7))
    lctx = Context(ctx.executor)
    ds = lctx.load("memory", data=data, num_partitions=2)
    res = lctx.run(lctx.create_pick_analysis(dataset=ds, x=3, y=2, z=1))
    assert res.keys() == ["intensity", "intensity_lin"]
    np.testing.assert_array_equal(res.intensity.raw_data, data[1, 2, 3])
    cdata = (data + 1j * data[::-1]).astype(np.complex64)
    cres = lctx.run(lctx.create_pick_analysis(dataset=lctx.load("memory", data=cdata), x=4, y=0, z=2))
    assert cres.keys() == ["intensity_lin", "intensity", "intensity_real", "intensity_imag",
                           "intensity_angle", "intensity_complex"]
    np.testing.assert_array_equal(cres.intensity_complex.raw_data, cdata[2, 0, 4])
    np.testing.assert_allclose(cres.intensity.raw_data, np.abs(cdata[2, 0, 4]))
    with pytest.raises(ValueError, match="Need x, y z to index 3D dataset"):
        lctx.create_pick_analysis(dataset=ds, x=1, y=2)


_LIBERTEM_SCRIPT = """
import json, sys
import numpy as np
from libertem.api import Context
from libertem.executor.inline import InlineJobExecutor
data = np.load(sys.argv[1])
ctx = Context(executor=InlineJobExecutor())
ds = ctx.load("memory", data=data, num_partitions=3)
rf = ctx.run(ctx.create_radial_fourier_analysis(dataset=ds, cx=6, cy=7, ri=1, ro=6, n_bins=2, max_order=4))
rd = ctx.run(ctx.create_radial_fourier_analysis(dataset=ds))
pick = ctx.run(ctx.create_pick_analysis(dataset=ds, x=2, y=3))
np.savez(sys.argv[2], raw=rf.raw_results, raw_default=rd.raw_results, pick=pick.intensity.raw_data,
         dominant=rf.dominant_1.raw_data, complex=rf.complex_0_3.raw_data)
print(json.dumps({"keys": [r.key for r in rf], "pick_keys": [r.key for r in pick]}))
"""


@pytest.mark.skipif(not LT_PYTHON.exists(), reason="LiberTEM's venv (benchmarks/.venv-libertem) is not installed")
def test_analyses_give_libertems_numbers(tmp_path) -> None:
    data = _data()
    np.save(tmp_path / "d.npy", data)
    out = subprocess.run([str(LT_PYTHON), "-c", _LIBERTEM_SCRIPT, str(tmp_path / "d.npy"), str(tmp_path / "lt.npz")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    meta = json.loads(out.stdout.strip().splitlines()[-1])
    lt = np.load(tmp_path / "lt.npz")

    lctx = Context.make_with("inline")
    ds = lctx.load("memory", data=data, num_partitions=3)
    rf = lctx.run(lctx.create_radial_fourier_analysis(dataset=ds, cx=6, cy=7, ri=1, ro=6, n_bins=2, max_order=4))
    rd = lctx.run(lctx.create_radial_fourier_analysis(dataset=ds))
    pick = lctx.run(lctx.create_pick_analysis(dataset=ds, x=2, y=3))
    assert rf.keys() == meta["keys"] and pick.keys() == meta["pick_keys"]
    np.testing.assert_allclose(rf.raw_results, lt["raw"], rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(rd.raw_results, lt["raw_default"], rtol=1e-5, atol=1e-1)
    np.testing.assert_array_equal(rf.dominant_1.raw_data, lt["dominant"])
    np.testing.assert_allclose(rf.complex_0_3.raw_data, lt["complex"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pick.intensity.raw_data, lt["pick"])
