"""The core works without any extra, and a missing extra is named when its feature is used.

Each check runs in a fresh interpreter whose import system refuses the optional packages,
as on a machine where only ``pip install detflow`` was run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: what ``pip install detflow`` leaves out, by top-level module
OPTIONAL = ("h5py", "hdf5plugin", "holoviews", "bokeh", "panel", "distributed", "sparse", "scipy", "rsciio", "mrcfile",
            "zmq", "lz4", "bitshuffle", "cbor2", "psycopg")

_BLOCKER = f"""
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
"""


def _run(code: str, tmp_path) -> subprocess.CompletedProcess[str]:
    script = _BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                          cwd=tmp_path)


def test_blocker_blocks(tmp_path) -> None:
    proc = _run("import h5py", tmp_path)
    assert proc.returncode != 0 and "No module named 'h5py'" in proc.stderr


def test_import_detflow_loads_no_optional_or_heavy_module(tmp_path) -> None:
    proc = _run("""
        import sys
        import detflow
        heavy = sorted(m for m in sys.modules if m.partition(".")[0] in
                       ("h5py", "holoviews", "panel", "bokeh", "distributed", "zarr", "scipy", "sparse",
                        "xarray", "dask", "streamz", "numba", "tornado", "rsciio", "mrcfile"))
        print("HEAVY", heavy)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_core_runs_without_extras(tmp_path) -> None:
    proc = _run("""
        import numpy as np
        import detflow as df
        from detflow.nodes import SumUDF
        data = np.arange(4 * 4 * 8 * 8, dtype=np.uint16).reshape(4, 4, 8, 8)
        np.save("scan.npy", data)
        for name in ("inline", "threads", "delayed"):
            with df.Context.make_with(name, cpus=2) as ctx:
                res = ctx.run_udf(dataset=ctx.load("auto", path="scan.npy"), udf=SumUDF())
                assert np.array_equal(res["intensity"].data, data.sum(axis=(0, 1))), name
        g = df.Graph("g")
        g.source("npy", path="scan.npy")
        g.partition()
        g.udf("sum", id="total")
        g.sink("zarr", inputs=["total"], path="out.zarr")
        out = g.run(executor="inline")
        assert np.array_equal(out["total"]["intensity"].values, data.sum(axis=(0, 1)))
        from detflow.nodes import ApplyMasksUDF, masks
        bins = masks.radial_bins(4, 4, 8, 8, n_bins=8)  # sparse by default where it is installed
        assert isinstance(bins, np.ndarray) and bins.shape == (8, 8, 8)
        with df.Context.make_with("inline") as ctx:
            res = ctx.run_udf(dataset=ctx.load("npy", path="scan.npy"),
                              udf=ApplyMasksUDF(mask_factories=lambda: bins))
        expected = np.einsum("abij,kij->abk", data.astype(float), bins)
        np.testing.assert_allclose(res["intensity"].data, expected)
        print("CORE OK")
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "CORE OK" in proc.stdout


@pytest.mark.parametrize(
    ("code", "package", "extra"),
    [
        ("open('x.h5', 'wb').write(b'\\x89HDF\\r\\n\\x1a\\n' + bytes(64)); "
         "ctx = df.Context.make_with('inline'); ctx.load('auto', path='x.h5')", "h5py", "hdf5"),
        ("df.Context.make_with('dask', cpus=1)", "distributed", "distributed"),
        ("ctx = df.Context.make_with('inline'); ctx.run_udf(dataset=ctx.load('npy', path='scan.npy'), "
         "udf=SumSigUDF(), plots=True)", "holoviews", "plots"),
        ("g = df.Graph('g'); g.source('npy', path='scan.npy'); g.partition(); g.udf('sumsig', id='s'); "
         "from detflow.dashboard import Dashboard; Dashboard(g)", "panel", "plots"),
        ("from detflow.nodes import masks; masks.radial_bins(4, 4, 8, 8, use_sparse=True)", "sparse", "sparse"),
        ("df.Context.make_with('inline').load('mrc', path='scan.npy')", "mrcfile", "formats"),
        ("df.Context.make_with('inline').load('tvips', path='scan.npy')", "rosettasciio", "formats"),
        ("df.Context.make_with('inline').load('dm', path='scan.npy')", "rosettasciio", "formats"),
        ("from detflow.sources.live.dectris.data import _zmq; _zmq()", "pyzmq", "live"),
        ("from detflow.nodes import ApplyMasksUDF; ctx = df.Context.make_with('inline'); "
         "ctx.run_udf(dataset=ctx.load('npy', path='scan.npy'), "
         "udf=ApplyMasksUDF(mask_factories=[lambda: np.ones((4, 4))], use_sparse=True))", "scipy", "scipy"),
    ],
    ids=["hdf5", "distributed", "plots", "dashboard", "sparse", "mrc", "tvips", "dm", "dectris", "scipy"],
)
def test_missing_extra_is_named(tmp_path, code: str, package: str, extra: str) -> None:
    proc = _run(f"""
        import numpy as np
        import detflow as df
        from detflow.errors import MissingDependencyError
        from detflow.nodes import SumSigUDF
        np.save("scan.npy", np.zeros((2, 2, 4, 4), np.uint16))
        try:
            {code}
        except MissingDependencyError as err:
            print("MESSAGE", err)
        else:
            print("NO ERROR")
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"needs the package {package!r}" in proc.stdout, proc.stdout
    assert f"pip install 'detflow[{extra}]'" in proc.stdout, proc.stdout


def test_a_first_run_imports_only_what_it_uses(tmp_path) -> None:
    """With every extra installed: a SumUDF run loads none of the heavy optional parts."""
    code = """
        import sys
        import numpy as np
        import detflow as df
        from detflow.nodes import SumUDF
        np.save("scan.npy", np.ones((2, 2, 8, 8), np.uint16))
        with df.Context.make_with("threads", cpus=2) as ctx:
            res = ctx.run_udf(dataset=ctx.load("npy", path="scan.npy"), udf=SumUDF())
        assert res["intensity"].data.sum() == 2 * 2 * 8 * 8
        heavy = sorted(m for m in ("distributed", "holoviews", "panel", "bokeh", "h5py", "zarr", "xarray",
                                   "dask", "streamz.dask") if m in sys.modules)
        print("HEAVY", heavy)
        import distributed  # still importable once streamz has been imported without it
        print("LATER", distributed.__name__)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout and "LATER distributed" in proc.stdout, proc.stdout
