"""LiberTEM's own UDF classes on LiberTEM, and the very same classes on detflow.

The compat route (:mod:`detflow.compat.libertem`) can load LiberTEM's UDF source files
(``libertem/udf/sum.py``, ``sumsigudf.py``, ``logsum.py``, ``stddev.py``) from the
LiberTEM venv and run them on detflow's UDF base class. This benchmark times each
class both ways on the same ``.npy`` file in the same invocation, with detflow's own
built-in UDF of the same name beside them, and checks that all three agree.

* LiberTEM half: a subprocess with ``benchmarks/.venv-libertem/bin/python`` running this
  script with ``--libertem-worker`` (``InlineJobExecutor()``,
  ``ConcurrentJobExecutor.make_local(n_threads=N)``), answering in JSON.
* detflow half: this process; ``install(udf_sources=<LiberTEM's site-packages>)``, then
  ``from libertem.udf.sum import SumUDF`` etc. are LiberTEM's classes on detflow's
  ``inline`` and ``threads`` executors.

Every row: one untimed warm-up run, then ``--repeats`` timed ``run_udf`` calls, best
reported. Nothing is asserted; the report says whether the results agree (rel. 1e-4).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_compat.py --small    # nav 32x32, 128 MiB
    .venv/bin/python benchmarks/bench_compat.py            # nav 128x128, 2 GiB (the bench_core dataset)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
LT_PYTHON = HERE / ".venv-libertem" / "bin" / "python"
#: analysis -> (LiberTEM module, class name, detflow built-in module, result buffer)
ANALYSES: dict[str, tuple[str, str, str, str]] = {
    "sum": ("libertem.udf.sum", "SumUDF", "detflow.nodes.sum", "intensity"),
    "sumsig": ("libertem.udf.sumsigudf", "SumSigUDF", "detflow.nodes.sumsig", "intensity"),
    "logsum": ("libertem.udf.logsum", "LogsumUDF", "detflow.nodes.logsum", "logsum"),
    "stddev": ("libertem.udf.stddev", "StdDevUDF", "detflow.nodes.stddev", "std"),
}
PAIRS = (("inline", "inline"), ("threads", "concurrent"))  # detflow executor, LiberTEM executor


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    res = run()  # warm-up: numba JIT, page cache
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = run()
        best = min(best, time.perf_counter() - t0)
    return best, res


def checksum(res: Any, key: str) -> float:
    return float(np.nansum(np.asarray(res[key].data, dtype=np.float64)))


def libertem_site_packages() -> Path:
    out = subprocess.run([str(LT_PYTHON), "-c", "import libertem, pathlib; print(pathlib.Path(libertem.__file__)"
                          ".parent.parent)"], capture_output=True, text=True, check=True, timeout=120)
    return Path(out.stdout.strip())


def libertem_worker(args: argparse.Namespace) -> int:
    """``--libertem-worker``: LiberTEM's classes on LiberTEM; JSON to ``--worker-out``."""
    import importlib

    from libertem.api import Context
    from libertem.executor.concurrent import ConcurrentJobExecutor
    from libertem.executor.inline import InlineJobExecutor

    rows: dict[str, Any] = {}
    for _, lt_ex in PAIRS:
        executor = InlineJobExecutor() if lt_ex == "inline" else ConcurrentJobExecutor.make_local(n_threads=args.cpus)
        with Context(executor=executor) as ctx:
            ds = ctx.load("npy", path=args.data)
            for name in args.analyses.split(","):
                mod, cls, _, key = ANALYSES[name]
                udf_cls = getattr(importlib.import_module(mod), cls)
                t, res = timed(lambda c=udf_cls, x=ctx, d=ds: x.run_udf(dataset=d, udf=c()), args.repeats)
                rows[f"{lt_ex}/{name}"] = {"time": t, "checksum": checksum(res, key)}
                log(f"  [LiberTEM {lt_ex}] {name}: {t:.3f} s")
    Path(args.worker_out).write_text(json.dumps(rows))
    return 0


def detflow_rows(args: argparse.Namespace, path: Path, lt_site: Path) -> dict[str, Any]:
    import importlib

    import detflow as df
    from detflow.compat.libertem import install, uninstall

    install(udf_sources=lt_site)  # libertem.udf.* from LiberTEM's own files, on detflow
    rows: dict[str, Any] = {}
    try:
        for ex, _ in PAIRS:
            ctx = df.Context.make_with(ex) if ex == "inline" else df.Context.make_with(ex, cpus=args.cpus)
            with ctx:
                ds = ctx.load("npy", path=str(path))
                for name in args.analyses.split(","):
                    mod, cls, own_mod, key = ANALYSES[name]
                    lt_cls = getattr(importlib.import_module(mod), cls)
                    assert Path(sys.modules[mod].__file__ or "").is_relative_to(lt_site), "not LiberTEM's file"
                    own_cls = getattr(importlib.import_module(own_mod), cls)
                    t, res = timed(lambda c=lt_cls, x=ctx, d=ds: x.run_udf(dataset=d, udf=c()), args.repeats)
                    t_own, res_own = timed(lambda c=own_cls, x=ctx, d=ds: x.run_udf(dataset=d, udf=c()),
                                           args.repeats)
                    rows[f"{ex}/{name}"] = {"time": t, "checksum": checksum(res, key),
                                            "own_time": t_own, "own_checksum": checksum(res_own, key)}
                    log(f"  [detflow {ex}] {name}: LiberTEM's class {t:.3f} s, detflow's {t_own:.3f} s")
    finally:
        uninstall()
    return rows


def agree(a: float, b: float) -> str:
    return "yes" if abs(a - b) <= 1e-4 * max(abs(a), abs(b), 1e-12) else f"NO ({a:.6g} vs {b:.6g})"


def report(dt: dict[str, Any], lt: dict[str, Any], analyses: Sequence[str], size: int) -> str:
    head = ("analysis", "detflow ex", "LiberTEM ex", "LiberTEM class on LiberTEM s",
            "LiberTEM class on detflow s", "ratio", "detflow built-in s", "GB/s (class on detflow)", "results agree")
    lines = []
    for ex, lt_ex in PAIRS:
        for name in analyses:
            d, l_ = dt.get(f"{ex}/{name}"), lt.get(f"{lt_ex}/{name}")
            if d is None or l_ is None:
                continue
            ratio = l_["time"] / d["time"]
            ok = "yes" if agree(d["checksum"], l_["checksum"]) == "yes" == agree(d["own_checksum"], l_["checksum"]) \
                else f"{agree(d['checksum'], l_['checksum'])} / built-in {agree(d['own_checksum'], l_['checksum'])}"
            lines.append((name, ex, lt_ex, f"{l_['time']:.3f}", f"{d['time']:.3f}", f"{ratio:.2f}",
                          f"{d['own_time']:.3f}", f"{size / d['time'] / 1e9:.2f}", ok))
    widths = [max(len(str(r[i])) for r in (head, *lines)) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in lines]
    out.append("ratio = LiberTEM time / detflow time for the same class (> 1: the class runs faster on detflow)")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="nav 32x32 instead of 128x128")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--analyses", default=",".join(ANALYSES))
    p.add_argument("--libertem-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.libertem_worker:
        return libertem_worker(args)
    if not LT_PYTHON.exists():
        print(f"no LiberTEM venv at {LT_PYTHON}: run `bash benchmarks/setup_libertem.sh` first")
        return 0
    sys.path.insert(0, str(HERE))
    from bench_core import ensure_dataset

    nav = (32, 32) if args.small else (128, 128)
    path, how = ensure_dataset(nav, (256, 256))
    log(f"dataset {path} ({how})")
    lt_site = libertem_site_packages()
    log("[detflow] LiberTEM's classes through detflow.compat.libertem, and detflow's built-ins")
    dt = detflow_rows(args, path, lt_site)
    with tempfile.TemporaryDirectory(prefix="bench-compat-") as tmp:
        out = Path(tmp) / "lt.json"
        cmd = [str(LT_PYTHON), str(Path(__file__).resolve()), "--libertem-worker", "--worker-out", str(out),
               "--data", str(path), "--analyses", args.analyses, "--repeats", str(args.repeats),
               "--cpus", str(args.cpus)]
        log("[LiberTEM] the same classes on LiberTEM")
        subprocess.run(cmd, check=False, timeout=3600)
        lt = json.loads(out.read_text()) if out.exists() else {}
    size = path.stat().st_size
    print(f"dataset: {path.name}, {size / 2**20:.0f} MiB uint16, nav {nav}, sig (256, 256); "
          f"best of {args.repeats} after a warm-up; cpus={args.cpus}")
    print(report(dt, lt, args.analyses.split(","), size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
