"""The graph task: one input through a graph file, as ``detflow run`` runs it, written safely.

:func:`graph_task` loads the graph, applies the config file and the overrides in
``detflow run``'s order, and runs it with every output redirected to a staging folder
(``{output_dir}/.detflow-batch/{task id}-{random}/``; a sink path outside the output
folder is staged beside its final path). Only after the run has finished are the staged
outputs moved into place, each with one ``rename``, so a final path holds either nothing,
the previous complete output, or the new complete output, never a half-written one.
Staging folders of earlier attempts that were killed are removed at the start.

:class:`GraphWork` is the :class:`~detflow.batch.spec.WorkSpecification` of ``detflow
batch``: one task per file matched by the input patterns; a task is done when each of
its outputs exists and its sink's own completion marker says it is complete
(``complete`` in a zarr store's attributes; a ``.npy`` file as long as its header says).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detflow.batch.base import LeaseLostError, task_id
from detflow.batch.logs import current_task, task_context, task_log_file
from detflow.batch.workers import should_stop
from detflow.errors import ConfigurationError
from detflow.graph import Graph
from detflow.graph.run import RunContext, default_context, resolve_call, run_graph_iter
from detflow.registry import SINKS

__all__ = ["GraphWork", "Output", "graph_task", "load_task_graph", "planned_outputs", "task_log_path"]

log = logging.getLogger("detflow.batch")

STAGING = ".detflow-batch"


@dataclass(frozen=True)
class Output:
    """One file or store a graph run writes: the sink (or ``node.save_results``), its type, its path."""

    sink: str
    type: str
    path: str

    def is_complete(self) -> bool:
        if not os.path.exists(self.path):
            return False
        try:
            check = getattr(SINKS.get(self.type), "is_complete", None)
        except ConfigurationError:
            check = None
        return True if check is None else bool(check(self.path))


def load_task_graph(graph: str, input: str, *, nodes: Mapping[str, Mapping[str, Any]] | None = None,
                    config_file: str | None = None) -> Graph:
    """The graph file with its input replaced and the overrides applied, as ``detflow run`` does."""
    return resolve_call(Graph.from_yaml(graph), input, nodes=nodes, config_file=config_file)


def planned_outputs(g: Graph, ctx: RunContext) -> list[Output]:
    """The outputs a run of ``g`` writes: its sinks' paths and its ``save_results`` stores.

    As the run decides them: a skipped sink, or one whose inputs are all skipped, writes
    nothing; every node with ``save_results`` (and not skipped) writes
    ``{output_dir}/{input_stem}_{node}.zarr``.
    """
    skipped = {n.id for n in g if getattr(n, "skip", False)}
    sink_ids = {n.id for n in g.sink_nodes(include_skipped=True)}
    out = []
    for node in g.sink_nodes():
        path = node.params.get("path")
        if not isinstance(path, str) or all(i in skipped for i in node.inputs):
            continue
        out.append(Output(node.id, node.type, os.path.abspath(ctx.fill(path, graph=g.name, node=node.id))))
    for n in g:
        if n.id not in sink_ids and n.id not in skipped and getattr(n, "save_results", False):
            out.append(Output(f"{n.id}.save_results", "zarr",
                              os.path.abspath(os.path.join(ctx.output_dir, f"{ctx.input_stem}_{n.id}.zarr"))))
    return out


def task_log_path(g: Graph, ctx: RunContext) -> str:
    """Where a task's log goes: ``{output_dir}/{input_stem}.{graph}.log``, beside its outputs."""
    return os.path.join(ctx.output_dir, f"{ctx.input_stem}.{g.name}.log")


def _escape(path: str) -> str:
    return path.replace("{", "{{").replace("}", "}}")


def _staged(final: str, staging: str, output_dir: str) -> str:
    rel = os.path.relpath(final, output_dir)
    if not rel.startswith(os.pardir + os.sep) and rel != os.pardir:
        return os.path.join(staging, rel)
    head, tail = os.path.split(final)
    return os.path.join(head, f".{tail}.{os.path.basename(staging)}.partial")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _move_into_place(staged: str, final: str) -> None:
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.lexists(final):
        old = f"{final}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)  # a folder cannot be replaced by a rename; move the old one aside first
        os.replace(staged, final)
        _remove(old)
    else:
        os.replace(staged, final)


def graph_task(*, graph: str, input: str, output_dir: str | None = None,
               nodes: Mapping[str, Mapping[str, Any]] | None = None, config_file: str | None = None,
               executor: str = "inline", _job_id: str = "-", _worker_id: str = "-") -> dict[str, Any]:
    """Run ``graph`` on ``input``; outputs staged, then moved into place. Returns their paths.

    The task's log lines go to :func:`task_log_path` as well as to the worker's console.
    """
    payload: dict[str, Any] = {"graph": graph, "input": input, "output_dir": output_dir, "nodes": nodes,
                               "config_file": config_file, "executor": executor}
    tid = current_task()[0]
    if tid == "-":  # called directly, not by a worker
        tid = task_id(payload)
    g = load_task_graph(graph, input, nodes=nodes, config_file=config_file)
    final_ctx = default_context(g, output_dir=output_dir)
    os.makedirs(final_ctx.output_dir, exist_ok=True)
    with task_context(tid, _worker_id), task_log_file(task_log_path(g, final_ctx), tid):
        log.info("job %s: %s on %s -> %s", _job_id, graph, input, final_ctx.output_dir)
        outputs = planned_outputs(g, final_ctx)
        staging_root = os.path.join(final_ctx.output_dir, STAGING)
        for old in glob.glob(os.path.join(glob.escape(staging_root), f"{tid}-*")):
            log.info("removing the staging folder of an earlier attempt: %s", old)
            _remove(old)
        staging = os.path.join(staging_root, f"{tid}-{uuid.uuid4().hex[:8]}")
        os.makedirs(staging)
        moves: list[tuple[str, str]] = []
        sink_paths: dict[str, dict[str, Any]] = {}
        for o in outputs:
            staged = _staged(o.path, staging, final_ctx.output_dir)
            os.makedirs(os.path.dirname(staged), exist_ok=True)
            moves.append((staged, o.path))
            if not o.sink.endswith(".save_results"):
                sink_paths[o.sink] = {"path": _escape(staged)}
        try:
            from detflow.graph.config import apply_overrides

            staged_graph = apply_overrides(g, sink_paths) if sink_paths else g
            ctx = RunContext(staging, final_ctx.input_path)
            partial = 0
            for _ in run_graph_iter(staged_graph, executor=executor, context=ctx):
                partial += 1
                if should_stop():
                    raise LeaseLostError("lease lost; the run was stopped after a partition")
            missing = [final for staged, final in moves if not os.path.lexists(staged)]
            if missing:
                raise RuntimeError(f"the run finished but wrote no {', '.join(missing)}")
            for staged, final in moves:
                _move_into_place(staged, final)
                log.info("wrote %s", final)
        finally:
            for staged, _ in moves:
                if os.path.lexists(staged):
                    _remove(staged)
            _remove(staging)
            with contextlib.suppress(OSError):  # not empty: another task in this folder is running
                os.rmdir(staging_root)
        log.info("done: %d output(s), %d partial result(s)", len(moves), partial)
    return {"outputs": [final for _, final in moves]}


@dataclass
class GraphWork:
    """``detflow batch``'s work: a graph file over every file the patterns match.

    Parameters
    ----------
    graph
        The graph file.
    patterns
        Glob patterns (``**`` matches folders at any depth).
    output_dir
        Where outputs go (default: each input's folder).
    nodes
        Overrides (``{"com": {"r": 35}}``), as ``--set`` gives them.
    config_file
        A config file of overrides.
    executor
        The executor each task runs its graph on (the batch itself runs tasks in parallel).
    """

    graph: str
    patterns: Sequence[str]
    output_dir: str | None = None
    nodes: Mapping[str, Mapping[str, Any]] | None = None
    config_file: str | None = None
    executor: str = "inline"
    _matched: dict[str, int] = field(default_factory=dict, repr=False)
    _graph: Graph | None = field(default=None, repr=False)

    def task_seeds(self) -> Iterable[str]:
        return list(self.patterns)

    def list_tasks(self, seed: str, force: bool) -> list[dict[str, Any]]:
        paths = sorted(p for p in glob.glob(os.path.expanduser(seed), recursive=True) if os.path.isfile(p))
        self._matched[seed] = len(paths)
        return [self.task(p) for p in paths]

    def task(self, input_path: str) -> dict[str, Any]:
        return {"graph": os.path.abspath(self.graph), "input": os.path.abspath(input_path),
                "output_dir": None if self.output_dir is None else os.path.abspath(self.output_dir),
                "nodes": {k: dict(v) for k, v in (self.nodes or {}).items()} or None,
                "config_file": None if self.config_file is None else os.path.abspath(self.config_file),
                "executor": self.executor}

    def outputs(self, task: Mapping[str, Any]) -> list[Output]:
        """The outputs of ``task``, where its run writes them."""
        if self._graph is None:  # read once: done-checks of thousands of inputs share it
            self._graph = Graph.from_yaml(task["graph"])
        g = resolve_call(self._graph, task["input"], nodes=task["nodes"], config_file=task["config_file"])
        return planned_outputs(g, default_context(g, output_dir=task["output_dir"]))

    def already_done(self, task: Mapping[str, Any]) -> bool:
        try:
            outputs = self.outputs(task)
        except ConfigurationError:
            return False  # the task will fail with this error, where it is recorded
        return bool(outputs) and all(o.is_complete() for o in outputs)

    def unmatched(self) -> list[str]:
        """Patterns that matched no file (after listing)."""
        return [p for p, n in self._matched.items() if n == 0]
