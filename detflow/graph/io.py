"""Graph files: YAML in, YAML out, with line numbers for every error.

A graph file (``schema_version: 1``)::

    schema_version: 1
    name: bright-field
    source:    {type: npy, params: {path: scan.npy}}
    partition: {frames_per_partition: 512}
    nodes:
      sum: {type: sum}
      com: {type: com, params: {cx: 128, cy: 128, r: 40}, save_results: true}
    sinks:
      results: {type: zarr, inputs: [sum, com], params: {path: "{output_dir}/{input_stem}.zarr"}}
    executor: {type: threads}

Files are read with ``yaml.safe_load``, through :mod:`detflow.graph.yaml_` (aliases that
expand past a small limit and duplicate keys are refused): nothing in a graph file runs code, except that
a node ``type`` may name a UDF class by import path (``mypackage.udfs:MyUDF``), which
imports that module. The structure is checked here (keys, types of the node options,
inputs that exist, no cycles); :meth:`Graph.validate` checks the rest (parameter
values against their declarations, shapes against the data). Every error names the
file and, where the YAML has it, the line.

Relative paths in ``source.params.path`` and ``partition.roi`` are taken relative
to the graph file's folder. Older schema versions are upgraded by the functions in
``_UPGRADES`` before reading; there is only version 1 so far.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detflow.errors import GraphValidationError, did_you_mean
from detflow.graph.model import Graph, PartitionNode, SinkNode, SourceNode, UDFNode
from detflow.graph.yaml_ import loads

__all__ = ["SCHEMA_VERSION", "graph_from_dict", "graph_to_dict", "read_graph_file", "write_graph_file"]

SCHEMA_VERSION = 1
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
_TOP_KEYS = {"schema_version", "name", "description", "source", "partition", "nodes", "sinks", "executor"}
_UDF_KEYS = {"type", "params", "input", "skip", "save_results"}
_SINK_KEYS = {"type", "params", "inputs", "skip"}
_PARTITION_KEYS = {"frames_per_partition", "num_partitions", "roi", "corrections", "backends"}


def load_yaml(path: str | os.PathLike[str]) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """``(data, lines)`` of a YAML file; errors name the file and line.

    Read with :func:`detflow.graph.yaml_.loads`: a syntax error, a duplicate key or an
    alias bomb is a :class:`~detflow.errors.GraphValidationError`.
    """
    file = os.fspath(path)
    try:
        text = Path(file).read_text()
    except FileNotFoundError as err:
        raise GraphValidationError("no such file", file=file) from err
    except (OSError, UnicodeDecodeError) as err:
        raise GraphValidationError(f"cannot read: {err}", file=file) from err
    return loads(text, file)


def read_graph_file(path: str | os.PathLike[str]) -> Graph:
    """Read and structurally check a graph file."""
    data, lines = load_yaml(path)
    return graph_from_dict(data, file=os.fspath(path), lines=lines)


class _Checker:
    """Raises errors that point into the file."""

    def __init__(self, file: str | None, lines: Mapping[tuple[Any, ...], int]) -> None:
        self.file = file
        self.lines = lines

    def line(self, *path: Any) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def fail(self, message: str, *path: Any, node: str | None = None, node_type: str | None = None,
             parameter: str | None = None) -> GraphValidationError:
        return GraphValidationError(message, node=node, node_type=node_type, parameter=parameter,
                                    file=self.file, line=self.line(*path))

    def mapping(self, value: Any, what: str, *path: Any, node: str | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(f"{what} must be a mapping; got {type(value).__name__} {value!r}", *path,
                            node=node)
        return value

    def keys(self, value: dict[str, Any], allowed: set[str], what: str, *path: Any,
             node: str | None = None) -> None:
        for key in value:
            if key not in allowed:
                raise self.fail(f"unknown key {key!r} in {what}; allowed: {', '.join(sorted(allowed))}",
                                *path, key, node=node)

    def flag(self, value: Any, name: str, *path: Any, node: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"must be true or false; got {value!r}", *path, name, node=node, parameter=name)
        return value


def graph_from_dict(
    spec: Any, *, file: str | None = None, lines: Mapping[tuple[Any, ...], int] | None = None
) -> Graph:
    """Build a :class:`Graph` from plain data (what a graph file holds)."""
    c = _Checker(file, lines or {})
    spec = c.mapping(spec, "a graph file")
    version = spec.get("schema_version")
    if version is None:
        raise c.fail("missing 'schema_version' (this detflow writes version 1)")
    while version in _UPGRADES:
        spec = _UPGRADES[version](spec)
        version = spec["schema_version"]
    if version != SCHEMA_VERSION:
        raise c.fail(f"schema_version {version!r} is not supported; known: {SCHEMA_VERSION}",
                     "schema_version")
    c.keys(spec, _TOP_KEYS, "the graph file")
    g = Graph(str(spec.get("name") or (Path(file).stem if file else "graph")),
              description=str(spec.get("description") or ""))
    g.source_file = file
    g.lines = dict(lines or {})
    base = Path(file).parent if file else None

    src = c.mapping(spec.get("source"), "source", "source")
    if "type" not in src:
        raise c.fail("'source' needs a 'type' (e.g. npy, raw)", "source", node="source")
    c.keys(src, {"type", "params"}, "source", "source", node="source")
    src_params = dict(c.mapping(src.get("params"), "source params", "source", "params", node="source"))
    if base is not None and isinstance(src_params.get("path"), str):
        src_params["path"] = _resolve(base, src_params["path"])
    g.source(str(src["type"]), id="source", **src_params)

    part = c.mapping(spec.get("partition"), "partition", "partition")
    c.keys(part, _PARTITION_KEYS, "partition", "partition", node="partition")
    roi = part.get("roi")
    if roi is not None:
        roi = _load_roi(c, roi, base)
    corrections = part.get("corrections")
    if corrections is not None:
        corrections = dict(c.mapping(corrections, "corrections", "partition", "corrections", node="partition"))
        for key in ("dark", "gain"):
            if base is not None and isinstance(corrections.get(key), str):
                corrections[key] = _resolve(base, corrections[key])
    g.partition("source", id="partition", frames_per_partition=part.get("frames_per_partition"),
                num_partitions=part.get("num_partitions"), roi=roi, corrections=corrections,
                backends=part.get("backends"))

    nodes = c.mapping(spec.get("nodes"), "nodes", "nodes")
    if not nodes:
        raise c.fail("the graph has no nodes: nothing would be computed", "nodes")
    for node_id, body in nodes.items():
        body = c.mapping(body, f"node {node_id!r}", "nodes", node_id, node=str(node_id))
        c.keys(body, _UDF_KEYS, f"node {node_id!r}", "nodes", node_id, node=str(node_id))
        if "type" not in body:
            raise c.fail("needs a 'type'", "nodes", node_id, node=str(node_id))
        params = c.mapping(body.get("params"), "params", "nodes", node_id, "params", node=str(node_id))
        g._add(UDFNode(
            str(node_id), str(body.get("input", "partition")), str(body["type"]), dict(params),
            skip=c.flag(body.get("skip", False), "skip", "nodes", node_id, node=str(node_id)),
            save_results=c.flag(body.get("save_results", False), "save_results", "nodes", node_id,
                                node=str(node_id)),
        ))

    for sink_id, body in c.mapping(spec.get("sinks"), "sinks", "sinks").items():
        body = c.mapping(body, f"sink {sink_id!r}", "sinks", sink_id, node=str(sink_id))
        c.keys(body, _SINK_KEYS, f"sink {sink_id!r}", "sinks", sink_id, node=str(sink_id))
        inputs = body.get("inputs", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise c.fail("'inputs' must be a non-empty list of node ids", "sinks", sink_id, "inputs",
                         node=str(sink_id), parameter="inputs")
        params = c.mapping(body.get("params"), "params", "sinks", sink_id, "params", node=str(sink_id))
        g._add(SinkNode(str(sink_id), str(body.get("type")), tuple(str(i) for i in inputs), dict(params),
                        skip=c.flag(body.get("skip", False), "skip", "sinks", sink_id, node=str(sink_id))))

    ex = spec.get("executor")
    if ex is not None:
        ex = c.mapping(ex, "executor", "executor")
        c.keys(ex, {"type", "params", "cpus", "address", "scheduler"}, "executor", "executor")
        params = dict(c.mapping(ex.get("params"), "executor params", "executor", "params"))
        params.update({k: ex[k] for k in ("cpus", "address", "scheduler") if k in ex})  # shorthand
        g.executor = {"type": str(ex.get("type", "threads")), "params": params}
    check_structure(g)
    return g


def _resolve(base: Path, path: str) -> str:
    if "{" in path or os.path.isabs(path):
        return path
    return os.path.normpath(base / path)


def _load_roi(c: _Checker, roi: Any, base: Path | None) -> np.ndarray:
    if isinstance(roi, str):
        path = _resolve(base, roi) if base is not None else roi
        try:
            arr = np.load(path)
        except (OSError, ValueError) as err:
            raise c.fail(f"cannot load ROI file {path!r}: {err}", "partition", "roi", node="partition",
                         parameter="roi") from err
        return arr
    if isinstance(roi, list):
        return np.asarray(roi, dtype=bool)
    raise c.fail(f"must be a path to a boolean .npy file or a nested list; got {roi!r}", "partition", "roi",
                 node="partition", parameter="roi")


def check_structure(g: Graph) -> None:
    """Inputs that exist, of the right kind, and no cycles; errors point into the file."""
    nodes = g.nodes
    edges: dict[str, tuple[str, ...]] = {}
    for n in nodes.values():
        if isinstance(n, UDFNode):
            edges[n.id] = (n.input,)
        elif isinstance(n, SinkNode):
            edges[n.id] = n.inputs
        elif isinstance(n, PartitionNode):
            edges[n.id] = (n.input,)
    for node_id, inputs in edges.items():
        node = nodes[node_id]
        group = "sinks" if isinstance(node, SinkNode) else "nodes"
        key = "inputs" if isinstance(node, SinkNode) else "input"
        for i, name in enumerate(inputs):
            if name not in nodes:
                raise GraphValidationError(
                    f"input {name!r} is not a node of this graph; {did_you_mean(name, nodes)}"
                    f"nodes: {', '.join(sorted(nodes))}",
                    node=node_id, node_type=getattr(node, "type", None), parameter=key,
                    file=g.source_file,
                    line=g.line_of(group, node_id, key, i) if isinstance(node, SinkNode)
                    else g.line_of(group, node_id, key),
                )
    _check_cycles(g, edges)
    for n in nodes.values():
        if isinstance(n, SinkNode):
            for name in n.inputs:
                if isinstance(nodes[name], SinkNode | SourceNode):
                    raise GraphValidationError(
                        f"input {name!r} is a {type(nodes[name]).__name__[:-4].lower()}; sinks take UDF "
                        "nodes (or, for recorders, the partition node)",
                        node=n.id, node_type=n.type, parameter="inputs", file=g.source_file,
                        line=g.line_of("sinks", n.id, "inputs"),
                    )


def _check_cycles(g: Graph, edges: Mapping[str, tuple[str, ...]]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = [*path[path.index(node):], node]
            raise GraphValidationError(
                f"the inputs form a cycle: {' -> '.join(cycle)}", node=node, parameter="input",
                file=g.source_file, line=g.line_of("nodes", node) or g.line_of("sinks", node),
            )
        state[node] = 1
        for nxt in edges.get(node, ()):
            visit(nxt, [*path, node])
        state[node] = 2

    for node in edges:
        visit(node, [])


def graph_to_dict(g: Graph) -> dict[str, Any]:
    """Plain data for a graph file; refuses what YAML cannot hold (arrays, callables)."""
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "name": g.name}
    if g.description:
        out["description"] = g.description
    nodes: dict[str, Any] = {}
    sinks: dict[str, Any] = {}
    for n in g:
        if isinstance(n, SourceNode):
            if n.obj is not None:
                raise GraphValidationError("a loaded dataset cannot be written to a graph file; "
                                           "add the source by type and parameters", node=n.id)
            out["source"] = {"type": n.type, "params": _plain(dict(n.params), n.id)}
        elif isinstance(n, PartitionNode):
            part: dict[str, Any] = {}
            if n.frames_per_partition is not None:
                part["frames_per_partition"] = n.frames_per_partition
            if n.num_partitions is not None:
                part["num_partitions"] = n.num_partitions
            if n.roi is not None:
                part["roi"] = np.asarray(n.roi).tolist()
            if n.corrections is not None:
                if not isinstance(n.corrections, Mapping):
                    raise GraphValidationError("a CorrectionSet object cannot be written to a graph file; "
                                               "give corrections as a mapping of .npy paths",
                                               node=n.id, parameter="corrections")
                part["corrections"] = _plain(dict(n.corrections), n.id)
            if n.backends is not None:
                part["backends"] = list(n.backends)
            out["partition"] = part
        elif isinstance(n, UDFNode):
            body: dict[str, Any] = {"type": n.type}
            if n.params:
                body["params"] = _plain(dict(n.params), n.id)
            if n.input != "partition":
                body["input"] = n.input
            if n.skip:
                body["skip"] = True
            if n.save_results:
                body["save_results"] = True
            nodes[n.id] = body
        elif isinstance(n, SinkNode):
            sbody: dict[str, Any] = {"type": n.type, "inputs": list(n.inputs)}
            if n.params:
                sbody["params"] = _plain(dict(n.params), n.id)
            if n.skip:
                sbody["skip"] = True
            sinks[n.id] = sbody
    out["nodes"] = nodes
    if sinks:
        out["sinks"] = sinks
    if g.executor is not None:
        out["executor"] = g.executor
    return out


def _plain(value: Any, node: str) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v, node) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, node) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype):
        return value.str if value.byteorder not in "=|" else value.name
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise GraphValidationError(f"{type(value).__name__} values cannot be written to a graph file",
                               node=node)


def write_graph_file(g: Graph, path: str | os.PathLike[str] | None = None) -> str:
    text = yaml.safe_dump(graph_to_dict(g), sort_keys=False, default_flow_style=None)
    if path is not None:
        Path(path).write_text(text)
    return text
