"""Graph files: reading, round trips, and errors that point into the file."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import detflow as df
from detflow.errors import GraphValidationError

GOOD = """\
schema_version: 1
name: bf
source: {type: npy, params: {path: scan.npy}}
partition: {frames_per_partition: 8}
nodes:
  sum: {type: sum}
  com:
    type: com
    params: {cx: 8.0, cy: 8.0, r: 5.0}
  fields: {type: masks, params: {masks: [{type: circular, cx: 8, cy: 8, r: 3}]}, save_results: true}
sinks:
  out: {type: zarr, inputs: [sum, com], params: {path: "{output_dir}/{input_stem}.zarr"}}
executor: {type: inline}
"""


@pytest.fixture
def scan(tmp_path):
    data = np.random.default_rng(0).integers(0, 100, size=(4, 6, 16, 16)).astype(np.uint16)
    np.save(tmp_path / "scan.npy", data)
    return data


def _write(tmp_path, text: str, name: str = "g.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_read_and_run(tmp_path, scan) -> None:
    g = df.Graph.from_yaml(_write(tmp_path, GOOD))
    assert g.name == "bf" and g.executor == {"type": "inline", "params": {}}
    assert g.nodes["source"].params["path"] == str(tmp_path / "scan.npy")  # relative to the file
    out = g.run()
    np.testing.assert_allclose(out["sum"]["intensity"].values, scan.sum(axis=(0, 1)))
    assert (tmp_path / "scan.zarr").exists()


def test_round_trip(tmp_path, scan) -> None:
    g = df.Graph.from_yaml(_write(tmp_path, GOOD))
    text = g.to_yaml(tmp_path / "copy.yaml")
    again = df.Graph.from_yaml(tmp_path / "copy.yaml")
    assert again.to_dict() == g.to_dict()
    assert "schema_version: 2" in text  # a version 1 file is written back as version 2


def test_python_graph_round_trips(tmp_path) -> None:
    g = df.Graph("made-in-python")
    g.source("raw", path="/data/x.raw", dtype="uint16", nav_shape=[4, 4], sig_shape=[8, 8])
    g.partition(num_partitions=2)
    g.udf("com", id="com", cx=4.0, cy=4.0, r=3.0, save_results=True)
    g.sink("zarr", inputs=["com"], path="out.zarr")
    d = g.to_dict()
    assert df.Graph.from_dict(d).to_dict() == d


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("schema_version: 1\nsource: {type: npy, params: {path: a.npy}\n",
         r"g\.yaml:3: YAML syntax error"),
        ("name: x\n", r"g\.yaml:1: missing 'schema_version'"),
        ("schema_version: 7\n", r"g\.yaml:1: schema_version 7 is not supported; known: 1"),
        ("schema_version: 1\nsource: {type: npy}\nnodes: {a: {type: sum}}\ncolour: red\n",
         r"g\.yaml:4: unknown key 'colour' in the graph file"),
        ("schema_version: 1\nsource: {type: npy}\nnodes:\n  a: {type: sum, skipp: true}\n",
         r"g\.yaml:4: node 'a': unknown key 'skipp' in node 'a'; allowed: input, params, save_results, skip, type"),
        ("schema_version: 1\nsource: {type: npy}\nnodes:\n  a: {type: sum, skip: maybe}\n",
         r"g\.yaml:4: node 'a', parameter 'skip': must be true or false; got 'maybe'"),
        ("schema_version: 1\nsource: {type: npy}\nnodes:\n  a: {type: sum}\nsinks:\n"
         "  s: {type: zarr, inputs: [a, b], params: {path: x.zarr}}\n",
         r"g\.yaml:6: node 's' \(zarr\), parameter 'inputs': input 'b' is not a node of this graph"),
        ("schema_version: 1\nsource: {type: npy}\nnodes:\n  a: {type: sum, input: b}\n  b: {type: sum, input: a}\n",
         r"the inputs form a cycle: a -> b -> a"),
        ("schema_version: 1\nsource: {type: npy}\n", r"g\.yaml:1: the graph has no nodes"),
    ],
)
def test_structural_errors_point_into_the_file(tmp_path, text: str, pattern: str) -> None:
    with pytest.raises(GraphValidationError, match=pattern):
        df.Graph.from_yaml(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("node", "pattern"),
    [
        ("  com: {type: com, params: {cx: 8.0, radius: 5}}",
         r"g\.yaml:6: node 'com' \(com\), parameter 'radius': unknown parameter; "
         r"did you mean 'r'\? com takes: cx, cy, flip_y, r, regression, ri"),
        ("  com: {type: com, params: {cx: 8.0, r: -5}}",
         r"g\.yaml:6: node 'com' \(com\), parameter 'r': must be > 0; got -5"),
        ("  com:\n    type: com\n    params:\n      cx: eight",
         r"g\.yaml:9: node 'com' \(com\), parameter 'cx': must be float; got 'eight'"),
        ("  com: {type: comm}", r"g\.yaml:6: node 'com', parameter 'type': unknown UDF 'comm'; "
         r"did you mean 'com'\? known UDFs: auto, com"),
        ("  bf: {type: masks, params: {masks: [{type: circle, cx: 1, cy: 1, r: 1}]}}",
         r"g\.yaml:6: node 'bf' \(masks\), parameter 'masks': mask 0: unknown type 'circle'; "
         r"did you mean 'circular'\? known: circular"),
        ("  bf: {type: masks, params: {masks: [{type: circular, cx: 1, cy: 1, r: 1}]}}\n"
         "  bad: {type: masks, params: {masks: [{type: npy, path: missing.npy}]}}",
         r"node 'bad' \(masks\), parameter 'masks': cannot make the masks"),
    ],
)
def test_parameter_errors_name_file_line_node_parameter(tmp_path, scan, node: str, pattern: str) -> None:
    text = ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\npartition: {}\n"
            f"nodes:\n  sum: {{type: sum}}\n{node}\n")
    g = df.Graph.from_yaml(_write(tmp_path, text))
    with pytest.raises(GraphValidationError, match=pattern):
        g.validate()


def test_missing_data_file_names_it(tmp_path) -> None:
    g = df.Graph.from_yaml(_write(tmp_path, GOOD))
    with pytest.raises(FileNotFoundError, match="scan.npy"):
        g.validate()


def test_safe_loader_runs_no_code(tmp_path) -> None:
    text = "schema_version: 1\nsource: !!python/object/apply:os.system ['echo pwned']\nnodes: {a: {type: sum}}\n"
    with pytest.raises(GraphValidationError, match="YAML syntax error.*python/object"):
        df.Graph.from_yaml(_write(tmp_path, text))


def test_user_udf_by_import_path(tmp_path, scan) -> None:
    text = ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\n"
            "nodes:\n  mine: {type: 'tests.graph.test_graph:Radius', params: {r: 2.5}}\n")
    out = df.Graph.from_yaml(_write(tmp_path, text)).run(executor="inline")
    np.testing.assert_allclose(out["mine"]["v"].values, 2.5)


def test_corrections_in_a_graph_file(tmp_path, scan) -> None:
    dark = np.full((16, 16), 3.0, dtype=np.float32)
    gain = np.random.default_rng(4).uniform(0.5, 1.5, size=(16, 16)).astype(np.float32)
    np.save(tmp_path / "dark.npy", dark)
    np.save(tmp_path / "gain.npy", gain)
    text = ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\n"
            "partition: {num_partitions: 3, corrections: {dark: dark.npy, gain: gain.npy}}\n"
            "nodes:\n  total: {type: sum}\n")
    g = df.Graph.from_yaml(_write(tmp_path, text))
    out = g.run(executor="inline")
    expected = ((scan.astype(np.float64) - dark) * gain).sum(axis=(0, 1))
    np.testing.assert_allclose(out["total"]["intensity"].values, expected, rtol=1e-5)
    again = df.Graph.from_dict(g.to_dict())
    assert again.nodes["partition"].corrections == {"dark": str(tmp_path / "dark.npy"),
                                                     "gain": str(tmp_path / "gain.npy")}


def test_executor_shorthand_keys(tmp_path) -> None:
    text = ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\nnodes: {s: {type: sum}}\n"
            "executor: {type: dask, address: 'tcp://127.0.0.1:8786'}\n")
    g = df.Graph.from_yaml(_write(tmp_path, text))
    assert g.executor == {"type": "dask", "params": {"address": "tcp://127.0.0.1:8786"}}
