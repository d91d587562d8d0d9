"""Stores record how they were made, and ``detflow rerun STORE`` makes them again.

The launcher runs in a subprocess, as a user runs it; the stores are read with zarr,
json and numpy directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import detflow

GRAPH = """\
schema_version: 2
name: prov
sources:
  scan: {type: npy, params: {path: scan.npy}}
nodes:
  part: {type: partition, input: scan, params: {frames_per_partition: 4}}
  total: {type: sumsig, input: part}
  bf: {type: masks, input: part, params: {masks: [{type: circular, cx: 4, cy: 4, r: 2}]}}
sinks:
  out: {type: zarr, inputs: [total, bf], params: {path: "{output_dir}/{input_stem}.zarr"}}
  raw: {type: npy, inputs: [part], params: {path: "{output_dir}/frames.npy"}}
"""


def detflow_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detflow.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=180, cwd=cwd)


@pytest.fixture
def run_dir(tmp_path) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(1).integers(0, 50, size=(3, 4, 8, 8)).astype(np.uint16)
    np.save(tmp_path / "scan.npy", data)
    (tmp_path / "g.yaml").write_text(GRAPH)
    proc = detflow_cli("run", "g.yaml", "--set", "bf.masks=[{type: circular, cx: 4, cy: 4, r: 3}]",
                       "--output-dir", "out", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return tmp_path, data


def test_stores_record_the_graph_as_run_inputs_and_version(run_dir) -> None:
    folder, _ = run_dir
    attrs = zarr.open_group(str(folder / "out" / "scan.zarr"), mode="r").attrs.asdict()
    record = attrs["provenance"]
    assert record["detflow_version"] == detflow.__version__
    graph = record["graph"]
    assert graph["nodes"]["bf"]["params"]["masks"][0]["r"] == 3  # --set, not the file's 2
    assert graph["sources"]["scan"]["params"]["path"] == str(folder / "scan.npy")
    st = os.stat(folder / "scan.npy")
    assert record["inputs"] == [{"node": "scan", "path": str(folder / "scan.npy"), "size": st.st_size,
                                 "mtime_ns": st.st_mtime_ns}]
    assert record["output_dir"] == str(folder / "out")
    with open(folder / "out" / "frames.npy.provenance.json") as f:
        assert json.load(f)["graph"] == graph


def test_rerun_makes_the_same_store_and_follows_the_overwrite_rules(run_dir) -> None:
    folder, data = run_dir
    store = folder / "out" / "scan.zarr"
    proc = detflow_cli("rerun", store, "--no-progress", cwd=folder)
    assert proc.returncode == 2 and "already exists; pass overwrite (--overwrite)" in proc.stderr, proc.stderr
    proc = detflow_cli("rerun", store, "--output-dir", folder / "again", "--no-progress", cwd="/")
    assert proc.returncode == 0, proc.stderr
    again = xr.open_zarr(folder / "again" / "scan.zarr")
    yy, xx = np.mgrid[:8, :8]
    disk = np.hypot(yy - 4, xx - 4) <= 3
    np.testing.assert_allclose(again["bf_intensity"].values[..., 0], (data * disk).sum(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_array_equal(again["total_intensity"].values, data.sum(axis=(2, 3)))
    np.testing.assert_array_equal(np.load(folder / "again" / "frames.npy"), data)
    # from the .npy output's sidecar, over the old outputs, with the user's flag
    proc = detflow_cli("rerun", folder / "out" / "frames.npy", "--overwrite", "--no-progress", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(xr.open_zarr(store)["total_intensity"].values, data.sum(axis=(2, 3)))


def test_rerun_refuses_a_changed_input_unless_allowed(run_dir) -> None:
    folder, data = run_dir
    np.save(folder / "scan.npy", data[:2])  # smaller, and newer
    store = folder / "out" / "scan.zarr"
    proc = detflow_cli("rerun", store, "--output-dir", "x", "--no-progress", cwd=folder)
    assert proc.returncode == 2, proc.stderr
    assert f"{str(folder / 'scan.npy')!r} changed since the store was written: size" in proc.stderr
    assert not (folder / "x").exists()
    proc = detflow_cli("rerun", store, "--output-dir", "x", "--allow-changed", "--no-progress", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert "changed since the store was written" in proc.stderr  # still said, as a warning
    np.testing.assert_array_equal(xr.open_zarr(folder / "x" / "scan.zarr")["total_intensity"].values,
                                  data[:2].sum(axis=(2, 3)))


def test_a_graph_a_file_cannot_hold_says_why_it_cannot_be_rerun(tmp_path) -> None:
    g = detflow.Graph("mem")
    g.source("memory", data=np.ones((2, 2, 4, 4)))
    g.partition()
    g.udf("sumsig", id="total")
    g.sink("zarr", inputs=["total"], path=str(tmp_path / "m.zarr"))
    g.run(executor="inline")
    record = zarr.open_group(str(tmp_path / "m.zarr"), mode="r").attrs["provenance"]
    assert record["graph"] is None and "cannot be written to a graph file" in record["graph_unavailable"]
    from detflow.errors import ConfigurationError
    from detflow.rerun import rerun

    with pytest.raises(ConfigurationError, match=r"m\.zarr'.*cannot be rerun"):
        rerun(tmp_path / "m.zarr", output_dir=tmp_path / "n")


@pytest.mark.parametrize("suffix", [".zarr", ".npy"])
def test_a_converted_store_records_its_source_and_converts_again(tmp_path, suffix) -> None:
    from detflow.graph.provenance import read_provenance

    data = np.random.default_rng(5).integers(0, 1000, (3, 4, 6, 6), dtype=np.uint16)
    np.save(tmp_path / "scan.npy", data)
    out = tmp_path / f"copy{suffix}"
    proc = detflow_cli("convert", "scan.npy", out.name, "--set", "sync_offset=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = read_provenance(out)
    assert record["conversion"] == {"type": "auto", "params": {"sync_offset": 1,
                                                               "path": str(tmp_path / "scan.npy")}}
    assert record["inputs"][0]["size"] == os.path.getsize(tmp_path / "scan.npy")
    assert record["detflow_version"] == detflow.__version__
    expected = np.zeros_like(data).reshape(12, 6, 6)
    expected[:-1] = data.reshape(12, 6, 6)[1:]
    read = (lambda: np.asarray(zarr.open_array(out, mode="r"))) if suffix == ".zarr" else (lambda: np.load(out))
    np.testing.assert_array_equal(read().reshape(12, 6, 6), expected)

    refused = detflow_cli("rerun", out.name, cwd=tmp_path)
    assert refused.returncode != 0 and "--overwrite" in refused.stderr
    if suffix == ".zarr":
        zarr.open_array(out, mode="r+")[:] = 0  # spoil the copy: converting again must restore it
    else:
        np.save(out, np.zeros_like(data))
    again = detflow_cli("rerun", out.name, "--overwrite", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(read().reshape(12, 6, 6), expected)

    np.save(tmp_path / "scan.npy", data[:2])  # the input changed: refused, naming it
    changed = detflow_cli("rerun", out.name, "--overwrite", cwd=tmp_path)
    assert changed.returncode != 0 and "scan.npy" in changed.stderr and "changed" in changed.stderr
