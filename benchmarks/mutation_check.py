"""A mutation check of detflow's core: plant one known bug at a time, run the tests that
guard that code, and report the bugs the tests let through ("survivors").

Each mutant is a small, hand-written edit (an exact text replaced in one module) with the
tests that ought to catch it. For every mutant the script copies the repository's
``detflow/`` and ``tests/`` (plus the top-level ``conftest.py`` and ``pyproject.toml``)
into a temporary folder, applies the one edit there (the working tree is never touched),
and runs ``pytest -x`` on the listed tests with that copy first on the import path. A
mutant is

* **killed** when the tests fail,
* **survived** when they pass (a test that should exist does not, or cannot fail),
* **stale** when its text is no longer in the module (the code moved: update the list),
* **timeout** when the tests ran past ``--timeout`` seconds (counted as killed: a
  deadlock is also a failure, but look at it).

Not collected by pytest and not part of CI: it runs the guarded tests once per mutant,
minutes in all. Run it from the repository root::

    python benchmarks/mutation_check.py              # every mutant
    python benchmarks/mutation_check.py --list       # names only
    python benchmarks/mutation_check.py -k masks -k delayed   # a few, by name

The exit code is 1 when a mutant survived, else 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    """One planted bug: in ``path``, ``old`` becomes ``new``; ``tests`` should catch it."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS: tuple[Mutant, ...] = (
    Mutant("delayed-linear-merge", "detflow/executors/delayed.py",
           "            paired = [delayed(combine, pure=False)(a, b, ctx) for a, b in zip(level[::2], level[1::2], "
           "strict=False)]\n            level = paired + ([level[-1]] if len(level) % 2 else [])",
           "            level = [delayed(combine, pure=False)(level[0], level[1], ctx)] + level[2:]",
           ("tests/executors/test_delayed.py::test_merges_in_a_tree",)),
    Mutant("threads-no-in-flight-limit", "detflow/executors/threads.py",
           "while not exhausted and len(pending) < 2 * self.n_workers:", "while not exhausted:",
           ("tests/executors/test_executors.py::test_threads_bound_items_in_flight",)),
    Mutant("pipelined-one-cpu-for-all", "detflow/executors/pipelined.py",
           "ids = [available[i % len(available)] for i in range(cpus)]", "ids = [available[0] for i in range(cpus)]",
           ("tests/executors/test_pipelined.py::test_workers_are_single_threaded_and_pinned",)),
    Mutant("executor-aliases-swapped", "detflow/executors/base.py",
           'aliases = {"synchronous": "inline", "concurrent": "threads"',
           'aliases = {"synchronous": "threads", "concurrent": "inline"',
           ("tests/test_api.py::test_make_with",)),
    Mutant("dask-close-keeps-cluster", "detflow/executors/dask_.py",
           "        self.client.close()\n        if self._cluster is not None:\n            self._cluster.close()\n",
           "        pass\n",
           ("tests/executors/test_close.py",)),
    Mutant("radial-bins-reversed", "detflow/nodes/masks.py",
           "    centres = radius_inner + width * (np.arange(n_bins) + 0.5)\n",
           "    centres = (radius_inner + width * (np.arange(n_bins) + 0.5))[::-1]\n",
           ("tests/nodes/test_masks.py",)),
    Mutant("mask-kernel-for-many-masks", "detflow/nodes/masks_udf.py",
           "KERNEL_MAX_MASKS = 4", "KERNEL_MAX_MASKS = 16",
           ("tests/nodes/test_masks_udf.py::test_kernel_choice",)),
    Mutant("sum-merge-overwrites", "detflow/nodes/sum.py",
           "        dest.intensity[:] += src.intensity", "        dest.intensity[:] = src.intensity",
           ("tests/nodes/test_sum.py", "tests/executors/test_delayed.py")),
    # Survives, and is known to: no partition without a frame in the ROI is cut any more (the
    # planner drops them), so a tree merge never meets an empty side through the public API; the
    # branch stays as a guard for partitions that report no frames. The test listed first checks
    # tree merges with ROIs that leave most partitions out.
    Mutant("combine-drops-empty-side", "detflow/nodes/reduce.py",
           "        if not b.pieces:  # b processed nothing (no frame of it in the ROI)\n"
           "            rests.append(a.rest[i])",
           "        if not b.pieces:  # b processed nothing (no frame of it in the ROI)\n"
           "            rests.append(b.rest[i])",
           ("tests/executors/test_delayed.py::test_a_tree_merge_keeps_the_side_that_processed_frames",
            "tests/nodes/test_sum.py", "tests/nodes/test_stddev.py")),
    Mutant("corrections-empty-pixel-zeroed", "detflow/sources/corrections.py",
           "                flat[:, excluded[has]] = sums / counts[has].astype(dtype)\n",
           "                flat[:, excluded[has]] = sums / counts[has].astype(dtype)\n"
           "            flat[:, excluded[~has]] = 0\n",
           ("tests/sources/test_corrections.py",)),
    Mutant("auto-drops-nav-shape", "detflow/sources/auto.py",
           "    return SOURCES.get(kind)(path, **kwargs)",
           "    kwargs.pop('nav_shape', None)\n    return SOURCES.get(kind)(path, **kwargs)",
           ("tests/sources/test_auto.py",)),
    Mutant("huge-default-partitions", "detflow/sources/base.py",
           "_DEFAULT_PARTITION_BYTES = 128 * 2**20", "_DEFAULT_PARTITION_BYTES = 2**40",
           ("tests/sources/test_partition_sizing.py",)),
    Mutant("min-partitions-ignored", "detflow/sources/base.py",
           "            per = min(per, math.ceil(n / max(1, min(self.min_partitions, n))))\n",
           "            pass\n",
           ("tests/sources/test_partition_sizing.py",)),
    Mutant("mib-u16-little-endian", "detflow/sources/mib_write.py",
           '12: ">u2"', '12: "<u2"',
           ("tests/sources/test_mib.py::test_writer_matches_hand_built_bytes_every_variant",)),
    Mutant("merlin-validate-waits", "detflow/sources/live/merlin/connection.py",
           "    complete = nav_shape is not None and -1 not in tuple(nav_shape)\n",
           "    complete = False\n",
           ("tests/sources/live/test_merlin_live.py::"
            "test_graph_with_a_scan_shape_validates_without_taking_an_acquisition",)),
    Mutant("zarr-partitions-done-never-listed", "detflow/sinks/zarr_.py",
           "        self._done.extend(update.partial.covered)\n", "",
           ("tests/sinks/test_zarr.py::test_store_matches_numpy_and_opens_labelled",)),
    Mutant("registry-entry-points-by-name", "detflow/registry.py",
           "entry_points(group=self.group)", "entry_points(name=self.group)",
           ("tests/test_registry.py",)),
    Mutant("cli-every-error-exits-2", "detflow/cli.py",
           "    sys.exit(code)\n", "    sys.exit(2)\n",
           ("tests/test_cli.py::test_a_failed_run_exits_with_1",)),
)


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("detflow", "tests", "examples"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("conftest.py", "pyproject.toml"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)


def run_mutant(m: Mutant, *, timeout: float) -> tuple[str, float, str]:
    """``(outcome, seconds, last line of pytest's output)`` for one mutant."""
    with tempfile.TemporaryDirectory(prefix="detflow-mutant-") as tmp:
        copy = Path(tmp)
        _copy_tree(copy)
        target = copy / m.path
        text = target.read_text()
        if text.count(m.old) != 1:
            return "stale", 0.0, f"{m.path}: the text to replace occurs {text.count(m.old)} times"
        target.write_text(text.replace(m.old, m.new))
        env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
        # make sure the copy, not the installed checkout, is what the tests import
        where = subprocess.run([sys.executable, "-c", "import detflow; print(detflow.__file__)"],
                               cwd=copy, env=env, capture_output=True, text=True, check=True).stdout.strip()
        if not where.startswith(str(copy)):
            raise SystemExit(f"mutation check: the tests would import {where}, not the mutated copy")
        t0 = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests],
                                  cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - t0, f"ran past {timeout:g} s"
        elapsed = time.monotonic() - t0
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        last = lines[-1] if lines else proc.stderr.strip()[-200:]
        if proc.returncode == 0:
            return "survived", elapsed, last
        if proc.returncode in (1, 3):  # tests failed (3: an internal error in a test hook)
            return "killed", elapsed, last
        return f"error (pytest exit {proc.returncode})", elapsed, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="select", action="append", default=[],
                        help="run only mutants whose name contains this (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's test run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.select or any(s in m.name for s in args.select)]
    if args.list:
        for m in chosen:
            print(f"{m.name:36} {m.path}  ->  {' '.join(m.tests)}")
        return 0
    counts: dict[str, int] = {}
    survivors = []
    for m in chosen:
        outcome, seconds, last = run_mutant(m, timeout=args.timeout)
        counts[outcome] = counts.get(outcome, 0) + 1
        print(f"{outcome:9} {m.name:36} {seconds:6.1f} s  {last}", flush=True)
        if outcome == "survived":
            survivors.append(m.name)
    print("\n" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if survivors:
        print("survivors: " + ", ".join(survivors))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
