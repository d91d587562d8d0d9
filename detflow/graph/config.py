"""Parameter overrides, in the order calibration pipelines apply them.

Each level wins over the one before it:

1. the node's code default (its ``params_spec``, or its ``__init__``),
2. the graph file,
3. a config file: a YAML file of per-node overrides, ``{nodes: {com: {r: 30}}}``
   (a bare ``{com: {r: 30}}`` is read the same way),
4. keyword arguments (``graph.call(nodes={"com": {"r": 35}})``) or ``--set com.r=35``.

Overrides name a node id and a parameter, for every kind of node. For frame, UDF and
result nodes ``skip`` and ``save_results`` are node options, everything else is a
parameter of the node (a ``{ref: node.name}`` value is a reference); sources take
their format's parameters, partition nodes their sizing, ROI and corrections, sinks
their parameters and ``skip``. ``--set`` strings are parsed by the parameter's declared type where it has
one, and as a YAML scalar otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from detflow.errors import GraphValidationError, ParameterError, did_you_mean
from detflow.graph.io import load_yaml
from detflow.graph.model import FramesNode, GraphModel, PartitionNode, Ref, ResultNode, SinkNode, SourceNode, UDFNode
from detflow.nodes.params import Param, unknown_parameter
from detflow.nodes.resolve import node_class

__all__ = ["add_import_folders", "apply_overrides", "load_config_file", "parse_set", "use_python_path"]

_UDF_OPTIONS = {"skip": Param("skip", bool, default=False), "save_results": Param("save_results", bool, default=False)}
_PARTITION_PARAMS = {
    "frames_per_partition": Param("frames_per_partition", int, default=None),
    "num_partitions": Param("num_partitions", int, default=None),
}


def load_config_file(path: str | os.PathLike[str]) -> tuple[dict[str, dict[str, Any]], dict[tuple[Any, ...], int]]:
    """Per-node overrides from a config file, and the line of each key."""
    file = os.fspath(path)
    data, lines = load_yaml(file)
    if data is None:
        return {}, lines
    if not isinstance(data, dict):
        raise GraphValidationError(f"a config file holds a mapping of node ids; got {type(data).__name__}",
                                   file=file, line=1)
    if "nodes" in data:
        extra = sorted(set(data) - {"nodes", "schema_version"})
        if extra:
            raise GraphValidationError(f"unknown key {extra[0]!r}; a config file holds 'nodes'", file=file,
                                       line=lines.get((extra[0],)))
        data = data["nodes"] or {}
        lines = {k[1:]: v for k, v in lines.items() if k[:1] == ("nodes",)}
    for node_id, params in data.items():
        if not isinstance(params, dict):
            raise GraphValidationError(f"overrides of node {node_id!r} must be a mapping; got {params!r}",
                                       node=str(node_id), file=file, line=lines.get((node_id,)))
        data[node_id] = {k: _refs(v) for k, v in params.items()}
    return data, lines


def _refs(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"ref"}:
        return Ref.parse(value["ref"])
    return value


def _declared(graph: GraphModel, node_id: str, name: str) -> Param | None:
    """The declaration of parameter ``name`` of node ``node_id``, if it has one."""
    node = graph.nodes[node_id]
    if isinstance(node, UDFNode | FramesNode | ResultNode):
        if name in _UDF_OPTIONS:
            return _UDF_OPTIONS[name]
        kind = {UDFNode: "udf", FramesNode: "frames", ResultNode: "result"}[type(node)]
        try:
            cls = node_class(kind, node.type) if node.obj is None else type(node.obj)
        except Exception as err:
            raise GraphValidationError(f"cannot use type {node.type!r}: {err}", node=node_id,
                                       parameter="type") from err
        return next((p for p in getattr(cls, "params_spec", ()) if p.name == name), None)
    if isinstance(node, PartitionNode):
        return _PARTITION_PARAMS.get(name)
    if isinstance(node, SinkNode) and name == "skip":
        return _UDF_OPTIONS["skip"]
    if isinstance(node, SourceNode):
        from detflow.registry import SOURCES

        try:
            spec = getattr(SOURCES.get(node.type), "params_spec", ())
        except Exception:
            return None
        return next((p for p in spec if p.name == name), None)
    return None


def _known_names(graph: GraphModel, node_id: str) -> list[str] | None:
    """Every parameter node ``node_id`` declares, or ``None`` where it declares none."""
    node = graph.nodes[node_id]
    if isinstance(node, PartitionNode):
        return [*_PARTITION_PARAMS, "roi", "corrections", "backends"]
    try:
        if isinstance(node, UDFNode | FramesNode | ResultNode):
            kind = {UDFNode: "udf", FramesNode: "frames", ResultNode: "result"}[type(node)]
            cls = node_class(kind, node.type) if node.obj is None else type(node.obj)
        elif isinstance(node, SourceNode):
            from detflow.registry import SOURCES

            cls = SOURCES.get(node.type)
        else:
            return None
    except Exception:  # an unknown type is reported when the graph is checked, with its line
        return None
    names = [p.name for p in getattr(cls, "params_spec", ())]
    if names and isinstance(node, UDFNode | FramesNode | ResultNode):
        names += list(_UDF_OPTIONS)
    return names or None


def _set_error(text: str, node_id: str, name: str) -> GraphValidationError:
    """An error that reads as the ``--set`` the user typed, yet knows its node and parameter."""
    err = GraphValidationError(text)
    err.node, err.parameter = node_id, name
    return err


def parse_set(graph: GraphModel, assignments: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["com.r=35", "bf.skip=true"]`` -> ``{"com": {"r": 35.0}, "bf": {"skip": True}}``."""
    out: dict[str, dict[str, Any]] = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        node_id, dot, name = key.strip().partition(".")
        if not sep or not dot or not node_id or not name:
            raise GraphValidationError(f"--set {text!r}: expected NODE.PARAMETER=VALUE, e.g. com.r=35")
        if node_id not in graph.nodes:
            raise GraphValidationError(
                f"--set {text!r}: no node {node_id!r}; {did_you_mean(node_id, graph.nodes)}"
                f"nodes: {', '.join(sorted(graph.nodes))}"
            )
        param = _declared(graph, node_id, name)
        known = _known_names(graph, node_id)
        if param is None and known is not None:
            node_type = getattr(graph.nodes[node_id], "type", node_id)
            raise _set_error(f"--set {text!r}: {unknown_parameter(name, known, node_type).reason}", node_id, name)
        try:
            if value.strip().startswith("{ref:") or value.strip().startswith("ref:"):  # --set com.cx={ref: disk.cx}
                loaded = yaml.safe_load(value if value.strip().startswith("{") else "{" + value + "}")
                out.setdefault(node_id, {})[name] = _refs(loaded)
                continue
            parsed = param.parse(value) if param is not None else yaml.safe_load(value)
        except ParameterError as err:
            raise _set_error(f"--set {text!r}: {err.reason}", node_id, name) from err
        except yaml.YAMLError as err:
            raise _set_error(f"--set {text!r}: cannot parse the value: {err}", node_id, name) from err
        out.setdefault(node_id, {})[name] = parsed
    return out


def apply_overrides(
    graph: GraphModel,
    overrides: Mapping[str, Mapping[str, Any]],
    *,
    file: str | None = None,
    lines: Mapping[tuple[Any, ...], int] | None = None,
) -> Any:
    """A copy of ``graph`` (of the same class) with ``{node_id: {param: value}}`` applied."""
    lines = lines or {}
    g = graph.copy()
    for node_id, params in overrides.items():
        if node_id not in g.nodes:
            raise GraphValidationError(
                f"overrides name node {node_id!r}, which the graph does not have; "
                f"{did_you_mean(node_id, g.nodes)}nodes: {', '.join(sorted(g.nodes))}",
                file=file, line=lines.get((node_id,)),
            )
        node = g.nodes[node_id]
        params = dict(params)
        if isinstance(node, UDFNode | FramesNode | ResultNode):
            options = {k: params.pop(k) for k in list(params) if k in _UDF_OPTIONS}
            if isinstance(node, FramesNode) and options.pop("save_results", False):
                raise GraphValidationError("frame nodes have no results to save", node=node_id,
                                           parameter="save_results", file=file,
                                           line=lines.get((node_id, "save_results")))
            for k, v in options.items():
                if not isinstance(v, bool):
                    raise GraphValidationError(f"must be true or false; got {v!r}", node=node_id,
                                               parameter=k, file=file, line=lines.get((node_id, k)))
            if params and node.obj is not None:
                raise GraphValidationError(
                    "this node holds a ready instance; its parameters cannot be overridden",
                    node=node_id, parameter=next(iter(params)),
                )
            node = dataclasses.replace(node, params={**node.params, **params}, **options)
        elif isinstance(node, SourceNode):
            if node.obj is not None:
                raise GraphValidationError("a loaded dataset's parameters cannot be overridden", node=node_id)
            node = dataclasses.replace(node, params={**node.params, **params})
        elif isinstance(node, PartitionNode):
            allowed = (*_PARTITION_PARAMS, "roi", "corrections")
            for k in params:
                if k not in allowed:
                    raise GraphValidationError(
                        unknown_parameter(k, allowed, "partition").reason,
                        node=node_id, parameter=k, file=file, line=lines.get((node_id, k)),
                    )
            # one sizing replaces the other: a later level's choice wins whole
            if "frames_per_partition" in params:
                params.setdefault("num_partitions", None)
            if "num_partitions" in params:
                params.setdefault("frames_per_partition", None)
            node = dataclasses.replace(node, **params)
        elif isinstance(node, SinkNode):
            skip = params.pop("skip", node.skip)
            node = dataclasses.replace(node, params={**node.params, **params}, skip=skip)
        g.replace_node(node)
    return g


# --- where a graph's imports come from ------------------------------------------------------
# A graph file names classes and functions by import path, so running one runs code. Imports
# resolve from installed packages and from folders the user lists (``--path``); never from the
# graph file's folder implicitly. A graph file's own ``python_path:`` is honoured only when the
# user says so (``--trust-python-path``; ``Graph.from_yaml(..., trust_python_path=True)``): a
# graph file from someone else cannot point the imports at a folder of its choosing unasked.


def add_import_folders(folders: Iterable[str | os.PathLike[str]], *, what: str = "--path") -> list[str]:
    """Put ``folders`` first on ``sys.path`` (where worker processes find them too).

    Each must be an existing folder; the error names it and ``what`` listed it."""
    added = []
    for folder in folders:
        path = os.path.abspath(os.fspath(folder))
        if not os.path.isdir(path):
            raise GraphValidationError(f"{what} {os.fspath(folder)!r}: no such folder")
        added.append(path)
    for path in reversed(added):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    return added


def use_python_path(graph: GraphModel) -> None:
    """Make the graph file's ``python_path:`` folders importable, if the user trusted them.

    Untrusted, they are an error: the graph would import from folders the user never chose."""
    if not graph.python_path:
        return
    if not graph.python_path_trusted:
        raise GraphValidationError(
            f"python_path {list(graph.python_path)}: a graph file cannot add import folders by itself "
            "(a graph file is code: it runs the modules it imports); pass --trust-python-path to import from "
            "them (Graph.from_yaml(path, trust_python_path=True)), or list the folders you trust with --path",
            file=graph.source_file, line=graph.lines.get(("python_path",)),
        )
    add_import_folders(graph.python_path, what="python_path")
