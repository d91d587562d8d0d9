"""The simulator's inputs (HDF5 master files as DECTRIS writes them, stream dumps) and its CLI."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

import detflow as df
from detflow.errors import SourceFormatError
from detflow.nodes import SumSigUDF, SumUDF
from detflow.sources.live.dectris.control import SimplonClient
from detflow.sources.live.dectris.recording import load_recording, write_dump, write_master
from detflow.sources.live.dectris.sim import DectrisSimulator

from .conftest import random_frames


def run_sum(s: DectrisSimulator | dict[str, int], nav: tuple[int, int]) -> list:
    api, data = (s.api_port, s.data_port) if isinstance(s, DectrisSimulator) else (s["api"], s["data"])
    with df.LiveContext.make_with("inline") as ctx, ctx.make_connection("dectris").open(
            api_port=api, data_port=data, timeout=10) as conn:
        return ctx.run_udf(dataset=ctx.make_acquisition(conn=conn, nav_shape=nav), udf=[SumUDF(), SumSigUDF()])


def check(res: list, frames: np.ndarray) -> None:
    np.testing.assert_array_equal(res[0]["intensity"].data, frames.sum(axis=0, dtype=np.float64))
    np.testing.assert_array_equal(res[1]["intensity"].data.reshape(-1), frames.sum(axis=(1, 2), dtype=np.float64))


@pytest.mark.parametrize("compression", ["bslz4", "none"])
def test_a_master_file_with_two_data_files(tmp_path: Path, compression: str) -> None:
    frames = random_frames(10, 30)
    master = write_master(tmp_path / "scan_master.h5", frames, frames_per_file=20, compression=compression)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan_data_000001.h5", "scan_data_000002.h5",
                                                           "scan_master.h5"]
    rec = load_recording(master)
    assert (rec.n_frames, rec.sig_shape, rec.dtype, rec.encoding) == (30, (24, 32), np.uint16, "bs16-lz4<")
    if compression == "bslz4":  # the file's chunks go out as they are
        with h5py.File(tmp_path / "scan_data_000002.h5") as f:
            assert rec.blobs[21] == f["entry/data/data"].id.read_direct_chunk((1, 0, 0))[1]
    with DectrisSimulator(master, api_port=0, data_port=0) as s:
        check(run_sum(s, (5, 6)), frames)


def test_a_master_file_whose_data_file_is_missing(tmp_path: Path) -> None:
    master = write_master(tmp_path / "scan_master.h5", random_frames(10, 4))
    (tmp_path / "scan_data_000001.h5").unlink()
    with pytest.raises(FileNotFoundError, match="data_000001.*the data file it links to is missing"):
        load_recording(master)


@pytest.mark.parametrize("encoding", ["bs16-lz4<", "lz4<"])
def test_a_stream_dump(tmp_path: Path, encoding: str) -> None:
    frames = random_frames(11, 12)
    dump = write_dump(tmp_path / "series.dump", frames, encoding=encoding)
    raw = dump.read_bytes()
    dump.write_bytes(np.int64(5).tobytes() + b"stale" + raw)  # a part before the header, as in a real capture
    rec = load_recording(dump)
    assert (rec.n_frames, rec.encoding, rec.config["ntrigger"]) == (12, encoding, 12)
    with DectrisSimulator(dump, api_port=0, data_port=0) as s:
        check(run_sum(s, (3, 4)), frames)
    dump.write_bytes(raw[:-30])
    with pytest.raises(SourceFormatError, match="claims .* bytes.*cut short"):
        load_recording(dump)


def test_compression_is_served_as_configured() -> None:
    frames = random_frames(12, 8)
    with DectrisSimulator(frames, api_port=0, data_port=0) as s:
        api = SimplonClient("127.0.0.1", s.api_port)
        for compression, encoding in [("lz4", "lz4<"), ("none", "<"), ("bslz4", "bs16-lz4<")]:
            api.set_config("compression", compression)
            with df.LiveContext.make_with("inline") as ctx, ctx.make_connection("dectris").open(
                    api_port=s.api_port, data_port=s.data_port) as conn:
                res = ctx.run_udf(dataset=ctx.make_acquisition(conn=conn, nav_shape=(2, 4)), udf=SumUDF())
                assert conn.stream.encoding == encoding
            np.testing.assert_array_equal(res["intensity"].data, frames.sum(axis=0, dtype=np.float64))


@contextmanager
def sim_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, int], list[str]]]:
    proc = subprocess.Popen([sys.executable, "-m", "detflow.cli", "sim", "dectris", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ports: dict[str, int] = {}
    try:
        assert proc.stdout is not None
        timer = threading.Timer(60, proc.kill)  # a simulator that never prints its ports fails, not hangs
        timer.start()
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if m := re.match(r"(api|data) port: 127\.0\.0\.1:(\d+)$", lines[-1]):
                ports[m.group(1)] = int(m.group(2))
            if line.startswith("press Ctrl-C"):
                break
        timer.cancel()
        assert "api" in ports and "data" in ports, lines
        yield proc, ports, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        lines += out.splitlines() + err.splitlines()


def test_cli_serves_a_npy_on_free_ports_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    frames = random_frames(13, 20, np.uint32)
    np.save(tmp_path / "scan.npy", frames.reshape(4, 5, 24, 32))
    with sim_process(str(tmp_path / "scan.npy"), "--api-port", "0", "--data-port", "0") as (proc, ports, lines):
        assert re.search(r"20 frames of 32x24 uint32, bs32-lz4<, trigger_mode exte", lines[0]), lines
        check(run_sum(ports, (4, 5)), frames)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert "dectris simulator: stopped" in lines


def test_cli_errors(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "sim", "dectris", str(tmp_path / "nope.npy")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    (tmp_path / "junk.bin").write_bytes(b"\x01\x02\x03")
    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "sim", "dectris", str(tmp_path / "junk.bin")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "junk.bin: 3 stray bytes at offset 0" in proc.stderr, proc.stderr


def test_cli_starts_in_the_trigger_mode_asked_for(tmp_path: Path) -> None:
    from detflow.sources.live.dectris.acquisition import TriggerHooks

    frames = random_frames(15, 6)
    np.save(tmp_path / "scan.npy", frames)
    with sim_process(str(tmp_path / "scan.npy"), "--api-port", "0", "--data-port", "0", "--trigger-mode",
                     "inte") as (_, ports, lines):
        assert "trigger_mode inte" in lines[0]
        api = SimplonClient("127.0.0.1", ports["api"])
        assert (api.get_config("ntrigger"), api.get_config("nimages")) == (6, 1)
        with df.LiveContext.make_with("inline") as ctx, ctx.make_connection("dectris").open(
                api_port=ports["api"], data_port=ports["data"]) as conn:
            aq = ctx.make_acquisition(conn=conn, nav_shape=(2, 3), hooks=TriggerHooks())  # one trigger per image
            res = ctx.run_udf(dataset=aq, udf=SumUDF())
    np.testing.assert_array_equal(res["intensity"].data, frames.sum(axis=0, dtype=np.float64))


def test_cli_serves_the_cbor_stream_format(tmp_path: Path) -> None:
    frames = random_frames(19, 12, np.uint16)
    np.save(tmp_path / "scan.npy", frames.reshape(3, 4, 24, 32))
    with sim_process(str(tmp_path / "scan.npy"), "--api-port", "0", "--data-port", "0", "--format", "cbor") as (
            proc, ports, lines):
        assert "stream format cbor" in lines[0], lines
        assert SimplonClient("127.0.0.1", ports["api"]).get_stream_config("format") == "cbor"
        check(run_sum(ports, (3, 4)), frames)
