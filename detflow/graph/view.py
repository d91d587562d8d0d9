"""Text view of a graph: an indented tree with parameters, then the sinks and what feeds them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.graph.model import PartitionNode, SinkNode, SourceNode, UDFNode

if TYPE_CHECKING:
    from detflow.graph.model import Graph

__all__ = ["graph_text"]


def _fmt(value: Any) -> str:
    if isinstance(value, _Shown):
        return str(value)
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


def graph_text(graph: Graph) -> str:
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
            udfs = [n for n in nodes if isinstance(n, UDFNode) and n.input == part.id]
            pad = "    " if last_p else "│   "
            for ui, u in enumerate(udfs):
                branch = "└── " if ui == len(udfs) - 1 else "├── "
                skipped = " (skipped)" if u.skip else ""
                lines.append(f"{pad}{branch}{u.id} [{u.type}]{skipped} {_params(dict(u.params))}".rstrip())
    sinks = [n for n in nodes if isinstance(n, SinkNode)]
    if sinks:
        lines.append("sinks")
    for si, sink in enumerate(sinks):
        branch = "└── " if si == len(sinks) - 1 else "├── "
        skipped = " (skipped)" if sink.skip else ""
        lines.append(f"{branch}{sink.id} [{sink.type}] <- {', '.join(sink.inputs)}{skipped} "
                     f"{_params(dict(sink.params))}".rstrip())
    orphans = [n for n in nodes if isinstance(n, PartitionNode | UDFNode)
               and n.input not in graph.nodes]
    for n in orphans:
        lines.append(f"(unconnected) {n.id} <- {n.input!r} (no such node)")
    return "\n".join(lines)
