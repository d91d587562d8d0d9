"""The launcher, run as a user runs it: in a subprocess, on generated data.

The example graphs in examples/graphs run end to end, and the numbers in the zarr
stores they write are checked against numpy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from detflow.demo import make_scan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "graphs"


def detflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detflow.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=180, cwd=cwd)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scan")
    data, _ = make_scan()
    np.save(folder / "scan.npy", data)
    return data, folder / "scan.npy"


def _disk(r: float, c: float = 32.0) -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    return np.hypot(yy - c, xx - c) <= r


def test_bright_field_example(scan, tmp_path) -> None:
    data, path = scan
    proc = detflow("run", EXAMPLES / "bright-field.yaml", "--input", path, "--output-dir", tmp_path,
                   "--set", "com.r=18", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    ds = xr.open_zarr(tmp_path / "scan.zarr")
    f64 = data.astype(np.float64)
    np.testing.assert_allclose(ds["sum_intensity"].values, f64.sum(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(ds["fields_intensity"].values[..., 0], (f64 * _disk(12)).sum(axis=(2, 3)), rtol=1e-6)
    ring = _disk(30) & ~_disk(14)
    np.testing.assert_allclose(ds["fields_intensity"].values[..., 1], (f64 * ring).sum(axis=(2, 3)), rtol=1e-6)
    yy, xx = np.mgrid[:64, :64]
    w = f64 * _disk(18)  # --set com.r=18 won over the file's r=20
    com_y = (w * yy).sum(axis=(2, 3)) / w.sum(axis=(2, 3))
    np.testing.assert_allclose(ds["com_raw_com"].values[..., 0], com_y, atol=1e-4)
    assert ds["com_raw_com"].attrs["params"]["r"] == 18.0
    assert "com: raw_com (32, 32, 2)" in proc.stdout


def test_statistics_example_with_config_and_recorder(scan, tmp_path) -> None:
    data, path = scan
    proc = detflow("run", EXAMPLES / "statistics.yaml", "--input", path, "--output-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    stats = xr.open_zarr(tmp_path / "scan_stats.zarr")
    f64 = data.astype(np.float64).reshape(-1, 64, 64)
    np.testing.assert_allclose(stats["std"].values, f64.std(axis=0), rtol=1e-9)
    np.testing.assert_allclose(stats["mean"].values, f64.mean(axis=0), rtol=1e-9)
    totals = xr.open_zarr(tmp_path / "scan_totals.zarr")
    np.testing.assert_array_equal(totals["intensity"].values, data.sum(axis=(2, 3)))
    np.testing.assert_array_equal(np.load(tmp_path / "scan-frames.npy"), data)
    assert "1024/1024" in proc.stderr  # the progress bar counted every frame


def test_validate_and_show(scan) -> None:
    _, path = scan
    proc = detflow("validate", EXAMPLES / "bright-field.yaml", "--input", path,
                   "--config", EXAMPLES / "site-config.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "ok: graph 'bright-field': 3 node(s) over nav (32, 32) sig (64, 64) uint16, 4 partition(s)" in proc.stdout
    proc = detflow("show", EXAMPLES / "bright-field.yaml")
    assert proc.returncode == 0 and "└── partition [partition] frames_per_partition=256" in proc.stdout


def test_show_writes_dot(tmp_path) -> None:
    proc = detflow("show", EXAMPLES / "statistics.yaml", "--dot", tmp_path / "g.dot")
    assert proc.returncode == 0, proc.stderr
    dot = (tmp_path / "g.dot").read_text()
    assert '"partition" -> "stats";' in dot and '"partition" -> "frames";' in dot


def test_help_is_useful() -> None:
    proc = detflow("--help")
    assert proc.returncode == 0
    for word in ("run", "validate", "show", "demo"):
        assert word in proc.stdout
    proc = detflow("run", "--help")
    assert "--set NODE.PARAM=VALUE" in proc.stdout and "--overwrite" in proc.stdout


def _graph_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "args", "pattern"),
    [
        ("schema_version: 1\nnodes: [oops\n", (), r"g\.yaml:3: YAML syntax error"),
        ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\nnodes:\n"
         "  com: {type: com, params: {radius: 3}}\n", (),
         r"g\.yaml:4: node 'com' \(com\), parameter 'radius': unknown parameter"),
        ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\nnodes:\n  com: {type: com}\n",
         ("--set", "com.r=wide"), r"--set 'com.r=wide': must be float; got 'wide'"),
    ],
)
def test_bad_input_gives_one_paragraph_and_exit_2(scan, tmp_path, body, args, pattern) -> None:
    import re

    _, path = scan
    proc = detflow("run", _graph_file(tmp_path, body), "--input", path, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert re.search(pattern, proc.stderr), proc.stderr


def test_output_dir_that_cannot_be_written(scan, tmp_path) -> None:
    _, path = scan
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = detflow("run", EXAMPLES / "bright-field.yaml", "--input", path, "--output-dir", blocker / "out")
    assert proc.returncode == 2
    assert "output directory" in proc.stderr and "cannot be created" in proc.stderr


def test_existing_output_refused_unless_overwrite(scan, tmp_path) -> None:
    _, path = scan
    args = ("run", EXAMPLES / "bright-field.yaml", "--input", path, "--output-dir", tmp_path, "--no-progress")
    assert detflow(*args).returncode == 0
    before = xr.open_zarr(tmp_path / "scan.zarr")["com_raw_com"].values
    proc = detflow(*args, "--set", "com.r=10")
    assert proc.returncode == 2 and "already exists; pass overwrite (--overwrite)" in proc.stderr
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "scan.zarr")["com_raw_com"].values, before)
    proc = detflow(*args, "--set", "com.r=10", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    after = xr.open_zarr(tmp_path / "scan.zarr")
    assert after["com_raw_com"].attrs["params"]["r"] == 10.0
    assert not np.allclose(after["com_raw_com"].values, before)


def test_debug_shows_traceback(tmp_path) -> None:
    proc = detflow("run", tmp_path / "missing.yaml", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = detflow("run", tmp_path / "missing.yaml")
    assert proc.returncode == 2 and "missing.yaml: no such file" in proc.stderr


def test_dpc_example_with_a_result_node_override(tmp_path) -> None:
    from tests.graph.dpc_data import disk_frames

    data = disk_frames()
    np.save(tmp_path / "scan.npy", data)
    graph = Path(__file__).resolve().parents[1] / "examples" / "graphs" / "dpc.yaml"
    shown = detflow("show", graph)
    assert shown.returncode == 0, shown.stderr
    assert "pass 2: read 'part' (source 'scan'): com; then phase" in shown.stdout
    proc = detflow("run", graph, "--input", tmp_path / "scan.npy", "--set", "disk.threshold=0.3",
                   "--output-dir", tmp_path / "out", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    store = xr.open_zarr(tmp_path / "out" / "scan_dpc.zarr")
    total = data.astype(np.float64).sum(axis=(0, 1))
    ys, xs = np.nonzero(total > 0.3 * total.max())
    assert float(store["disk_cx"]) == pytest.approx(xs.mean())
    assert store["phase_phase"].shape == data.shape[:2]
    bad = detflow("validate", graph, "--input", tmp_path / "scan.npy", "--set", "disk.threshold=3")
    assert bad.returncode == 2 and "node 'disk' (find_disk), parameter 'threshold'" in bad.stderr
