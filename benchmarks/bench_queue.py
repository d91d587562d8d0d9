#!/usr/bin/env python3
"""Batch queue benchmark: how fast the queue itself is, and what a batch costs per task.

1. Enqueue throughput: 10,000 empty tasks in one ``enqueue`` call (tasks/s), and enqueuing
   the same 10,000 again (all found, none added).
2. Lease-complete throughput: a bare loop of ``lease`` + ``complete`` over the 10,000
   (tasks/s), then ``launch_workers`` with a no-op callable, 1 and 4 workers (heartbeat,
   events and attempt records included).
3. Per-task overhead of real runs: 200 small scans (nav 4x4, sig 16x16) through a
   two-output graph, once by hand in one loop (``Graph.call`` per input, inline executor)
   and once as ``detflow batch`` does it in-process (listing with done-checks, enqueue,
   lease, heartbeat, staged outputs moved into place, per-task log file; one worker,
   the same inline executor). The difference divided by 200 is the batch's overhead.

``--postgres URL`` adds items 1 and 2 on PostgreSQL. The numbers are printed, never
asserted. ``--tasks`` / ``--runs`` shrink it for a quick look.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detflow.batch import SequentialProcessor, batch_enqueue, launch_workers, open_queue  # noqa: E402
from detflow.batch.task import GraphWork, graph_task  # noqa: E402

GRAPH = """schema_version: 1
name: small
source: {type: npy, params: {path: unused.npy}}
partition: {num_partitions: 1}
nodes:
  sum: {type: sum}
  totals: {type: sumsig, save_results: true}
sinks:
  results: {type: zarr, inputs: [sum], params: {path: "{output_dir}/{input_stem}.zarr"}}
"""


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:10.0f} tasks/s  ({seconds * 1e3 / n:.3f} ms/task)"


def bench_queue(location: str, n: int) -> None:
    q = open_queue(location)
    tasks = [{"i": i} for i in range(n)]
    t0 = time.perf_counter()
    added = q.enqueue(tasks).added
    t1 = time.perf_counter()
    again = q.enqueue(tasks)
    t2 = time.perf_counter()
    assert len(added) == n and not again.added
    print(f"  enqueue {n} new         {rate(n, t1 - t0)}")
    print(f"  enqueue {n} again       {rate(n, t2 - t1)}")
    t0 = time.perf_counter()
    done = 0
    while (lease := q.lease("bench", visibility_timeout=60)) is not None:
        q.complete(lease)
        done += 1
    t1 = time.perf_counter()
    assert done == n
    print(f"  lease+complete loop      {rate(n, t1 - t0)}")
    for workers in (1, 4):
        q.enqueue(tasks, force=True)
        t0 = time.perf_counter()
        report = launch_workers(q, SequentialProcessor(lambda i, _job_id, _worker_id: None), num_workers=workers)
        t1 = time.perf_counter()
        assert report.done == n, report
        print(f"  launch_workers, {workers} worker(s) {rate(n, t1 - t0)}")
    q.close()


def bench_runs(root: Path, n: int) -> None:
    import detflow

    data_dir = root / "data"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        np.save(data_dir / f"scan{i:04d}.npy", rng.integers(0, 100, size=(4, 4, 16, 16)).astype(np.uint16))
    graph = root / "small.yaml"
    graph.write_text(GRAPH)
    inputs = sorted(data_dir.glob("*.npy"))
    g = detflow.Graph.from_yaml(graph)
    g.call(inputs[0], output_dir=root / "warmup", executor="inline")  # compile the kernels first

    t0 = time.perf_counter()
    for p in inputs:
        detflow.Graph.from_yaml(graph).call(p, output_dir=root / "loop", executor="inline")
    loop = time.perf_counter() - t0

    q = open_queue(str(root / "runs.db"))
    t0 = time.perf_counter()
    spec = GraphWork(str(graph), [str(data_dir / "*.npy")], output_dir=str(root / "batch"))
    listing = batch_enqueue(q, spec)
    t_list = time.perf_counter() - t0
    report = launch_workers(q, SequentialProcessor(graph_task), num_workers=1)
    batch = time.perf_counter() - t0
    q.close()
    assert report.done == n and len(listing.tasks) == n
    assert all(o.is_complete() for t in listing.tasks for o in spec.outputs(t))
    print(f"  hand-written loop        {loop:8.2f} s  ({loop / n * 1e3:.1f} ms/run)")
    print(f"  batch, 1 worker          {batch:8.2f} s  ({batch / n * 1e3:.1f} ms/run; listing {t_list:.2f} s)")
    print(f"  overhead per task        {(batch - loop) / n * 1e3:8.1f} ms  ({batch / loop:.2f}x the loop)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000, help="empty tasks for the queue throughput")
    ap.add_argument("--runs", type=int, default=200, help="real runs for the per-task overhead")
    ap.add_argument("--postgres", default=None, metavar="URL", help="also benchmark this PostgreSQL database")
    args = ap.parse_args()
    print(f"detflow batch queue benchmark; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="detflow-bench-queue-") as tmp:
        print(f"SQLite (WAL), {args.tasks} empty tasks:")
        bench_queue(os.path.join(tmp, "bench.db"), args.tasks)
        if args.postgres:
            print(f"PostgreSQL, {args.tasks} empty tasks:")
            bench_queue(args.postgres, args.tasks)
        print(f"{args.runs} small real runs (nav 4x4, sig 16x16, 2 outputs each), inline:")
        bench_runs(Path(tmp), args.runs)


if __name__ == "__main__":
    main()
