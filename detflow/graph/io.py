"""Graph files: YAML in, YAML out, with line numbers for every error.

A graph file, ``schema_version: 2``::

    schema_version: 2
    name: dpc
    sources:
      scan: {type: npy, params: {path: scan.npy}}
    nodes:
      part: {type: partition, input: scan, params: {frames_per_partition: 512}}
      binned: {type: bin, input: part, params: {factor: 2}}
      sum: {type: sum, input: binned}
      disk: {type: find_disk, input: sum}
      com: {type: com, input: part, params: {cx: {ref: disk.cx}, cy: {ref: disk.cy}, r: {ref: disk.r}}}
      phase: {type: idpc, input: com, save_results: true}
      mine: {type: "mypkg.frames:denoise", kind: frames, input: part}
    sinks:
      results: {type: zarr, inputs: [sum, com, phase], params: {path: "{output_dir}/{input_stem}.zarr"}}
    executor: {type: threads}

``sources`` is a mapping of source nodes; ``nodes`` holds every other node, each with
``type``, ``input`` (or ``inputs``, for result nodes), ``params`` and the node options
``skip`` and ``save_results``. ``type: partition`` is a partition node; any other type
is a UDF, frames or result registry name, or an import path, whose ``kind`` (``frames``,
``udf`` or ``result``) is found from the object where it tells (a UDF class does) and
given with ``kind:`` where it does not (a plain function). A parameter ``{ref: node.name}``
is a reference to a result of another node. ``input`` may be left out where the graph has
one partition node. Version 1 files (one ``source``, one ``partition``, UDF ``nodes``) load
unchanged.

Files are read with ``yaml.safe_load``, through :mod:`detflow.graph.yaml_` (aliases that
expand past a small limit and duplicate keys are refused). Even so, **a graph file is code**:
a node ``type`` (or a function node's ``func``) may name a class or function by import path,
which imports and runs that module; sinks write where their paths say; live sources and a
scheduler ``address`` connect where they say (``detflow show`` lists all three). Imports
resolve from installed packages and ``sys.path`` (the ``--path`` folders), never from the
graph file's folder implicitly; the file's own ``python_path:`` folders (relative to the
file) are used only when the user trusts them (``--trust-python-path``), see
:func:`detflow.graph.config.use_python_path`. The structure is checked here (keys, types of the node options,
inputs that exist, no cycles); :meth:`Graph.validate` checks the rest (parameter
values against their declarations, shapes against the data). Every error names the
file and, where the YAML has it, the line.
Relative paths in source ``path`` parameters, ``roi`` and ``corrections`` are taken relative to
the graph file's folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

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
    check_structure,
)
from detflow.graph.yaml_ import loads
from detflow.nodes.resolve import kind_of_type

__all__ = ["SCHEMA_VERSION", "graph_from_dict", "graph_to_dict", "read_graph_file", "write_graph_file"]

SCHEMA_VERSION = 2
_KNOWN_VERSIONS = (1, 2)
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
_TOP_KEYS = {"schema_version", "name", "description", "source", "partition", "nodes", "sinks", "executor",
             "python_path"}
_TOP_KEYS_V2 = {"schema_version", "name", "description", "sources", "nodes", "sinks", "executor", "python_path"}
_NODE_KEYS_V2 = {"type", "kind", "params", "input", "inputs", "skip", "save_results"}
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


def read_graph_file(path: str | os.PathLike[str], *, cls: type[GraphModel] = GraphModel,
                    trust_python_path: bool = False) -> Any:
    """Read and structurally check a graph file (into a ``cls``).

    The folders of its ``python_path:`` are only used to import from with
    ``trust_python_path`` (see :func:`detflow.graph.config.use_python_path`)."""
    data, lines = load_yaml(path)
    g = graph_from_dict(data, file=os.fspath(path), lines=lines, cls=cls)
    g.python_path_trusted = bool(trust_python_path)
    return g


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
    spec: Any, *, file: str | None = None, lines: Mapping[tuple[Any, ...], int] | None = None,
    cls: type[GraphModel] = GraphModel,
) -> Any:
    """Build a graph (a ``cls``) from plain data (what a graph file holds)."""
    c = _Checker(file, lines or {})
    spec = c.mapping(spec, "a graph file")
    version = spec.get("schema_version")
    if version is None:
        raise c.fail(f"missing 'schema_version' (this detflow writes version {SCHEMA_VERSION})")
    while version in _UPGRADES:
        spec = _UPGRADES[version](spec)
        version = spec["schema_version"]
    if version not in _KNOWN_VERSIONS:
        raise c.fail(f"schema_version {version!r} is not supported; known: "
                     f"{', '.join(map(str, _KNOWN_VERSIONS))}", "schema_version")
    c.keys(spec, _TOP_KEYS if version == 1 else _TOP_KEYS_V2, "the graph file")
    g = cls(str(spec.get("name") or (Path(file).stem if file else "graph")),
            description=str(spec.get("description") or ""))
    g.source_file = file
    g.lines = dict(lines or {})
    g.schema_version = version
    base = Path(file).parent if file else None
    if version == 1:
        _read_v1(c, g, spec, base)
    else:
        _read_v2(c, g, spec, base)
    _read_sinks(c, g, spec)
    ex = spec.get("executor")
    if ex is not None:
        ex = c.mapping(ex, "executor", "executor")
        c.keys(ex, {"type", "params", "cpus", "address", "scheduler"}, "executor", "executor")
        params = dict(c.mapping(ex.get("params"), "executor params", "executor", "params"))
        params.update({k: ex[k] for k in ("cpus", "address", "scheduler") if k in ex})  # shorthand
        g.executor = {"type": str(ex.get("type", "threads")), "params": params}
    g.python_path = _python_path(c, spec.get("python_path"), base)
    check_structure(g)
    return g


def _python_path(c: _Checker, value: Any, base: Path | None) -> tuple[str, ...]:
    """``python_path:`` (a folder or a list of them) as absolute folders, relative to the graph file."""
    if value is None:
        return ()
    folders = [value] if isinstance(value, str) else value
    if not isinstance(folders, list) or not all(isinstance(f, str) and f for f in folders):
        raise c.fail(f"python_path must be a folder or a list of folders; got {value!r}", "python_path")
    return tuple(os.path.abspath(os.path.join(base, f) if base is not None else f) for f in folders)


def _refs(value: Any) -> Any:
    """``{ref: node.name}`` mappings as :class:`Ref` objects, anywhere in ``value``."""
    if isinstance(value, dict):
        if set(value) == {"ref"}:
            return Ref.parse(value["ref"])
        return {k: _refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_refs(v) for v in value]
    return value


def _read_v2(c: _Checker, g: GraphModel, spec: dict[str, Any], base: Path | None) -> None:
    sources = c.mapping(spec.get("sources"), "sources", "sources")
    if not sources:
        raise c.fail("'sources' needs at least one source, e.g. {scan: {type: npy, params: {path: scan.npy}}}",
                     "sources")
    for sid, body in sources.items():
        sid = str(sid)
        body = c.mapping(body, f"source {sid!r}", "sources", sid, node=sid)
        c.keys(body, {"type", "params"}, f"source {sid!r}", "sources", sid, node=sid)
        if "type" not in body:
            raise c.fail("needs a 'type' (e.g. npy, raw)", "sources", sid, node=sid)
        params = dict(c.mapping(body.get("params"), "params", "sources", sid, "params", node=sid))
        if base is not None and isinstance(params.get("path"), str):
            params["path"] = _resolve(base, params["path"])
        g.source(str(body["type"]), id=sid, **params)
    nodes = c.mapping(spec.get("nodes"), "nodes", "nodes")
    if not nodes:
        raise c.fail("the graph has no nodes: nothing would be computed", "nodes")
    bodies = {}
    for nid, body in nodes.items():
        nid = str(nid)
        body = c.mapping(body, f"node {nid!r}", "nodes", nid, node=nid)
        c.keys(body, _NODE_KEYS_V2, f"node {nid!r}", "nodes", nid, node=nid)
        if "type" not in body:
            raise c.fail("needs a 'type'", "nodes", nid, node=nid)
        bodies[nid] = body
    partitions = [n for n, b in bodies.items() if b["type"] == "partition"]
    for nid in partitions:  # first, so the others can default their input to the only one
        body = bodies[nid]
        params = dict(c.mapping(body.get("params"), "params", "nodes", nid, "params", node=nid))
        c.keys(params, _PARTITION_KEYS, f"partition node {nid!r}", "nodes", nid, "params", node=nid)
        only_source = next(iter(sources)) if len(sources) == 1 else None
        src = body.get("input", only_source)
        if src is None:
            raise c.fail(f"the graph has several sources ({', '.join(map(str, sources))}); say which one "
                         "with 'input'", "nodes", nid, node=nid, parameter="input")
        roi, corrections = _partition_extras(c, params, base, ("nodes", nid, "params"), nid)
        g.partition(str(src), id=nid, frames_per_partition=params.get("frames_per_partition"),
                    num_partitions=params.get("num_partitions"), roi=roi, corrections=corrections,
                    backends=params.get("backends"))
    for nid, body in bodies.items():
        if body["type"] == "partition":
            continue
        type_ = str(body["type"])
        kind = body.get("kind")
        if kind is None:
            kind = kind_of_type(type_)
        if kind not in ("frames", "udf", "result"):
            raise c.fail(f"cannot tell what kind of node type {type_!r} is" + (f" (kind: {kind!r})" if kind else "")
                         + "; give 'kind: frames', 'kind: udf' or 'kind: result' (or a registry name: see "
                         "`detflow show --nodes`)", "nodes", nid, "kind" if "kind" in body else "type",
                         node=nid, parameter="type")
        params = _refs(dict(c.mapping(body.get("params"), "params", "nodes", nid, "params", node=nid)))
        skip = c.flag(body.get("skip", False), "skip", "nodes", nid, node=nid)
        save = c.flag(body.get("save_results", False), "save_results", "nodes", nid, node=nid)
        if kind == "result":
            inputs = body.get("inputs", body.get("input"))
            if isinstance(inputs, str):
                inputs = [inputs]
            if not isinstance(inputs, list) or not inputs:
                raise c.fail("a result node needs 'input' (a node id) or 'inputs' (a list of them)", "nodes", nid,
                             node=nid, parameter="input")
            g.add(ResultNode(nid, tuple(str(i) for i in inputs), type_, params, skip=skip, save_results=save))
            continue
        if "inputs" in body:
            raise c.fail(f"a {kind} node has one 'input'", "nodes", nid, "inputs", node=nid, parameter="inputs")
        src = body.get("input", partitions[0] if len(partitions) == 1 else None)
        if src is None:
            raise c.fail("needs an 'input' (a partition or frames node)", "nodes", nid, node=nid, parameter="input")
        if kind == "frames":
            if save:
                raise c.fail("frame nodes have no results to save", "nodes", nid, "save_results", node=nid,
                             parameter="save_results")
            g.add(FramesNode(nid, str(src), type_, params, skip=skip))
        else:
            g.add(UDFNode(nid, str(src), type_, params, skip=skip, save_results=save))


def _partition_extras(c: _Checker, part: dict[str, Any], base: Path | None, path: tuple[Any, ...],
                      node: str) -> tuple[Any, Any]:
    roi = part.get("roi")
    if roi is not None:
        roi = _load_roi(c, roi, base, (*path, "roi"), node)
    corrections = part.get("corrections")
    if corrections is not None:
        corrections = dict(c.mapping(corrections, "corrections", *path, "corrections", node=node))
        for key in ("dark", "gain"):
            if base is not None and isinstance(corrections.get(key), str):
                corrections[key] = _resolve(base, corrections[key])
    return roi, corrections


def _read_v1(c: _Checker, g: GraphModel, spec: dict[str, Any], base: Path | None) -> None:
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
    roi, corrections = _partition_extras(c, part, base, ("partition",), "partition")
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
        g.add(UDFNode(
            str(node_id), str(body.get("input", "partition")), str(body["type"]), dict(params),
            skip=c.flag(body.get("skip", False), "skip", "nodes", node_id, node=str(node_id)),
            save_results=c.flag(body.get("save_results", False), "save_results", "nodes", node_id,
                                node=str(node_id)),
        ))



def _read_sinks(c: _Checker, g: GraphModel, spec: dict[str, Any]) -> None:
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
        g.add(SinkNode(str(sink_id), str(body.get("type")), tuple(str(i) for i in inputs), dict(params),
                        skip=c.flag(body.get("skip", False), "skip", "sinks", sink_id, node=str(sink_id))))


def _resolve(base: Path, path: str) -> str:
    if "{" in path or os.path.isabs(path):
        return path
    return os.path.normpath(base / path)


def _load_roi(c: _Checker, roi: Any, base: Path | None, path: tuple[Any, ...], node: str) -> np.ndarray:
    if isinstance(roi, str):
        file = _resolve(base, roi) if base is not None else roi
        try:
            return np.load(file)
        except (OSError, ValueError) as err:
            raise c.fail(f"cannot load ROI file {file!r}: {err}", *path, node=node, parameter="roi") from err
    if isinstance(roi, list):
        return np.asarray(roi, dtype=bool)
    raise c.fail(f"must be a path to a boolean .npy file or a nested list; got {roi!r}", *path, node=node,
                 parameter="roi")


def graph_to_dict(g: GraphModel) -> dict[str, Any]:
    """Plain data for a graph file (``schema_version: 2``); refuses what YAML cannot hold
    (arrays, callables, loaded datasets)."""
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "name": g.name}
    if g.description:
        out["description"] = g.description
    sources: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    sinks: dict[str, Any] = {}
    for n in g:
        if isinstance(n, SourceNode):
            if n.obj is not None:
                raise GraphValidationError("a loaded dataset cannot be written to a graph file; "
                                           "add the source by type and parameters", node=n.id)
            sources[n.id] = {"type": n.type, "params": _plain(dict(n.params), n.id)}
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
            nodes[n.id] = {"type": "partition", "input": n.input, **({"params": part} if part else {})}
        elif isinstance(n, FramesNode | UDFNode | ResultNode):
            body: dict[str, Any] = {"type": n.type}
            kind = {FramesNode: "frames", UDFNode: "udf", ResultNode: "result"}[type(n)]
            if ":" in n.type and kind_of_type(n.type) != kind:
                body["kind"] = kind
            if isinstance(n, ResultNode):
                if len(n.inputs) == 1:
                    body["input"] = n.inputs[0]
                else:
                    body["inputs"] = list(n.inputs)
            else:
                body["input"] = n.input
            if n.params:
                body["params"] = _plain(dict(n.params), n.id)
            if n.skip:
                body["skip"] = True
            if getattr(n, "save_results", False):
                body["save_results"] = True
            nodes[n.id] = body
        elif isinstance(n, SinkNode):
            sbody: dict[str, Any] = {"type": n.type, "inputs": list(n.inputs)}
            if n.params:
                sbody["params"] = _plain(dict(n.params), n.id)
            if n.skip:
                sbody["skip"] = True
            sinks[n.id] = sbody
    out["sources"] = sources
    out["nodes"] = nodes
    if sinks:
        out["sinks"] = sinks
    if g.executor is not None:
        out["executor"] = g.executor
    if g.python_path:
        out["python_path"] = list(g.python_path)
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
    if isinstance(value, Ref):
        return {"ref": str(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise GraphValidationError(f"{type(value).__name__} values cannot be written to a graph file",
                               node=node)


def write_graph_file(g: GraphModel, path: str | os.PathLike[str] | None = None) -> str:
    text = yaml.safe_dump(graph_to_dict(g), sort_keys=False, default_flow_style=None)
    if path is not None:
        Path(path).write_text(text)
    return text
