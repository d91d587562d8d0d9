"""The graph task in-process: staging, moves into place, outputs outside the output folder, failures."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from detflow.batch.task import GraphWork, graph_task

GRAPH = """schema_version: 1
name: t
source: {{type: npy, params: {{path: unused.npy}}}}
partition: {{num_partitions: 2}}
nodes:
  total: {{type: sumsig}}
  sum: {{type: sum, save_results: true}}
sinks:
  elsewhere: {{type: zarr, inputs: [total], params: {{path: "{elsewhere}/{{input_stem}}-total.zarr"}}}}
"""


@pytest.fixture
def setup(tmp_path):
    data = np.random.default_rng(1).integers(0, 50, size=(3, 4, 8, 8)).astype(np.uint16)
    np.save(tmp_path / "scan.npy", data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    graph = tmp_path / "t.yaml"
    graph.write_text(GRAPH.format(elsewhere=elsewhere))
    return data, graph, tmp_path / "scan.npy", tmp_path / "out", elsewhere


def test_outputs_inside_and_outside_the_output_folder_land_in_place(setup) -> None:
    data, graph, scan, out, elsewhere = setup
    result = graph_task(graph=str(graph), input=str(scan), output_dir=str(out))
    assert sorted(result["outputs"]) == sorted([str(elsewhere / "scan-total.zarr"), str(out / "scan_sum.zarr")])
    np.testing.assert_array_equal(xr.open_zarr(elsewhere / "scan-total.zarr")["intensity"].values,
                                  data.sum(axis=(2, 3)))
    np.testing.assert_array_equal(xr.open_zarr(out / "scan_sum.zarr")["intensity"].values, data.sum(axis=(0, 1)))
    assert sorted(p.name for p in elsewhere.iterdir()) == ["scan-total.zarr"]  # no staged leftovers
    assert sorted(p.name for p in out.iterdir()) == ["scan.t.log", "scan_sum.zarr"]
    spec = GraphWork(str(graph), [str(scan)], output_dir=str(out))
    (task,) = spec.list_tasks(str(scan), False)
    assert spec.already_done(task)
    # a rerun replaces each output whole, by a rename: a new folder, complete, nothing left beside it
    before = (out / "scan_sum.zarr").stat().st_ino
    graph_task(graph=str(graph), input=str(scan), output_dir=str(out))
    assert (out / "scan_sum.zarr").stat().st_ino != before and spec.already_done(task)
    assert sorted(p.name for p in out.iterdir()) == ["scan.t.log", "scan_sum.zarr"]


def test_a_failed_run_leaves_no_output_and_no_staging(setup) -> None:
    data, graph, scan, out, elsewhere = setup
    (scan.parent / "short.npy").write_bytes(scan.read_bytes()[:200])  # a truncated file
    with pytest.raises(Exception, match="short.npy"):
        graph_task(graph=str(graph), input=str(scan.parent / "short.npy"), output_dir=str(out))
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == ["short.t.log"]
    spec = GraphWork(str(graph), [str(scan.parent / "short.npy")], output_dir=str(out))
    (task,) = spec.list_tasks(str(scan.parent / "short.npy"), False)
    assert not spec.already_done(task)
