"""The Python graph API: building, validating (errors name node and parameter), viewing, running."""

from __future__ import annotations

import numpy as np
import pytest

import detflow as df
from detflow.errors import GraphValidationError
from detflow.nodes import UDF


class FrameSum(UDF):
    def get_result_buffers(self):
        return {"s": self.buffer(kind="nav", dtype="float64"),
                "total": self.buffer(kind="sig", dtype="float64")}

    def process_tile(self, tile):
        self.results.s[:] = tile.reshape(len(tile), -1).sum(axis=1)
        self.results.total[:] += tile.sum(axis=0)

    def merge(self, dest, src):
        dest.s[:] = src.s
        dest.total[:] += src.total


class Radius(UDF):
    """A UDF with declared, checked parameters."""

    from detflow.nodes.params import Param, positive

    params_spec = (Param("r", float, default=1.0, check=positive, doc="radius"),
                   Param("label", str, default="x"))

    def get_result_buffers(self):
        return {"v": self.buffer(kind="nav")}

    def process_tile(self, tile):
        self.results.v[:] = self.params.r


def _graph(data=None, roi=None, **udf_params):
    data = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5) if data is None else data
    g = df.Graph("test")
    g.source("memory", data=data)
    g.partition(num_partitions=2, roi=roi)
    return g


def test_run_returns_xarray_with_named_dims(executor) -> None:
    data = np.random.default_rng(1).integers(0, 50, size=(3, 4, 6, 5)).astype(np.uint8)
    g = _graph(data)
    g.udf(FrameSum(), id="fs")
    out = g.run(executor=executor)
    ds = out["fs"]
    assert ds["s"].dims == ("nav_y", "nav_x")
    assert ds["total"].dims == ("sig_y", "sig_x")
    np.testing.assert_allclose(ds["s"].values, data.sum(axis=(2, 3)))
    np.testing.assert_allclose(ds["total"].values, data.sum(axis=(0, 1)))
    assert ds.attrs["graph"] == "test" and ds.attrs["node"] == "fs"


def test_run_iter_yields_per_partition(executor) -> None:
    g = _graph()
    g.udf(FrameSum(), id="fs")
    parts = list(g.run_iter(executor=executor))
    # executors that merge in a task tree (delayed) give one result, at the end
    assert len(parts) == (1 if getattr(executor, "reduce_tree", None) else 2)
    assert parts[-1].frames_done == 6 and parts[-1].finished


def test_registered_names_and_import_paths() -> None:
    g = _graph()
    g.udf("tests.graph.test_graph:Radius", id="rad", r=2.5)
    out = g.run(executor="inline")
    np.testing.assert_allclose(out["rad"]["v"].values, 2.5)


def test_text_view_shows_tree_and_parameters() -> None:
    g = _graph(roi=np.ones((2, 3), dtype=bool))
    g.udf("tests.graph.test_graph:Radius", id="rad", r=2.5)
    g.udf(FrameSum(), id="fs")
    text = str(g)
    assert text.splitlines()[0] == "graph 'test'"
    assert "source [memory]" in text
    assert "partition [partition] num_partitions=2 roi=6/6 positions" in text
    assert "├── rad [tests.graph.test_graph:Radius] r=2.5" in text
    assert "└── fs [tests.graph.test_graph:FrameSum]" in text


def test_text_view_shows_sinks_and_skipped_nodes() -> None:
    g = _graph()
    g.udf("sumsig", id="total", skip=True)
    g.udf("sum", id="frame")
    g.sink("zarr", id="results", inputs=["total", "frame"], path="{output_dir}/out.zarr")
    g.sink("npy", id="frames", inputs=["partition"], path="frames.npy", skip=True)
    lines = str(g).splitlines()
    assert "    ├── total [sumsig] (skipped)" in lines
    at = lines.index("sinks")
    assert lines[at:at + 3] == [
        "sinks",
        "├── results [zarr] <- total, frame path='{output_dir}/out.zarr'",
        "└── frames [npy] <- partition (skipped) path='frames.npy'",
    ]


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda g: g.udf("tests.graph.test_graph:Radius", id="rad", r=-3),
         r"node 'rad' \(tests.graph.test_graph:Radius\), parameter 'r': must be > 0; got -3"),
        (lambda g: g.udf("tests.graph.test_graph:Radius", id="rad", radius=3),
         r"node 'rad' .*parameter 'radius': unknown parameter; .* takes: label, r"),
        (lambda g: g.udf("tests.graph.test_graph:Radius", id="rad", r="big"),
         r"parameter 'r': must be float; got 'big'"),
        (lambda g: g.udf("nosuchudf", id="n"),
         r"node 'n'.*unknown UDF 'nosuchudf'; known UDFs: auto, com, "),
        (lambda g: g.udf("no.such.module:Thing", id="m"),
         r"node 'm': cannot import UDF type 'no.such.module:Thing'"),
        (lambda g: g.udf(FrameSum(), id="fs", input="nowhere"),
         r"node 'fs' .*parameter 'input': input 'nowhere' is not a node of this graph"),
    ],
)
def test_validation_errors_name_node_and_parameter(build, pattern) -> None:
    g = _graph()
    build(g)
    with pytest.raises(GraphValidationError, match=pattern):
        g.validate()


def test_roi_of_wrong_shape() -> None:
    g = _graph(roi=np.ones((3, 2), dtype=bool))
    g.udf(FrameSum(), id="fs")
    with pytest.raises(GraphValidationError,
                       match=r"node 'partition', parameter 'roi': must have the nav shape \(2, 3\)"):
        g.validate()


def test_roi_must_be_boolean() -> None:
    g = _graph(roi=np.ones((2, 3), dtype=np.uint8))
    g.udf(FrameSum(), id="fs")
    with pytest.raises(GraphValidationError, match="parameter 'roi': must be a boolean array"):
        g.run(executor="inline")


def test_duplicate_and_bad_ids() -> None:
    g = _graph()
    g.udf(FrameSum(), id="fs")
    with pytest.raises(GraphValidationError, match="a node with id 'fs' already exists"):
        g.udf(FrameSum(), id="fs")
    with pytest.raises(GraphValidationError, match="node ids start with a letter"):
        g.udf(FrameSum(), id="1 bad")


def test_graph_without_udfs_or_two_sources() -> None:
    g = _graph()
    with pytest.raises(GraphValidationError, match="no UDF node"):
        g.validate()
    g.source("memory", id="other", data=np.zeros((2, 2, 2, 2)))
    g.udf(FrameSum())
    with pytest.raises(GraphValidationError, match="node 'other': no partition node reads this source"):
        g.validate()


def test_source_errors_name_the_node() -> None:
    g = df.Graph("bad")
    g.source("npy", id="scan", path="x.npy", colour="blue")
    g.partition(input="scan")
    g.udf(FrameSum())
    with pytest.raises(GraphValidationError, match=r"node 'scan' \(npy\).*colour"):
        g.validate()


def test_empty_roi_runs_and_gives_fill_values(executor) -> None:
    g = _graph(roi=np.zeros((2, 3), dtype=bool))
    g.udf(FrameSum(), id="fs")
    out = g.run(executor=executor)
    assert np.isnan(out["fs"]["s"].values).all()
    assert (out["fs"]["total"].values == 0).all()


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        ({"type": "circular", "cx": 3, "cy": 3, "r": -1}, "r must be > 0; got -1"),
        ({"type": "ring", "cx": 3, "cy": 3, "r": 2, "ri": 3}, "inner radius ri must be >= 0 and smaller than r"),
        ({"type": "rectangular", "x": 0, "y": 0, "width": 0, "height": 2}, "width must be > 0"),
        ({"type": "circular", "cx": "middle", "cy": 3, "r": 2}, "cx must be a number"),
    ],
)
def test_declared_masks_are_range_checked(mask: dict, message: str) -> None:
    g = df.Graph("m")
    g.source("memory", data=np.ones((2, 2, 8, 8)))
    g.partition()
    g.udf("masks", id="bf", masks=[mask])
    with pytest.raises(GraphValidationError, match=message) as info:
        g.validate()
    assert (info.value.node, info.value.parameter) == ("bf", "masks")


@pytest.mark.parametrize("name", ["frames_per_partition", "num_partitions"])
def test_partition_sizes_name_their_parameter(name: str) -> None:
    g = df.Graph("p")
    g.source("memory", data=np.ones((2, 2, 8, 8)))
    g.partition(**{name: 0})
    g.udf("sum")
    with pytest.raises(GraphValidationError, match=f"parameter '{name}': must be an integer >= 1; got 0"):
        g.validate()
