#!/usr/bin/env python3
"""MIB rows of the core benchmark: 12-bit Merlin data, raw (R64) and non-raw (U16).

Imported by ``bench_core.py`` (``--mib``, on by default). The benchmark's ``.npy``
dataset is written once more as two Merlin acquisitions with detflow's MIB writer
(cached in ``benchmarks/data/``); then

* SumUDF runs over each with detflow's executors and, in a subprocess with the
  LiberTEM venv's interpreter (``bench_mib.py --lt-worker``), with LiberTEM's MIB
  reader; the results' fingerprints are compared;
* the decoding alone is timed: detflow's reader returns every frame, tile by tile
  (2 MiB of frames at a time, one thread), from the raw and from the non-raw files,
  with the files in the page cache; the report gives raw time / non-raw time (the
  target is <= 2);
* the same ratio for every raw variant (single chip R1/R6/R12/R24 256x256, quads
  2x2 512x512 and 2x2G 514x514 at each depth), each against non-raw frames of the
  same shape and dtype (U08 for R1/R6, U16 for R12, U32 for R24), from random
  frames written once to ``benchmarks/data/mib_variants/`` (``--variants-only`` runs
  just this part).

Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mib_paths(npy: Path) -> dict[str, Path]:
    stem = npy.stem
    return {kind: npy.parent / f"{stem}_mib_{kind}" / "scan.hdr" for kind in ("u16", "raw")}


def ensure_mib(npy: Path, regen: bool = False) -> dict[str, Path]:
    """The ``.npy`` as 12-bit MIB, non-raw and raw (values clipped to 12 bit)."""
    from detflow.sources.mib import write_mib

    out = mib_paths(npy)
    data = None
    for kind, hdr in out.items():
        mib = hdr.with_suffix(".mib")
        if not regen and mib.exists() and mib.stat().st_mtime >= npy.stat().st_mtime:
            continue
        if data is None:
            data = np.minimum(np.load(npy, mmap_mode="r"), 4095).astype(np.uint16)
        hdr.parent.mkdir(parents=True, exist_ok=True)
        log(f"[mib] writing {hdr.parent} ({kind})")
        write_mib(hdr, data, counter_depth=12, raw=kind == "raw")
    return out


def _best(fn: Any, repeats: int) -> tuple[float, Any]:
    res = fn()  # warm-up (JIT, page cache)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return min(times), res


def _fingerprint(arr: Any) -> list[float]:
    a = np.asarray(arr, dtype=np.float64)
    return [float(a.sum()), float(np.abs(a).sum())]


def detflow_mib_rows(paths: dict[str, Path], executors: Sequence[str], repeats: int, cpus: int) -> list[dict[str, Any]]:
    import detflow as df
    from detflow.nodes import SumUDF

    rows = []
    for kind, hdr in paths.items():
        for ex in executors:
            row: dict[str, Any] = {"framework": "detflow", "format": kind, "executor": ex}
            try:
                with (df.Context.make_with(ex) if ex == "inline" else df.Context.make_with(ex, cpus=cpus)) as ctx:
                    ds = ctx.load("mib", path=str(hdr))
                    t, res = _best(lambda ctx=ctx, ds=ds: ctx.run_udf(dataset=ds, udf=SumUDF()), repeats)
                row.update(time=t, fingerprint=_fingerprint(res["intensity"].data))
                log(f"  [detflow {ex}] mib {kind}: {t:.3f} s")
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            rows.append(row)
    return rows


def decode_ratio(paths: dict[str, Path], repeats: int) -> dict[str, float]:
    """Seconds to decode every frame, one thread, tile by tile: raw and non-raw."""
    from detflow.sources.mib import MibSource

    out = {}
    for kind, hdr in paths.items():
        reader = MibSource(str(hdr))._reader
        n = reader.total_frames
        step = max(1, 2 * 2**20 // (reader.layout.frame_size * reader.dtype.itemsize))

        def read_all(reader: Any = reader, n: int = n, step: int = step) -> None:
            for lo in range(0, n, step):
                reader.read_frames(lo, min(n, lo + step))

        out[kind], _ = _best(read_all, repeats)
    return out


#: (layout, frame shape) of the variant table; each at every counter depth
VARIANT_SHAPES = (("1x1", (256, 256)), ("2x2", (512, 512)), ("2x2G", (514, 514)))
VARIANT_DEPTHS = (1, 6, 12, 24)
_DEPTH_DTYPE = {1: np.uint8, 6: np.uint8, 12: np.uint16, 24: np.uint32}
_NONRAW_NAME = {1: "U08", 6: "U08", 12: "U16", 24: "U32"}


def ensure_variant(root: Path, layout: str, sig: tuple[int, int], depth: int, raw: bool,
                   nbytes: int) -> Path:
    """Random frames of one variant, ``nbytes`` decoded, written once (same data raw and not)."""
    from detflow.sources.mib import write_mib

    hdr = root / f"{layout}_R{depth}_{'raw' if raw else 'nonraw'}_{nbytes >> 20}MiB" / "scan.hdr"
    if hdr.with_suffix(".mib").exists():
        return hdr
    dtype = np.dtype(_DEPTH_DTYPE[depth])
    n = max(4, nbytes // (sig[0] * sig[1] * dtype.itemsize))
    data = np.random.default_rng(depth).integers(0, 2**depth, size=(n, *sig), dtype=np.uint64).astype(dtype)
    if layout.endswith("G"):  # the gap pixels of a 2x2G frame hold nothing
        c = (sig[0] - 2) // 2
        data[:, c : c + 2] = 0
        data[:, :, c : c + 2] = 0
    hdr.parent.mkdir(parents=True, exist_ok=True)
    log(f"[mib] writing {hdr.parent}")
    write_mib(hdr, data, counter_depth=depth, raw=raw, layout=layout)
    return hdr


def variant_ratios(root: Path, repeats: int, nbytes: int = 64 * 2**20) -> dict[str, float]:
    """Decoding time, as :func:`decode_ratio`, of every raw variant and its non-raw twin.

    Keys ``"<layout> R<depth> raw"`` and ``"<layout> R<depth> nonraw"``; the decoded
    frames of the two are compared once (they must be equal). Raw and non-raw timed
    runs alternate, to spread the noise of a shared machine over both.
    """
    from detflow.sources.mib import MibSource

    out: dict[str, float] = {}
    for layout, sig in VARIANT_SHAPES:
        for depth in VARIANT_DEPTHS:
            readers = {}
            for kind in ("raw", "nonraw"):
                hdr = ensure_variant(root, layout, sig, depth, kind == "raw", nbytes)
                readers[kind] = MibSource(str(hdr))._reader
            a, b = (r.read_frames(0, min(4, r.total_frames)) for r in readers.values())
            if not np.array_equal(a, b):
                raise AssertionError(f"{layout} R{depth}: raw and non-raw frames differ")
            best = dict.fromkeys(readers, float("inf"))
            for reader in readers.values():
                _read_tiles(reader)  # warm-up (JIT, page cache)
            for _ in range(max(1, 2 * repeats)):
                for kind, reader in readers.items():
                    t0 = time.perf_counter()
                    _read_tiles(reader)
                    best[kind] = min(best[kind], time.perf_counter() - t0)
            for kind, t in best.items():
                out[f"{layout} R{depth} {kind}"] = t
    return out


def _read_tiles(reader: Any) -> None:
    """Every frame, 2 MiB of decoded frames at a time."""
    n = reader.total_frames
    step = max(1, 2 * 2**20 // (reader.layout.frame_size * reader.dtype.itemsize))
    for lo in range(0, n, step):
        reader.read_frames(lo, min(n, lo + step))


def report_variants(times: dict[str, float], print_: Any = print) -> None:
    """The variant table of :func:`variant_ratios`: raw / non-raw time per variant."""
    print_("Raw decoding per variant (detflow reader, one thread, 2 MiB tiles, page-cached files), "
           "against non-raw frames of the same shape:")
    lines = [["layout", "raw", "frame", "non-raw", "raw ms", "non-raw ms", "raw / non-raw"]]
    for layout, sig in VARIANT_SHAPES:
        for depth in VARIANT_DEPTHS:
            raw, non = times.get(f"{layout} R{depth} raw"), times.get(f"{layout} R{depth} nonraw")
            if raw is None or non is None:
                continue
            lines.append([layout, f"R{depth}", f"{sig[0]}x{sig[1]}", _NONRAW_NAME[depth], f"{raw * 1e3:.2f}",
                          f"{non * 1e3:.2f}", f"{raw / non:.2f}"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print_("  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    print_("  (target: raw / non-raw <= 2 for every variant)")


def libertem_mib_rows(paths: dict[str, Path], lt_python: Path, executors: Sequence[str], repeats: int,
                      cpus: int, timeout: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-lt-mib-") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [str(lt_python), str(Path(__file__).resolve()), "--lt-worker", "--out", str(out),
               "--executors", ",".join(executors), "--repeats", str(repeats), "--cpus", str(cpus),
               *[f"{k}={p}" for k, p in paths.items()]]
        log("[LiberTEM] MIB rows in " + str(lt_python))
        try:
            subprocess.run(cmd, timeout=timeout, check=False, cwd=tmp)
        except subprocess.TimeoutExpired:
            return [{"framework": "LiberTEM", "format": "-", "executor": "-", "error": "timed out"}]
        if not out.exists():
            return [{"framework": "LiberTEM", "format": "-", "executor": "-", "error": "worker gave no result"}]
        return list(json.loads(out.read_text()))


def lt_worker(argv: Sequence[str]) -> int:
    """Runs in the LiberTEM venv: SumUDF over each MIB acquisition, JSON rows out."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--lt-worker", action="store_true")
    ap.add_argument("--out", required=True)
    ap.add_argument("--executors", default="inline,concurrent")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    from libertem.api import Context
    from libertem.udf.sum import SumUDF

    rows = []
    for item in args.files:
        kind, _, path = item.partition("=")
        for ex in args.executors.split(","):
            row: dict[str, Any] = {"framework": "LiberTEM", "format": kind, "executor": ex}
            try:
                if ex == "inline":
                    ctx = Context.make_with("inline")
                else:
                    from libertem.executor.concurrent import ConcurrentJobExecutor

                    ctx = Context(executor=ConcurrentJobExecutor.make_local(n_threads=args.cpus))
                ds = ctx.load("mib", path=path)
                t, res = _best(lambda ctx=ctx, ds=ds: ctx.run_udf(dataset=ds, udf=SumUDF(), progress=False),
                               args.repeats)
                row.update(time=t, fingerprint=_fingerprint(res["intensity"].data))
                ctx.close()
                log(f"  [LiberTEM {ex}] mib {kind}: {t:.3f} s")
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            rows.append(row)
    Path(args.out).write_text(json.dumps(rows))
    return 0


def report(rows: list[dict[str, Any]], ratio: dict[str, float], nbytes: int, print_: Any = print) -> None:
    """The MIB section of the report."""
    print_()
    print_("MIB 12-bit, same frames as above (values clipped to 12 bit): SumUDF, best of the timed runs")
    ref = {(r["format"], r["executor"]): r for r in rows if r["framework"] == "LiberTEM" and "time" in r}
    match = {"inline": "inline", "threads": "concurrent"}
    lines = [["format", "framework", "executor", "best s", "GB/s", "LiberTEM / detflow", "same result"]]
    for r in rows:
        if "error" in r:
            lines.append([r["format"], r["framework"], r["executor"], "FAILED", r["error"][:60], "", ""])
            continue
        lt = ref.get((r["format"], match.get(r["executor"], r["executor"])))
        speed = f"{lt['time'] / r['time']:.2f}" if lt and r["framework"] == "detflow" else ""
        same = ""
        if lt and r["framework"] == "detflow":
            same = "yes" if np.allclose(lt["fingerprint"], r["fingerprint"]) else "NO"
        lines.append([r["format"], r["framework"], r["executor"], f"{r['time']:.3f}",
                      f"{nbytes / r['time'] / 1e9:.2f}", speed, same])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print_("  " + "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))
    if ratio:
        raw, u16 = ratio.get("raw"), ratio.get("u16")
        if raw and u16:
            print_(f"Decoding alone (detflow reader, one thread, every frame in 2 MiB tiles): non-raw U16 "
                   f"{u16:.3f} s ({nbytes / u16 / 1e9:.2f} GB/s), raw R12 {raw:.3f} s ({nbytes / raw / 1e9:.2f} GB/s);")
            print_(f"  raw / non-raw time = {raw / u16:.2f} (target <= 2)")
        variants = {k: v for k, v in ratio.items() if k not in ("raw", "u16")}
        if variants:
            report_variants(variants, print_)


def measure(npy: Path, df_executors: Sequence[str], lt_python: Path | None,
            repeats: int, cpus: int, timeout: int) -> dict[str, Any]:
    """Everything above, for ``bench_core.py``: the raw numbers, for :func:`report`."""
    paths = ensure_mib(npy)
    rows = detflow_mib_rows(paths, df_executors, repeats, cpus) if df_executors else []
    ratio = decode_ratio(paths, repeats)
    ratio.update(variant_ratios(HERE / "data" / "mib_variants", repeats))
    if lt_python is not None:
        lt_execs = [{"inline": "inline", "threads": "concurrent"}[e] for e in df_executors
                    if e in ("inline", "threads")] or ["inline"]
        rows += libertem_mib_rows(paths, lt_python, lt_execs, repeats, cpus, timeout)
    return {"rows": rows, "decode_s": ratio}


if __name__ == "__main__":
    if "--lt-worker" in sys.argv:
        sys.exit(lt_worker(sys.argv[1:]))
    ap = argparse.ArgumentParser(description="MIB rows alone (see bench_core.py --mib)")
    ap.add_argument("npy", type=Path, nargs="?")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants-only", action="store_true",
                    help="only the raw / non-raw decoding table of every raw variant (no .npy needed)")
    ap.add_argument("--variant-mib", type=int, default=64, help="MiB of decoded frames per variant")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--lt-python", type=Path, default=HERE / ".venv-libertem" / "bin" / "python")
    a = ap.parse_args()
    if a.variants_only:
        report_variants(variant_ratios(HERE / "data" / "mib_variants", a.repeats, a.variant_mib * 2**20))
        sys.exit(0)
    if a.npy is None:
        ap.error("the .npy dataset is needed (or --variants-only)")
    size = int(np.load(a.npy, mmap_mode="r").nbytes)
    lt = a.lt_python if a.lt_python.exists() else None
    out = measure(a.npy, ["inline", "threads"], lt, a.repeats, a.cpus, 3600)
    report(out["rows"], out["decode_s"], size)
