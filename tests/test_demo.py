"""The README's demo command runs end to end and its checks pass."""

from __future__ import annotations

import subprocess
import sys


def test_demo_command(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "detflow.cli", "demo", "--dir", str(tmp_path), "--executor", "inline"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout
    assert proc.stdout.count("[ok]") == 6
    assert (tmp_path / "demo-scan.npy").exists()


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
    assert (tmp_path / "demo-scan.mib").exists()


def test_cli_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "demo" in proc.stdout
