#!/usr/bin/env python3
"""Live benchmark, ASI Timepix3 case (``bench_live.py --detector asi``): sparse CSR events over TCP.

A scan of sparse frames (nav 256x256, sig 256x256, about 800 events per frame, so
about 52 M events; ``--small``: nav 64x64, about 3.3 M) is generated once as a CSR
``.npz`` (cached in ``benchmarks/data/``) and served by ``detflow sim asi-tpx3`` from a
subprocess on a free port: the whole stream is encoded once at start-up (U32
``indptr``, U16 pixel indices, U16 values, 128 frames per chunk); every client that
connects gets one acquisition. Each receiver takes one acquisition per run, in passive
mode (``wait_for_acquisition``, then ``make_acquisition(pending_aq=)``):

* ``bare socket``: ``recv_into`` into one buffer, bytes counted and dropped: what the
  simulator and the loopback can deliver at all (the ceiling);
* ``detflow pipelined SumUDF``: ``LiveContext()`` on its defaults (pipelined, one
  worker fewer than there are cores) running ``SumUDF``; ``detflow threads SumUDF``
  the threaded executor on all cores;
* ``LiberTEM-live SumUDF``: LiberTEM-live's ``LiveContext`` and its ASI Timepix3
  client (``make_connection("asi_tpx3")``, defaults but a shared-memory slot big
  enough for the chunks) on the same simulator, in its own virtualenv
  (``benchmarks/setup_libertem.sh``), timed inside its process after a warm-up run;
  its runs alternate with detflow's so that both see the same load.

Printed: M events/s of the best of ``--repeats`` runs (after an untimed warm-up),
and the ratio detflow / LiberTEM-live; every SumUDF result is checked against the
sum of the events. Numbers are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
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

SIZES = {"small": (64, 64), "full": (256, 256)}
SIG = (256, 256)
EVENTS_PER_FRAME = 800
CHUNK_FRAMES = 128


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Sim:
    port: int
    nav: tuple[int, int]
    n_events: int
    wire_bytes: int
    total: float  # the sum of all event values


@dataclass
class Row:
    label: str
    times: list[float] = field(default_factory=list)
    sums: set[float] = field(default_factory=set)
    error: str | None = None


def ensure_data(nav: tuple[int, int]) -> tuple[Path, float, int]:
    """The CSR scan (written once), the sum of its values and its event count."""
    import scipy.sparse

    from detflow.sources.csr import save_csr

    path = HERE / "data" / f"asi_{nav[0]}x{nav[1]}_{SIG[0]}x{SIG[1]}_{EVENTS_PER_FRAME}.npz"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        log(f"writing {path.name} ...")
        rng = np.random.default_rng(17)
        n, fs = nav[0] * nav[1], SIG[0] * SIG[1]
        counts = rng.poisson(EVENTS_PER_FRAME, size=n)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        rows = np.repeat(np.arange(n, dtype=np.int64), counts)
        keys = np.sort(rows * fs + rng.integers(0, fs, size=len(rows)))  # sorted within each frame
        indices = (keys - rows * fs).astype(np.int32)
        values = rng.integers(1, 60, size=len(rows), dtype=np.uint16)  # time-over-threshold-like counts
        m = scipy.sparse.csr_array((values, indices, indptr), shape=(n, fs))
        save_csr(path, m, nav_shape=nav, sig_shape=SIG)
    with np.load(path) as z:
        data = z["data"]
        return path, float(data.sum(dtype=np.float64)), int(len(data))


@contextmanager
def asi_sim(path: Path, nav: tuple[int, int], n_events: int, total: float) -> Iterator[Sim]:
    """``detflow sim asi-tpx3`` in a subprocess on a free port, stopped with SIGINT."""
    proc = subprocess.Popen([sys.executable, "-c", _SIM, str(path), str(CHUNK_FRAMES)], stdout=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        port = wire = None
        for line in proc.stdout:
            if m := re.match(r"data port: [\d.]+:(\d+) wire (\d+)$", line.strip()):
                port, wire = int(m.group(1)), int(m.group(2))
                break
        if port is None or wire is None:
            raise RuntimeError(f"the simulator did not start (exit code {proc.poll()})")
        yield Sim(port, nav, n_events, wire, total)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: the simulator with the benchmark's wire dtypes (the CLI sends U32 indices by default)
_SIM = """
import sys, time
import numpy as np
from detflow.sources.live.asi_tpx3.sim import AsiTpx3Simulator
with AsiTpx3Simulator(sys.argv[1], port=0, chunk_frames=int(sys.argv[2]), indptr_dtype=np.uint32,
                      indices_dtype=np.uint16, value_dtype=np.uint16) as sim:
    print(f"data port: 127.0.0.1:{sim.port} wire {sim.wire_bytes}", flush=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
"""


def bare_socket(sim: Sim) -> tuple[float, float | None]:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", sim.port), timeout=30) as s:
        buf = bytearray(4 * 2**20)
        view = memoryview(buf)
        got = 0
        while got < sim.wire_bytes:
            k = s.recv_into(view)
            if not k:
                break
            got += k
    return time.perf_counter() - t0, None


_CONTEXTS: dict[str, object] = {}


def detflow_sum(executor: str | None) -> Callable[[Sim], tuple[float, float | None]]:
    def run(sim: Sim) -> tuple[float, float | None]:
        import detflow as df
        from detflow.nodes import SumUDF

        key = str(executor)
        if key not in _CONTEXTS:  # made once, outside the timing, as a user's would be
            _CONTEXTS[key] = df.LiveContext() if executor is None else df.LiveContext.make_with(executor)
        ctx = _CONTEXTS[key]
        assert isinstance(ctx, df.LiveContext)
        t0 = time.perf_counter()
        with ctx.make_connection("asi_tpx3").open(data_port=sim.port, timeout=30) as conn:
            pending = conn.wait_for_acquisition(30)
            aq = ctx.make_acquisition(conn=conn, pending_aq=pending)
            res = ctx.run_udf(dataset=aq, udf=SumUDF())
        return time.perf_counter() - t0, float(res["intensity"].data.sum(dtype=np.float64))

    return run


#: LiberTEM-live's client as a server of timed runs: a warm-up, then one run per "run" line on stdin
_LIBERTEM_LIVE = """
import json, sys, time
from libertem.udf.sum import SumUDF
from libertem_live.api import LiveContext
port = int(sys.argv[1])
with LiveContext() as ctx:
    def once():
        t0 = time.perf_counter()
        with ctx.make_connection("asi_tpx3").open(data_host="127.0.0.1", data_port=port,
                                                  bytes_per_chunk=2**20) as conn:
            pending = conn.wait_for_acquisition(30.0)
            aq = ctx.make_acquisition(conn=conn, pending_aq=pending)
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
    """LiberTEM-live's ASI client in its own interpreter, one timed run per call (after a warm-up)."""

    label = "LiberTEM-live SumUDF"

    def __init__(self, sim: Sim) -> None:
        python = bench_core.LT_PYTHON
        if not Path(python).exists():
            raise RuntimeError("LiberTEM-live is not installed: bash benchmarks/setup_libertem.sh")
        self.proc = subprocess.Popen([str(python), "-c", _LIBERTEM_LIVE, str(sim.port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._expect("READY")

    def _expect(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise RuntimeError(f"LiberTEM-live failed (exit {self.proc.poll()}): {err[-800:]}")

    def __call__(self, sim: Sim) -> tuple[float, float | None]:
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
    """The ASI case of ``bench_live.py`` (its parsed arguments: small, repeats)."""
    small, repeats = bool(getattr(args, "small", False)), int(getattr(args, "repeats", 3))
    nav = SIZES["small" if small else "full"]
    path, total, n_events = ensure_data(nav)
    log(f"dataset {path.name}: {n_events / 1e6:.1f} M events")
    receivers: dict[str, Callable[[Sim], tuple[float, float | None]]] = {
        "bare socket": bare_socket,
        "detflow pipelined SumUDF": detflow_sum(None),
        "detflow threads SumUDF": detflow_sum("threads"),
    }
    log("starting the simulator (encoding the stream) ...")
    with asi_sim(path, nav, n_events, total) as sim:
        log(f"simulator on port {sim.port}: {sim.wire_bytes / 1e6:.0f} MB per acquisition")
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
                    fn(sim)  # warm-up: worker processes, compiled kernels
                except Exception as err:
                    row.error = f"{type(err).__name__}: {err}"[:300]
            for rep in range(repeats):
                for row, fn in zip(rows, receivers.values(), strict=True):
                    try:
                        dt, got = fn(sim)
                    except Exception as err:
                        row.error = f"{type(err).__name__}: {err}"[:300]
                        continue
                    row.times.append(dt)
                    if got is not None:
                        row.sums.add(got)
                    log(f"  [{row.label}] run {rep + 1}: {dt:.3f} s, {sim.n_events / dt / 1e6:.1f} M events/s")
        finally:
            if lt is not None:
                lt.close()
            for ctx in _CONTEXTS.values():
                ctx.close()  # type: ignore[attr-defined]
            _CONTEXTS.clear()
        if lt is None:
            rows.append(Row("LiberTEM-live SumUDF", error="not installed: bash benchmarks/setup_libertem.sh"))
    report(sim, rows, repeats)
    return 0


def report(sim: Sim, rows: list[Row], repeats: int) -> None:
    print(f"\nASI Timepix3 live: nav {sim.nav[0]}x{sim.nav[1]}, sig {SIG[0]}x{SIG[1]}, "
          f"{sim.n_events / 1e6:.1f} M events ({sim.wire_bytes / 1e6:.0f} MB on the wire) per acquisition; "
          f"best of {repeats}; {os.cpu_count()} cores, {platform.python_version()}")
    best: dict[str, float] = {}
    for row in rows:
        if not row.times:
            print(f"  {row.label:32s} failed: {row.error}")
            continue
        dt = min(row.times)
        best[row.label] = sim.n_events / dt / 1e6
        ok = "" if not row.sums else ("sum ok" if all(abs(s - sim.total) <= 1e-6 * sim.total for s in row.sums)
                                      else f"SUM WRONG {sorted(row.sums)} != {sim.total}")
        print(f"  {row.label:32s} {dt:8.3f} s  {best[row.label]:8.1f} M events/s  "
              f"{sim.wire_bytes / dt / 1e6:8.0f} MB/s  {ok}")
    lt = best.get("LiberTEM-live SumUDF")
    if lt:
        for label, rate in best.items():
            if label.startswith("detflow"):
                print(f"  {label} / LiberTEM-live: {rate / lt:.2f}x")
