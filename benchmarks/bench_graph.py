#!/usr/bin/env python3
"""Graph benchmark: what frame chains and multi-pass graphs cost, against doing it by hand.

1. A chain ``correct -> bin 2 -> masks`` (a dark frame subtracted, 2x2 binning, 4 ring
   masks) as a graph, against the same computation written by hand in numpy over the same
   ``.npy`` file (block by block, as fast as numpy does it: one subtraction, one reshape-sum,
   one matrix product per block).
2. The DPC graph (``sum -> find_disk -> com(cx, cy, r by reference) -> idpc``, two passes),
   against its passes run one after another by hand: a ``sum`` graph, the disk found with
   numpy, a ``com`` graph with those numbers typed in, the phase integrated.
3. A one-pass graph against ``Context.run_udf`` with the same UDFs (the same lowering: the
   ratio shows that a graph adds nothing to a single pass).
4. The machine's limit: a bare numpy sum over the memory-mapped file.

Ratios above 1 mean the graph is slower. Numbers are printed, never asserted.

usage: python benchmarks/bench_graph.py [--small] [--executor threads] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import detflow as df
from detflow.nodes.results.idpc import integrate_gradient

SIZES = {"full": ((64, 64), (128, 128)), "small": ((16, 16), (64, 64))}


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_data(path: Path, nav: tuple[int, int], sig: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.indices(sig)
    disk = ((yy - sig[0] / 2) ** 2 + (xx - sig[1] / 2) ** 2 <= (sig[0] / 6) ** 2) * 400
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(*nav, *sig))
    for iy in range(nav[0]):
        shift = int(3 * np.sin(iy / nav[0] * 2 * np.pi))
        arr[iy] = np.roll(disk, shift, axis=1) + rng.poisson(5, size=(nav[1], *sig))
    arr.flush()
    return np.load(path, mmap_mode="r")


def ring_masks(sig: tuple[int, int]) -> tuple[list[dict], np.ndarray]:
    h, w = sig[0] // 2, sig[1] // 2
    specs = [{"type": "ring", "cx": w / 2, "cy": h / 2, "r": r + 4, "ri": r} for r in (2, 6, 10, 14)]
    yy, xx = np.indices((h, w))
    d2 = (yy - h / 2) ** 2 + (xx - w / 2) ** 2
    dense = np.stack([(d2 <= (s["r"]) ** 2) & (d2 > s["ri"] ** 2) for s in specs]).reshape(len(specs), -1)
    return specs, dense.astype(np.float32)


def chain_by_hand(data: np.ndarray, dark: np.ndarray, masks: np.ndarray, block: int) -> np.ndarray:
    nav, sig = data.shape[:2], data.shape[2:]
    flat = data.reshape(-1, *sig)
    out = np.empty((flat.shape[0], masks.shape[0]), dtype=np.float32)
    for i in range(0, flat.shape[0], block):
        b = flat[i : i + block].astype(np.float32) - dark
        b = b.reshape(len(b), sig[0] // 2, 2, sig[1] // 2, 2).sum(axis=(2, 4))
        out[i : i + block] = b.reshape(len(b), -1) @ masks.T
    return out.reshape(*nav, -1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a small scan, for a quick check")
    ap.add_argument("--executor", default="threads", help="detflow executor (default: threads)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    nav, sig = SIZES["small" if args.small else "full"]
    with tempfile.TemporaryDirectory(prefix="bench-graph-") as tmp:
        path = Path(tmp) / "scan.npy"
        data = make_data(path, nav, sig)
        mib = data.nbytes / 2**20
        print(f"scan nav {nav} sig {sig} uint16, {mib:.0f} MiB, executor {args.executor}, best of {args.repeat}")
        ex = df.Context.make_with(args.executor).executor

        t_limit = best(lambda: np.asarray(data).sum(dtype=np.uint64), args.repeat)
        print(f"machine limit (numpy sum over the file): {t_limit * 1e3:8.1f} ms  ({mib / t_limit:.0f} MiB/s)")

        # 1. the chain
        dark = np.random.default_rng(1).uniform(0, 10, size=sig).astype(np.float32)
        specs, dense = ring_masks(sig)
        g = df.Graph("chain")
        g.source("npy", path=str(path))
        g.partition()
        g.frames("correct", id="c", dark=dark)
        g.frames("bin", id="b", input="c", factor=2)
        g.udf("masks", id="rings", input="b", masks=specs)
        got = g.run(executor=ex)["rings"]["intensity"].values
        block = max(1, (2 * 2**20) // (int(np.prod(sig)) * 2))
        ref = chain_by_hand(data, dark, dense, block)
        assert np.allclose(got, ref, rtol=1e-3), "graph and hand-written chain disagree"
        t_graph = best(lambda: g.run(executor=ex), args.repeat)
        t_hand = best(lambda: chain_by_hand(data, dark, dense, block), args.repeat)
        print(f"chain correct->bin->masks: graph {t_graph * 1e3:8.1f} ms, "
              f"numpy by hand (1 core) {t_hand * 1e3:8.1f} ms, ratio graph/hand {t_graph / t_hand:5.2f}")

        # 2. DPC: one graph, two passes, against the passes by hand
        dpc = df.Graph("dpc")
        dpc.source("npy", path=str(path))
        dpc.partition()
        dpc.udf("sum")
        dpc.result("find_disk", id="disk", input="sum")
        dpc.udf("com", cx=dpc.ref("disk.cx"), cy=dpc.ref("disk.cy"), r=dpc.ref("disk.r"))
        dpc.result("idpc", id="phase", input="com")

        def by_hand() -> np.ndarray:
            g1 = df.Graph("sum")
            g1.source("npy", path=str(path))
            g1.partition()
            g1.udf("sum")
            total = g1.run(executor=ex)["sum"]["intensity"].values
            ys, xs = np.nonzero(total > 0.5 * total.max())
            g2 = df.Graph("com")
            g2.source("npy", path=str(path))
            g2.partition()
            g2.udf("com", cx=float(xs.mean()), cy=float(ys.mean()), r=float(np.sqrt(ys.size / np.pi)))
            com = g2.run(executor=ex)["com"]
            return integrate_gradient(com["field_y"].values, com["field_x"].values)

        phase = dpc.run(executor=ex)["phase"]["phase"].values
        assert np.allclose(phase, by_hand(), atol=1e-6), "DPC graph and passes by hand disagree"
        t_dpc = best(lambda: dpc.run(executor=ex), args.repeat)
        t_dpc_hand = best(by_hand, args.repeat)
        print(f"DPC (2 passes): graph {t_dpc * 1e3:8.1f} ms, passes by hand {t_dpc_hand * 1e3:8.1f} ms, "
              f"ratio graph/hand {t_dpc / t_dpc_hand:5.2f}")

        # 3. one pass: a graph against run_udf
        from detflow.nodes import CoMUDF, SumUDF

        one = df.Graph("one")
        one.source("npy", path=str(path))
        one.partition()
        one.udf("sum")
        one.udf("com", cx=sig[1] / 2, cy=sig[0] / 2, r=sig[0] / 6)
        ctx = df.Context(ex)
        ds = ctx.load("npy", path=str(path))
        t_one = best(lambda: one.run(executor=ex), args.repeat)
        t_udf = best(lambda: ctx.run_udf(dataset=ds, udf=[SumUDF(), CoMUDF(cx=sig[1] / 2, cy=sig[0] / 2,
                                                                        r=sig[0] / 6)]), args.repeat)
        print(f"one pass (sum + com): graph {t_one * 1e3:8.1f} ms, run_udf {t_udf * 1e3:8.1f} ms, "
              f"ratio {t_one / t_udf:5.2f}")
        times = [t_graph, t_dpc / 2, t_one]
        print(f"per read of the file: {statistics.median(times) * 1e3:.1f} ms median, "
              f"{t_limit / statistics.median(times):.2f} of the machine limit")
        ex.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
