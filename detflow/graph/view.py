"""Text view of a graph: an indented tree with parameters and frame chains, then the result
nodes, the sinks and what feeds them, and the passes."""

from __future__ import annotations

from typing import Any

import numpy as np

from detflow.errors import GraphValidationError
from detflow.graph.model import (
    FramesNode,
    GraphModel,
    PartitionNode,
    Ref,
    ResultNode,
    SinkNode,
    SourceNode,
    UDFNode,
)
from detflow.graph.planning import plan_graph

__all__ = ["graph_text"]


def _fmt(value: Any) -> str:
    if isinstance(value, _Shown):
        return str(value)
    if isinstance(value, Ref):
        return f"{{ref: {value}}}"
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>"
    if callable(value):
        return f"<{getattr(value, '__name__', type(value).__name__)}>"
    if isinstance(value, list | tuple) and len(value) > 4:
        return f"[{len(value)} items]"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


class _Shown(str):
    """Text shown as is, without quotes."""


def _children(graph: GraphModel, parent: str) -> list[FramesNode | UDFNode]:
    return [n for n in graph if isinstance(n, FramesNode | UDFNode) and n.input == parent]


def _tree(graph: GraphModel, parent: str, pad: str, lines: list[str]) -> None:
    kids = _children(graph, parent)
    for i, n in enumerate(kids):
        last = i == len(kids) - 1
        skipped = " (skipped)" if getattr(n, "skip", False) else ""
        label = "frames " if isinstance(n, FramesNode) else ""
        lines.append(f"{pad}{'└── ' if last else '├── '}{n.id} [{label}{n.type}]{skipped} "
                     f"{_params(dict(n.params))}".rstrip())
        _tree(graph, n.id, pad + ("    " if last else "│   "), lines)


def graph_text(graph: GraphModel) -> str:
    """Sources with their partition nodes, frame chains and UDFs as a tree; then result
    nodes, sinks, and the passes the graph runs in."""
    lines = [f"graph {graph.name!r}"]
    nodes = list(graph)
    for src in (n for n in nodes if isinstance(n, SourceNode)):
        desc = f"{src.id} [{src.type}] {_params(dict(src.params))}".rstrip()
        if src.obj is not None:
            m = src.obj.meta
            desc += f" nav={m.nav_shape} sig={m.sig_shape} {m.dtype}"
        lines.append(desc)
        parts = [n for n in nodes if isinstance(n, PartitionNode) and n.input == src.id]
        for pi, part in enumerate(parts):
            last_p = pi == len(parts) - 1
            opts: dict[str, Any] = {k: v for k, v in (("frames_per_partition", part.frames_per_partition),
                                      ("num_partitions", part.num_partitions)) if v is not None}
            if part.roi is not None:
                roi = np.asarray(part.roi)
                opts["roi"] = _Shown(f"{int(np.count_nonzero(roi))}/{roi.size} positions")
            lines.append(f"{'└── ' if last_p else '├── '}{part.id} [partition] "
                         f"{_params(opts) if opts else '(default sizing)'}")
            _tree(graph, part.id, "    " if last_p else "│   ", lines)
    results = [n for n in nodes if isinstance(n, ResultNode)]
    if results:
        lines.append("results")
    for ri, r in enumerate(results):
        branch = "└── " if ri == len(results) - 1 else "├── "
        skipped = " (skipped)" if r.skip else ""
        lines.append(f"{branch}{r.id} [{r.type}] <- {', '.join(r.inputs)}{skipped} {_params(dict(r.params))}".rstrip())
    sinks = [n for n in nodes if isinstance(n, SinkNode)]
    if sinks:
        lines.append("sinks")
    for si, sink in enumerate(sinks):
        branch = "└── " if si == len(sinks) - 1 else "├── "
        skipped = " (skipped)" if sink.skip else ""
        lines.append(f"{branch}{sink.id} [{sink.type}] <- {', '.join(sink.inputs)}{skipped} "
                     f"{_params(dict(sink.params))}".rstrip())
    orphans = [n for n in nodes if isinstance(n, PartitionNode | FramesNode | UDFNode)
               and n.input not in graph.nodes]
    for n in orphans:
        lines.append(f"(unconnected) {n.id} <- {n.input!r} (no such node)")
    try:
        plan = plan_graph(graph)
    except GraphValidationError as err:
        lines.append(f"passes: cannot be planned: {err}")
    else:
        lines.append("passes")
        for p in plan:
            lines.append(f"  {p}")
            for u in p.udfs:
                chain = _chain_of(graph, u)
                if chain:
                    lines.append(f"      {u} <- {' <- '.join(chain)}")
    return "\n".join(lines)


def _chain_of(graph: GraphModel, node_id: str) -> list[str]:
    """The frame nodes between a UDF and its partition node, nearest first."""
    out: list[str] = []
    n = graph[node_id]
    while isinstance(n, FramesNode | UDFNode) and n.input in graph:
        n = graph[n.input]
        if isinstance(n, FramesNode):
            out.append(f"{n.id} [{n.type}]")
    return out
