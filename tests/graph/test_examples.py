"""The example graphs dpc.yaml and dark-corrected.yaml, on generated data, on every executor,
against the same computation in plain numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import detflow as df
from detflow.nodes.results.idpc import integrate_gradient
from tests.graph.dpc_data import disk_frames, true_phase

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "graphs"


def numpy_dpc(data: np.ndarray) -> dict[str, np.ndarray | float]:
    """sum -> disk (pixels above half the maximum) -> CoM within it -> integrated phase."""
    total = data.sum(axis=(0, 1), dtype=np.float64)
    ys, xs = np.nonzero(total > 0.5 * total.max())
    cy, cx, r = ys.mean(), xs.mean(), np.sqrt(ys.size / np.pi)
    yy, xx = np.indices(data.shape[2:], dtype=np.float64)
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    frames = data.astype(np.float64) * mask
    mass = frames.sum(axis=(2, 3))
    com_y = (frames * yy).sum(axis=(2, 3)) / mass - cy
    com_x = (frames * xx).sum(axis=(2, 3)) / mass - cx
    return {"sum": total, "cx": cx, "cy": cy, "r": r, "field_y": com_y, "field_x": com_x,
            "phase": integrate_gradient(com_y, com_x)}


@pytest.fixture(scope="module")
def dpc_scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    data = disk_frames()
    path = tmp_path_factory.mktemp("dpc") / "scan.npy"
    np.save(path, data)
    return path, data


def test_dpc_example_on_every_executor(dpc_scan, executor, tmp_path) -> None:
    path, data = dpc_scan
    g = df.Graph.from_yaml(EXAMPLES / "dpc.yaml")
    assert [p.udfs for p in g.plan()] == [("sum",), ("com",)]
    out = g.call(path, nodes={"part": {"frames_per_partition": 40}}, output_dir=tmp_path, executor=executor)
    ref = numpy_dpc(data)
    np.testing.assert_allclose(out["sum"]["intensity"].values, ref["sum"], rtol=1e-5)
    for name in ("cx", "cy", "r"):
        assert float(out["disk"][name]) == pytest.approx(ref[name], rel=1e-9)
    np.testing.assert_allclose(out["com"]["field_y"].values, ref["field_y"], atol=1e-4)
    np.testing.assert_allclose(out["com"]["field_x"].values, ref["field_x"], atol=1e-4)
    phase = out["phase"]["phase"].values
    np.testing.assert_allclose(phase, ref["phase"], atol=1e-4)
    # against the phase put into the data: the mask radius is the disk's, so the rims of
    # shifted disks are cut and the amplitude comes out low; the shape must still be there
    truth = true_phase() - true_phase().mean()
    assert np.corrcoef(phase.ravel(), truth.ravel())[0, 1] > 0.99
    assert 0.5 < np.std(phase) / np.std(truth) < 1.1
    store = zarr.open_group(str(tmp_path / "scan_dpc.zarr"), mode="r")
    assert store.attrs["complete"] is True
    np.testing.assert_allclose(store["phase_phase"][...], phase, atol=1e-6)


def test_dpc_to_delayed_is_one_dask_graph(dpc_scan) -> None:
    import dask

    path, data = dpc_scan
    g = df.Graph.from_yaml(EXAMPLES / "dpc.yaml")
    g = df.Graph.from_dict({**g.to_dict(), "sinks": {}})
    from detflow.graph.config import apply_overrides

    g = apply_overrides(g, {"scan": {"path": str(path)}, "part": {"num_partitions": 3}})
    delayed = g.to_delayed()
    assert set(delayed) == {"sum", "com", "disk", "phase"}
    computed = dict(zip(delayed, dask.compute(*delayed.values(), scheduler="threads"), strict=True))
    ref = numpy_dpc(data)
    assert computed["disk"]["cx"] == pytest.approx(ref["cx"])
    np.testing.assert_allclose(computed["phase"]["phase"], ref["phase"], atol=1e-4)


def test_dark_corrected_example_on_every_executor(executor, tmp_path) -> None:
    rng = np.random.default_rng(7)
    dark_level = rng.uniform(5, 20, size=(32, 32)).astype(np.float32)
    dark = (dark_level + rng.normal(0, 0.5, size=(6, 8, 32, 32))).astype(np.float32)
    data = disk_frames(dark=dark_level, dtype="float32")
    np.save(tmp_path / "dark.npy", dark)
    np.save(tmp_path / "scan.npy", data)
    g = df.Graph.from_yaml(EXAMPLES / "dark-corrected.yaml")
    plan = g.plan()
    assert [(p.source, p.udfs) for p in plan] == [("dark_scan", ("dark_mean",)), ("scan", ("sum", "fields"))]
    assert plan[1].frames == ("corrected",)
    out = g.call(tmp_path / "scan.npy", nodes={"dark_scan": {"path": str(tmp_path / "dark.npy")}},
                 output_dir=tmp_path, executor=executor)
    corrected = data.astype(np.float64) - dark.astype(np.float64).mean(axis=(0, 1))
    np.testing.assert_allclose(out["sum"]["intensity"].values, corrected.sum(axis=(0, 1)), rtol=1e-4, atol=1e-2)
    yy, xx = np.indices((32, 32))
    bf = (yy - 16) ** 2 + (xx - 16) ** 2 <= 8 ** 2
    ring = ((yy - 16) ** 2 + (xx - 16) ** 2 <= 15 ** 2) & ((yy - 16) ** 2 + (xx - 16) ** 2 > 9 ** 2)
    got = out["fields"]["intensity"].values
    np.testing.assert_allclose(got[..., 0], (corrected * bf).sum(axis=(2, 3)), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(got[..., 1], (corrected * ring).sum(axis=(2, 3)), rtol=1e-4, atol=1e-2)
    assert (tmp_path / "scan_corrected.zarr").exists()


def test_dpc_to_delayed_on_a_distributed_client(dpc_scan, _executors) -> None:
    """The same dask graph on a distributed cluster: its workers read the file themselves."""
    from tests.conftest import EXECUTOR_SPECS

    path, data = dpc_scan
    if "dask" not in _executors:
        _executors["dask"] = EXECUTOR_SPECS["dask"]()
    client = _executors["dask"].client
    g = df.Graph("dpc")
    g.source("npy", path=str(path))
    g.partition(num_partitions=4)
    g.udf("sum")
    g.result("find_disk", id="disk", input="sum")
    g.udf("com", cx=g.ref("disk.cx"), cy=g.ref("disk.cy"), r=g.ref("disk.r"))
    g.result("idpc", id="phase", input="com")
    delayed = g.to_delayed()
    computed = dict(zip(delayed, client.gather(client.compute(list(delayed.values()))), strict=True))
    np.testing.assert_allclose(computed["phase"]["phase"], numpy_dpc(data)["phase"], atol=1e-4)
