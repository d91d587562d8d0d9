"""The driver loop: passes run one after another, results flowing along the graph's edges.

State: the running result of every UDF node of the current pass (one merger each),
the final results of every node finished so far, and the *values* that references
name (``{(node, result name): array or scalar}``). Policy, per pass:

1. bind the pass (:meth:`~detflow.graph.lowering.CompiledGraph.bind`) with the values
   known so far: the nodes that reference earlier results are built now;
2. cut the source into partitions and drop those with no frame in the ROI; a live
   source makes its tasks itself, as its partitions arrive (its ``task_feed`` hook);
3. ``executor.map_unordered(run_partition, tasks)`` runs them in any order; each
   partial result enters the pass's :class:`~detflow.graph.stream.ResultStream`,
   whose first step merges it into every UDF node's running result (each partition
   exactly once) and whose subscribers (progress, sinks) then see the update;
4. after each merge a :class:`GraphResults` is yielded, lazily: ``get_results`` and
   the result nodes run only when someone reads it, and result nodes on partial
   results at most ``max_rate`` times a second (they are often an FFT of the whole
   scan); the last snapshot of a pass is always exact;
5. when the pass ends, its UDF results and then its result nodes (in dependency
   order, each fed by its inputs' results) are final, and their values join those
   the next pass can reference.

An executor with ``reduce_tree`` (the delayed one with ``merge="tree"``) merges in a task tree
instead; the driver then merges the root once per pass.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.errors import UDFError, annotate_node_error
from detflow.graph.events import RunInfo, Subscriber, Update
from detflow.graph.lowering import CompiledGraph, PassPlan
from detflow.graph.merge import Merger, result_buffers
from detflow.graph.results import ResultBuffer, ResultDict, UDFResults, absolute_source
from detflow.graph.stream import ResultStream
from detflow.nodes.base import BufferDecl
from detflow.nodes.runner import PartialResult, PartitionTask, run_partition
from detflow.sources.base import DatasetMeta

if TYPE_CHECKING:
    from detflow.executors.base import Executor

__all__ = ["GraphResults", "run_compiled"]

log = logging.getLogger("detflow")


class GraphResults(UDFResults):
    """Partial or final results of every node of a graph run.

    ``buffers[i]`` belongs to ``node_ids[i]`` (UDF nodes, then result nodes); a node
    whose pass has not started yet has an empty mapping. ``results["com"]`` reads one
    node by id. ``pass_index`` / ``passes_total`` say where the run is.
    """

    def __init__(self, *args: Any, pass_index: int = 0, passes_total: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._one: dict[int, dict[str, ResultBuffer]] = {}
        self.pass_index = pass_index
        self.passes_total = passes_total

    @property
    def finished(self) -> bool:
        return self.pass_index == self.passes_total - 1 and super().finished

    def __getitem__(self, key: int | str) -> dict[str, ResultBuffer]:
        """One node's results, computed alone (reading one node runs no other's ``get_results``)."""
        i = self.node_ids.index(key) if isinstance(key, str) else key
        if self._buffers is not None:
            return self._buffers[i]
        if i not in self._one:
            self._one[i] = self._compute[i]()
        return self._one[i]

    @property
    def buffers(self) -> tuple[dict[str, ResultBuffer], ...]:
        if self._buffers is None:
            self._buffers = tuple(self[i] for i in range(len(self._compute)))
        return self._buffers


def values_of(node_id: str, buffers: Mapping[str, ResultBuffer]) -> dict[tuple[str, str], Any]:
    """What references to ``node_id`` resolve to: each buffer's data (a 0-d one as a scalar)."""
    out = {}
    for name, buf in buffers.items():
        data = np.asarray(buf.data)
        out[(node_id, name)] = data[()] if data.ndim == 0 else data
    return out


def _arrays(buffers: Mapping[str, ResultBuffer]) -> dict[str, np.ndarray]:
    """A result node's view of its input: nav results nav-shaped, NaN where not computed yet."""
    out = {}
    for name, buf in buffers.items():
        data = np.asarray(buf.data)
        if buf.kind == "nav" and data.dtype.kind in "fc" and not buf.valid_mask.all():
            mask = buf.valid_mask.reshape(buf.valid_mask.shape + (1,) * (data.ndim - buf.valid_mask.ndim))
            data = np.where(mask, data, np.nan)
        out[name] = data
    return out


class _ResultEval:
    """One result node of a pass: evaluated on demand, at most ``max_rate`` times a second
    on partial inputs (the last value is reused in between), always on final ones."""

    def __init__(self, node_id: str, obj: Any, inputs: tuple[str, ...], meta: DatasetMeta,
                 roi: np.ndarray | None, max_rate: float | None) -> None:
        self.node_id, self.obj, self.inputs, self.meta, self.roi = node_id, obj, inputs, meta, roi
        self.min_interval = 0.0 if not max_rate else 1.0 / max_rate
        self._last: dict[str, ResultBuffer] = {}
        self._at = -np.inf
        self._version: Any = None

    def evaluate(self, read: Callable[[str], Mapping[str, ResultBuffer]], version: Any, *,
                 final: bool) -> dict[str, ResultBuffer]:
        if version == self._version or self.obj is None:
            return self._last
        now = time.monotonic()
        if not final and now - self._at < self.min_interval:
            return self._last
        inputs = {i: _arrays(read(i)) for i in self.inputs}
        try:
            out = self.obj.compute(inputs)
        except Exception as err:
            if not final:  # partial inputs can be too sparse to compute from; keep the last value
                log.debug("result node %r on partial results: %s", self.node_id, err)
                return self._last
            raise annotate_node_error(err, node_id=self.node_id, node_type=type(self.obj).__name__,
                                      where="in compute") from None
        if not isinstance(out, Mapping):
            raise UDFError(f"result node {self.node_id!r} ({type(self.obj).__name__}): compute() must "
                           f"return a mapping of name -> value; got {type(out).__name__}")
        self._last = ResultDict(result_buffers(out, self.meta, self.roi), udf=self.obj,
                                attrs={"node": self.node_id})
        self._at, self._version = now, version
        return self._last


def _as_graph(results: UDFResults) -> GraphResults:
    assert isinstance(results, GraphResults)
    return results


def _damage(valid: np.ndarray, meta: DatasetMeta) -> ResultBuffer:
    decl = BufferDecl(kind="nav", dtype=np.dtype(bool))
    return ResultBuffer(valid.copy(), decl, nav_shape=meta.nav_shape, sig_shape=meta.sig_shape, roi=None)


def run_compiled(
    compiled: CompiledGraph,
    executor: Executor,
    *,
    sinks: Mapping[int, list[Subscriber]] | None = None,
    extra_udfs: Mapping[int, list[tuple[str, Any]]] | None = None,
    progress: bool = False,
    max_rate: float | None = 4.0,
) -> Iterator[GraphResults]:
    """Run every pass of ``compiled``; yield results of every node after each merge.

    ``sinks[i]`` subscribe to pass ``i``; ``extra_udfs[i]`` (a recorder's) join pass ``i``.
    """
    output_ids = compiled.output_ids
    final: dict[str, dict[str, ResultBuffer]] = {}
    values: dict[tuple[str, str], Any] = {}
    n_passes = len(compiled.plan)
    for index in range(n_passes):
        plan = compiled.bind(index, values)
        if extra_udfs and extra_udfs.get(index):
            plan = plan.with_udfs(list(extra_udfs[index]))
        yield from _run_pass(plan, executor, final, values, output_ids, n_passes, compiled.build_result,
                             sinks=list((sinks or {}).get(index, [])), progress=progress, max_rate=max_rate)


def _run_pass(plan: PassPlan, executor: Executor, final: dict[str, dict[str, ResultBuffer]],
              values: dict[tuple[str, str], Any], output_ids: tuple[str, ...], n_passes: int,
              build: Callable[[str, Any], Any], *,
              sinks: list[Subscriber], progress: bool, max_rate: float | None) -> Iterator[GraphResults]:
    meta = plan.meta
    roi = plan.roi
    specs = plan.udf_specs()
    frames = plan.frame_specs()
    shared = bool(getattr(executor, "shares_memory", False))

    def make_task(p: Any) -> PartitionTask:
        return PartitionTask(p, specs, roi, executor.remote, corrections=plan.corrections, frames=frames)

    def keep(r: slice) -> bool:
        return roi is None or bool(roi[r].any())

    feed = None
    tasks: Any
    if hasattr(plan.source, "task_feed"):  # a live source makes its tasks as partitions arrive
        feed = tasks = plan.source.task_feed(plan.partition_plan(), make_task, keep=keep, shared=shared)
        n_tasks = feed.n_tasks
    else:
        tasks = [make_task(p) for p in plan.source.partitions(plan.partition_plan(executor.n_workers))
                 if keep(p.frames)]
        n_tasks = len(tasks)
    source = absolute_source(plan.source)
    mergers = [Merger(node_id, udf, m if inp >= 0 else meta, roi, source=source)
               for (node_id, udf), (inp, m) in zip(plan.udfs, plan.inputs, strict=True)]
    own = {node_id: m for node_id, m in zip((u for u, _ in plan.udfs), mergers, strict=True)}
    evals = {rid: _ResultEval(rid, obj, inputs, meta, roi, max_rate) for rid, obj, inputs in plan.results}
    pending = [rid for rid, obj, _ in plan.results if obj is None]
    frames_total = meta.n_frames if roi is None else int(np.count_nonzero(roi))
    valid = np.zeros(meta.n_frames, dtype=bool)
    info = RunInfo(graph_name=plan.name, node_ids=output_ids, meta=meta, roi=roi, frames_total=frames_total,
                   partitions_total=n_tasks, pass_index=plan.index, passes_total=n_passes)
    done = {"frames": 0, "partitions": 0}

    def merge(partial: PartialResult) -> Update:
        if feed is not None:
            feed.done(partial.index)
        for merger, buffers in zip(mergers, partial.buffers, strict=True):
            if partial.n_processed:
                merger.merge(partial, buffers, valid)
        valid[partial.frames] = True if roi is None else roi[partial.frames]
        done["frames"] += partial.n_processed
        done["partitions"] += partial.partitions
        return Update(partial=partial, frames_done=done["frames"], partitions_done=done["partitions"],
                      info=info, results=snapshot())

    def snapshot() -> GraphResults:
        is_final = done["partitions"] >= n_tasks
        version = done["partitions"]
        cache: dict[str, dict[str, ResultBuffer]] = {}

        def read(node_id: str) -> dict[str, ResultBuffer]:
            if node_id in final:
                return final[node_id]
            if node_id not in cache:
                if node_id in own:
                    cache[node_id] = own[node_id].results(valid)
                elif node_id in evals:
                    cache[node_id] = evals[node_id].evaluate(read, version, final=is_final)
                else:
                    cache[node_id] = {}
            return cache[node_id]

        return GraphResults(
            [lambda n=n: read(n) for n in output_ids], _damage(valid, meta),
            frames_done=done["frames"], frames_total=frames_total, partitions_done=done["partitions"],
            partitions_total=n_tasks, node_ids=output_ids, pass_index=plan.index, passes_total=n_passes,
        )

    consumers: list[Subscriber] = list(sinks)
    if progress:  # by registry name: the sinks sit above the graph layer
        from detflow.registry import SINKS

        consumers.append(SINKS.get("progress")())
    for node_id, udf in plan.udfs:
        try:
            udf.prepare_run()
        except Exception as err:
            raise annotate_node_error(err, node_id=node_id, node_type=type(udf).__name__,
                                      where="in prepare_run") from None
    stream = ResultStream(merge)
    def bring_up(rid: str) -> Callable[[Update], Any]:
        return lambda update: _as_graph(update.results)[rid]  # evaluated (throttled) on each update

    for rid, _, inputs in plan.results:  # result nodes follow their inputs, in dependency order
        stream.node(rid, inputs, bring_up(rid))
    for sink in consumers:
        stream.subscribe(sink, at=tuple(getattr(sink, "nodes", ())))
    stream.start(info)
    ok = False
    last: GraphResults | None = None
    try:
        reduce_tree = getattr(executor, "reduce_tree", None)
        if feed is not None:
            for partial in executor.map_unordered(run_partition, tasks):
                yield _as_graph(stream.emit(partial).results)
            if feed.error is not None:  # every frame that arrived is merged; now say what went wrong
                with contextlib.suppress(AttributeError):
                    feed.error.partial_results = snapshot()
                raise feed.error
        elif reduce_tree is not None and tasks:
            from detflow.nodes.reduce import ReduceContext

            ctx = ReduceContext(specs, meta, plan.corrections, roi)
            yield _as_graph(stream.emit(reduce_tree(run_partition, tasks, ctx)).results)
        else:
            for partial in executor.map_unordered(run_partition, tasks):
                yield _as_graph(stream.emit(partial).results)
        last = snapshot()
        if not n_tasks:
            yield last
        for node_id in [*(n for n in own if n in output_ids), *evals]:  # a recorder's UDF is the sink's own
            if node_id in pending:  # its references are known now
                evals[node_id].obj = build(node_id, values)
            final[node_id] = last[node_id]
            values.update(values_of(node_id, final[node_id]))
        ok = True
    finally:
        if feed is not None:
            feed.close()
        stream.finish(last if ok else None)
