"""The whole graph as one dask graph: one ``dask.delayed`` per UDF and result node.

Per pass: a *bind* task builds the pass's nodes from the reference values it depends
on (delayed results of earlier nodes: the edges between passes); one task per
partition runs :func:`~detflow.nodes.runner.run_partition` with what the bind task
built; a binary tree of ``combine`` tasks merges them
(:mod:`detflow.nodes.reduce`); a *finish* task merges the root into each UDF's
result and runs ``get_results``. A result node is one task on its inputs' delayed
results. Partitions are recipes (file, byte range), so each worker reads its own
data; the tasks carry the sources' geometry, not the sources.
"""

from __future__ import annotations

import operator
from dataclasses import replace
from typing import Any

import numpy as np

from detflow.errors import GraphValidationError
from detflow.graph.driver import values_of
from detflow.graph.lowering import CompiledGraph, PassPlan, compile_graph
from detflow.graph.merge import Merger, result_buffers
from detflow.graph.model import GraphModel, ResultNode, refs_of
from detflow.nodes.reduce import ReduceContext, combine, finish, to_group
from detflow.nodes.runner import PartialResult, PartitionTask, main_meta, run_partition

__all__ = ["graph_to_delayed"]


def _bind(compiled: CompiledGraph, index: int, keys: list[tuple[str, str]], *vals: Any) -> PassPlan:
    return compiled.bind(index, dict(zip(keys, vals, strict=True)))


def _run(bound: PassPlan, task: PartitionTask) -> PartialResult:
    return run_partition(replace(task, udfs=bound.udf_specs(), frames=bound.frame_specs()))


def _context(bound: PassPlan, meta: Any) -> ReduceContext:
    return ReduceContext(bound.udf_specs(), meta, bound.corrections, bound.roi)


def _finish(bound: PassPlan, root: Any, meta: Any, n_tasks: int) -> dict[str, dict[str, Any]]:
    ctx = _context(bound, meta)
    partial = finish(root, ctx) if n_tasks else None
    out = {}
    for (node_id, udf), (inp, m) in zip(bound.udfs, bound.inputs, strict=True):
        valid = np.zeros(meta.n_frames, dtype=bool)  # what is merged so far, per UDF
        # this task may run in another process than the bind task: ``meta`` does not travel
        udf.meta = main_meta(udf, m if inp >= 0 else meta, bound.roi, None if inp >= 0 else bound.corrections)
        merger = Merger(node_id, udf, m if inp >= 0 else meta, bound.roi)
        if partial is not None:
            i = [u for u, _ in bound.udfs].index(node_id)
            if partial.n_processed:
                merger.merge(partial, partial.buffers[i], valid)
            valid[:] = True if bound.roi is None else bound.roi
        out[node_id] = {k: v for (_, k), v in values_of(node_id, merger.results(valid)).items()}
    return out


def _result(compiled: CompiledGraph, node_id: str, meta: Any, roi: Any, keys: list[tuple[str, str]],
            inputs: dict[str, dict[str, Any]], *vals: Any) -> dict[str, Any]:
    obj = compiled.build_result(node_id, dict(zip(keys, vals, strict=True)))
    out = obj.compute({i: {k: np.asarray(v) for k, v in d.items()} for i, d in inputs.items()})
    return {k: (np.asarray(b.data)[()] if np.asarray(b.data).ndim == 0 else np.asarray(b.data))
            for k, b in result_buffers(out, meta, roi).items()}


def graph_to_delayed(graph: GraphModel) -> dict[str, Any]:
    """``{node_id: dask.delayed}`` for every UDF and result node of ``graph``."""
    from dask import delayed

    compiled = compile_graph(graph)
    try:
        for src_id, src in compiled.sources.items():
            if getattr(src, "is_live", False):
                raise GraphValidationError("a live source cannot be part of a dask graph built ahead of "
                                           "time; run the graph with an executor instead", node=src_id)
        detached = delayed(compiled.detached(), traverse=False)
        nodes: dict[str, Any] = {}
        for index, p in enumerate(compiled.plan):
            g = compiled.graph
            needed = sorted({(r.node, r.name) for n in (*p.frames, *p.udfs) for _, r in refs_of(g[n])})
            vals = [delayed(operator.getitem)(nodes[k[0]], k[1]) for k in needed]
            bound = delayed(_bind, pure=False)(detached, index, needed, *vals)
            plan = compiled.passes[index]
            meta = plan.meta
            tasks = [PartitionTask(part, (), plan.roi, False, corrections=plan.corrections)
                     for part in plan.source.partitions(plan.partition_plan())
                     if plan.roi is None or plan.roi[part.frames].any()]
            ctx = delayed(_context, pure=False)(bound, meta)
            level = [delayed(to_group, pure=False)(delayed(_run, pure=False)(bound, delayed(t, traverse=False)), ctx)
                     for t in tasks]
            while len(level) > 1:
                paired = [delayed(combine, pure=False)(a, b, ctx)
                          for a, b in zip(level[::2], level[1::2], strict=False)]
                level = paired + ([level[-1]] if len(level) % 2 else [])
            fin = delayed(_finish, pure=False)(bound, level[0] if level else None, meta, len(tasks))
            for uid in p.udfs:
                nodes[uid] = delayed(operator.getitem)(fin, uid)
            for rid in p.results:
                node = g[rid]
                assert isinstance(node, ResultNode)
                keys = sorted({(r.node, r.name) for _, r in refs_of(node)})
                rvals = [delayed(operator.getitem)(nodes[k[0]], k[1]) for k in keys]
                inputs = {i: nodes[i] for i in node.inputs}
                nodes[rid] = delayed(_result, pure=False)(detached, rid, meta, plan.roi, keys, inputs, *rvals)
        return {n: nodes[n] for n in compiled.output_ids if n in nodes}
    finally:
        compiled.close()

