"""Views of a graph: an indented tree with parameters and frame chains, then the result
nodes, the sinks and what feeds them, and the passes (:func:`graph_text`); what running it
reaches outside detflow: the modules it imports, the paths it writes and the addresses it
connects to (:func:`graph_reach`), so a graph file from someone else can be read before it runs."""

from __future__ import annotations

import html
import importlib.util
import inspect
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
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
    refs_of,
)
from detflow.graph.planning import plan_graph

__all__ = ["Reach", "graph_dot", "graph_html", "graph_reach", "graph_text", "reach_text"]


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


@dataclass
class Reach:
    """What running a graph touches outside detflow, each entry ``(node id, what)``."""

    #: ``(node, import path)``: code the graph imports (node types, user functions, plugins)
    imports: list[tuple[str, str]] = field(default_factory=list)
    #: ``(node, path)``: files and stores the sinks and ``save_results`` nodes write
    writes: list[tuple[str, str]] = field(default_factory=list)
    #: ``(node, address)``: detector hosts and scheduler addresses it connects to
    connects: list[tuple[str, str]] = field(default_factory=list)
    #: folders imports may come from besides installed packages: the graph file's own
    #: ``python_path:`` (with whether the user trusted it)
    python_path: tuple[str, ...] = ()
    python_path_trusted: bool = False


_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _import_of(value: Any) -> str | None:
    return value if isinstance(value, str) and _IMPORT_PATH.match(value) else None


def _plugin_of(kind: str, name: str) -> str | None:
    """The import path behind a registry name when a third party registered it (an entry point)."""
    from detflow.registry import FRAMES, RESULTS, SINKS, SOURCES, UDFS

    registry = {"source": SOURCES, "udf": UDFS, "frames": FRAMES, "result": RESULTS, "sink": SINKS}[kind]
    target = registry.target(name)
    if isinstance(target, str) and not target.startswith("detflow."):
        return target
    return None


def _addresses(node: SourceNode) -> list[str]:
    """``host:port`` of a live source, its defaults filled in from its factory's signature."""
    from detflow.registry import SOURCES

    params = dict(node.params)
    defaults: dict[str, Any] = {}
    if isinstance(SOURCES.target(node.type), str) and str(SOURCES.target(node.type)).startswith("detflow."):
        try:  # detflow's own module: importing it runs no user code
            sig = inspect.signature(SOURCES.get(node.type))
            defaults = {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
        except (ImportError, TypeError, ValueError):
            defaults = {}
    values = {**defaults, **params}
    out = []
    for key in sorted(values):
        if key == "host" or key.endswith("_host"):
            prefix = key[: -len("host")]
            port = values.get(prefix + "port")
            out.append(f"{values[key]}:{port}" if port is not None else str(values[key]))
        elif key in ("address", "url", "uri") and isinstance(values[key], str):
            out.append(values[key])
    return out


def graph_reach(graph: GraphModel, *, fill: Callable[[str, str], str] | None = None) -> Reach:
    """What running ``graph`` imports, writes and connects to, read from its nodes (nothing is imported).

    ``fill(template, node_id)`` turns a sink's path template into the path a run writes
    (:meth:`~detflow.graph.outputs.RunContext.fill`); without it templates are shown as they are."""
    reach = Reach(python_path=tuple(graph.python_path), python_path_trusted=graph.python_path_trusted)
    kinds = {FramesNode: "frames", UDFNode: "udf", ResultNode: "result", SinkNode: "sink", SourceNode: "source"}
    for n in graph:
        kind = kinds.get(type(n))
        if kind is None or isinstance(n, PartitionNode) or getattr(n, "obj", None) is not None:
            continue
        path = _import_of(n.type) or (n.type if "." in n.type else _plugin_of(kind, n.type))
        if path is not None:
            reach.imports.append((n.id, path))
        for name, value in dict(n.params).items():
            if name in ("func", "function") and _import_of(value):
                reach.imports.append((n.id, value))
        if isinstance(n, SourceNode):
            reach.connects += [(n.id, a) for a in _addresses(n)]

    def shown(template: str, node: str) -> str:
        return template if fill is None else fill(template, node)

    for sink in graph.sink_nodes():
        if not sink.skip and isinstance(sink.params.get("path"), str):
            reach.writes.append((sink.id, shown(sink.params["path"], sink.id)))
    for saved in graph.output_nodes():
        if saved.save_results:
            key = f"{saved.id}.save_results"
            reach.writes.append((key, shown("{output_dir}/{input_stem}_" + saved.id + ".zarr", key)))
    ex = graph.executor or {}
    for key in ("address", "scheduler"):
        value = ex.get("params", {}).get(key)
        if value:
            reach.connects.append(("executor", str(value)))
    return reach


def _where(import_path: str) -> str:
    """Where the top-level package of ``import_path`` would be imported from (found, not run)."""
    top = import_path.partition(":")[0].split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return "not found"
    return spec.origin or (list(spec.submodule_search_locations or [])[:1] or ["?"])[0]


def reach_text(reach: Reach) -> str:
    """``reach`` as lines a user reads before running a graph from someone else."""
    lines = ["imports (a graph file is code: these modules run with it)"]
    lines += [f"  {node}: {path} ({_where(path)})" for node, path in reach.imports] or ["  (none beyond detflow)"]
    if reach.python_path:
        state = "used" if reach.python_path_trusted else "not used without --trust-python-path"
        lines.append(f"  python_path ({state}): {', '.join(reach.python_path)}")
    lines.append("writes")
    lines += [f"  {node}: {path}" for node, path in reach.writes] or ["  (nothing)"]
    lines.append("connects to")
    lines += [f"  {node}: {address}" for node, address in reach.connects] or ["  (nothing)"]
    return "\n".join(lines)


# --- drawings ---------------------------------------------------------------------------------
_SHAPES = {SourceNode: "cylinder", PartitionNode: "box3d", FramesNode: "cds", UDFNode: "box",
           ResultNode: "ellipse", SinkNode: "folder"}
_KINDS = {SourceNode: "source", PartitionNode: "partition", FramesNode: "frames", UDFNode: "udf",
          ResultNode: "result", SinkNode: "sink"}


def _inputs(n: Any) -> tuple[str, ...]:
    return tuple(getattr(n, "inputs", None) or ((n.input,) if hasattr(n, "input") else ()))


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def graph_dot(graph: GraphModel) -> str:
    """The graph in graphviz's DOT language: a shape per kind of node, solid edges for inputs,
    dotted ones (labelled with the result name) for references, a cluster per pass."""
    lines = [f'digraph "{_dot_text(graph.name)}" {{', "  rankdir=LR;", "  node [fontname=Helvetica];"]
    try:
        passes = list(plan_graph(graph))
    except GraphValidationError:
        passes = []
    for p in passes:
        members = " ".join(f'"{_dot_text(i)}";' for i in (*p.frames, *p.udfs, *p.results))
        lines.append(f'  subgraph "cluster_pass{p.index + 1}" {{ label="pass {p.index + 1}"; style=dashed; '
                     f'{members} }}')
    for n in graph:
        label = f"{_dot_text(n.id)}\\n[{_dot_text(getattr(n, 'type', 'partition'))}]"
        style = ", style=dashed" if getattr(n, "skip", False) else ""
        lines.append(f'  "{_dot_text(n.id)}" [shape={_SHAPES[type(n)]}, label="{label}"{style}];')
        lines += [f'  "{_dot_text(i)}" -> "{_dot_text(n.id)}";' for i in _inputs(n)]
        lines += [f'  "{_dot_text(r.node)}" -> "{_dot_text(n.id)}" [style=dotted, label="{_dot_text(r.name)}"];'
                  for _, r in refs_of(n)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _svg(dot: str) -> str | None:
    """``dot`` drawn as SVG by graphviz's ``dot`` program, or ``None`` where it is not installed or fails."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "-Tsvg"], input=dot, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    svg = proc.stdout
    return svg[svg.find("<svg"):] if "<svg" in svg else None


_STYLE = ("<style>.detflow-graph table{border-collapse:collapse;font-size:90%}"
          ".detflow-graph td,.detflow-graph th{padding:1px 8px;text-align:left;border-bottom:1px solid #ddd}"
          ".detflow-graph .kind{color:#666}.detflow-graph .skip{color:#999;text-decoration:line-through}</style>")


def graph_html(graph: GraphModel) -> str:
    """The graph for a notebook: an SVG drawing through graphviz where its ``dot`` program is
    installed, a table of nodes with their inputs, references and parameters otherwise; then the passes."""
    esc = html.escape
    parts = [_STYLE, f'<div class="detflow-graph"><b>graph {esc(graph.name)}</b>']
    if graph.description:
        parts.append(f" &mdash; {esc(graph.description)}")
    svg = _svg(graph_dot(graph))
    if svg is not None:
        parts.append(f'<div class="detflow-graph-svg">{svg}</div>')
    else:
        rows = []
        for n in graph:
            refs = ", ".join(f"{esc(name)} &larr; {esc(str(r))}" for name, r in refs_of(n))
            params = dict(getattr(n, "params", {}) or {})
            if isinstance(n, PartitionNode):
                params = {k: v for k, v in (("frames_per_partition", n.frames_per_partition),
                                            ("num_partitions", n.num_partitions)) if v is not None}
            shown = esc(_params({k: v for k, v in params.items() if not isinstance(v, Ref)}))
            cls = ' class="skip"' if getattr(n, "skip", False) else ""
            rows.append(f"<tr{cls}><td><b>{esc(n.id)}</b></td><td class='kind'>{_KINDS[type(n)]}</td>"
                        f"<td>{esc(getattr(n, 'type', 'partition'))}</td>"
                        f"<td>{' &larr; ' + esc(', '.join(_inputs(n))) if _inputs(n) else ''}</td>"
                        f"<td>{refs}</td><td>{shown}</td></tr>")
        parts.append("<table><tr><th>node</th><th>kind</th><th>type</th><th>inputs</th><th>references</th>"
                     f"<th>parameters</th></tr>{''.join(rows)}</table>")
    try:
        plan = plan_graph(graph)
    except GraphValidationError as err:
        parts.append(f"<p>passes: cannot be planned: {esc(str(err))}</p>")
    else:
        parts.append("<ol class='detflow-passes'>" + "".join(f"<li>{esc(str(p))}</li>" for p in plan) + "</ol>")
    parts.append("</div>")
    return "".join(parts)
