"""The README's demo command runs end to end and its checks pass."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).parent.parent / "examples" / "graphs"


def test_demo_command(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "detflow.cli", "demo", "--dir", str(tmp_path), "--executor", "inline"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout
    assert proc.stdout.count("[ok]") == 6
    assert (tmp_path / "scan.npy").exists()


def test_live_demo_command(tmp_path) -> None:
    """The live demo: the Merlin simulator on local ports, the pipelined executor, active mode."""
    proc = subprocess.run(
        [sys.executable, "-m", "detflow.cli", "demo", "--live", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout
    assert proc.stdout.count("[ok]") == 5
    assert "16 partial results" in proc.stdout  # results arrived while the scan streamed
    assert (tmp_path / "scan.mib").exists()


def test_cli_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "demo" in proc.stdout


def test_demo_without_dir_says_the_folder_is_temporary() -> None:
    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "demo", "--executor", "inline"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "temporary folder" in proc.stdout and "--dir DIR" in proc.stdout
    tmp = proc.stdout.split("(a temporary folder, ", 1)[1].split(",", 1)[0]
    assert not Path(tmp).exists()  # it said so, and it was


def test_demo_dir_feeds_the_example_graphs(tmp_path) -> None:
    """The README's next step: ``detflow demo --dir examples/graphs && detflow run examples/graphs/...``."""
    graphs = tmp_path / "graphs"
    shutil.copytree(EXAMPLES, graphs)
    demo = subprocess.run([sys.executable, "-m", "detflow.cli", "demo", "--dir", str(graphs), "--executor",
                           "inline"], capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert f"detflow run {graphs / 'bright-field.yaml'}" in demo.stdout
    run = subprocess.run([sys.executable, "-m", "detflow.cli", "run", str(graphs / "bright-field.yaml"),
                          "--executor", "inline", "--no-progress"], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    data = np.load(graphs / "scan.npy")
    import zarr

    store = zarr.open_group(str(graphs / "scan.zarr"), mode="r")
    total = next(store[k] for k in store.array_keys() if k.startswith("sum"))
    np.testing.assert_allclose(np.asarray(total), data.sum(axis=(0, 1), dtype=np.float64), rtol=1e-6)
