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
    proc = detflow("run", EXAMPLES / "statistics.yaml", "--input", path, "--output-dir", tmp_path, "--progress")
    assert proc.returncode == 0, proc.stderr
    stats = xr.open_zarr(tmp_path / "scan_stats.zarr")
    f64 = data.astype(np.float64).reshape(-1, 64, 64)
    np.testing.assert_allclose(stats["std"].values, f64.std(axis=0), rtol=1e-9)
    np.testing.assert_allclose(stats["mean"].values, f64.mean(axis=0), rtol=1e-9)
    totals = xr.open_zarr(tmp_path / "scan_totals.zarr")
    np.testing.assert_array_equal(totals["intensity"].values, data.sum(axis=(2, 3)))
    np.testing.assert_array_equal(np.load(tmp_path / "scan-frames.npy"), data)
    assert "1024/1024" in proc.stderr  # the progress bar counted every frame


def test_run_says_where_it_wrote_and_how_fast(scan, tmp_path) -> None:
    import re

    data, path = scan
    proc = detflow("run", EXAMPLES / "statistics.yaml", "--input", path, "--output-dir", tmp_path, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    wrote = [line.removeprefix("wrote ") for line in proc.stdout.splitlines() if line.startswith("wrote ")]
    assert sorted(wrote) == sorted(str(tmp_path / n) for n in ("scan-frames.npy", "scan_stats.zarr",
                                                               "scan_totals.zarr"))
    assert all(Path(p).exists() for p in wrote)
    m = re.search(r"^read (\d+) frames \(([\d.]+) MiB, 4 partition\(s\)\) in ([\d.]+) s: ([\d.]+) GB/s$",
                  proc.stdout, re.M)
    assert m, proc.stdout
    assert int(m[1]) == 1024 and float(m[2]) == pytest.approx(data.nbytes / 2**20, abs=0.05)


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
        # a --set error names --set (not the graph file's line), with the closest names
        ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\nnodes:\n  com: {type: com}\n",
         ("--set", "com.radius=3"),
         r"^error: --set 'com.radius=3': unknown parameter; did you mean 'r'\? com takes: .*\br\b"),
        ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\nnodes:\n  com: {type: com}\n",
         ("--set", "cmo.r=3"), r"^error: --set 'cmo.r=3': no node 'cmo'; did you mean 'com'\? nodes: "),
        ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\nnodes:\n  com: {type: com}\n",
         ("--set", "source.pth=x.npy"),
         r"^error: --set 'source.pth=x.npy': unknown parameter; did you mean 'path'\? npy takes: "
         r"allow_short, nav_shape, path"),
        ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\nnodes:\n  com: {type: com}\n",
         ("--executor", "thread"), r"unknown executor 'thread'; did you mean 'threads'\?"),
        ("schema_version: 1\nsource: {type: npy, params: {pth: scan.npy}}\nnodes:\n  com: {type: com}\n",
         (), r"g\.yaml:2: node 'source' \(npy\), parameter 'pth': unknown parameter; did you mean 'path'\?"),
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


def test_convert_mib_to_zarr_with_a_progress_bar(tmp_path) -> None:
    import zarr

    from detflow.sources.mib_write import write_mib

    data = np.random.default_rng(1).integers(0, 4095, (4, 6, 16, 16), dtype=np.uint16)
    write_mib(tmp_path / "scan.hdr", data, counter_depth=12)
    proc = detflow("convert", str(tmp_path / "scan.hdr"), str(tmp_path / "scan.zarr"), "--executor", "inline",
                   "--progress")
    assert proc.returncode == 0, proc.stderr
    assert "export scan.zarr" in proc.stderr and "24/24" in proc.stderr  # the progress bar, frames done
    assert f"wrote {tmp_path / 'scan.zarr'}: nav (4, 6), sig (16, 16)" in proc.stdout
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(tmp_path / "scan.zarr"), mode="r")), data)
    again = detflow("convert", str(tmp_path / "scan.hdr"), str(tmp_path / "scan.zarr"))
    assert again.returncode == 2 and "exists" in again.stderr
    bad = detflow("convert", str(tmp_path / "scan.hdr"), str(tmp_path / "x.npy"), "--set", "sync_ofset=1")
    assert bad.returncode == 2 and "did you mean 'sync_offset'?" in bad.stderr
FAILING_UDF = '''
from detflow.nodes import UDF


class FailingUDF(UDF):
    def get_result_buffers(self):
        return {"x": self.buffer(kind="nav")}

    def process_tile(self, tile):
        raise RuntimeError("detector hiccup in the test UDF")
'''


def test_a_failed_run_exits_with_1(scan, tmp_path) -> None:
    _, path = scan
    (tmp_path / "failing_udf.py").write_text(FAILING_UDF)
    (tmp_path / "fails.yaml").write_text(
        "schema_version: 1\nname: fails\n"
        f"source: {{type: npy, params: {{path: '{path}'}}}}\n"
        "partition: {frames_per_partition: 256}\n"
        "nodes:\n  boom: {type: 'failing_udf:FailingUDF'}\n"
    )
    proc = detflow("validate", tmp_path / "fails.yaml", "--path", tmp_path)
    assert proc.returncode == 0, proc.stderr  # a graph that is right ...
    proc = detflow("run", tmp_path / "fails.yaml", "--path", tmp_path, "--executor", "inline", "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # ... whose run fails: 1, not 2
    assert "detector hiccup in the test UDF" in proc.stderr and "Traceback" not in proc.stderr


def _fake_dot(folder: Path) -> None:
    """A stand-in for graphviz's ``dot``: records its arguments and copies the DOT text to -o."""
    script = folder / "dot"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "args = sys.argv[1:]\n"
        "out = args[args.index('-o') + 1]\n"
        "open(out, 'w').write(' '.join(args) + '\\n' + sys.stdin.read())\n"
    )
    script.chmod(0o755)


def test_show_image_runs_graphviz_and_says_when_it_is_missing(tmp_path) -> None:
    import os

    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "show", str(EXAMPLES / "statistics.yaml"),
                           "--image", str(tmp_path / "g.png")], capture_output=True, text=True, timeout=180,
                          env=env)
    assert proc.returncode == 2 and "--image needs graphviz's 'dot' program" in proc.stderr
    assert not (tmp_path / "g.png").exists()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_dot(bin_dir)
    env["PATH"] = str(bin_dir)
    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "show", str(EXAMPLES / "statistics.yaml"),
                           "--image", str(tmp_path / "g.svg")], capture_output=True, text=True, timeout=180,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    drawn = (tmp_path / "g.svg").read_text()
    assert drawn.startswith(f"-Tsvg -o {tmp_path / 'g.svg'}\n")
    assert '"partition" -> "stats";' in drawn
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
    assert bad.returncode == 2 and "--set 'disk.threshold=3': must be >= 0 and < 1" in bad.stderr


_BASE = ("schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\nnodes:\n  com: {type: com}\n"
         "  bf: {type: masks, params: {masks: [{type: circular, cx: 32, cy: 32, r: 10}]}}\n")


@pytest.mark.parametrize(
    ("body", "args", "pattern"),
    [
        (_BASE + "sinks:\n  out: {type: zarr, inputs: [com]}\n", (), r"'out'.*'path' is required"),
        (_BASE + "sinks:\n  out: {type: zarr, inputs: [com], params: {path: '{outdir}/x.zarr'}}\n", (),
         r"node 'out'.*parameter 'path'.*unknown placeholder 'outdir'"),
        (_BASE, ("--set", "com.cx=500"),
         r"node 'com' \(com\), parameter 'cx': the centre must lie in the 64x64 frame .*got 500"),
        (_BASE, ("--set", "com.cy=-3"), r"node 'com' \(com\), parameter 'cy': the centre must lie in the 64x64"),
        (_BASE.replace("cx: 32, cy: 32, r: 10", "cx: 500, cy: 32, r: 10"), (),
         r"node 'bf' \(masks\), parameter 'masks': mask 0 \(circular\) has no pixel inside the 64x64 frame"),
        (_BASE.replace("{type: circular, cx: 32, cy: 32, r: 10}", "{type: rectangular, x: 70, y: 0, width: 5, "
                       "height: 5}"), (), r"parameter 'masks': mask 0 \(rectangular\) has no pixel inside"),
    ],
)
def test_validate_refuses_what_run_refuses(scan, tmp_path, body, args, pattern) -> None:
    import re

    _, path = scan
    graph = _graph_file(tmp_path, body)
    out = tmp_path / "out"
    for command in ("validate", "run"):
        proc = detflow(command, graph, "--input", path, "--output-dir", out, *args)
        assert proc.returncode == 2, (command, proc.stdout + proc.stderr)
        assert re.search(pattern, proc.stderr), (command, proc.stderr)
        assert not any(out.glob("*"))  # nothing written
        assert command == "run" or not out.exists()  # validate does not even make the folder


def test_validate_writes_nothing_and_refuses_an_existing_output(scan, tmp_path) -> None:
    _, path = scan
    out = tmp_path / "new" / "folder"
    args = (EXAMPLES / "bright-field.yaml", "--input", path, "--output-dir", out)
    proc = detflow("validate", *args)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "new").exists()
    assert detflow("run", *args, "--no-progress").returncode == 0
    proc = detflow("validate", *args)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert detflow("validate", *args, "--overwrite").returncode == 0


def test_validate_counts_the_partitions_the_run_cuts(scan, tmp_path) -> None:
    _, path = scan
    graph = _graph_file(tmp_path, "schema_version: 1\nsource: {type: npy, params: {path: scan.npy}}\n"
                                  "nodes:\n  total: {type: sumsig}\nexecutor: {type: threads, params: {cpus: 3}}\n")
    proc = detflow("validate", graph, "--input", path)
    assert proc.returncode == 0, proc.stderr
    assert "1 node(s) over nav (32, 32) sig (64, 64) uint16, 3 partition(s)" in proc.stdout  # one per worker
    proc = detflow("validate", graph, "--input", path, "--executor", "inline")
    assert "uint16, 1 partition(s)" in proc.stdout
    proc = detflow("run", graph, "--input", path, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "read 1024 frames (8.0 MiB, 3 partition(s))" in proc.stdout


PLUGIN_UDF = """
import pathlib

pathlib.Path(__file__).with_name("imported.txt").write_text("the module ran")

from detflow.nodes import UDF


class TotalUDF(UDF):
    def get_result_buffers(self):
        return {"total": self.buffer(kind="nav")}

    def process_frame(self, frame):
        self.results.total[:] = frame.sum()


def double(frames):
    return frames * 2
"""


def _plugin_graph(tmp_path: Path, scan_path: Path, extra: str = "") -> tuple[Path, Path]:
    folder = tmp_path / "shared-graphs"
    folder.mkdir()
    (folder / "plugin_udf.py").write_text(PLUGIN_UDF)
    graph = folder / "g.yaml"
    graph.write_text("schema_version: 1\nname: plugin\n"
                     f"source: {{type: npy, params: {{path: '{scan_path}'}}}}\n"
                     f"nodes:\n  mine: {{type: 'plugin_udf:TotalUDF'}}\n{extra}")
    return graph, folder / "imported.txt"


@pytest.mark.parametrize("cwd", ["elsewhere", "graph folder"])
def test_a_module_next_to_the_graph_file_is_not_imported_unless_listed(scan, tmp_path, cwd) -> None:
    _, path = scan
    graph, marker = _plugin_graph(tmp_path, path)
    where = graph.parent if cwd == "graph folder" else tmp_path
    for command in ("validate", "run"):
        proc = detflow(command, graph, "--no-progress" if command == "run" else "--overwrite", cwd=where)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "node 'mine'" in proc.stderr and "cannot import" in proc.stderr and "plugin_udf" in proc.stderr
        assert not marker.exists()  # the module never ran
    proc = detflow("run", graph, "--path", graph.parent, "--no-progress", "--output-dir", tmp_path, cwd=where)
    assert proc.returncode == 0, proc.stderr
    assert marker.exists() and "mine: total (32, 32)" in proc.stdout


def test_python_path_in_a_graph_file_needs_the_users_consent(scan, tmp_path) -> None:
    _, path = scan
    graph, marker = _plugin_graph(tmp_path, path, "python_path: [.]\n")
    proc = detflow("validate", graph)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "g.yaml:6: python_path" in proc.stderr and "--trust-python-path" in proc.stderr
    assert not marker.exists()
    shown = detflow("show", graph)
    assert shown.returncode == 0, shown.stderr
    assert f"python_path (not used without --trust-python-path): {graph.parent}" in shown.stdout
    proc = detflow("validate", graph, "--trust-python-path")
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()


def test_show_and_validate_list_imports_writes_and_connections(scan, tmp_path) -> None:
    _, path = scan
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "plugin_udf.py").write_text(PLUGIN_UDF)
    live = folder / "live.yaml"
    live.write_text(
        "schema_version: 2\nname: live\n"
        "sources:\n  det: {type: merlin, params: {data_host: 10.0.0.5, nav_shape: [4, 4]}}\n"
        "nodes:\n  part: {type: partition, input: det}\n"
        "  twice: {type: function, kind: frames, input: part, params: {func: 'plugin_udf:double'}}\n"
        "  mine: {type: 'plugin_udf:TotalUDF', kind: udf, input: twice, save_results: true}\n"
        "sinks:\n  out: {type: zarr, inputs: [mine], params: {path: '{output_dir}/{input_stem}-live.zarr'}}\n"
        "executor: {type: dask, params: {address: 'tcp://10.0.0.9:8786'}}\n")
    proc = detflow("show", live)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout[proc.stdout.index("imports"):]
    assert "  twice: plugin_udf:double (not found)" in text and "  mine: plugin_udf:TotalUDF (not found)" in text
    assert "  out: {output_dir}/{input_stem}-live.zarr" in text
    assert "  mine.save_results: {output_dir}/{input_stem}_mine.zarr" in text
    assert "  det: 10.0.0.5:6342" in text and "  det: 127.0.0.1:6341" in text  # data given, control default
    assert "  executor: tcp://10.0.0.9:8786" in text
    proc = detflow("show", live, "--path", folder)
    assert f"  mine: plugin_udf:TotalUDF ({folder / 'plugin_udf.py'})" in proc.stdout
    assert not (folder / "imported.txt").exists()  # showing imports nothing
    offline = folder / "offline.yaml"
    offline.write_text(f"schema_version: 1\nname: off\nsource: {{type: npy, params: {{path: '{path}'}}}}\n"
                       "nodes:\n  mine: {type: 'plugin_udf:TotalUDF', save_results: true}\n")
    proc = detflow("validate", offline, "--path", folder, "--output-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert f"  mine.save_results: {tmp_path / 'out' / 'scan_mine.zarr'}" in proc.stdout  # the path filled in
    assert "connects to\n  (nothing)" in proc.stdout


def test_progress_bars_are_quiet_when_stderr_is_not_a_terminal(scan, tmp_path) -> None:
    _, path = scan
    proc = detflow("run", EXAMPLES / "statistics.yaml", "--input", path, "--output-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1024/1024" not in proc.stderr and "frame/s" not in proc.stderr
    proc = detflow("convert", path, tmp_path / "copy.npy", "--executor", "inline")
    assert proc.returncode == 0, proc.stderr
    assert "export copy.npy" not in proc.stderr
    proc = detflow("convert", path, tmp_path / "again.npy", "--executor", "inline", "--progress")
    assert "export again.npy" in proc.stderr and "1024/1024" in proc.stderr  # forced, it is there


def test_the_dectris_simulator_shows_a_progress_bar_per_series(tmp_path) -> None:
    pytest.importorskip("zmq")
    import signal

    from tests.sources.live.dectris.conftest import random_frames
    from tests.sources.live.dectris.test_sim import check, run_sum, sim_process

    frames = random_frames(13, 20, np.uint32)
    np.save(tmp_path / "scan.npy", frames.reshape(4, 5, 24, 32))
    with sim_process(str(tmp_path / "scan.npy"), "--api-port", "0", "--data-port", "0") as (proc, ports, lines):
        check(run_sum(ports, (4, 5)), frames)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    bar = [line for line in lines if line.startswith("series 1:")]
    assert bar and "20/20" in bar[-1], lines
    with sim_process(str(tmp_path / "scan.npy"), "--api-port", "0", "--data-port", "0",
                     "--no-progress") as (proc, ports, lines):
        check(run_sum(ports, (4, 5)), frames)
    assert not any(line.startswith("series 1") for line in lines), lines


def test_the_asi_tpx3_simulator_shows_a_progress_bar_per_client(tmp_path) -> None:
    from tests.sources.live.asi_tpx3.test_sim_cli import graph, sim_process

    data = np.random.default_rng(3).integers(0, 3, (4, 5, 16, 16), dtype=np.uint16)
    np.save(tmp_path / "scan.npy", data)
    with sim_process(str(tmp_path / "scan.npy"), "--chunk-frames", "4") as (port, lines):
        res = graph("asi_tpx3", data_port=port, wait_timeout=30).run(executor="inline")
        np.testing.assert_array_equal(res["total"]["intensity"].data, data.sum(axis=(0, 1)))
    assert any(line.startswith("client 1: 100%") for line in lines), lines
    with sim_process(str(tmp_path / "scan.npy"), "--no-progress") as (port, lines):
        graph("asi_tpx3", data_port=port, wait_timeout=30).run(executor="inline")
    assert not any(line.startswith("client 1") for line in lines), lines


def test_writing_a_mib_acquisition_shows_a_progress_bar(tmp_path, capsys) -> None:
    from detflow.sources.mib import MibSource
    from detflow.sources.mib_write import write_mib

    data = np.random.default_rng(2).integers(0, 4095, (3, 200, 8, 8), dtype=np.uint16)
    write_mib(tmp_path / "quiet.hdr", data)
    assert "frame" not in capsys.readouterr().err
    write_mib(tmp_path / "scan.hdr", data, frames_per_file=250, progress=True)
    err = capsys.readouterr().err
    assert "write scan.mib" in err and "600/600" in err, err
    src = MibSource(str(tmp_path / "scan.hdr"))
    assert tuple(src.meta.nav_shape) == (3, 200)  # the files written with the bar are whole
    src.close()
