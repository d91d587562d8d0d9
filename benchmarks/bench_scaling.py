"""Scaling curves and in-memory datasets: detflow against LiberTEM, interleaved, same data.

One table per question, every row a SumUDF (or, where it says so, ApplyMasksUDF with 16
rings, which is compute bound) over the same frames in both frameworks:

* ``memory``: ``ctx.load("memory", data=arr)`` on every executor, with the peak memory
  of the driver and all its worker processes above the array (``+PSS``), and
  ``ctx.load("dask", arr)`` (an array of chunks of the memory-mapped ``.npy``) set against
  dask computing the same sum over the same chunks itself;
* ``size``: the memory-mapped ``.npy`` at 128 MiB, 512 MiB, 2 GiB (8 GiB with ``--big``);
* ``workers``: 1 and 2 threads, SumUDF and 16 ring masks;
* ``partition``: frames per partition swept around the default (marked ``*``);
* ``distributed``: the dask.distributed executor on 2 local workers against threads.

LiberTEM runs in a persistent subprocess (``benchmarks/.venv-libertem``), and each timed
run of a detflow row is followed by one timed run of the matching LiberTEM row, so both
see the same load; the machine's limit (numpy summing the same bytes, one and two
threads) is measured in the same run. Ratios are of throughputs: ``df/LT`` > 1 means
detflow is faster, ``df/limit`` is detflow over numpy on the same bytes.

Usage::

    .venv/bin/python benchmarks/bench_scaling.py --small         # 128 MiB and 512 MiB only
    .venv/bin/python benchmarks/bench_scaling.py                 # up to 2 GiB
    .venv/bin/python benchmarks/bench_scaling.py --big           # also 8 GiB (disk; needs the space)
    .venv/bin/python benchmarks/bench_scaling.py --tables memory,size
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as bc  # noqa: E402

SIG = (256, 256)
NAV = {128: (32, 32), 512: (64, 64), 2048: (128, 128), 8192: (256, 256)}
TABLES = ("memory", "size", "workers", "partition", "distributed")
DF_EXECUTORS = ("inline", "threads", "delayed", "dask", "pipelined")
#: LiberTEM's ``Context.make_with`` names the same executors alike ("threads": its concurrent one)
LT_OF = {ex: ex for ex in DF_EXECUTORS}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# both frameworks: building a context, a dataset and a UDF


def make_ctx(api: Any, framework: str, executor: str, cpus: int) -> Any:
    if framework == "detflow":
        return api.Context.make_with(executor) if executor == "inline" else api.Context.make_with(executor, cpus=cpus)
    if executor == "delayed":
        import dask

        dask.config.set(num_workers=cpus)
    if executor in ("inline", "delayed"):
        return api.Context.make_with(executor)
    return api.Context.make_with(executor, cpus=cpus)


def load(ctx: Any, framework: str, source: str, path: str, fpp: int | None, holder: dict[str, Any]) -> Any:
    """The dataset of ``source`` (``npy``, ``memory`` or ``dask``) over the frames in ``path``."""
    kw = {} if fpp is None else {"frames_per_partition" if framework == "detflow" else "num_partitions": fpp}
    if source == "npy":
        if framework == "detflow":
            return ctx.load("npy", path=path, **kw)
        return ctx.load("npy", path=path, **kw)
    if source == "memory":
        if "arr" not in holder:
            holder["arr"] = np.load(path)  # into RAM, not mapped
        if framework == "detflow":
            return ctx.load("memory", data=holder["arr"])
        return ctx.load("memory", data=holder["arr"], sig_dims=2)
    if source == "dask":
        return ctx.load("dask", dask_array(path), sig_dims=2)
    raise ValueError(source)


def dask_array(path: str) -> Any:
    import dask.array as da

    mm = np.load(path, mmap_mode="r")
    return da.from_array(mm, chunks=(max(1, mm.shape[0] // 8), *mm.shape[1:]))


def build_udf(ns: Any, analysis: str) -> Any:
    if analysis == "sum":
        return ns.SumUDF()
    h, w = SIG
    rings = np.stack([ns.masks.ring(w / 2, h / 2, w, h, w / 4 + 8 * (i + 1), w / 4 + 8 * i) for i in range(16)])
    return ns.ApplyMasksUDF(mask_factories=[lambda m=m: m for m in rings])


class Runner:
    """Keeps one context per executor and one dataset per (executor, source, partitioning)."""

    def __init__(self, framework: str, api: Any, ns: Any) -> None:
        self.framework, self.api, self.ns = framework, api, ns
        self.ctxs: dict[tuple[str, int], Any] = {}
        self.datasets: dict[tuple[Any, ...], Any] = {}
        self.holder: dict[str, Any] = {}

    def run(self, executor: str, cpus: int, source: str, path: str, fpp: int | None, analysis: str) -> float:
        key = (executor, cpus)
        if key not in self.ctxs:
            self.ctxs[key] = make_ctx(self.api, self.framework, executor, cpus)
        ctx = self.ctxs[key]
        dkey = (executor, cpus, source, path, fpp)
        if dkey not in self.datasets:
            if source != "memory" or self.holder.get("path") != path:
                self.holder.clear()
                self.holder["path"] = path
            self.datasets[dkey] = load(ctx, self.framework, source, path, fpp, self.holder)
        udf = build_udf(self.ns, analysis)
        t0 = time.perf_counter()
        res = ctx.run_udf(dataset=self.datasets[dkey], udf=udf)
        if self.framework == "LiberTEM":
            lazy = [b.delayed_raw_data for b in res.values() if hasattr(b, "delayed_raw_data")]
            if lazy:
                import dask

                dask.compute(*lazy)
        return time.perf_counter() - t0

    def drop(self, source: str | None = None) -> None:
        """Forget datasets (of ``source``) and the array in memory; close contexts when None."""
        for k in [k for k in self.datasets if source is None or k[2] == source]:
            del self.datasets[k]
        self.holder.clear()
        if source is None:
            for ctx in self.ctxs.values():
                with contextlib.suppress(Exception):
                    ctx.close()
            self.ctxs.clear()
        gc.collect()


def lt_server() -> int:
    """``--lt-server``: run LiberTEM rows asked for on stdin (one JSON object a line)."""
    import types
    import warnings

    from libertem import api, masks
    from libertem.udf.masks import ApplyMasksUDF
    from libertem.udf.sum import SumUDF

    warnings.filterwarnings("ignore")
    runner = Runner("LiberTEM", api, types.SimpleNamespace(SumUDF=SumUDF, ApplyMasksUDF=ApplyMasksUDF, masks=masks))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        out: dict[str, Any] = {}
        try:
            if cmd["op"] == "drop":
                runner.drop(cmd.get("source"))
            elif cmd["op"] == "usage":
                out = bc.tree_usage(pss=True)
            else:
                with bc.RssSampler(pss=cmd.get("pss", False), pss_every=2) as s:
                    out["t"] = runner.run(*cmd["args"])
                out["pss"], out["rss"] = s.peak_pss, s.peak_rss
        except Exception as err:  # noqa: BLE001 - reported in the table
            out["error"] = f"{type(err).__name__}: {err}"[:200]
        print(json.dumps(out), flush=True)
    runner.drop()
    return 0


class LiberTEM:
    def __init__(self, python: Path) -> None:
        self.proc: subprocess.Popen[str] | None = None
        if not python.exists():
            log(f"no LiberTEM interpreter at {python} (bash benchmarks/setup_libertem.sh): detflow alone")
            return
        bc.DATA_DIR.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([str(python), __file__, "--lt-server"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=bc.DATA_DIR)
        self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {"error": "LiberTEM server exited"}

    def ask(self, **cmd: Any) -> dict[str, Any]:
        if self.proc is None:
            return {"error": "not installed"}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            self.proc.wait(120)


# --------------------------------------------------------------------------------------
# measuring


def numpy_limit(path: str, threads: int, in_memory: np.ndarray | None = None) -> float:
    """Best of two: numpy summing the same bytes (the machine's limit), seconds."""
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        bc.numpy_sum(Path(path), threads, np.float32, arr=in_memory)
        best = min(best, time.perf_counter() - t0)
    return best


class PssSampler:
    """Peak summed Pss of this process and its descendants, leaving out the subtree of
    ``exclude`` (the LiberTEM server, which is also a child of this process)."""

    def __init__(self, exclude: int | None, interval: float = 0.05) -> None:
        self.exclude, self.interval, self.peak = exclude, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def now(self) -> int:
        skip = set(bc._descendants(self.exclude)) if self.exclude else set()
        return sum(bc._read_pss(pid) for pid in bc._descendants(os.getpid()) if pid not in skip)

    def _loop(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def measure(df: Runner, lt: LiberTEM, row: dict[str, Any], repeats: int, pss: bool) -> dict[str, Any]:
    """Warm-up, then ``repeats`` detflow runs, each followed by one LiberTEM run."""
    args = [row["executor"], row["cpus"], row["source"], row["path"], row.get("fpp"), row["analysis"]]
    lt_args = [LT_OF.get(row["executor"], row["executor"]), row["cpus"], row["source"], row["path"],
               row.get("lt_fpp"), row["analysis"]]
    out = dict(row, df=[], lt=[])
    lt_pid = lt.proc.pid if lt.proc is not None else None
    base = PssSampler(lt_pid).now() if pss else None
    try:
        if row.get("lt", True):
            lt.ask(op="run", args=lt_args)  # LiberTEM's warm-up
        with PssSampler(lt_pid if pss else -1, interval=0.05 if pss else 3600) as s:
            df.run(*args)
            for _ in range(repeats):
                out["df"].append(df.run(*args))
                if row.get("lt", True):
                    r = lt.ask(op="run", args=lt_args, pss=pss)
                    if "t" in r:
                        out["lt"].append(r["t"])
                        if pss:
                            out["lt_pss"] = max(out.get("lt_pss", 0), r["pss"])
                    else:
                        out["lt_error"] = r.get("error")
        if pss and base is not None:
            out["df_above"] = s.peak - base
    except Exception as err:  # noqa: BLE001 - a failing row is reported, not raised
        out["error"] = f"{type(err).__name__}: {err}"[:200]
    log(f"  {row['table']} {row['label']}: df {min(out['df'], default=float('nan')):.3f} s, "
        f"LT {min(out['lt'], default=float('nan')):.3f} s {out.get('error', '')}{out.get('lt_error') or ''}")
    return out


def gbs(nbytes: int, t: float | None) -> float | None:
    return None if not t else nbytes / t / 1e9


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(title: str, rows: list[dict[str, Any]], note: str = "") -> None:
    print(f"\n## {title}\n", flush=True)
    if note:
        print(note + "\n")
    hdr = ["row", "MiB", "detflow GB/s", "LiberTEM GB/s", "df/LT", "limit GB/s", "df/limit",
           "+PSS MiB df", "PSS MiB LT"]
    lines = [hdr]
    for r in rows:
        n = r["nbytes"]
        d = gbs(n, min(r["df"], default=None))
        l_ = gbs(n, min(r["lt"], default=None))
        lim = gbs(n, r.get("limit_s"))
        lines.append([
            r["label"] + (f"  ERROR {r['error']}" if "error" in r else ""), str(n // 2**20), fmt(d), fmt(l_),
            fmt(d / l_ if d and l_ else None), fmt(lim), fmt(d / lim if d and lim else None),
            fmt(r["df_above"] / 2**20 if "df_above" in r else None, ".0f"),
            fmt(r["lt_pss"] / 2**20 if "lt_pss" in r else None, ".0f"),
        ])
    widths = [max(len(x[i]) for x in lines) for i in range(len(hdr))]
    for i, line in enumerate(lines):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |", flush=True)
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


# --------------------------------------------------------------------------------------
# the tables


def dataset(mib: int) -> tuple[str, int]:
    path, how = bc.ensure_dataset(NAV[mib], SIG)
    log(f"dataset {path.name}: {how}")
    if mib <= 2048:
        bc.warm_page_cache(path)
    return str(path), int(np.prod(NAV[mib])) * int(np.prod(SIG)) * 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lt-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--small", action="store_true", help="sizes 128 and 512 MiB only")
    p.add_argument("--big", action="store_true", help="also 8 GiB on disk (size table)")
    p.add_argument("--memory-mib", type=int, default=None, help="memory table size (2048; 512 with --small)")
    p.add_argument("--tables", default=",".join(TABLES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--lt-python", type=Path, default=bc.LT_PYTHON, help="'none': detflow alone")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.lt_server:
        return lt_server()
    import detflow
    from detflow import nodes

    tables = args.tables.split(",")
    sizes = [128, 512] if args.small else [128, 512, 2048]
    if args.big:
        sizes.append(8192)
    mem_mib = args.memory_mib or (512 if args.small else 2048)
    df = Runner("detflow", detflow, nodes)
    lt = LiberTEM(args.lt_python)
    print(f"# bench_scaling: load average {os.getloadavg()[0]:.1f} at start, {args.cpus} cpus, best of {args.repeats}")
    results: dict[str, list[dict[str, Any]]] = {}
    cpus = args.cpus

    def table(name: str, rows: list[dict[str, Any]], pss: bool = False,
              limit: Callable[[dict[str, Any]], float] | None = None) -> None:
        done = []
        for row in rows:
            row["table"] = name
            if limit is not None:
                row["limit_s"] = limit(row)
            done.append(measure(df, lt, row, args.repeats, pss))
        results[name] = done

    try:
        if "memory" in tables:
            path, n = dataset(mem_mib)
            arr_limit = numpy_limit(path, cpus, np.load(path))
            gc.collect()
            # the array is in memory before the first row's baseline, or that row counts it as overhead
            df.holder.clear()
            df.holder.update(path=path, arr=np.load(path))
            rows = [dict(label=f"memory, {ex}", executor=ex, cpus=cpus, source="memory", path=path, nbytes=n,
                         analysis="sum", limit_s=arr_limit) for ex in DF_EXECUTORS]
            table("memory", rows, pss=True)
            df.drop("memory")
            lt.ask(op="drop", source="memory")
            dask_rows = [dict(label=f"dask array, {ex}", executor=ex, cpus=cpus, source="dask", path=path,
                              nbytes=n, analysis="sum") for ex in DF_EXECUTORS]
            import dask

            def own(row: dict[str, Any]) -> float:  # dask summing the same chunks itself
                arr = dask_array(row["path"])
                t0 = time.perf_counter()
                dask.compute(arr.sum(axis=(0, 1), dtype=np.float32), scheduler="threads", num_workers=cpus)
                return time.perf_counter() - t0

            table("dask", dask_rows, limit=own)
        if "size" in tables:
            rows = []
            for mib in sizes:
                path, n = dataset(mib)
                rows.append(dict(label=f"npy {mib} MiB, threads", executor="threads", cpus=cpus, source="npy",
                                 path=path, nbytes=n, analysis="sum", limit_s=numpy_limit(path, cpus)))
            table("size", rows)
        path512, n512 = dataset(512)
        if "workers" in tables:
            rows = [dict(label=f"{a}, {c} worker(s)", executor="threads", cpus=c, source="npy", path=path512,
                         nbytes=n512, analysis=a, limit_s=numpy_limit(path512, c))
                    for a in ("sum", "mask16") for c in (1, 2)]
            table("workers", rows)
        if "partition" in tables:
            frame = int(np.prod(SIG)) * 2
            default = 128 * 2**20 // frame
            rows = [dict(label=f"{f} frames/partition" + (" *" if f == default else ""), executor="threads",
                         cpus=cpus, source="npy", path=path512, nbytes=n512, analysis="sum",
                         fpp=None if f == default else f, lt=f == default, limit_s=numpy_limit(path512, cpus))
                    for f in (128, 256, 512, default, 2048)]
            table("partition", rows)
        if "distributed" in tables:
            rows = [dict(label=f"{ex}, {cpus} workers", executor=ex, cpus=cpus, source="npy", path=path512,
                         nbytes=n512, analysis="sum", limit_s=numpy_limit(path512, cpus))
                    for ex in ("threads", "dask")]
            table("distributed", rows)
    finally:
        df.drop()
        lt.close()

    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; GB = 10^9 bytes; best of {args.repeats}")
    notes = {
        "memory": "ctx.load('memory', data=arr); +PSS: peak Pss of driver and workers above the array itself "
                  "(target: >= 1 GB/s, < 1 GiB for 2 GiB); limit: numpy summing the array in memory",
        "dask": "ctx.load('dask', arr): arr = da.from_array(memory-mapped .npy, 8 chunks along the first axis); "
                "'limit' here is dask summing the same chunks itself (threaded scheduler): the speed of the chunks",
        "size": "memory-mapped .npy; past 2 GiB the file is larger than the page cache holds (disk speed)",
        "workers": "threads executor with 1 and 2 workers (LiberTEM: concurrent with as many threads)",
        "partition": "detflow frames per partition; * is the default (LiberTEM at its own default in that row)",
        "distributed": "the dask.distributed executor on local worker processes against threads, same file",
    }
    for name, rows in results.items():
        print_table(name, rows, notes.get(name, ""))
    if "distributed" in results and len(results["distributed"]) == 2:
        t, d = (min(r["df"], default=None) for r in results["distributed"])
        if t and d:
            print(f"\ndask.distributed / threads (detflow): {t / d:.2f} (target >= 0.8)")
    if "partition" in results:
        best = min(min(r["df"], default=float("inf")) for r in results["partition"])
        dflt = [min(r["df"], default=None) for r in results["partition"] if r["label"].endswith("*")]
        if dflt and dflt[0]:
            print(f"default partition size / best: {best / dflt[0]:.2f} of the best throughput (target >= 0.9)")
    if args.json:
        args.json.write_text(json.dumps(results, default=str, indent=1))
    sys.stdout.flush()  # a worker pool's exit handler may end the process without flushing
    return 0


if __name__ == "__main__":
    sys.exit(main())
