#!/usr/bin/env python3
"""Live benchmark, DECTRIS case (``bench_live.py --detector dectris``): bitshuffle-LZ4 over ZeroMQ.

The core benchmark's dataset (uint16, nav 128x128, sig 256x256: 2 GiB of pixels;
``--small``: nav 32x32) is served by ``detflow sim dectris`` from a subprocess on free
ports: the REST API and the ZeroMQ stream, every frame encoded once at start-up as
``bs16-lz4<`` (as a DECTRIS detector sends it), trigger mode ``exte`` (the images
follow the arm at once). Each receiver takes one series per run, in active mode (it
arms the detector itself):

* ``DectrisStream``: the receiver alone, blobs counted and dropped (no decoding): what
  the simulator, ZeroMQ and the loopback deliver (the ceiling);
* ``detflow pipelined SumUDF``: ``LiveContext()`` on its defaults (pipelined, one
  worker per core, as for every stream the workers decode),
  ``make_acquisition(conn=, nav_shape=)`` and ``run_udf(SumUDF())``: receiving,
  decoding in the workers, summing; ``detflow pipelined a core left free``: one worker
  fewer (the default for raw streams such as Merlin's), for comparison;
* ``LiberTEM-live SumUDF``: LiberTEM-live's ``LiveContext`` and its DECTRIS client
  (``make_connection("dectris")``, active mode, defaults) on the same simulator, in
  its own virtualenv (``benchmarks/setup_libertem.sh``), timed inside its process
  after a warm-up run. Its runs take turns with detflow's, so that both see the same
  load where the machine is shared.

Frames/s of the best of ``--repeats`` runs (after an untimed warm-up run) are printed
with the ratio detflow / LiberTEM-live; every SumUDF result is checked against the
numpy sum over the ``.npy``. Numbers are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import bench_core  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DectrisSim:
    api_port: int
    data_port: int
    nav: tuple[int, int]
    sig: tuple[int, int]

    @property
    def n_frames(self) -> int:
        return self.nav[0] * self.nav[1]

    @property
    def pixel_bytes(self) -> int:
        return self.n_frames * self.sig[0] * self.sig[1] * 2


@dataclass
class Row:
    label: str
    times: list[float] = field(default_factory=list)
    sums: set[float] = field(default_factory=set)
    error: str | None = None


def stream_only(sim: DectrisSim) -> tuple[float, float | None]:
    from detflow.sources.live.dectris.control import SimplonClient
    from detflow.sources.live.dectris.data import DectrisStream

    t0 = time.perf_counter()
    with DectrisStream("127.0.0.1", sim.data_port, timeout=30) as stream:
        series = SimplonClient("127.0.0.1", sim.api_port).arm()
        stream.read_header(30, series=series)
        blobs: list[bytes] = []
        n = 0
        while not stream.done:
            n += stream.read_blobs(1024, blobs)
            blobs.clear()
    if n != sim.n_frames:
        raise RuntimeError(f"received {n} of {sim.n_frames} frames")
    return time.perf_counter() - t0, None


_CONTEXTS: dict[str, object] = {}


def detflow_sum(cpus: int | None) -> Callable[[DectrisSim], tuple[float, float | None]]:
    def run(sim: DectrisSim) -> tuple[float, float | None]:
        import detflow as df
        from detflow.nodes import SumUDF

        key = str(cpus)
        if key not in _CONTEXTS:  # made once, outside the timing, as a user's would be
            _CONTEXTS[key] = df.LiveContext() if cpus is None else df.LiveContext.make_with("pipelined", cpus=cpus)
        ctx = _CONTEXTS[key]
        assert isinstance(ctx, df.LiveContext)
        t0 = time.perf_counter()
        with ctx.make_connection("dectris").open(api_port=sim.api_port, data_port=sim.data_port, timeout=30) as conn:
            aq = ctx.make_acquisition(conn=conn, nav_shape=sim.nav)
            res = ctx.run_udf(dataset=aq, udf=SumUDF())
        return time.perf_counter() - t0, float(res["intensity"].data.sum(dtype=np.float64))

    return run


#: LiberTEM-live's client as a server of timed runs: a warm-up, then one run per "run" line on stdin
_LIBERTEM_LIVE = """
import json, sys, time
from libertem.udf.sum import SumUDF
from libertem_live.api import LiveContext
api, data, ny, nx = (int(a) for a in sys.argv[1:5])
with LiveContext() as ctx:
    def once():
        t0 = time.perf_counter()
        with ctx.make_connection("dectris").open(api_host="127.0.0.1", api_port=api, data_host="127.0.0.1",
                                                 data_port=data) as conn:
            aq = ctx.make_acquisition(conn=conn, nav_shape=(ny, nx))
            res = ctx.run_udf(dataset=aq, udf=SumUDF())
        return time.perf_counter() - t0, float(res["intensity"].data.sum(dtype="float64"))
    once()
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        print("RESULT " + json.dumps(once()), flush=True)
"""


class LiberTEMLive:
    """LiberTEM-live's DECTRIS client in its own interpreter, one timed run per call (after a warm-up).

    Its runs alternate with detflow's, so both see the same load on a shared machine.
    """

    label = "LiberTEM-live SumUDF"

    def __init__(self, sim: DectrisSim) -> None:
        python = bench_core.LT_PYTHON
        if not Path(python).exists():
            raise RuntimeError("LiberTEM-live is not installed: bash benchmarks/setup_libertem.sh")
        self.proc = subprocess.Popen([str(python), "-c", _LIBERTEM_LIVE, str(sim.api_port), str(sim.data_port),
                                      str(sim.nav[0]), str(sim.nav[1])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._expect("READY")

    def _expect(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise RuntimeError(f"LiberTEM-live failed (exit {self.proc.poll()}): {err[-800:]}")

    def __call__(self, sim: DectrisSim) -> tuple[float, float | None]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        dt, total = json.loads(self._expect("RESULT "))
        return dt, total

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run(args: object) -> int:
    """The DECTRIS case of ``bench_live.py`` (its parsed arguments: small, repeats, receivers)."""
    small, repeats = bool(getattr(args, "small", False)), int(getattr(args, "repeats", 3))
    nav, sig = bench_core.SIZES["small" if small else "full"]
    npy, how = bench_core.ensure_dataset(nav, sig)
    log(f"dataset {npy.name}: {how}")
    bench_core.warm_page_cache(npy)
    arr = np.load(npy, mmap_mode="r")
    want = sum(float(arr[i : i + 16].sum(dtype=np.float64)) for i in range(0, arr.shape[0], 16))
    receivers: dict[str, Callable[[DectrisSim], tuple[float, float | None]]] = {
        "DectrisStream (no decoding)": stream_only,
        "detflow pipelined SumUDF": detflow_sum(None),
        "detflow pipelined a core left free SumUDF": detflow_sum(max(1, (os.cpu_count() or 1) - 1)),
    }
    log("starting detflow sim dectris (encoding every frame as bs16-lz4<) ...")
    t0 = time.perf_counter()
    with dectris_sim(npy) as sim:
        log(f"simulator up in {time.perf_counter() - t0:.1f} s: api {sim.api_port}, data {sim.data_port}")
        lt: LiberTEMLive | None = None
        try:
            lt = LiberTEMLive(sim)  # its warm-up run happens here
            receivers[lt.label] = lt
        except RuntimeError as err:
            log(f"  LiberTEM-live: {err}")
        rows = [Row(name) for name in receivers]
        try:
            for row, fn in zip(rows, receivers.values(), strict=True):
                if fn is lt:
                    continue
                try:
                    fn(sim)  # warm-up: worker processes, kernels, pools
                except Exception as err:
                    row.error = f"{type(err).__name__}: {err}"[:300]
            for rep in range(repeats):  # receivers in turn, so that each sees the machine as the others do
                for row, fn in zip(rows, receivers.values(), strict=True):
                    try:
                        dt, total = fn(sim)
                    except Exception as err:
                        row.error = f"{type(err).__name__}: {err}"[:300]
                        continue
                    row.times.append(dt)
                    if total is not None:
                        row.sums.add(total)
                    log(f"  [{row.label}] run {rep + 1}: {dt:.3f} s, {sim.n_frames / dt:.0f} frames/s")
        finally:
            if lt is not None:
                lt.close()
            for ctx in _CONTEXTS.values():
                ctx.close()  # type: ignore[attr-defined]
            _CONTEXTS.clear()
        if lt is None:
            rows.append(Row("LiberTEM-live SumUDF", error="not installed: bash benchmarks/setup_libertem.sh"))
    report(sim, rows, want, repeats)
    return 0


@contextmanager
def dectris_sim(npy: Path) -> Iterator[DectrisSim]:
    """``detflow sim dectris`` in a subprocess on free ports (after one untimed series), stopped with SIGINT."""
    arr = np.load(npy, mmap_mode="r")
    proc = subprocess.Popen([sys.executable, "-m", "detflow.cli", "sim", "dectris", str(npy), "--api-port", "0",
                             "--data-port", "0"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        ports: dict[str, int] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            if m := re.match(r"(api|data) port: ([\d.]+):(\d+)$", line.strip()):
                ports[m.group(1)] = int(m.group(3))
            if line.startswith("press Ctrl-C"):
                break
        if "data" not in ports:
            raise RuntimeError(f"the simulator did not start (exit code {proc.poll()})")
        nav = (int(arr.shape[0]), int(arr.shape[1]))
        sig = (int(arr.shape[2]), int(arr.shape[3]))
        first = DectrisSim(ports["api"], ports["data"], nav, sig)
        _, _ = stream_only(first)  # one series: the simulator computes its hashes
        yield first
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def report(sim: DectrisSim, rows: list[Row], want: float, repeats: int) -> None:
    p = print
    p("== live receive: DECTRIS over ZeroMQ on loopback, detflow sim dectris in a subprocess ==")
    p(f"machine:  {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    p(f"data:     {sim.n_frames} frames of {sim.sig[0]}x{sim.sig[1]} uint16, bs16-lz4<, "
      f"{sim.pixel_bytes / 2**30:.2f} GiB decompressed")
    p(f"runs:     best of {repeats} after a warm-up run, one series each (active mode: the client arms)")
    p("")
    header = ["receiver", "best s", "frames/s", "MB/s decoded"]
    lines = []
    for row in rows:
        if not row.times:
            lines.append([row.label, "-", "-", "-"])
            continue
        best = min(row.times)
        lines.append([row.label, f"{best:.3f}", f"{sim.n_frames / best:.0f}", f"{sim.pixel_bytes / best / 1e6:.0f}"])
    p(bench_core.table(header, lines))
    ours = next((r for r in rows if r.label == "detflow pipelined SumUDF" and r.times), None)
    lt = next((r for r in rows if r.label == "LiberTEM-live SumUDF" and r.times), None)
    if ours and lt:
        p(f"\ndetflow pipelined (live defaults) / LiberTEM-live (defaults), SumUDF, same simulator and data: "
          f"{min(lt.times) / min(ours.times):.2f}x")
    for row in rows:
        if row.sums:
            ok = all(s == want for s in row.sums)
            p(f"check:    {row.label}: sum of all frames {', '.join(f'{s:.0f}' for s in sorted(row.sums))}, "
              f"numpy {want:.0f}: {'same' if ok else 'DIFFERENT'}")
        if row.error:
            p(f"error:    {row.label}: {row.error}")
