#!/usr/bin/env python3
"""Live benchmark: Merlin frames over TCP on loopback, received, decoded and analysed.

(``--detector dectris``: the DECTRIS case, bitshuffle-LZ4 frames over ZeroMQ against
LiberTEM-live's DECTRIS client; see ``bench_live_dectris.py``. ``--detector asi``: the
ASI Timepix3 case, sparse CSR events over TCP against LiberTEM-live's ASI client; see
``bench_live_asi.py``.)

The core benchmark's dataset (uint16, nav 128x128, sig 256x256; ``--small``: nav 32x32)
is written once more as a 12-bit Merlin acquisition (``U16`` frames, cached in
``benchmarks/data/`` beside the MIB files of ``bench_mib.py``). ``detflow sim merlin``
serves it from a subprocess on free ports, untriggered (every connection gets one
acquisition), with no frame-rate limit. Each receiver below takes one whole
acquisition per run:

* ``bare socket``: ``recv_into`` into one buffer, bytes counted and dropped: what the
  simulator and the loopback can deliver at all (the ceiling);
* ``MerlinDataStream``: :meth:`read_frames` in batches (``--batch``, 256 frames) into a
  preallocated ``(batch, 256, 256)`` uint16 array: receiving, checking and decoding.

* ``detflow pipelined SumUDF`` / ``detflow threads SumUDF``: the whole live path,
  ``LiveContext`` in passive mode running ``SumUDF`` (context made once, outside the
  timing; each run opens a connection, waits for the acquisition, runs); the
  pipelined context has its live default of one worker fewer than there are cores,
  ``detflow pipelined all cores`` one per core;
* ``LiberTEM-live SumUDF``: LiberTEM-live's ``LiveContext`` and its Merlin receiver on
  the same simulator and data (in ``benchmarks/.venv-libertem``, made by
  ``setup_libertem.sh``), timed the same way inside its process after a warm-up run.

Receivers are functions of a :class:`SimInfo` (ports, frame count, sizes) returning a
:class:`Received`; :data:`RECEIVERS` lists them by name.

The report gives the best of ``--repeats`` runs as frames/s and MB/s of decoded pixel
data (1 MB = 1e6 bytes), the same against the bare socket, and against the machine's
memory limit as ``bench_core.py`` measures it (a bare numpy sum over the memory-mapped
``.npy``, 1 and 2 threads). A correctness pass (``--no-verify`` skips it) compares the
sum of every received frame with the same sum over the ``.npy``. Numbers are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import bench_core  # noqa: E402  (this script's directory is on sys.path)
import bench_mib  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# data and simulator


def ensure_mib(nav: Sequence[int], sig: Sequence[int], regen: bool = False) -> tuple[Path, Path]:
    """``(npy, hdr)``: the core dataset and the same frames as 12-bit U16 MIB (clipped to 4095)."""
    npy, how = bench_core.ensure_dataset(nav, sig, regen=regen)
    log(f"dataset {npy.name}: {how}")
    hdr = bench_mib.mib_paths(npy)["u16"]
    mib = hdr.with_suffix(".mib")
    if regen or not mib.exists() or mib.stat().st_mtime < npy.stat().st_mtime:
        from detflow.sources.mib import write_mib

        log(f"writing {hdr.parent} (U16, counter depth 12) ...")
        hdr.parent.mkdir(parents=True, exist_ok=True)
        write_mib(hdr, np.minimum(np.load(npy, mmap_mode="r"), 4095).astype(np.uint16), counter_depth=12)
    return npy, hdr


@dataclass(frozen=True)
class SimInfo:
    """What a receiver needs to know about the running simulator."""

    host: str
    data_port: int
    control_port: int
    n_frames: int
    sig_shape: tuple[int, int]
    frame_bytes: int  # MQ1 header + pixels
    header_message_bytes: int  # the acquisition header's MPX message

    @property
    def wire_bytes(self) -> int:
        """Bytes one acquisition takes on the socket."""
        return self.header_message_bytes + self.n_frames * (15 + self.frame_bytes)

    @property
    def pixel_bytes(self) -> int:
        return self.n_frames * self.sig_shape[0] * self.sig_shape[1] * 2


@dataclass
class Received:
    frames: int
    checksum: float | None = None
    #: seconds the receiver timed itself (from connecting to the result), where it has
    #: costs that are not the stream's (starting an interpreter, a context)
    seconds: float | None = None


Receiver = Callable[[SimInfo], Received]


@dataclass
class Row:
    label: str
    times: list[float] = field(default_factory=list)
    error: str | None = None
    #: sums of every frame the receiver computed (one value if every run agreed)
    checksums: set[float] = field(default_factory=set)


@contextmanager
def merlin_sim(hdr: Path, *extra: str) -> Iterator[SimInfo]:
    """``detflow sim merlin`` in a subprocess on free ports, stopped with SIGINT."""
    from detflow.sources.mib import MibSource

    src = MibSource(hdr)
    proc = subprocess.Popen(
        [sys.executable, "-m", "detflow.cli", "sim", "merlin", str(hdr), "--data-port", "0", "--control-port", "0",
         *extra],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        ports: dict[str, int] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            if m := re.match(r"(data|control) port: ([\d.]+):(\d+)$", line.strip()):
                ports[m.group(1)] = int(m.group(3))
            if line.startswith("press Ctrl-C"):
                break
        if "data" not in ports:
            raise RuntimeError(f"the simulator did not start (exit code {proc.poll()})")
        header = len(hdr.read_bytes().rstrip(b"\r\n")) + 15
        yield SimInfo("127.0.0.1", ports["data"], ports["control"], src.meta.n_frames, src.layout.sig_shape,
                      src.layout.frame_bytes, header)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def libertem_live_sim(hdr: Path) -> Iterator[SimInfo]:
    """LiberTEM-live's own Merlin simulator (``libertem-live-mib-sim``), untriggered, on free ports."""
    from detflow.sources.mib import MibSource

    exe = bench_core.LT_VENV / "bin" / "libertem-live-mib-sim"
    if not exe.exists():
        raise SystemExit("LiberTEM-live is not installed: bash benchmarks/setup_libertem.sh")
    src = MibSource(hdr)
    data_port, control_port, trigger_port = _free_port(), _free_port(), _free_port()
    proc = subprocess.Popen(
        [str(exe), str(hdr), "--host", "127.0.0.1", "--data-port", str(data_port), "--control-port",
         str(control_port), "--trigger-port", str(trigger_port), "--cached", "mem"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # ready once the control port answers (the data port would start a replay)
            try:
                socket.create_connection(("127.0.0.1", control_port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"libertem-live-mib-sim did not start (exit code {proc.poll()})") from None
                time.sleep(0.2)
        header = len(hdr.read_bytes().rstrip(b"\r\n")) + 15
        yield SimInfo("127.0.0.1", data_port, control_port, src.meta.n_frames, src.layout.sig_shape,
                      src.layout.frame_bytes, header)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------
# receivers


def bare_socket(info: SimInfo) -> Received:
    """Every byte of one acquisition into one 4 MiB buffer, dropped: the ceiling."""
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    total, got = info.wire_bytes, 0
    with socket.create_connection((info.host, info.data_port), timeout=30) as s:
        while got < total:
            n = s.recv_into(view, min(len(buf), total - got))
            if not n:
                raise ConnectionError(f"the simulator closed after {got} of {total} bytes")
            got += n
    return Received(info.n_frames)


def data_stream(batch: int, checksum: bool = False) -> Receiver:
    """:meth:`MerlinDataStream.read_frames`, ``batch`` frames at a time into one array."""

    def receive(info: SimInfo) -> Received:
        from detflow.sources.live.merlin.data import MerlinDataStream

        total = 0.0
        with MerlinDataStream(info.host, info.data_port, timeout=30) as stream:
            stream.read_acquisition_header()
            layout = stream.first_frame_layout
            out = np.empty((batch, *layout.sig_shape), dtype=layout.dtype)
            frames = 0
            while not stream.acquisition_done:
                n = stream.read_frames(out)
                frames += n
                if checksum:
                    total += float(out[:n].sum(dtype=np.float64))
            if stream.gaps:
                raise RuntimeError(f"sequence gaps: {stream.gaps[:5]}")
        return Received(frames, total if checksum else None)

    return receive


_CONTEXTS: dict[str, object] = {}


def detflow_sum(executor: str, cpus: int | None = None) -> Receiver:
    """The whole live path: ``LiveContext`` (passive mode) + ``SumUDF`` on ``executor``.

    The context (its worker processes) is made once, outside the timing, as a user's
    would be; each run opens a connection, waits for the acquisition and runs SumUDF.
    """

    def receive(info: SimInfo) -> Received:
        import detflow as df
        from detflow.nodes import SumUDF

        key = f"{executor}/{cpus}"
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            ctx = _CONTEXTS[key] = df.LiveContext.make_with(executor, cpus=cpus)
        assert isinstance(ctx, df.LiveContext)
        t0 = time.perf_counter()
        with ctx.make_connection("merlin").open(api_port=info.control_port, data_port=info.data_port,
                                                timeout=30) as conn:
            pending = conn.wait_for_acquisition(30)
            aq = ctx.make_acquisition(conn=conn, pending_aq=pending)
            res = ctx.run_udf(dataset=aq, udf=SumUDF())
        dt = time.perf_counter() - t0
        return Received(aq.meta.n_frames, float(res["intensity"].data.sum(dtype=np.float64)), dt)

    return receive


#: LiberTEM-live's client on the same simulator: a warm-up acquisition, then one timed
_LIBERTEM_LIVE = """
import json, sys, time
from libertem.udf.sum import SumUDF
from libertem_live.api import LiveContext
port, cport = int(sys.argv[1]), int(sys.argv[2])
with LiveContext() as ctx:
    out = []
    for _ in range(2):
        t0 = time.perf_counter()
        with ctx.make_connection("merlin").open(api_host="127.0.0.1", api_port=cport, data_host="127.0.0.1",
                                                data_port=port, drain=False) as conn:
            pending = conn.wait_for_acquisition(30.0)
            aq = ctx.make_acquisition(conn=conn, pending_aq=pending)
            res = ctx.run_udf(dataset=aq, udf=SumUDF())
        out.append((time.perf_counter() - t0, float(res["intensity"].data.sum(dtype="float64")),
                    int(aq.shape.nav.size)))
print("RESULT " + json.dumps(out[-1]), flush=True)
"""


def libertem_live_sum(info: SimInfo) -> Received:
    """LiberTEM-live's ``LiveContext`` + ``SumUDF`` (its default executor), in its own venv."""
    python = bench_core.LT_PYTHON
    if not Path(python).exists():
        raise RuntimeError("LiberTEM-live is not installed: bash benchmarks/setup_libertem.sh")
    proc = subprocess.run([str(python), "-c", _LIBERTEM_LIVE, str(info.data_port), str(info.control_port)],
                          capture_output=True, text=True, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"LiberTEM-live failed (exit {proc.returncode}): {proc.stderr[-500:]}")
    import json

    dt, total, frames = json.loads(line[len("RESULT "):])
    return Received(frames, total, dt)


#: name -> receiver factory (of the parsed arguments)
RECEIVERS: dict[str, Callable[[argparse.Namespace], Receiver]] = {
    "bare socket": lambda args: bare_socket,
    "MerlinDataStream": lambda args: data_stream(args.batch),
    "detflow pipelined SumUDF": lambda args: detflow_sum("pipelined"),
    "detflow pipelined all cores SumUDF": lambda args: detflow_sum("pipelined", os.cpu_count() or 1),
    "detflow threads SumUDF": lambda args: detflow_sum("threads"),
    "LiberTEM-live SumUDF": lambda args: libertem_live_sum,
}


def run_receivers(info: SimInfo, receivers: dict[str, Receiver], repeats: int) -> list[Row]:
    """Each receiver ``repeats`` times, one acquisition per run, in turn."""
    rows = [Row(name) for name in receivers]
    for name, receive in receivers.items():  # untimed: start worker processes, compile kernels, fill pools
        try:
            receive(info)
        except Exception as err:
            log(f"  [{name}] warm-up: {type(err).__name__}: {err}"[:300])
    for rep in range(repeats):
        for row, receive in zip(rows, receivers.values(), strict=True):
            t0 = time.perf_counter()
            try:
                got = receive(info)
            except Exception as err:
                row.error = f"{type(err).__name__}: {err}"[:300]
                log(f"  [{row.label}] run {rep + 1}: {row.error}")
                continue
            dt = time.perf_counter() - t0 if got.seconds is None else got.seconds
            if got.frames != info.n_frames:
                row.error = f"received {got.frames} of {info.n_frames} frames"
            if got.checksum is not None:
                row.checksums.add(got.checksum)
            row.times.append(dt)
            log(f"  [{row.label}] run {rep + 1}: {dt:.3f} s, {info.pixel_bytes / dt / 1e6:.0f} MB/s")
    return rows


def memory_limit(npy: Path, repeats: int) -> dict[int, float]:
    """GB/s of a bare numpy sum over the memory-mapped ``.npy``, as ``bench_core.py`` measures it."""
    nbytes = npy.stat().st_size
    out = {}
    for threads in (1, 2):
        bench_core.numpy_sum(npy, threads, np.float32)  # warm-up
        best = min(_timed(lambda t=threads: bench_core.numpy_sum(npy, t, np.float32)) for _ in range(repeats))
        out[threads] = nbytes / best / 1e9
    return out


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def verify(info: SimInfo, npy: Path, batch: int) -> str:
    """Sum of every received frame against the same sum over the ``.npy`` (clipped to 12 bit)."""
    got = data_stream(batch, checksum=True)(info).checksum
    arr = np.load(npy, mmap_mode="r").reshape(-1, *info.sig_shape)
    want = 0.0
    for lo in range(0, len(arr), 256):
        want += float(np.minimum(arr[lo : lo + 256], 4095).sum(dtype=np.float64))
    return f"sum of all frames {got:.0f}, expected {want:.0f}: {'same' if got == want else 'DIFFERENT'}"


# --------------------------------------------------------------------------------------
# report


def report(info: SimInfo, rows: list[Row], limit: dict[int, float], check: str | None,
           args: argparse.Namespace) -> None:
    p = print
    p(f"== live receive: Merlin over TCP loopback, {args.sim}'s simulator in a subprocess ==")
    p(f"machine:  {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    h, w = info.sig_shape
    p(f"data:     {info.n_frames} frames of {h}x{w} U16 (12-bit), {info.pixel_bytes / 2**30:.2f} GiB of pixels, "
      f"{info.wire_bytes / 1e9:.3f} GB on the wire per acquisition")
    p(f"runs:     best of {args.repeats} after a warm-up run, one acquisition each; read_frames batches of "
      f"{args.batch} frames")
    p("MB/s:     decoded pixel bytes / time (1 MB = 1e6 bytes); time from connecting to the last frame")
    p("limit:    numpy sum over the memory-mapped .npy (bench_core.py): "
      + ", ".join(f"{n} thread{'s' if n > 1 else ''} {g:.2f} GB/s" for n, g in sorted(limit.items())))
    p("")
    bare = next((min(r.times) for r in rows if r.label == "bare socket" and r.times), None)
    header = ["receiver", "best s", "median s", "frames/s", "MB/s", "/ bare", "/ limit 1T", "/ limit 2T"]
    lines = []
    for row in rows:
        if not row.times:
            lines.append([row.label] + ["-"] * (len(header) - 1))
            continue
        best = min(row.times)
        mbs = info.pixel_bytes / best / 1e6
        lines.append([
            row.label, f"{best:.3f}", f"{statistics.median(row.times):.3f}", f"{info.n_frames / best:.0f}",
            f"{mbs:.0f}", f"{bare / best:.2f}" if bare else "-",
            f"{mbs / 1e3 / limit[1]:.2f}", f"{mbs / 1e3 / limit[2]:.2f}",
        ])
    p(bench_core.table(header, lines))
    if bare:
        p(f"\nsimulator send rate (bare socket): {info.wire_bytes / bare / 1e9:.2f} GB/s on the wire")
    ref = next((r for r in rows if r.label == "detflow pipelined SumUDF" and r.times), None)
    lt = next((r for r in rows if r.label == "LiberTEM-live SumUDF" and r.times), None)
    if ref and lt:
        p(f"detflow pipelined / LiberTEM-live (SumUDF, same simulator and data): "
          f"{min(lt.times) / min(ref.times):.2f}x")
    sums = {r.label: r.checksums for r in rows if r.checksums}
    if sums:
        p("sums:     " + "; ".join(f"{k}: {', '.join(f'{v:.0f}' for v in sorted(c))}" for k, c in sums.items()))
    if check:
        p(f"check:    {check}")
    for row in rows:
        if row.error:
            p(f"error:    {row.label}: {row.error}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="nav 32x32 (128 MiB) instead of 128x128 (2 GiB)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per receiver (default 3)")
    ap.add_argument("--batch", type=int, default=256, help="frames per read_frames call (default 256)")
    ap.add_argument("--receivers", default=",".join(RECEIVERS), help=f"comma-separated, of: {', '.join(RECEIVERS)}")
    ap.add_argument("--no-verify", action="store_true", help="skip the correctness pass")
    ap.add_argument("--regen", action="store_true", help="rewrite the dataset and its MIB copy")
    ap.add_argument("--detector", choices=("merlin", "dectris", "asi"), default="merlin",
                    help="merlin (MIB over TCP, this file) or dectris (bitshuffle-LZ4 over ZeroMQ, "
                         "bench_live_dectris.py) or asi (CSR events over TCP, bench_live_asi.py)")
    ap.add_argument("--sim", choices=("detflow", "libertem-live"), default="detflow",
                    help="which Merlin simulator serves the data (default: detflow sim merlin)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.detector == "dectris":
        import bench_live_dectris

        return bench_live_dectris.run(args)
    if args.detector == "asi":
        import bench_live_asi

        return bench_live_asi.run(args)
    nav, sig = bench_core.SIZES["small" if args.small else "full"]
    npy, hdr = ensure_mib(nav, sig, regen=args.regen)
    log(f"warming the page cache: {hdr.with_suffix('.mib').name}, {npy.name}")
    bench_core.warm_page_cache(hdr.with_suffix(".mib"))
    bench_core.warm_page_cache(npy)
    names = [n.strip() for n in args.receivers.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECEIVERS]
    if unknown:
        raise SystemExit(f"unknown receiver(s) {unknown}; known: {', '.join(RECEIVERS)}")
    log("memory limit (numpy sum) ...")
    limit = memory_limit(npy, args.repeats)
    with (merlin_sim(hdr) if args.sim == "detflow" else libertem_live_sim(hdr)) as info:
        log(f"simulator on data port {info.data_port}; {info.n_frames} frames per acquisition")
        try:
            rows = run_receivers(info, {n: RECEIVERS[n](args) for n in names}, args.repeats)
        finally:
            for ctx in _CONTEXTS.values():
                ctx.close()  # type: ignore[attr-defined]
            _CONTEXTS.clear()
        check = None if args.no_verify else verify(info, npy, args.batch)
    report(info, rows, limit, check, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
