#!/usr/bin/env python3
"""Mask benchmark: ApplyMasksUDF with 1 to 256 masks, detflow against LiberTEM, same data, same run.

Rows: three mask families times 1, 4, 16, 64 and 256 masks on a memory-mapped ``.npy``
of uint16 256x256 frames (``--size-mib``, default 512 MiB: 4096 frames), read from the
page cache:

* ``rings``: ``ring(cx, cy, w, h, w/4 + i, w/8)`` for ``i`` in ``0..n-1``, as a new user
  would write overlapping rings (LiberTEM's ``masks.ring`` on its side);
* ``sectors``: ``n`` equal angular sectors of the disk of radius ``w/2`` (segmented DPC);
* ``dense``: ``n`` masks of uniform random float32 weights (no structure to exploit).

detflow runs with the threads executor and ``kernel=`` as given (``--kernels``, default
``auto``; the kernel it chose is printed); LiberTEM 0.16 with its ConcurrentJobExecutor,
both on ``--cpus`` threads, LiberTEM in a subprocess with the interpreter of
``benchmarks/.venv-libertem``, family by family between detflow's rows so both see the
same machine. The machine's limit is numpy reading the same bytes (a bare sum over the
memory-mapped file on the same number of threads, ``bench_core.numpy_sum``). Results of
the two frameworks are compared (sum of the intensities, relative difference).

Numbers are printed, never asserted. Example: ``python benchmarks/bench_masks.py
--size-mib 512 --counts 1,4,16,64,256``.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_core  # noqa: E402  (this directory, for the dataset and the numpy limit)

FAMILIES = ("rings", "sectors", "dense")
FRAME = (256, 256)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- masks: module-level functions, so both frameworks build the very same ones -----------


def sector(k: int, n: int, h: int, w: int) -> np.ndarray:
    """The ``k``-th of ``n`` equal angular sectors of the disk of radius ``w/2``."""
    y, x = np.indices((h, w), dtype=np.float64)
    angle = (np.arctan2(y - h / 2, x - w / 2) + np.pi) / (2 * np.pi)
    index = np.minimum((angle * n).astype(int), n - 1)
    return (index == k) & (np.hypot(y - h / 2, x - w / 2) < w / 2)


def random_dense(k: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(1000 + k).random((h, w), dtype=np.float32)


def factories(masks_module: Any, family: str, n: int, h: int, w: int) -> list[Any]:
    if family == "rings":
        return [functools.partial(masks_module.ring, w / 2, h / 2, w, h, w / 4 + i, w / 8) for i in range(n)]
    if family == "sectors":
        return [functools.partial(sector, k, n, h, w) for k in range(n)]
    if family == "dense":
        return [functools.partial(random_dense, k, h, w) for k in range(n)]
    raise ValueError(f"unknown mask family {family!r}; known: {', '.join(FAMILIES)}")


def timed(run: Any, make_udf: Any, repeats: int) -> tuple[list[float], list[float]]:
    res = run(make_udf())  # warm-up: JIT, page cache, mask cache
    times = []
    for _ in range(repeats):
        udf = make_udf()
        t0 = time.perf_counter()
        res = run(udf)
        times.append(time.perf_counter() - t0)
    data = np.asarray(res["intensity"].data, dtype=np.float64)
    return times, [float(np.nansum(data)), float(np.nansum(np.abs(data)))]


# --- detflow ----------------------------------------------------------------------------


def detflow_rows(
    path: Path, family: str, counts: list[int], kernels: list[str], args: argparse.Namespace
) -> list[dict]:
    sys.path.insert(0, str(HERE.parent))
    import detflow as df
    from detflow.nodes import masks
    from detflow.nodes.masks_udf import ApplyMasksUDF

    rows = []
    ctx = df.Context.make_with("threads", cpus=args.cpus)
    try:
        ds = ctx.load("npy", path=str(path))
        h, w = ds.shape.sig
        for n in counts:
            for kernel in kernels:
                row: dict[str, Any] = {"family": family, "n": n, "kernel": kernel}
                try:
                    def make(n: int = n, kernel: str = kernel) -> Any:
                        return ApplyMasksUDF(mask_factories=factories(masks, family, n, h, w), kernel=kernel)

                    row["plan"] = repr(make().plan((h, w)))
                    row["times"], row["fingerprint"] = timed(
                        lambda udf: ctx.run_udf(dataset=ds, udf=udf), make, args.repeats
                    )
                    log(f"  [detflow] {family} {n} {kernel}: best {min(row['times']):.3f} s  {row['plan']}")
                except Exception as err:
                    row["error"] = f"{type(err).__name__}: {err}"[:300]
                    traceback.print_exc(file=sys.stderr)
                rows.append(row)
    finally:
        ctx.close()
    return rows


# --- LiberTEM (a subprocess) --------------------------------------------------------------


def libertem_worker(args: argparse.Namespace) -> int:
    from libertem import masks
    from libertem.api import Context
    from libertem.executor.concurrent import ConcurrentJobExecutor
    from libertem.udf.masks import ApplyMasksUDF

    ctx = Context(executor=ConcurrentJobExecutor.make_local(n_threads=args.cpus))
    rows = []
    try:
        ds = ctx.load("npy", path=args.data)
        h, w = tuple(ds.shape.sig)
        for n in [int(c) for c in args.counts.split(",")]:
            row: dict[str, Any] = {"family": args.family, "n": n}
            try:
                def make(n: int = n) -> Any:
                    return ApplyMasksUDF(mask_factories=factories(masks, args.family, n, h, w))

                row["times"], row["fingerprint"] = timed(
                    lambda udf: ctx.run_udf(dataset=ds, udf=udf, progress=False), make, args.repeats
                )
                log(f"  [LiberTEM] {args.family} {n}: best {min(row['times']):.3f} s")
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:300]
                traceback.print_exc(file=sys.stderr)
            rows.append(row)
    finally:
        ctx.close()
    Path(args.worker_out).write_text(json.dumps(rows))
    return 0


def libertem_rows(path: Path, family: str, counts: list[int], args: argparse.Namespace) -> list[dict] | str:
    lt_python = bench_core.LT_PYTHON
    if not lt_python.exists():
        return f"not measured: {lt_python} is missing"
    with tempfile.TemporaryDirectory(prefix="bench-masks-lt-") as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [str(lt_python), str(Path(__file__).resolve()), "--libertem-worker", "--worker-out", str(out),
               "--data", str(path), "--family", family, "--counts", ",".join(map(str, counts)),
               "--repeats", str(args.repeats), "--cpus", str(args.cpus)]
        try:
            subprocess.run(cmd, cwd=tempfile.gettempdir(), timeout=args.worker_timeout, check=False)
        except subprocess.TimeoutExpired:
            return f"LiberTEM worker timed out after {args.worker_timeout} s"
        if not out.exists():
            return "LiberTEM worker gave no result"
        return json.loads(out.read_text())


# --- report --------------------------------------------------------------------------------


def gbs(nbytes: int, row: dict | None) -> float | None:
    if not row or "times" not in row:
        return None
    return nbytes / min(row["times"]) / 1e9


def report(df_rows: list[dict], lt_rows: dict[tuple[str, int], dict], nbytes: int, limit: float, args: Any) -> None:
    print(f"ApplyMasksUDF, {nbytes / 2**20:.0f} MiB uint16 {FRAME[0]}x{FRAME[1]} frames (.npy, page cache), "
          f"{args.cpus} threads each; best of {args.repeats}")
    print(f"machine limit: numpy reading the same bytes on {args.cpus} threads: {limit:.2f} GB/s")
    head = f"{'masks':<8} {'n':>4} {'kernel':<8} {'detflow':>9} {'LiberTEM':>9} {'ratio':>6} {'/limit':>7}  agree  plan"
    print(head)
    print("-" * len(head))
    for r in df_rows:
        lt = lt_rows.get((r["family"], r["n"]))
        d, lg = gbs(nbytes, r), gbs(nbytes, lt)
        agree = ""
        if lt and "fingerprint" in lt and "fingerprint" in r:
            a, b = r["fingerprint"][1], lt["fingerprint"][1]
            agree = f"{abs(a - b) / max(abs(b), 1e-30):.0e}"
        chosen = r.get("plan", "").split("kernel=")[-1].split(",")[0].strip("'") if "plan" in r else "-"
        kernel = r["kernel"] if r["kernel"] != "auto" else f"{chosen}*"
        cells = [f"{r['family']:<8}", f"{r['n']:>4}", f"{kernel:<8}",
                 f"{d:9.2f}" if d else f"{'error':>9}", f"{lg:9.2f}" if lg else f"{'-':>9}",
                 f"{d / lg:6.2f}" if d and lg else f"{'-':>6}", f"{d / limit:7.2f}" if d else f"{'-':>7}",
                 f"{agree:>6}", r.get("plan", r.get("error", ""))]
        print(" ".join(cells))
    print("GB/s = dataset bytes / best time; ratio = detflow / LiberTEM; /limit = detflow / numpy read rate;")
    print("agree = relative difference of the summed |intensity| between the frameworks; * = chosen by 'auto'")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=512, help="dataset size (uint16 256x256 frames)")
    ap.add_argument("--counts", default="1,4,16,64,256", help="numbers of masks")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--kernels", default="auto", help="detflow kernels to time: auto, classes, sparse, rows, blas")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--no-libertem", action="store_true")
    ap.add_argument("--worker-timeout", type=float, default=1800)
    ap.add_argument("--libertem-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--family", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.libertem_worker:
        return libertem_worker(args)

    frames = args.size_mib * 2**20 // (FRAME[0] * FRAME[1] * 2)
    side = int(np.sqrt(frames))
    nav = (side, frames // side)
    path, how = bench_core.ensure_dataset(nav, FRAME)
    nbytes = int(np.prod(nav)) * FRAME[0] * FRAME[1] * 2
    log(f"dataset {path} ({how}); warming the page cache")
    bench_core.warm_page_cache(path)
    counts = [int(c) for c in args.counts.split(",")]
    kernels = args.kernels.split(",")

    bench_core.numpy_sum(path, args.cpus, np.float32)
    best = min(_time(lambda: bench_core.numpy_sum(path, args.cpus, np.float32)) for _ in range(args.repeats))
    limit = nbytes / best / 1e9
    log(f"[numpy] {limit:.2f} GB/s")

    df_rows: list[dict] = []
    lt_rows: dict[tuple[str, int], dict] = {}
    for family in args.families.split(","):
        df_rows += detflow_rows(path, family, counts, kernels, args)
        if not args.no_libertem:
            got = libertem_rows(path, family, counts, args)
            if isinstance(got, str):
                log(f"[LiberTEM] {got}")
            else:
                lt_rows.update({(r["family"], r["n"]): r for r in got})
    report(df_rows, lt_rows, nbytes, limit, args)
    return 0


def _time(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
