"""Parameter precedence: code default < graph file < config file < keyword arguments / --set."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import xarray as xr

import detflow as df
from detflow.errors import GraphValidationError
from detflow.graph.config import apply_overrides, parse_set
from detflow.graph.run import resolve_call


def _com_radius_result(data: np.ndarray, r: float) -> np.ndarray:
    """Independent numpy CoM y-shift with a disk of radius r around (8, 8)."""
    yy, xx = np.mgrid[:16, :16]
    sel = np.hypot(yy - 8, xx - 8) <= r
    w = data.astype(np.float64) * sel
    return (w * yy).sum(axis=(2, 3)) / w.sum(axis=(2, 3)) - 8


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(1, 100, size=(3, 4, 16, 16)).astype(np.uint16)
    np.save(tmp_path / "scan.npy", data)
    (tmp_path / "g.yaml").write_text(
        "schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\n"
        "nodes:\n  com: {type: com, params: {cx: 8.0, cy: 8.0, r: 6.0}}\n  total: {type: sumsig}\n"
    )
    (tmp_path / "site.yaml").write_text("nodes:\n  com: {r: 4.0}\n")
    return data, df.Graph.from_yaml(tmp_path / "g.yaml"), tmp_path


def _r(g: df.Graph) -> float:
    return g.nodes["com"].params.get("r", float("inf"))


def test_each_level_wins_over_the_one_below(setup) -> None:
    data, g, tmp = setup
    # code default: r = inf (whole frame), when the graph file does not set it
    bare = apply_overrides(g, {})
    bare.replace_node(type(g.nodes["com"])("com", "partition", "com", {"cx": 8.0, "cy": 8.0}))
    res = bare.run(executor="inline")
    np.testing.assert_allclose(res["com"]["raw_shifts"].values[..., 0], _com_radius_result(data, np.inf), atol=1e-5)
    # graph file: r = 6
    res = g.call(executor="inline")
    np.testing.assert_allclose(res["com"]["raw_shifts"].values[..., 0], _com_radius_result(data, 6), atol=1e-5)
    # config file beats the graph file: r = 4
    assert _r(resolve_call(g, config_file=tmp / "site.yaml")) == 4.0
    res = g.call(config_file=tmp / "site.yaml", executor="inline")
    np.testing.assert_allclose(res["com"]["raw_shifts"].values[..., 0], _com_radius_result(data, 4), atol=1e-5)
    # keyword arguments beat the config file: r = 3
    assert _r(resolve_call(g, config_file=tmp / "site.yaml", nodes={"com": {"r": 3.0}})) == 3.0
    res = g.call(config_file=tmp / "site.yaml", nodes={"com": {"r": 3.0}}, executor="inline")
    np.testing.assert_allclose(res["com"]["raw_shifts"].values[..., 0], _com_radius_result(data, 3), atol=1e-5)


def test_set_parses_by_declared_type(setup) -> None:
    _, g, _ = setup
    sets = parse_set(g, ["com.r=35", "com.flip_y=true", "total.skip=yes", "partition.num_partitions=3",
                         "com.r=inf"])
    assert sets == {"com": {"r": float("inf"), "flip_y": True}, "total": {"skip": True},
                    "partition": {"num_partitions": 3}}
    assert isinstance(parse_set(g, ["com.cx=12"])["com"]["cx"], float)


@pytest.mark.parametrize(
    ("assignment", "pattern"),
    [
        ("com.r=abc", r"--set 'com.r=abc': must be float; got 'abc'"),
        ("com.flip_y=2", r"^--set 'com.flip_y=2': must be true or false; got 2"),
        ("nosuch.r=1", r"--set 'nosuch.r=1': no node 'nosuch'; nodes: com, partition, source, total"),
        ("cmo.r=1", r"^--set 'cmo.r=1': no node 'cmo'; did you mean 'com'\? nodes: com, partition, source, total"),
        ("com.radius=1", r"^--set 'com.radius=1': unknown parameter; did you mean 'r'\? com takes: cx, cy"),
        ("partition.frames_per_partiton=8", r"did you mean 'frames_per_partition'\? partition takes: "),
        ("comr=1", r"expected NODE.PARAMETER=VALUE"),
        ("partition.num_partitions=two", r"must be int; got 'two'"),
    ],
)
def test_set_errors(setup, assignment: str, pattern: str) -> None:
    _, g, _ = setup
    with pytest.raises(GraphValidationError, match=pattern):
        parse_set(g, [assignment])


def test_config_file_errors_name_the_file(setup) -> None:
    _, g, tmp = setup
    (tmp / "bad.yaml").write_text("nodes:\n  comm: {r: 4.0}\n")
    with pytest.raises(GraphValidationError, match=r"bad\.yaml:2: overrides name node 'comm'.*did you mean 'com'\?"):
        resolve_call(g, config_file=tmp / "bad.yaml")


def test_skip_is_reported_not_silent(setup, caplog) -> None:
    _, g, tmp = setup
    g.sink("zarr", inputs=["com", "total"], id="out", path="{output_dir}/o.zarr")
    with caplog.at_level(logging.WARNING, logger="detflow"):
        res = g.call(nodes={"total": {"skip": True}}, executor="inline")
    assert set(res) == {"com"}
    assert "sink 'out': input node 'total' is skipped" in caplog.text
    stored = xr.open_zarr(tmp / "o.zarr")
    assert "raw_shifts" in stored and "total_intensity" not in stored


def test_save_results_writes_input_stem_node(setup) -> None:
    data, g, tmp = setup
    out = tmp / "results"
    g.call(nodes={"total": {"save_results": True}}, output_dir=out, executor="inline")
    stored = xr.open_zarr(out / "scan_total.zarr")
    np.testing.assert_array_equal(stored["intensity"].values, data.sum(axis=(2, 3)))
    assert stored.attrs["complete"] is True


def test_input_replaces_source_path(setup) -> None:
    data, g, tmp = setup
    np.save(tmp / "other.npy", data[:, :, ::-1] * 2)
    res = g.call(tmp / "other.npy", executor="inline")
    np.testing.assert_array_equal(res["total"]["intensity"].values, 2 * data.sum(axis=(2, 3)))
