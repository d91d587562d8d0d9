#!/usr/bin/env python3
"""Core benchmark: detflow against LiberTEM on the same data, in the same run.

Times SumUDF, SumSigUDF, ApplyMasksUDF (1 circular mask / 16 ring masks), CoMUDF and
StdDevUDF on a memory-mapped ``.npy`` file (2 GiB, uint16, nav 128x128, sig 256x256;
``--small``: nav 32x32; ``--sources`` adds the same frames as a raw file and as an array in
memory, ``bench_sources.py``) with detflow's executors (this interpreter) and LiberTEM's
executors (a subprocess running this same script with the interpreter of
``benchmarks/.venv-libertem`` in ``--libertem-worker`` mode, answering in JSON).
It also measures the machine's limit (a bare numpy sum over the memory-mapped file), the
cold-start time of both frameworks (a fresh interpreter up to a first result), and SumUDF
over the same frames as 12-bit MIB, raw and non-raw, against LiberTEM's MIB reader, plus
raw decoding against non-raw reading (``bench_mib.py``; ``--no-mib`` skips it).

The numbers are printed, never asserted: the script exits 0 whatever they are.
See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA_DIR = HERE / "data"
LT_VENV = HERE / ".venv-libertem"
LT_PYTHON = LT_VENV / "bin" / "python"

SIZES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "full": ((128, 128), (256, 256)),
    "small": ((32, 32), (256, 256)),
}
TINY = ((8, 8), (32, 32))  # the cold-start dataset

#: analysis key -> (label, result buffers to fingerprint, first found wins)
ANALYSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sum": ("SumUDF", ("intensity",)),
    "sumsig": ("SumSigUDF", ("intensity",)),
    "mask1": ("ApplyMasksUDF 1 circ", ("intensity",)),
    "mask16": ("ApplyMasksUDF 16 ring", ("intensity",)),
    "com": ("CoMUDF r=60", ("raw_shifts", "raw_com", "field")),
    "stddev": ("StdDevUDF", ("std", "var")),
}
DEFAULT_ANALYSES = "sum,sumsig,mask1,mask16,com,stddev"

#: detflow executor names (``df.Context.make_with(name)``); more can be listed on the CLI
DEFAULT_DF_EXECUTORS = "inline,threads"
#: LiberTEM executors this script knows how to build
LT_EXECUTORS = ("inline", "concurrent", "delayed", "dask", "pipelined")
DEFAULT_LT_EXECUTORS = "inline,concurrent,dask"
#: which LiberTEM executor a detflow executor is compared with
MATCHING_LT = {
    "inline": "inline",
    "threads": "concurrent",
    "delayed": "delayed",
    "dask": "dask",
    "pipelined": "pipelined",
}
#: LiberTEM ``Context.make_with`` name of each LiberTEM executor (for the cold start)
LT_MAKE_WITH = {
    "inline": "inline",
    "concurrent": "threads",
    "delayed": "delayed",
    "dask": "dask",
    "pipelined": "pipelined",
}

RSS_NOTE = (
    "peak RSS: the largest sum of VmRSS over the process doing the work and all its\n"
    "  descendants (LiberTEM's dask nannies and workers and its pipelined workers included),\n"
    "  sampled every 20 ms during the warm-up and timed runs of that row; absolute, the\n"
    "  interpreter and libraries included. Pages of the memory-mapped file count in VmRSS\n"
    "  once per process that touched them, so it can exceed the data size; 'anon' (RssAnon)\n"
    "  leaves file pages out: the memory the frameworks allocated themselves."
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# data


def data_path(nav: Sequence[int], sig: Sequence[int]) -> Path:
    shape = "x".join(map(str, nav)) + "_" + "x".join(map(str, sig))
    return DATA_DIR / f"scan_{shape}_u16.npy"


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool] | None:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        return tuple(shape), np.dtype(dtype), bool(fortran)
    except (OSError, ValueError):
        return None


def _frame_rows(iy: int, nav: Sequence[int], sig: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """One scan row of frames: Poisson counts, a bright disk that moves across the scan.

    The disk (radius sig/8, ~8 counts/px) sits near the centre; its position shifts by a few
    pixels in a smooth pattern across the scan (that is what CoM finds), its brightness
    follows a 'thickness' map (SumSigUDF has something to show); there is a diffuse halo
    around it and a faint amorphous ring further out (the ring masks see structure).
    """
    ny, nx = nav
    h, w = sig
    ix = np.arange(nx, dtype=np.float64)
    fy, fx = iy / max(ny - 1, 1), ix / max(nx - 1, 1)
    # disk shift in pixels, smooth in the scan position
    dx = 5.0 * np.sin(2 * np.pi * fx) * np.cos(np.pi * fy) + 1.5 * (fy - 0.5)
    dy = 4.0 * np.cos(2 * np.pi * fy) * np.sin(np.pi * fx) - 1.5 * (fx - 0.5)
    thickness = 1.0 + 0.3 * np.sin(3 * np.pi * fx) * np.sin(2 * np.pi * fy)
    y = np.arange(h, dtype=np.float64)[None, :, None]
    x = np.arange(w, dtype=np.float64)[None, None, :]
    cy = h / 2 + dy[:, None, None]
    cx = w / 2 + dx[:, None, None]
    r = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    radius = h / 8
    disk = 8.0 / (1.0 + np.exp((r - radius) / 1.2))  # soft-edged disk
    halo = 0.4 * np.exp(-r / (h / 6))
    ring = 0.3 * np.exp(-(((r - 0.35 * h) / (0.04 * h)) ** 2))
    lam = (disk + halo + ring) * thickness[:, None, None] + 0.02
    return rng.poisson(lam).astype(np.uint16)


def _write_rows(tmp: Path, shape: tuple[int, ...], threads: int) -> None:
    nav, sig = shape[:2], shape[2:]
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint16, shape=shape)
    seeds = np.random.SeedSequence(20240601).spawn(nav[0])

    def make_row(iy: int) -> None:
        out[iy] = _frame_rows(iy, nav, sig, np.random.default_rng(seeds[iy]))

    with ThreadPoolExecutor(max(1, threads)) as pool:  # numpy's RNG releases the GIL
        for i, _ in enumerate(pool.map(make_row, range(nav[0]))):
            if i % 16 == 15:
                log(f"  {i + 1}/{nav[0]} scan rows")
    out.flush()


def ensure_dataset(
    nav: Sequence[int], sig: Sequence[int], *, regen: bool = False, threads: int = 2
) -> tuple[Path, str]:
    """Create (once) the dataset, scan row by scan row straight into the file."""
    path = data_path(nav, sig)
    shape = tuple(nav) + tuple(sig)
    hdr = _npy_header(path) if path.exists() else None
    if not regen and hdr is not None and hdr[0] == shape and hdr[1] == np.uint16 and not hdr[2]:
        return path, "cached"
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    size = int(np.prod(shape)) * 2
    log(f"generating {path} ({size / 2**30:.2f} GiB), once ...")
    t0 = time.perf_counter()
    _write_rows(tmp, shape, threads)
    os.replace(tmp, path)
    return path, f"generated in {time.perf_counter() - t0:.1f} s"


def page_cache_residency(path: Path) -> str:
    """How much of the file is in the page cache, per util-linux's ``fincore``."""
    if not shutil.which("fincore"):
        return "residency unknown (fincore not found)"
    try:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        return f"{100.0 * int(out[0]) / int(out[1]):.1f}% of the file resident (fincore)"
    except Exception as err:
        return f"residency unknown (fincore: {type(err).__name__})"


def warm_page_cache(path: Path) -> float:
    """Read the whole file once so every measurement reads from the page cache."""
    t0 = time.perf_counter()
    buf = bytearray(64 * 2**20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(view):
            pass
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------
# memory sampling


def _read_status(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of a process in bytes; (0, 0) when it is gone."""
    rss = anon = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"RssAnon:"):
                    anon = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss, anon


def _read_pss(pid: int) -> int:
    """Pss of a process in bytes (shared pages split among their users); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_usage(pss: bool = False) -> dict[str, int]:
    """Summed VmRSS, RssAnon (and Pss) of this process and its descendants, now."""
    out = {"rss": 0, "anon": 0}
    if pss:
        out["pss"] = 0
    for pid in _descendants(os.getpid()):
        r, a = _read_status(pid)
        out["rss"] += r
        out["anon"] += a
        if pss:
            out["pss"] += _read_pss(pid)
    return out


class RssSampler:
    """Peak of the summed RSS of this process and its descendants, sampled in a thread.

    With ``pss=True`` also the peak summed Pss (``/proc/PID/smaps_rollup``), read on
    every ``pss_every``-th sample only, as it costs more than ``/proc/PID/status``.
    """

    def __init__(self, interval: float = 0.02, tree_every: float = 0.25, pss: bool = False, pss_every: int = 5) -> None:
        self.interval = interval
        self.tree_every = tree_every
        self.available = os.path.exists("/proc/self/status")
        self.pss = pss and os.path.exists("/proc/self/smaps_rollup")
        self.pss_every = pss_every
        self.peak_rss = 0
        self.peak_anon = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _sample(self, pids: list[int], pss: bool = False) -> None:
        rss = anon = total_pss = 0
        for pid in pids:
            r, a = _read_status(pid)
            rss += r
            anon += a
            if pss:
                total_pss += _read_pss(pid)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_anon = max(self.peak_anon, anon)
        self.peak_pss = max(self.peak_pss, total_pss)

    def _loop(self) -> None:
        root = os.getpid()
        pids, last_tree = _descendants(root), time.monotonic()
        n = 0
        while True:
            self._sample(pids, self.pss and n % self.pss_every == 0)
            n += 1
            if self._stop.wait(self.interval):
                break
            if time.monotonic() - last_tree > self.tree_every:
                pids, last_tree = _descendants(root), time.monotonic()
        self._sample(_descendants(root), self.pss)

    def __enter__(self) -> RssSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.available:
            self._stop.set()
            self._thread.join()


# --------------------------------------------------------------------------------------
# the analyses, built from either framework's namespace


def build_udf(ns: Any, analysis: str, sig: Sequence[int]) -> Any:
    """The UDF of ``analysis``; ``ns`` has SumUDF, ..., StdDevUDF and ``masks``.

    Mask factories are ``functools.partial`` of the framework's own mask functions, so they
    pickle by reference for process-based executors.
    """
    h, w = int(sig[0]), int(sig[1])
    cy, cx = h // 2, w // 2
    if analysis == "sum":
        return ns.SumUDF()
    if analysis == "sumsig":
        return ns.SumSigUDF()
    if analysis == "mask1":
        return ns.ApplyMasksUDF(mask_factories=[functools.partial(ns.masks.circular, cx, cy, w, h, 40 * h // 256)])
    if analysis == "mask16":
        step = h // 32  # 8 px rings for a 256 px frame, out to the edge
        return ns.ApplyMasksUDF(
            mask_factories=[functools.partial(ns.masks.ring, cx, cy, w, h, step * (i + 1), step * i) for i in range(16)]
        )
    if analysis == "com":
        return ns.CoMUDF.with_params(cx=cx, cy=cy, r=60 * h // 256)
    if analysis == "stddev":
        return ns.StdDevUDF()
    raise ValueError(f"unknown analysis {analysis!r}")


def fingerprint(res: Any, keys: Sequence[str]) -> list[Any] | None:
    """(buffer name, sum, sum of |x|) of the first result buffer found, to compare results."""
    for key in keys:
        try:
            item = res[key]
        except (KeyError, TypeError, IndexError):
            continue
        with contextlib.suppress(Exception):
            arr = np.asarray(getattr(item, "data", item), dtype=np.float64)
            return [key, float(np.nansum(arr)), float(np.nansum(np.abs(arr)))]
    return None


def bench_one(
    framework: str,
    executor: str,
    analysis: str,
    run: Callable[[Any], Any],
    ns: Any,
    sig: Sequence[int],
    repeats: int,
    pss: bool = False,
) -> dict[str, Any]:
    row: dict[str, Any] = {"framework": framework, "executor": executor, "analysis": analysis}
    try:
        with RssSampler(pss=pss) as sampler:
            t0 = time.perf_counter()
            res = run(build_udf(ns, analysis, sig))  # warm-up: JIT, caches; not timed
            row["warmup_s"] = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                udf = build_udf(ns, analysis, sig)
                t0 = time.perf_counter()
                res = run(udf)
                times.append(time.perf_counter() - t0)
        row["times"] = times
        if sampler.available:
            row["rss"], row["anon"] = sampler.peak_rss, sampler.peak_anon
            if sampler.pss:
                row["pss"] = sampler.peak_pss
        row["fingerprint"] = fingerprint(res, ANALYSES[analysis][1])
        log(f"  [{framework} {executor}] {analysis}: best {min(times):.3f} s (warm-up {row['warmup_s']:.3f} s)")
    except Exception as err:  # a failing analysis is reported in the table, not raised
        row["error"] = f"{type(err).__name__}: {err}"[:300]
        log(f"  [{framework} {executor}] {analysis}: FAILED {row['error']}")
        traceback.print_exc(file=sys.stderr)
    return row


def bench_framework(
    framework: str,
    executors: Sequence[str],
    make_ctx: Callable[[str], Any],
    load: Callable[[Any], Any],
    run: Callable[[Any, Any, Any], Any],
    ns: Any,
    analyses: Sequence[str],
    sig: Sequence[int],
    repeats: int,
    pss: bool = False,
) -> list[dict[str, Any]]:
    """One context per executor; ``pss``: sample Pss too (the memory source's rows)."""
    rows: list[dict[str, Any]] = []
    for ex in executors:
        log(f"[{framework}] executor {ex}")
        gc.collect()
        base = {f"base_{k}": v for k, v in tree_usage(pss).items()}  # before the context
        try:
            t0 = time.perf_counter()
            ctx = make_ctx(ex)
            startup = time.perf_counter() - t0
        except Exception as err:
            msg = f"context: {type(err).__name__}: {err}"[:300]
            log(f"  [{framework} {ex}] FAILED {msg}")
            traceback.print_exc(file=sys.stderr)
            rows += [{"framework": framework, "executor": ex, "analysis": a, "error": msg} for a in analyses]
            continue
        try:
            ds = load(ctx)
            for analysis in analyses:
                row = bench_one(
                    framework,
                    ex,
                    analysis,
                    lambda udf, ctx=ctx, ds=ds: run(ctx, ds, udf),
                    ns,
                    sig,
                    repeats,
                    pss,
                )
                row["ctx_startup_s"] = startup
                row.update(base)
                rows.append(row)
        except Exception as err:
            msg = f"{type(err).__name__}: {err}"[:300]
            log(f"  [{framework} {ex}] FAILED {msg}")
            traceback.print_exc(file=sys.stderr)
            done = {r["analysis"] for r in rows if r["executor"] == ex}
            rows += [
                {"framework": framework, "executor": ex, "analysis": a, "error": msg} for a in analyses if a not in done
            ]
        finally:
            with contextlib.suppress(Exception):
                ctx.close()
    return rows


# --------------------------------------------------------------------------------------
# detflow half (this interpreter)


def import_detflow() -> Any:
    try:
        import detflow
    except ImportError:
        sys.path.insert(0, str(REPO))
        import detflow
    return detflow


def detflow_rows(
    path: Path,
    source: str,
    sig: Sequence[int],
    executors: Sequence[str],
    analyses: Sequence[str],
    repeats: int,
    cpus: int,
) -> list[dict[str, Any]]:
    try:
        df = import_detflow()
        from detflow import nodes
    except Exception as err:
        msg = f"import: {type(err).__name__}: {err}"[:300]
        log(f"[detflow] cannot benchmark detflow: {msg}")
        return [
            {"framework": "detflow", "executor": ex, "analysis": a, "source": source, "error": msg}
            for ex in executors
            for a in analyses
        ]
    make_context = df.Context.make_with

    class LazyNodes:  # UDFs resolved when an analysis is built: a missing one fails its row
        def __getattr__(self, name: str) -> Any:
            return getattr(nodes, name)

    ns = LazyNodes()

    def make_ctx(ex: str) -> Any:
        return make_context(ex) if ex == "inline" else make_context(ex, cpus=cpus)

    import bench_sources  # this script's directory is on sys.path

    def bench(load: Callable[[Any], Any], pss: bool) -> list[dict[str, Any]]:
        return bench_framework(
            "detflow",
            executors,
            make_ctx,
            load=load,
            run=lambda ctx, ds, udf: ctx.run_udf(dataset=ds, udf=udf),
            ns=ns,
            analyses=analyses,
            sig=sig,
            repeats=repeats,
            pss=pss,
        )

    log(f"[detflow] source {source}")
    return bench_sources.run_with_source("detflow", source, path, bench, log, lambda: tree_usage()["rss"])


def detflow_version() -> str:
    try:
        df = import_detflow()
        return str(getattr(df, "__version__", "?"))
    except Exception as err:
        return f"not importable ({type(err).__name__})"


# --------------------------------------------------------------------------------------
# LiberTEM half (a subprocess with benchmarks/.venv-libertem's interpreter)


def libertem_worker(args: argparse.Namespace) -> int:
    """``--libertem-worker``: benchmark LiberTEM, write JSON to ``--worker-out``."""
    import warnings

    import bench_sources  # this script's directory is on sys.path
    import libertem
    from libertem import masks
    from libertem.api import Context
    from libertem.udf.com import CoMUDF
    from libertem.udf.masks import ApplyMasksUDF
    from libertem.udf.stddev import StdDevUDF
    from libertem.udf.sum import SumUDF
    from libertem.udf.sumsigudf import SumSigUDF

    # LiberTEM 0.16's CoMUDF warns about np.divide(where=...) without out=: noise here
    warnings.filterwarnings("ignore", message="'where' used without 'out'")
    ns = types.SimpleNamespace(
        SumUDF=SumUDF,
        SumSigUDF=SumSigUDF,
        ApplyMasksUDF=ApplyMasksUDF,
        CoMUDF=CoMUDF,
        StdDevUDF=StdDevUDF,
        masks=masks,
    )
    cpus = args.cpus

    def make_ctx(ex: str) -> Any:
        if ex == "inline":
            from libertem.executor.inline import InlineJobExecutor

            return Context(executor=InlineJobExecutor())
        if ex == "concurrent":
            from libertem.executor.concurrent import ConcurrentJobExecutor

            return Context(executor=ConcurrentJobExecutor.make_local(n_threads=cpus))
        if ex == "delayed":
            import dask
            from libertem.executor.delayed import DelayedJobExecutor

            # run_udf computes the graph with dask's default (threaded) scheduler: N threads
            dask.config.set(num_workers=cpus)
            return Context(executor=DelayedJobExecutor())
        if ex == "dask":
            from libertem.executor.dask import DaskJobExecutor, cluster_spec

            spec = cluster_spec(cpus=range(cpus), cudas=(), has_cupy=False)
            return Context(executor=DaskJobExecutor.make_local(spec=spec))
        if ex == "pipelined":
            from libertem.executor.pipelined import PipelinedExecutor

            spec = PipelinedExecutor.make_spec(cpus=range(cpus), cudas=())
            return Context(executor=PipelinedExecutor(spec=spec))
        raise ValueError(f"unknown LiberTEM executor {ex!r}; known: {', '.join(LT_EXECUTORS)}")

    path = Path(args.data)
    shape = np.load(path, mmap_mode="r").shape

    def run(ctx: Any, ds: Any, udf: Any) -> Any:
        res = ctx.run_udf(dataset=ds, udf=udf, progress=False)
        lazy = [b.delayed_raw_data for b in res.values() if hasattr(b, "delayed_raw_data")]
        if lazy:  # DelayedJobExecutor: the buffers are dask arrays, computed on access; compute
            import dask  # them all here, in one graph, so that the timed run includes the work

            dask.compute(*lazy)
        return res

    def bench(load: Callable[[Any], Any], pss: bool) -> list[dict[str, Any]]:
        return bench_framework(
            "LiberTEM",
            args.lt_executors.split(","),
            make_ctx,
            load=load,
            run=run,
            ns=ns,
            analyses=args.analyses.split(","),
            sig=shape[2:],
            repeats=args.repeats,
            pss=pss,
        )

    rows = bench_sources.run_with_source("LiberTEM", args.sources, path, bench, log, lambda: tree_usage()["rss"])
    out = {
        "version": libertem.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "rows": rows,
    }
    Path(args.worker_out).write_text(json.dumps(out))
    return 0


def lt_python_version() -> str | None:
    if not LT_PYTHON.exists():
        return None
    try:
        return subprocess.run(
            [str(LT_PYTHON), "-c", "import libertem; print(libertem.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=DATA_DIR,
        ).stdout.strip()
    except Exception:
        return None


def libertem_rows(path: Path, source: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-lt-") as tmp:
        out = Path(tmp) / "libertem.json"
        cmd = [
            str(LT_PYTHON),
            str(Path(__file__).resolve()),
            "--libertem-worker",
            "--worker-out",
            str(out),
            "--data",
            str(path),
            "--lt-executors",
            args.lt_executors,
            "--analyses",
            args.analyses,
            "--repeats",
            str(args.repeats),
            "--cpus",
            str(args.cpus),
            "--sources",
            source,
        ]
        log(f"[LiberTEM] source {source}: running in {LT_PYTHON}")
        try:
            proc = subprocess.run(cmd, cwd=DATA_DIR, timeout=args.worker_timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"LiberTEM worker timed out after {args.worker_timeout} s"}
        if not out.exists():
            return {"error": f"LiberTEM worker exited {proc.returncode} without a result"}
        return json.loads(out.read_text())


# --------------------------------------------------------------------------------------
# machine limit: bare numpy


def numpy_sum(path: Path, threads: int, acc_dtype: Any, chunk: int = 32, arr: np.ndarray | None = None) -> np.ndarray:
    """Sum of all frames, ``threads`` threads each summing a contiguous half (third, ...)."""
    if arr is None:
        arr = np.load(path, mmap_mode="r")
    flat = arr.reshape((-1,) + arr.shape[-2:])
    n = flat.shape[0]
    bounds = np.linspace(0, n, threads + 1).astype(int)

    def part(lo: int, hi: int) -> np.ndarray:
        acc = np.zeros(flat.shape[1:], dtype=acc_dtype)
        for s in range(lo, hi, chunk):
            acc += np.add.reduce(flat[s : min(s + chunk, hi)], axis=0, dtype=acc_dtype)
        return acc

    if threads == 1:
        return part(0, n)
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(part, bounds[:-1], bounds[1:]))


def numpy_rows(path: Path, threads: int, repeats: int) -> list[dict[str, Any]]:
    variants = [
        (f"{threads} thread(s), float32 acc, fresh mmap", threads, np.float32, False),
        (f"{threads} thread(s), float64 acc, fresh mmap", threads, np.float64, False),
        (f"{threads} thread(s), float32 acc, mapped once", threads, np.float32, True),
    ]
    if threads > 1:
        variants += [
            ("1 thread, float32 acc, fresh mmap", 1, np.float32, False),
            ("1 thread, float32 acc, mapped once", 1, np.float32, True),
        ]
    rows = []
    for label, n, acc, reuse in variants:
        arr = np.load(path, mmap_mode="r") if reuse else None
        with RssSampler() as sampler:
            numpy_sum(path, n, acc, arr=arr)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                numpy_sum(path, n, acc, arr=arr)
                times.append(time.perf_counter() - t0)
        rows.append(
            {
                "label": label,
                "threads": n,
                "reuse": reuse,
                "times": times,
                "rss": sampler.peak_rss,
                "anon": sampler.peak_anon,
            }
        )
        log(f"  [numpy] {label}: best {min(times):.3f} s")
        del arr
    return rows


# --------------------------------------------------------------------------------------
# cold start


DF_COLD = """\
import detflow as df
from detflow.nodes import SumUDF
ctx = df.Context.make_with({make})
ds = ctx.load("npy", path={path!r})
res = ctx.run_udf(dataset=ds, udf=SumUDF())
float(res["intensity"].data.sum())
ctx.close()
"""

LT_COLD = """\
from libertem.api import Context
from libertem.udf.sum import SumUDF
ctx = Context.make_with({make})
ds = ctx.load("npy", path={path!r})
res = ctx.run_udf(dataset=ds, udf=SumUDF(), progress=False)
float(res["intensity"].data.sum())
ctx.close()
"""


def cold_start(python: str, code: str, cwd: Path, repeats: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [python, "-c", code],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return {"error": f"exit {proc.returncode}: {last}"[:300]}
        times.append(dt)
    return {"times": times}


def cold_rows(
    tiny: Path, args: argparse.Namespace, df_execs: Sequence[str], lt_execs: Sequence[str] | None
) -> list[dict[str, Any]]:
    rows = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    for ex in df_execs:
        make = repr(ex) if ex == "inline" else f"{ex!r}, cpus={args.cpus}"
        log(f"[cold start] detflow {ex}")
        r = cold_start(sys.executable, DF_COLD.format(make=make, path=str(tiny)), REPO, args.cold_repeats, env)
        rows.append({"framework": "detflow", "executor": ex, **r})
    for ex in lt_execs or ():
        name = LT_MAKE_WITH.get(ex, ex)
        # LiberTEM's make_with refuses cpus= for inline and delayed
        make = repr(name) if name in ("inline", "delayed") else f"{name!r}, cpus={args.cpus}"
        log(f"[cold start] LiberTEM {ex}")
        lt_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        r = cold_start(
            str(LT_PYTHON),
            LT_COLD.format(make=make, path=str(tiny)),
            DATA_DIR,
            args.cold_repeats,
            lt_env,
        )
        rows.append({"framework": "LiberTEM", "executor": ex, **r})
    return rows


# --------------------------------------------------------------------------------------
# report


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """Plain-text table; ``align``: one of 'l'/'r' per column (default: first left)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    align = align or ("l" + "r" * (len(headers) - 1))

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), rule] + [fmt(r) for r in cells])


def stat_of(times: Sequence[float], stat: str) -> float:
    return min(times) if stat == "best" else statistics.median(times)


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def compare(fp: list[Any] | None, ref: list[Any] | None) -> str:
    if fp is None or ref is None:
        return "-"
    scale = max(abs(ref[2]), abs(fp[2]), 1e-30)
    diff = max(abs(fp[1] - ref[1]), abs(fp[2] - ref[2])) / scale
    return "ok" if diff < 1e-3 else f"diff {diff:.1e}"


def report(
    info: dict[str, Any],
    np_rows: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    cold: list[dict[str, Any]],
    args: argparse.Namespace,
) -> None:
    stat = args.stat
    nbytes, nframes = info["nbytes"], info["nframes"]
    p = functools.partial(print, flush=True)
    p()
    p("=" * 78)
    p("detflow vs LiberTEM: core analyses")
    p("=" * 78)
    for k, v in info["lines"]:
        p(f"{k + ':' if k else '':<15}{v}")
    p(f"{'timing:':<15}each analysis runs once untimed (warm-up: JIT, caches), then {args.repeats} timed runs;")
    p(f"{'':<15}the table's time is the {stat} of them ('median' is also shown)")
    p(f"{'GB/s:':<15}file data bytes ({nbytes / 1e9:.3f} GB) / time; 1 GB = 1e9 bytes")
    p(RSS_NOTE)

    # machine limit
    limit: dict[int, float] = {}
    if np_rows:
        p()
        p(
            "Machine limit: bare numpy sum over the memory-mapped .npy "
            "(np.add.reduce over 32-frame chunks, one accumulator per thread)"
        )
        trs = []
        for r in np_rows:
            t = stat_of(r["times"], stat)
            gbs = nbytes / t / 1e9
            limit[r["threads"]] = max(limit.get(r["threads"], 0.0), gbs)
            trs.append(
                [
                    r["label"],
                    f"{t:.3f}",
                    f"{gbs:.2f}",
                    f"{nframes / t:,.0f}",
                    mib(r["rss"]),
                    mib(r["anon"]),
                ]
            )
        p(table(["variant", "time s", "GB/s", "frames/s", "RSS MiB", "anon MiB"], trs))
        p(
            "fresh mmap: np.load(mmap_mode='r') inside each timed run (page faults included); "
            "mapped once:\n  one mapping, already touched by the warm-up run. "
            "limit = the best variant per thread count:"
        )
        p("  " + ", ".join(f"{n} thread{'s' if n > 1 else ''}: {g:.2f} GB/s" for n, g in sorted(limit.items())))

    # analyses
    p()
    p("Analyses (ratio = detflow throughput / LiberTEM throughput on the same source; > 1: detflow is faster)")
    p(
        "  'vs LT match': against the matching LiberTEM executor ("
        + ", ".join(f"{d}~{lt}" for d, lt in MATCHING_LT.items())
        + "); 'vs LT best': against LiberTEM's fastest executor on that source"
    )
    thr: dict[tuple[str, str, str, str], float] = {}
    for r in rows:
        if "times" in r:
            key = (r["framework"], r["executor"], r["analysis"], r.get("source", "npy"))
            thr[key] = nbytes / stat_of(r["times"], stat) / 1e9
    lt_best: dict[tuple[str, str], tuple[float, str]] = {}
    for (fw, ex, an, src), g in thr.items():
        if fw == "LiberTEM" and g > lt_best.get((an, src), (0.0, ""))[0]:
            lt_best[(an, src)] = (g, ex)
    refs: dict[str, list[Any]] = {}  # reference result: LiberTEM's first, else detflow's
    for fw in ("LiberTEM", "detflow"):
        for r in rows:
            if r["framework"] == fw and r.get("fingerprint"):
                refs.setdefault(r["analysis"], r["fingerprint"])
    order = {a: i for i, a in enumerate(args.analyses.split(","))}
    src_order = {s: i for i, s in enumerate(args.sources.split(","))}
    rows_sorted = sorted(
        rows,
        key=lambda r: (
            src_order.get(r.get("source", "npy"), 99),
            order.get(r["analysis"], 99),
            r["framework"] != "detflow",
        ),
    )

    def above(r: dict[str, Any], key: str) -> str:
        if not r.get(key) or f"base_{key}" not in r:
            return "-"
        return f"{(r[key] - r[f'base_{key}']) / 2**20:.0f}"

    trs = []
    errors = []
    for r in rows_sorted:
        label = ANALYSES.get(r["analysis"], (r["analysis"],))[0]
        src = r.get("source", "npy")
        head = [label, src, r["framework"], r["executor"]]
        if "times" not in r:
            errors.append(f"{r['framework']} {r['executor']} {r['analysis']} ({src}): {r.get('error')}")
            trs.append(head + ["FAILED"] + ["-"] * 10)
            continue
        t = stat_of(r["times"], stat)
        g = nbytes / t / 1e9
        vs_match = vs_best = "-"
        if r["framework"] == "detflow":
            m = thr.get(("LiberTEM", MATCHING_LT.get(r["executor"], ""), r["analysis"], src))
            if m:
                vs_match = f"{g / m:.2f} ({MATCHING_LT[r['executor']]})"
            if (r["analysis"], src) in lt_best:
                b, bex = lt_best[(r["analysis"], src)]
                vs_best = f"{g / b:.2f} ({bex})"
        trs.append(
            head
            + [
                f"{t:.3f}",
                f"{statistics.median(r['times']):.3f}",
                f"{g:.2f}",
                f"{nframes / t:,.0f}",
                mib(r.get("rss")),
                mib(r.get("anon")),
                above(r, "rss"),
                above(r, "pss"),
                vs_match,
                vs_best,
                compare(r.get("fingerprint"), refs.get(r["analysis"])),
            ]
        )
    p(
        table(
            [
                "analysis",
                "source",
                "framework",
                "executor",
                f"{stat} s",
                "median s",
                "GB/s",
                "frames/s",
                "RSS MiB",
                "anon MiB",
                "+RSS MiB",
                "+PSS MiB",
                "vs LT match",
                "vs LT best",
                "result",
            ],
            trs,
            align="llllrrrrrrrrrrl",
        )
    )
    p("'result': a checksum of the result (sum and sum of |x| of the buffer named below) against LiberTEM's")
    p("  (rel. tolerance 1e-3): " + ", ".join(f"{ANALYSES[a][0]}: {ANALYSES[a][1][0]}" for a in order if a in ANALYSES))

    import bench_sources  # this script's directory is on sys.path

    p(bench_sources.ABOVE_NOTE)
    bench_sources.report_memory_target(rows, nbytes, stat_of, stat, p)

    # detflow SumUDF against the limit
    df_sum = [(ex, src, g) for (fw, ex, an, src), g in thr.items() if fw == "detflow" and an == "sum"]
    if limit and df_sum:
        p()
        p("detflow SumUDF / machine limit (target >= 0.8; the limit is over the memory-mapped .npy):")
        for ex, src, g in df_sum:
            n = 1 if ex == "inline" else args.cpus
            name = f"{ex} ({src})"
            if n in limit:
                p(
                    f"  {name:<19} {g:6.2f} GB/s / {limit[n]:.2f} GB/s ({n} thread"
                    f"{'s' if n > 1 else ''}) = {g / limit[n]:.2f}"
                )
            if ex == "inline" and args.cpus in limit:
                p(f"  {'':<19} (against the {args.cpus}-thread limit: {g / limit[args.cpus]:.2f})")

    # cold start
    if cold:
        p()
        p(
            f"Cold start: fresh interpreter -> import -> context -> first SumUDF result on a "
            f"{TINY[0][0]}x{TINY[0][1]}x{TINY[1][0]}x{TINY[1][1]} .npy, "
            f"best of {args.cold_repeats} (wall time of `python -c ...`)"
        )
        crs = []
        for r in cold:
            if "times" in r:
                crs.append(
                    [
                        r["framework"],
                        r["executor"],
                        f"{min(r['times']):.2f}",
                        " ".join(f"{t:.2f}" for t in r["times"]),
                    ]
                )
            else:
                crs.append([r["framework"], r["executor"], "FAILED", r.get("error", "")])
        p(table(["framework", "executor", "best s", "all s"], crs, align="llrl"))

    if errors:
        p()
        p("Failures:")
        for e in errors:
            p("  " + e)
    p()


# --------------------------------------------------------------------------------------


def machine_lines() -> list[tuple[str, str]]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    return [
        (
            "machine",
            f"{os.cpu_count()} CPUs ({cpu}), {mem} memory, {platform.system()} {platform.release()}",
        )
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument(
        "--small",
        action="store_true",
        help="nav 32x32 instead of 128x128 (128 MiB instead of 2 GiB): smoke run",
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per analysis")
    ap.add_argument(
        "--stat",
        choices=("best", "median"),
        default="best",
        help="which of the timed runs the table reports",
    )
    ap.add_argument(
        "--executors",
        default=DEFAULT_DF_EXECUTORS,
        help="detflow executors, comma-separated (df.Context.make_with names); 'none' to skip detflow",
    )
    ap.add_argument(
        "--lt-executors",
        default=DEFAULT_LT_EXECUTORS,
        help=f"LiberTEM executors, comma-separated, of {','.join(LT_EXECUTORS)}; 'none' to skip LiberTEM",
    )
    ap.add_argument("--analyses", default=DEFAULT_ANALYSES, help=f"comma-separated, of {','.join(ANALYSES)}")
    ap.add_argument(
        "--sources",
        default="npy",
        help="data sources, comma-separated, of npy (memory-mapped .npy), raw (headerless copy, cached), "
        "memory (the array in RAM, ctx.load('memory', data=arr))",
    )
    ap.add_argument("--lt-python", default=str(LT_PYTHON), help="interpreter of the LiberTEM virtualenv")
    ap.add_argument(
        "--cpus",
        type=int,
        default=2,
        help="workers/threads for the parallel executors and the numpy limit",
    )
    ap.add_argument("--cold-repeats", type=int, default=3, help="cold-start runs (best of)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start timings")
    ap.add_argument("--no-limit", action="store_true", help="skip the bare numpy limit")
    ap.add_argument("--no-mib", action="store_true", help="skip the MIB rows (bench_mib.py)")
    ap.add_argument("--regen", action="store_true", help="regenerate the dataset")
    ap.add_argument("--json", metavar="PATH", help="also write all raw numbers as JSON")
    ap.add_argument("--worker-timeout", type=int, default=3600, help=argparse.SUPPRESS)
    ap.add_argument("--libertem-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name in ("analyses",):
        bad = [a for a in getattr(args, name).split(",") if a not in ANALYSES]
        if bad:
            ap.error(f"unknown analyses {bad}; known: {','.join(ANALYSES)}")
    from bench_sources import SOURCES  # this script's directory is on sys.path

    bad = [s for s in args.sources.split(",") if s not in SOURCES]
    if bad or not args.sources:
        ap.error(f"unknown sources {bad}; known: {','.join(SOURCES)}")
    bad = [e for e in args.lt_executors.split(",") if e not in LT_EXECUTORS + ("none",)]
    if bad:
        ap.error(f"unknown LiberTEM executors {bad}; known: {','.join(LT_EXECUTORS)}")
    if args.repeats < 1 or args.cold_repeats < 1 or args.cpus < 1:
        ap.error("--repeats, --cold-repeats and --cpus must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.libertem_worker:
        return libertem_worker(args)

    nav, sig = SIZES["small" if args.small else "full"]
    df_execs = [] if args.executors == "none" else args.executors.split(",")
    lt_execs = [] if args.lt_executors == "none" else args.lt_executors.split(",")
    analyses = args.analyses.split(",")

    import bench_sources  # this script's directory is on sys.path

    sources = args.sources.split(",")
    path, how = ensure_dataset(nav, sig, regen=args.regen, threads=args.cpus)
    tiny, _ = ensure_dataset(*TINY)
    raw_how = None
    if "raw" in sources:
        log("[raw] headerless copy of the .npy ...")
        raw, raw_how = bench_sources.ensure_raw(path, regen=args.regen or how != "cached")
    nframes = int(np.prod(nav))
    nbytes = nframes * int(np.prod(sig)) * 2

    global LT_PYTHON
    LT_PYTHON = Path(args.lt_python)
    lt_version = lt_python_version() if lt_execs else None
    lt_lines: list[tuple[str, str]] = [("LiberTEM", "skipped (--lt-executors none)")]
    if lt_execs and lt_version is None:
        lt_lines = [
            ("LiberTEM", f"NOT MEASURED: {LT_PYTHON} is missing or cannot import libertem"),
            ("", f"create the venv with: bash {HERE / 'setup_libertem.sh'}"),
        ]
        log(f"[LiberTEM] {LT_PYTHON} is missing or cannot import libertem: measuring detflow")
        log(f"[LiberTEM] only. Create the venv with: bash {HERE / 'setup_libertem.sh'}")
        lt_execs = []
    elif lt_version:
        lt_lines = [("LiberTEM", f"{lt_version} ({LT_PYTHON})")]

    resident_before = page_cache_residency(path)
    t_cache = warm_page_cache(path)
    resident = page_cache_residency(path)
    info_lines = machine_lines() + [
        ("python", f"{platform.python_version()} (detflow), numpy {np.__version__}"),
        ("detflow", detflow_version()),
        *lt_lines,
        ("dataset", f"{path} ({how})"),
        (
            "",
            f"nav {nav[0]}x{nav[1]}, sig {sig[0]}x{sig[1]}, uint16, {nbytes / 2**30:.3f} GiB, {nframes} frames",
        ),
        ("sources", ", ".join(sources) + " (npy: memory-mapped .npy; raw: a headerless copy; memory: the array"),
        ("", "in RAM via np.load, loaded by each framework's half in turn, never two copies at once)"),
        *([("raw copy", f"{bench_sources.raw_path(path)} ({raw_how})")] if raw_how else []),
        ("page cache", f"before: {resident_before}; the file is read once before the measurements"),
        (
            "",
            f"({t_cache:.2f} s, {nbytes / t_cache / 1e9:.2f} GB/s), then {resident}; re-read before each half",
        ),
    ]

    np_rows = []
    if not args.no_limit:
        log("[numpy] machine limit")
        np_rows = numpy_rows(path, args.cpus, args.repeats)

    rows: list[dict[str, Any]] = []
    lt_out: dict[str, Any] = {}
    for source in sources:  # per source: detflow's half, then LiberTEM's (a subprocess)
        src_file = bench_sources.source_file(source, path)
        if df_execs:
            warm_page_cache(src_file)
            rows += detflow_rows(path, source, sig, df_execs, analyses, args.repeats, args.cpus)
        if lt_execs:
            warm_page_cache(src_file)
            lt_out = libertem_rows(path, source, args)
            if "error" in lt_out:
                log("[LiberTEM] " + lt_out["error"])
                rows += [
                    {"framework": "LiberTEM", "executor": ex, "analysis": a, "source": source, "error": lt_out["error"]}
                    for ex in lt_execs
                    for a in analyses
                ]
            else:
                rows += lt_out["rows"]

    mib_out: dict[str, Any] = {}
    if not args.no_mib and df_execs:
        import bench_mib  # this script's directory is on sys.path

        log("[mib] 12-bit raw and non-raw MIB rows")
        mib_out = bench_mib.measure(path, df_execs, LT_PYTHON if lt_execs else None, args.repeats, args.cpus,
                                    args.worker_timeout)

    cold = [] if args.no_cold else cold_rows(tiny, args, df_execs, lt_execs)

    info_lines.append(("", f"after all measurements: {page_cache_residency(path)}"))
    if raw_how:
        raw_res = page_cache_residency(bench_sources.raw_path(path))
        info_lines.append(("", f"raw copy after all measurements: {raw_res}"))
    info = {"nbytes": nbytes, "nframes": nframes, "lines": info_lines}
    report(info, np_rows, rows, cold, args)
    if mib_out:
        import bench_mib

        bench_mib.report(mib_out["rows"], mib_out["decode_s"], nbytes)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"info": info, "numpy": np_rows, "rows": rows, "cold": cold, "mib": mib_out, "args": vars(args)},
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
