"""``detflow batch`` and ``detflow queue``: the launcher's batch commands.

``detflow batch GRAPH.yaml --inputs 'data/**/*.hdr'`` lists one task per input, skips
those whose outputs are complete, enqueues the rest in a durable queue and works
through it; run it again after a crash and it picks up where it stopped. ``detflow
queue status|list|show|retry|purge QUEUE`` looks into a queue and repairs it.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from detflow.errors import ConfigurationError, DetflowError

__all__ = ["batch", "queue"]

EXECUTORS = {
    "processes": "one child process per worker (default)",
    "inline": "in the launcher's own threads",
    "dask": "on a dask.distributed cluster (--address)",
}


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        if debug:
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except (ConfigurationError, FileNotFoundError) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except (DetflowError, OSError, ValueError, RuntimeError) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)

    return click.option("--debug", is_flag=True, help="Show tracebacks instead of a short error.")(wrapper)


class _TqdmHandler(logging.Handler):
    """Console log lines that leave the progress bar in one piece."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def _console_logging(level: int) -> None:
    from detflow.batch.logs import FORMAT, TaskContextFilter

    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(TaskContextFilter())
    handler.setLevel(level)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))
    os.environ["DETFLOW_BATCH_CONSOLE_LEVEL"] = logging.getLevelName(level)  # for the worker processes


def _interrupt_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _processor(executor: str, address: str | None) -> Any:
    from detflow.batch.task import graph_task
    from detflow.batch.workers import DaskProcessor, ProcessPoolProcessor, SequentialProcessor

    if executor == "dask":
        return DaskProcessor(graph_task, address=address)
    if address is not None:
        raise ConfigurationError("--address goes with --executor dask")
    return {"processes": ProcessPoolProcessor, "inline": SequentialProcessor}[executor](graph_task)


@click.command("batch")
@click.argument("graph_file", type=click.Path(dir_okay=False))
@click.option("--inputs", "patterns", multiple=True, required=True, metavar="GLOB",
              help="Input files, e.g. 'data/**/*.hdr' (quote it; ** spans folders); repeat for more.")
@click.option("--queue", "queue_location", default=None, metavar="FILE|URL",
              help="The queue: a SQLite file or postgresql://user@host/db (default: GRAPH.queue.db here).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Tasks at once (default: the number of cores; with dask: 2).")
@click.option("--executor", type=click.Choice(list(EXECUTORS)), default="processes", show_default=True,
              help="Where tasks run: " + "; ".join(f"{k}: {v}" for k, v in EXECUTORS.items()) + ".")
@click.option("--address", default=None, help="Scheduler address for --executor dask (tcp://host:8786).")
@click.option("--graph-executor", default="inline", show_default=True,
              help="The executor each task runs its graph on.")
@click.option("--set", "assignments", multiple=True, metavar="NODE.PARAM=VALUE",
              help="Override a parameter in every task, as for `detflow run`.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of per-node overrides.")
@click.option("--output-dir", type=click.Path(file_okay=False),
              help="Folder for outputs ({output_dir} in sink paths); default: each input's folder.")
@click.option("--max-retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Retries of a failing task before it is parked as dead.")
@click.option("--visibility-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="Seconds a lease lasts unless renewed (renewed every quarter of that).")
@click.option("--time-limit", type=click.FloatRange(min=0), default=None,
              help="Start no new task after this many seconds.")
@click.option("--max-consecutive-failures", type=click.IntRange(min=1), default=None,
              help="A worker stops after this many failures in a row.")
@click.option("--force", is_flag=True, help="Rerun tasks whose outputs are complete or that the queue holds as done.")
@click.option("--dry-run", is_flag=True, help="List the tasks and what would run; change nothing.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar over tasks.")
@_errors
def batch(graph_file: str, patterns: tuple[str, ...], queue_location: str | None, workers: int | None,
          executor: str, address: str | None, graph_executor: str, assignments: tuple[str, ...],
          config_file: str | None, output_dir: str | None, max_retries: int, visibility_timeout: float,
          time_limit: float | None, max_consecutive_failures: int | None, force: bool, dry_run: bool,
          progress: bool) -> None:
    """Run GRAPH_FILE once per input file, through a durable work queue.

    A task whose outputs exist and are complete is skipped (--force reruns it). The rest
    are leased to workers; a failing task is retried up to --max-retries times, then
    parked with its errors (`detflow queue show QUEUE ID`). Kill the launcher at any point
    and run the same command again: what was done stays done, the rest runs. Several
    launchers may share one queue. Every log line names the task and the worker; each
    task also logs to {output_dir}/{input_stem}.{graph}.log.
    """
    import detflow
    from detflow.batch.base import open_queue, task_id
    from detflow.batch.spec import batch_enqueue
    from detflow.batch.task import GraphWork
    from detflow.graph.config import parse_set

    _console_logging(logging.WARNING if progress else logging.INFO)
    g = detflow.Graph.from_yaml(graph_file)
    nodes = parse_set(g, assignments)
    if config_file is not None and not os.path.isfile(config_file):
        raise ConfigurationError(f"--config {config_file!r}: no such file")
    spec = GraphWork(graph_file, patterns, output_dir=output_dir, nodes=nodes, config_file=config_file,
                     executor=graph_executor)
    if queue_location is None:
        queue_location = os.path.splitext(os.path.basename(graph_file))[0] + ".queue.db"
    if not any(os.path.isfile(f) for p in patterns  # checked before the queue is made: nothing changes
               for f in glob.iglob(os.path.expanduser(p), recursive=True)):
        raise ConfigurationError(f"--inputs {' '.join(map(repr, patterns))}: matches no file "
                                 f"(from {os.getcwd()!r}); quote the pattern so the shell leaves ** to detflow")
    processor = None if dry_run else _processor(executor, address)
    q = open_queue(queue_location)
    try:
        listing = batch_enqueue(q, spec, force=force, num_retries=max_retries, dry_run=dry_run)
        for p in spec.unmatched():
            click.echo(f"warning: --inputs {p!r} matches no file", err=True)
        ours = [t for t in listing.ids if t not in set(listing.skipped)]
        click.echo(f"{len(listing.tasks)} input(s): {len(listing.skipped)} already complete, "
                   f"{len(listing.result.added)} new task(s), {len(listing.result.existing)} already queued"
                   + (f", {len(listing.result.reset)} reset by --force" if listing.result.reset else "")
                   + f"; queue {q.location}", err=True)
        remembered = set(listing.result.existing) & {t.id for t in q.tasks("done")} - set(listing.result.reset)
        if remembered:
            click.echo(f"warning: {len(remembered)} task(s) whose outputs are missing or incomplete are done in the "
                       "queue already, so they do not run again; --force reruns them", err=True)
        if dry_run:
            for t in listing.tasks:
                state = "skip" if task_id(t) in listing.skipped else "run"
                click.echo(f"{state}  {task_id(t)}  {t['input']}")
            return
        report, elapsed = _work(q, processor, set(ours), workers=workers, executor=executor,
                                visibility_timeout=visibility_timeout, time_limit=time_limit,
                                max_consecutive_failures=max_consecutive_failures, progress=progress)
        states = {t.id: t.state for t in q.tasks() if t.id in set(ours)}
    finally:
        if processor is not None:
            processor.close()
        q.close()
    dead = [t for t, s in states.items() if s == "dead"]
    left = [t for t, s in states.items() if s in ("pending", "leased")]
    rows = [("tasks", len(listing.tasks), ""),
            ("done", sum(s == "done" for s in states.values()), f"this launch: {report.done}"),
            ("skipped", len(listing.skipped), "outputs already complete"),
            ("retried", report.retried, "failed attempts that were tried again"),
            ("failed", len(dead), "dead-lettered: detflow queue show QUEUE ID" if dead else ""),
            ("time", f"{elapsed:.1f} s", "")]
    if left:
        rows.insert(5, ("not run", len(left), "time limit, or stopped workers; run again"))
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        click.echo(f"{name:<{width}}  {value!s:>8}  {note}".rstrip())
    if dead:
        click.echo(f"{len(dead)} task(s) failed: {', '.join(dead[:10])}{' ...' if len(dead) > 10 else ''}", err=True)
        sys.exit(1)


def _work(q: Any, processor: Any, ours: set[str], *, workers: int | None, executor: str, visibility_timeout: float,
          time_limit: float | None, max_consecutive_failures: int | None, progress: bool) -> tuple[Any, float]:
    from tqdm import tqdm

    from detflow.batch.workers import launch_workers

    n = workers or (2 if executor == "dask" else os.cpu_count() or 1)
    bar = tqdm(total=len(ours), unit="task", desc="batch", disable=not progress, file=sys.stderr)
    counted: set[str] = set()

    def on_event(kind: str, lease: Any, detail: str) -> None:
        if kind in ("done", "dead") and lease.task_id in ours and lease.task_id not in counted:
            counted.add(lease.task_id)
            bar.update(1)
        if kind in ("retry", "dead"):
            bar.set_postfix_str(f"last failure: {lease.task_id}", refresh=False)

    _interrupt_on_sigterm()
    start = time.monotonic()
    try:
        report = launch_workers(q, processor, num_workers=n, visibility_timeout=visibility_timeout,
                                time_limit=time_limit, max_consecutive_failures=max_consecutive_failures,
                                on_event=on_event)
    except KeyboardInterrupt:
        bar.close()
        click.echo("interrupted: running tasks were stopped and their leases released; run the same "
                   "command again to go on", err=True)
        sys.exit(130)
    bar.close()
    return report, time.monotonic() - start


# --- detflow queue ------------------------------------------------------------------------
def _open(location: str) -> Any:
    from detflow.batch.base import open_queue

    return open_queue(location, create=False)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _describe(payload: dict[str, Any]) -> str:
    if "input" in payload:
        return str(payload["input"])
    text = ", ".join(f"{k}={v!r}" for k, v in payload.items())
    return text if len(text) < 80 else text[:77] + "..."


@click.group("queue")
def queue() -> None:
    """Look into a batch queue (a SQLite file or postgresql:// URL) and repair it."""


@queue.command("status")
@click.argument("location", metavar="QUEUE")
@_errors
def status(location: str) -> None:
    """Tasks per state."""
    q = _open(location)
    try:
        counts = q.counts()
    finally:
        q.close()
    for state, n in counts.items():
        click.echo(f"{state:<8} {n:>8}")
    click.echo(f"{'total':<8} {sum(counts.values()):>8}")


@queue.command("list")
@click.argument("location", metavar="QUEUE")
@click.option("--state", default=None, help="Only tasks in this state (pending, leased, done, dead).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@_errors
def list_(location: str, state: str | None, limit: int | None) -> None:
    """One line per task: id, state, failures, input, last error."""
    q = _open(location)
    try:
        tasks = q.tasks(state, limit=limit)
        errors = {t.id: q.get(t.id).last_error for t in tasks if t.failures}
    finally:
        q.close()
    for t in tasks:
        err = errors.get(t.id)
        click.echo(f"{t.id}  {t.state:<7}  {t.failures}/{t.max_retries}  {_describe(t.payload)}"
                   + (f"  [{err.splitlines()[0]}]" if err else ""))


@queue.command("show")
@click.argument("location", metavar="QUEUE")
@click.argument("task_id")
@click.option("--traceback/--no-traceback", "show_tb", default=True, show_default=True,
              help="Print each failed attempt's traceback.")
@_errors
def show(location: str, task_id: str, show_tb: bool) -> None:
    """A task (a unique id prefix is enough): its payload and every attempt with its error."""
    import json

    q = _open(location)
    try:
        t = q.get(task_id)
    finally:
        q.close()
    click.echo(f"task     {t.id}\nstate    {t.state}\nfailures {t.failures} of {t.max_retries} retries\n"
               f"created  {_when(t.created)}\nupdated  {_when(t.updated)}")
    if t.state == "leased":
        click.echo(f"leased   by {t.worker_id} until {_when(t.lease_expires)}")
    click.echo("payload  " + json.dumps(t.payload, indent=2, sort_keys=True).replace("\n", "\n         "))
    for a in t.attempts:
        took = "" if a.ended is None else f" ({a.ended - a.started:.1f} s)"
        click.echo(f"attempt {a.number}: {a.outcome} on {a.worker_id}, {_when(a.started)}{took}")
        if a.error:
            click.echo(f"  error: {a.error}")
        if a.traceback and show_tb:
            click.echo("  " + a.traceback.rstrip().replace("\n", "\n  "))


@queue.command("retry")
@click.argument("location", metavar="QUEUE")
@click.argument("task_ids", nargs=-1)
@click.option("--state", default="dead", show_default=True, help="Without ids: put every task in this state back.")
@_errors
def retry(location: str, task_ids: tuple[str, ...], state: str) -> None:
    """Put dead tasks (or the given ones) back to pending with a fresh retry budget."""
    q = _open(location)
    try:
        n = q.retry(list(task_ids) or None, state=state)
    finally:
        q.close()
    click.echo(f"{n} task(s) back to pending; run `detflow batch` again to work on them")


@queue.command("purge")
@click.argument("location", metavar="QUEUE")
@click.option("--state", default=None, help="Only tasks in this state (default: every task not leased).")
@click.option("--yes", is_flag=True, help="Do not ask.")
@_errors
def purge(location: str, state: str | None, yes: bool) -> None:
    """Delete tasks and their attempts."""
    if not yes:
        click.confirm(f"delete {'every ' + state if state else 'every non-leased'} task of {location}?", abort=True)
    q = _open(location)
    try:
        n = q.purge(state)
    finally:
        q.close()
    click.echo(f"deleted {n} task(s)")
