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
OPTIONAL = ("h5py", "hdf5plugin", "holoviews", "bokeh", "panel", "distributed", "rsciio", "mrcfile")

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
                       ("h5py", "holoviews", "panel", "bokeh", "distributed", "zarr", "scipy", "xarray",
                        "dask", "streamz", "numba", "tornado", "rsciio", "mrcfile"))
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
         "from detflow.sinks.plots.dashboard import Dashboard; Dashboard(g)", "panel", "plots"),
    ],
    ids=["hdf5", "distributed", "plots", "dashboard"],
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
