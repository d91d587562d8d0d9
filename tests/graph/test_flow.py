"""Frame chains, references, passes, result nodes and validation of graphs with them."""

from __future__ import annotations

import numpy as np
import pytest

import detflow as df
from detflow.errors import GraphValidationError
from tests.graph.dpc_data import disk_frames

CALLS: list[int] = []


def counting_identity(block: np.ndarray) -> np.ndarray:
    """A frame function that counts the blocks it sees (inline executor: same process)."""
    CALLS.append(block.shape[0])
    return block


def _scan(shape=(4, 6, 16, 16), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.uint16)


def _graph(data: np.ndarray, **part) -> df.Graph:
    g = df.Graph("flow")
    g.source("memory", data=data)
    g.partition(**({"num_partitions": 3} | part))
    return g


def test_chain_correct_bin_masks_equals_numpy(executor) -> None:
    data = _scan()
    dark = np.random.default_rng(1).uniform(0, 50, size=(16, 16)).astype(np.float32)
    g = _graph(data)
    g.frames("correct", id="corrected", dark=dark)
    g.frames("bin", id="binned", input="corrected", factor=2)
    masks = [{"type": "circular", "cx": 4, "cy": 4, "r": 3}, {"type": "ring", "cx": 4, "cy": 4, "r": 4, "ri": 2}]
    g.udf("masks", id="fields", input="binned", masks=masks)
    g.udf("sum", id="total", input="corrected")
    out = g.run(executor=executor)
    corrected = data.astype(np.float64) - dark
    binned = corrected.reshape(4, 6, 8, 2, 8, 2).sum(axis=(3, 5))
    yy, xx = np.indices((8, 8))
    m0 = (yy - 4) ** 2 + (xx - 4) ** 2 <= 9
    m1 = ((yy - 4) ** 2 + (xx - 4) ** 2 <= 16) & ((yy - 4) ** 2 + (xx - 4) ** 2 > 4)
    got = out["fields"]["intensity"].values
    np.testing.assert_allclose(got[..., 0], (binned * m0).sum(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_allclose(got[..., 1], (binned * m1).sum(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_allclose(out["total"]["intensity"].values, corrected.sum(axis=(0, 1)), rtol=1e-5)


def test_shared_chain_prefix_runs_once_per_block() -> None:
    from detflow.executors.inline import InlineExecutor

    data = _scan((2, 3, 8, 8))
    g = _graph(data, num_partitions=2)
    g.frames("tests.graph.test_flow:counting_identity", id="ident")
    g.frames("bin", id="b2", input="ident", factor=2)
    g.udf("sum", id="s1", input="ident")
    g.udf("sumsig", id="s2", input="b2")
    g.udf("sum", id="s3", input="b2")
    CALLS.clear()
    out = g.run(executor=InlineExecutor())
    assert sum(CALLS) == 6  # every frame once, though three UDFs read from it
    np.testing.assert_allclose(out["s3"]["intensity"].values,
                               data.astype(float).reshape(2, 3, 4, 2, 4, 2).sum(axis=(0, 1, 3, 5)))


def test_mask_made_for_the_frame_before_bin_names_both_nodes() -> None:
    g = _graph(_scan((2, 2, 16, 16)))
    g.frames("bin", id="binned", factor=2)
    g.udf("masks", id="bf", input="binned",
          mask_factories=[lambda: np.ones((16, 16), dtype=bool)])
    with pytest.raises(GraphValidationError, match=r"node 'bf'.*'binned' gives frames of \(8, 8\)"):
        g.validate()


def test_frame_node_parameter_errors_name_the_node() -> None:
    g = _graph(_scan((2, 2, 16, 16)))
    g.frames("bin", id="binned", factor=3)
    g.udf("sum", input="binned")
    with pytest.raises(GraphValidationError, match=r"node 'binned' \(bin\), parameter 'factor'"):
        g.validate()


def _dpc_graph(data: np.ndarray) -> df.Graph:
    g = _graph(data)
    g.udf("sum")
    g.result("find_disk", id="disk", input="sum")
    g.udf("com", cx=g.ref("disk.cx"), cy=g.ref("disk.cy"), r=g.ref("disk.r"))
    g.result("idpc", id="phase", input="com")
    return g


def test_plan_and_text_show_the_passes() -> None:
    g = _dpc_graph(disk_frames())
    plan = g.plan()
    assert [(p.level, p.udfs, p.results) for p in plan] == [(0, ("sum",), ("disk",)), (1, ("com",), ("phase",))]
    text = str(g)
    assert "pass 1: read 'partition' (source 'source'): sum; then disk" in text
    assert "pass 2: read 'partition' (source 'source'): com; then phase" in text


def test_udfs_of_one_level_share_one_read() -> None:
    g = _graph(_scan())
    g.frames("bin", id="b", factor=2)
    for name in ("sum", "sumsig", "stddev"):
        g.udf(name, input="b")
    g.udf("logsum")
    assert [p.udfs for p in g.plan()] == [("sum", "sumsig", "stddev", "logsum")]


def test_run_iter_yields_partial_result_nodes() -> None:
    from detflow.executors.inline import InlineExecutor

    g = _dpc_graph(disk_frames())
    seen = []
    for res in g.run_iter(executor=InlineExecutor(), max_rate=None):
        phase = res["phase"].get("phase")
        seen.append((res.pass_index, res.partitions_done, None if phase is None else np.asarray(phase.data)))
    second = [s for s in seen if s[0] == 1]
    assert [s[1] for s in second] == [1, 2, 3]
    first_phase = second[0][2]
    assert first_phase is not None and np.isnan(first_phase).any() and np.isfinite(first_phase).any()
    assert np.isfinite(second[-1][2]).all()
    assert all(s[2] is None for s in seen if s[0] == 0)  # idpc waits for com, which waits for the disk


def test_reference_errors_name_the_nodes() -> None:
    g = _graph(_scan())
    g.udf("sum")
    g.result("find_disk", id="disk", input="sum")
    g.udf("com", cx=g.ref("disk.centre_x"))
    with pytest.raises(GraphValidationError, match=r"node 'com'.*parameter 'cx'.*'disk.centre_x'.*has no result "
                                                   r"'centre_x'; it has: cx, cy, r"):
        g.validate()
    g = _graph(_scan())
    g.udf("com", cx=g.ref("nowhere.cx"))
    with pytest.raises(GraphValidationError, match=r"node 'com'.*no node 'nowhere'"):
        g.plan()


def test_a_reference_cycle_is_named_with_its_path() -> None:
    g = _graph(_scan())
    g.udf("com", id="a", cx=g.ref("d2.cx"))
    g.result("find_disk", id="d1", input="a", buffer="field_y")
    g.udf("com", id="b", cx=g.ref("d1.cx"))
    g.result("find_disk", id="d2", input="b", buffer="field_x")
    with pytest.raises(GraphValidationError, match=r"cycle: a -> d2 -> b -> d1 -> a"):
        g.plan()


def test_skipping_a_referenced_node_names_the_referrers() -> None:
    g = _dpc_graph(disk_frames())
    from detflow.graph.config import apply_overrides

    with pytest.raises(GraphValidationError, match=r"node 'disk'.*skipped, but 'com' needs it"):
        apply_overrides(g, {"disk": {"skip": True}}).plan()
    g2 = apply_overrides(g, {"disk": {"skip": True}, "com": {"skip": True}, "phase": {"skip": True}})
    assert [p.udfs for p in g2.plan()] == [("sum",)]


def test_overrides_reach_frame_and_result_nodes() -> None:
    from detflow.graph.config import parse_set

    g = _dpc_graph(disk_frames())
    g.frames("bin", id="b", factor=2)
    g.udf("sumsig", id="small", input="b")
    sets = parse_set(g, ["disk.threshold=0.3", "b.factor=4", "com.cy={ref: disk.cx}"])
    assert sets == {"disk": {"threshold": 0.3}, "b": {"factor": 4}, "com": {"cy": df.graph.Ref("disk", "cx")}}
    out = g.call(nodes={"disk": {"threshold": 0.3}, "b": {"factor": 4}}, executor="inline")
    total = disk_frames().astype(np.float64).sum(axis=(0, 1))
    ys, _ = np.nonzero(total > 0.3 * total.max())
    assert float(out["disk"]["cy"]) == pytest.approx(ys.mean())
    assert out["small"]["intensity"].shape == (12, 14)


def test_several_sources_feed_each_other() -> None:
    dark = np.full((2, 2, 8, 8), 3.0, dtype=np.float32)
    data = _scan((3, 3, 8, 8)).astype(np.float32)
    g = df.Graph("two")
    g.source("memory", id="dark_scan", data=dark)
    g.source("memory", id="scan", data=data)
    g.partition(input="dark_scan", id="dp")
    g.partition(input="scan", id="p", num_partitions=2)
    g.udf("stddev", id="dm", input="dp")
    g.frames("correct", id="c", input="p", dark=g.ref("dm.mean"))
    g.udf("sum", input="c")
    g.udf("sum", id="raw", input="p")  # needs nothing: shares the first level, on its own source
    assert [(p.source, p.udfs) for p in g.plan()] == [("dark_scan", ("dm",)), ("scan", ("raw",)),
                                                      ("scan", ("sum",))]
    out = g.run(executor="inline")
    np.testing.assert_allclose(out["sum"]["intensity"].values, (data - 3.0).sum(axis=(0, 1)), rtol=1e-6)


def test_yaml_v2_round_trip_with_refs_and_kinds(tmp_path) -> None:
    text = """
schema_version: 2
name: v2
sources:
  scan: {type: npy, params: {path: scan.npy}}
nodes:
  part: {type: partition, input: scan, params: {num_partitions: 2}}
  ident: {type: "tests.graph.test_flow:counting_identity", kind: frames}
  sum: {type: sum, input: ident}
  disk: {type: find_disk, input: sum}
  com: {type: com, params: {cx: {ref: disk.cx}, cy: {ref: disk.cy}}}
"""
    (tmp_path / "g.yaml").write_text(text)
    np.save(tmp_path / "scan.npy", disk_frames())
    g = df.Graph.from_yaml(tmp_path / "g.yaml")
    assert isinstance(g["ident"], df.graph.FramesNode) and g["com"].input == "part"
    again = df.Graph.from_dict(g.to_dict())
    assert again.to_dict() == g.to_dict()
    assert again.to_dict()["nodes"]["com"]["params"]["cx"] == {"ref": "disk.cx"}
    assert again.to_dict()["nodes"]["ident"]["kind"] == "frames"
    out = g.run(executor="inline")
    total = disk_frames().astype(np.float64).sum(axis=(0, 1))
    _, xs = np.nonzero(total > 0.5 * total.max())
    assert float(out["disk"]["cx"]) == pytest.approx(xs.mean())
    assert np.isfinite(out["com"]["field_x"].values).all()


def test_yaml_v2_function_without_kind_is_an_error(tmp_path) -> None:
    (tmp_path / "g.yaml").write_text("""schema_version: 2
sources: {scan: {type: npy, params: {path: scan.npy}}}
nodes:
  part: {type: partition}
  f: {type: "tests.graph.test_flow:counting_identity"}
""")
    with pytest.raises(GraphValidationError, match=r"g.yaml:5: node 'f'.*give 'kind: frames'"):
        df.Graph.from_yaml(tmp_path / "g.yaml")


def test_second_pass_over_a_live_stream_is_refused() -> None:
    from detflow.executors.inline import InlineExecutor
    from detflow.live import LiveContext

    data = disk_frames()
    lctx = LiveContext(InlineExecutor())
    with lctx.make_connection("memory").open(data=data) as conn:
        aq = lctx.make_acquisition(conn=conn, nav_shape=data.shape[:2])
        g = df.Graph("live")
        g.source(aq, id="live")
        g.partition()
        g.udf("sum")
        g.result("find_disk", id="disk", input="sum")
        g.udf("com", cx=g.ref("disk.cx"))
        with pytest.raises(GraphValidationError, match=r"'com' would need a second pass over the live stream.*"
                                                       r"record it"):
            g.validate()


def test_live_source_runs_frames_udfs_and_result_nodes_in_one_pass() -> None:
    from detflow.executors.inline import InlineExecutor
    from detflow.live import LiveContext

    data = disk_frames()
    lctx = LiveContext(InlineExecutor())
    with lctx.make_connection("memory").open(data=data) as conn:
        aq = lctx.make_acquisition(conn=conn, nav_shape=data.shape[:2], frames_per_partition=42)
        g = df.Graph("live")
        g.source(aq, id="live")
        g.partition()
        g.frames("bin", id="b", factor=2)
        g.udf("sum", input="b")
        g.result("find_disk", id="disk", input="sum")
        assert len(g.plan()) == 1
        steps = [float(r["disk"]["r"].data) if r["disk"] else None for r in g.run_iter(max_rate=None)]
    assert len(steps) == 4 and all(s is not None for s in steps)  # the result node runs on partial sums
    binned = data.astype(np.float64).reshape(12, 14, 16, 2, 16, 2).sum(axis=(0, 1, 3, 5))
    assert steps[-1] == pytest.approx(np.sqrt(np.count_nonzero(binned > 0.5 * binned.max()) / np.pi))
