"""Cold start: a fresh interpreter up to ``import detflow``, and up to a first SumUDF result.

Each figure is the wall time of a whole ``python -c ...`` process (interpreter start-up,
imports, opening the file, the run, exit), started ``--runs`` times after one warm-up run
that fills the page cache and numba's on-disk kernel cache; the median is quoted, min and
max show the spread. Three interpreters, where they exist:

* ``detflow`` as installed here (every extra, as ``pip install -e ".[dev]"`` leaves it);
* ``detflow (core)``: the same, with the optional packages hidden from the import system,
  as ``pip install detflow`` leaves a machine (h5py, holoviews, panel, bokeh, distributed,
  scipy, sparse, rosettasciio, mrcfile, pyzmq, lz4, bitshuffle, psycopg);
* LiberTEM in ``benchmarks/.venv-libertem`` (``bash benchmarks/setup_libertem.sh``);
* and, as the machine's yardstick, a fresh interpreter that sums the same file with numpy.

The dataset is a 512 MiB ``.npy`` file (4096 frames of 256x256 uint16, nav 64x64) in
``benchmarks/data/``, made on first use. Nothing is asserted; the report goes to stdout.

    .venv/bin/python benchmarks/bench_coldstart.py [--runs 7] [--executor threads]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data" / "coldstart-512MiB.npy"
LT_PYTHON = HERE / ".venv-libertem" / "bin" / "python"

HIDDEN = ("h5py", "hdf5plugin", "holoviews", "bokeh", "panel", "distributed", "scipy", "sparse", "rsciio",
          "mrcfile", "zmq", "lz4", "bitshuffle", "psycopg")
BLOCKER = f"""\
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {HIDDEN!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Hide())
"""

IMPORT = "import detflow"
DF_FIRST = """\
import detflow as df
from detflow.nodes import SumUDF
ctx = df.Context.make_with({executor!r})
res = ctx.run_udf(dataset=ctx.load("npy", path={path!r}), udf=SumUDF())
assert res["intensity"].data.shape == (256, 256)
"""
#: the machine's yardstick: a fresh interpreter, numpy, and one pass over the memory-mapped file
NUMPY_SUM = """\
import numpy as np
a = np.load({path!r}, mmap_mode="r")
s = np.zeros(a.shape[2:])
for i in range(a.shape[0]):
    s += a[i].sum(axis=0, dtype=np.float64)
"""
LT_IMPORT = "import libertem.api"
LT_FIRST = """\
from libertem.api import Context
from libertem.udf.sum import SumUDF
ctx = Context.make_with({executor!r})
res = ctx.run_udf(dataset=ctx.load("npy", path={path!r}), udf=SumUDF(), progress=False)
assert res["intensity"].data.shape == (256, 256)
ctx.close()
"""
LT_EXECUTORS = {"threads": "threads", "inline": "inline"}


def make_data(path: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"writing {path} (512 MiB)", file=sys.stderr)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(64, 64, 256, 256))
    rng = np.random.default_rng(0)
    for row in range(64):
        out[row] = rng.poisson(3.0, size=(64, 256, 256)).astype(np.uint16)
    out.flush()
    del out


def timed(python: str, code: str, runs: int) -> list[float] | str:
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        proc = subprocess.run([python, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                              check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            return (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        if i:  # the first run warms the page cache and numba's kernel cache
            times.append(dt)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="timed runs of each command (after one warm-up)")
    ap.add_argument("--executor", default="threads", help="executor of the first-result runs")
    args = ap.parse_args()
    make_data(DATA)
    rows: list[tuple[str, str, list[float] | str]] = []
    first = DF_FIRST.format(executor=args.executor, path=str(DATA))
    for label, prefix in (("detflow", ""), ("detflow (core)", BLOCKER)):
        print(f"[{label}]", file=sys.stderr)
        rows.append((label, "import", timed(sys.executable, prefix + IMPORT, args.runs)))
        rows.append((label, "first SumUDF result", timed(sys.executable, prefix + first, args.runs)))
    rows.append(("python", "bare interpreter", timed(sys.executable, "pass", args.runs)))
    rows.append(("numpy", "sum of the same file", timed(sys.executable, NUMPY_SUM.format(path=str(DATA)), args.runs)))
    if LT_PYTHON.exists():
        print("[LiberTEM]", file=sys.stderr)
        lt_first = LT_FIRST.format(executor=LT_EXECUTORS.get(args.executor, args.executor), path=str(DATA))
        rows.append(("LiberTEM", "import", timed(str(LT_PYTHON), LT_IMPORT, args.runs)))
        rows.append(("LiberTEM", "first SumUDF result", timed(str(LT_PYTHON), lt_first, args.runs)))
    else:
        print("(no benchmarks/.venv-libertem: bash benchmarks/setup_libertem.sh adds LiberTEM's rows)")
    print(f"cold start, {DATA.name}, executor {args.executor!r}, {os.cpu_count()} CPUs, "
          f"wall time of a whole process, {args.runs} runs after one warm-up")
    print(f"{'who':<16} {'what':<22} {'median s':>9} {'min s':>7} {'max s':>7}")
    print("-" * 64)
    medians: dict[tuple[str, str], float] = {}
    for who, what, times in rows:
        if isinstance(times, str):
            print(f"{who:<16} {what:<22} failed: {times}")
            continue
        medians[who, what] = statistics.median(times)
        print(f"{who:<16} {what:<22} {medians[who, what]:9.3f} {min(times):7.3f} {max(times):7.3f}")
    lt = medians.get(("LiberTEM", "first SumUDF result"))
    for who in ("detflow", "detflow (core)"):
        mine = medians.get((who, "first SumUDF result"))
        if lt and mine:
            print(f"{who}: first result {lt / mine:.2f}x faster than LiberTEM's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
