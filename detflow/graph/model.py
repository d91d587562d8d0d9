"""The graph model: nodes as frozen data, and :class:`GraphModel`, which holds them.

Node kinds, and what each takes as input:

=============  ==========================================  ==============================
kind           what it is                                  input
=============  ==========================================  ==============================
source         a dataset or a live stream                  --
partition      how a source is cut (sizing, ROI,           one source
               detector corrections)
frames         a frame transform run inside the            a partition or frames node
               partition task (correct, bin, crop, ...)
udf            a UDF: map per block, merge per partition   a partition or frames node
result         computed on the driver from merged          UDF or result nodes
               results (find_disk, idpc, ...)
sink           writes or shows results                     UDF or result nodes (a
                                                           recorder: a partition node)
=============  ==========================================  ==============================

Any parameter of a frames, UDF or result node may be a :class:`Ref` to a result of
another node (``g.ref("disk.cx")``, ``{ref: disk.cx}`` in a graph file). Inputs and
references are the graph's edges; :func:`check_structure` checks that they point at
nodes that exist, of the right kind, without a cycle, and that no skipped node is
needed. This module is plain data: it opens nothing and runs nothing. Planning
(:mod:`detflow.graph.planning`), lowering and running (:mod:`detflow.graph.run`) sit
above it; :class:`detflow.graph.Graph` is this model with those abilities added.

Examples
--------
>>> g = GraphModel("demo")
>>> g.source("npy", path="scan.npy")
'source'
>>> g.partition()
'partition'
>>> g.frames("bin", factor=2)
'bin'
>>> g.udf("sum", input="bin")
'sum'
>>> g.result("find_disk", id="disk", input="sum")
'disk'
>>> g.udf("com", input="partition", cx=g.ref("disk.cx"))
'com'
>>> [str(r) for _, r in refs_of(g["com"])]
['disk.cx']
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from detflow.errors import GraphValidationError
from detflow.registry import UDFS

if TYPE_CHECKING:
    from detflow.nodes.base import UDF
    from detflow.sources.base import Source

__all__ = [
    "FramesNode", "GraphModel", "Node", "PartitionNode", "Ref", "ResultNode", "SinkNode", "SourceNode",
    "UDFNode", "as_flat_roi", "bind_refs", "udf_type_name", "check_structure", "dependencies", "kind_of", "refs_of",
]

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class Ref:
    """A reference to result ``name`` of node ``node``, as a parameter value.

    Examples
    --------
    >>> Ref.parse("disk.cx")
    Ref(node='disk', name='cx')
    """

    node: str
    name: str

    @classmethod
    def parse(cls, text: Any) -> Ref:
        node, dot, name = str(text).partition(".")
        if not dot or not node or not name:
            raise GraphValidationError(f"a reference reads NODE.RESULT (e.g. disk.cx); got {text!r}")
        return cls(node, name)

    def __str__(self) -> str:
        return f"{self.node}.{self.name}"


@dataclass(frozen=True)
class SourceNode:
    id: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    obj: Source | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PartitionNode:
    id: str
    input: str
    frames_per_partition: int | None = None
    num_partitions: int | None = None
    roi: Any = field(default=None, compare=False)
    #: a CorrectionSet, or a mapping of dark/gain/excluded_pixels (arrays or .npy paths)
    corrections: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class FramesNode:
    """A frame node: ``type`` is a frames registry name or an import path; ``obj`` a ready node."""

    id: str
    input: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    obj: Any = field(default=None, compare=False)
    skip: bool = False


@dataclass(frozen=True)
class UDFNode:
    """A UDF node. ``params`` are the UDF's own keyword arguments; ``skip`` and
    ``save_results`` are node options every UDF node has, kept apart from them."""

    id: str
    input: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    obj: UDF | None = field(default=None, compare=False)
    skip: bool = False
    save_results: bool = False


@dataclass(frozen=True)
class ResultNode:
    """A result node: computed on the driver from the merged results of ``inputs``."""

    id: str
    inputs: tuple[str, ...]
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    obj: Any = field(default=None, compare=False)
    skip: bool = False
    save_results: bool = False


@dataclass(frozen=True)
class SinkNode:
    """A sink fed by UDF or result nodes (or, for recorders, by the partition node)."""

    id: str
    type: str
    inputs: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    skip: bool = False


Node = SourceNode | PartitionNode | FramesNode | UDFNode | ResultNode | SinkNode

_KINDS: dict[type, str] = {SourceNode: "source", PartitionNode: "partition", FramesNode: "frames",
                           UDFNode: "udf", ResultNode: "result", SinkNode: "sink"}


def kind_of(node: Node) -> str:
    """``"source"``, ``"partition"``, ``"frames"``, ``"udf"``, ``"result"`` or ``"sink"``."""
    return _KINDS[type(node)]


def inputs_of(node: Node) -> tuple[str, ...]:
    """The ids a node takes its data from (not its references)."""
    if isinstance(node, SourceNode):
        return ()
    if isinstance(node, ResultNode | SinkNode):
        return node.inputs
    return (node.input,)


def _walk_refs(value: Any, path: str) -> Iterator[tuple[str, Ref]]:
    if isinstance(value, Ref):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk_refs(v, path)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _walk_refs(v, path)


def refs_of(node: Node) -> list[tuple[str, Ref]]:
    """``(parameter, ref)`` for every reference in the node's parameters."""
    out: list[tuple[str, Ref]] = []
    params = getattr(node, "params", None) or {}
    for name, value in params.items():
        out.extend(_walk_refs(value, name))
    if isinstance(node, PartitionNode):
        for name in ("roi", "corrections"):
            out.extend(_walk_refs(getattr(node, name), name))
    return out


def dependencies(node: Node) -> tuple[str, ...]:
    """Inputs, then referenced nodes: everything ``node`` waits for."""
    deps = list(inputs_of(node))
    deps += [r.node for _, r in refs_of(node) if r.node not in deps]
    return tuple(deps)


def bind_refs(value: Any, values: Mapping[tuple[str, str], Any]) -> Any:
    """``value`` with every :class:`Ref` replaced by ``values[(node, name)]``."""
    if isinstance(value, Ref):
        return values[(value.node, value.name)]
    if isinstance(value, Mapping):
        return {k: bind_refs(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [bind_refs(v, values) for v in value]
    if isinstance(value, tuple):
        return tuple(bind_refs(v, values) for v in value)
    return value


class GraphModel:
    """A dataflow graph as plain data: nodes by id, in the order they were added.

    Parameters
    ----------
    name
        Shown in views, logs and result attributes.
    """

    def __init__(self, name: str = "graph", *, description: str = "") -> None:
        self.name = name
        self.description = description
        self._nodes: dict[str, Node] = {}
        #: executor named by a graph file: ``{"type": ..., "params": {...}}``
        self.executor: dict[str, Any] | None = None
        #: where the graph came from, and the line of each key path in it (for errors)
        self.source_file: str | None = None
        self.lines: dict[tuple[Any, ...], int] = {}
        #: the graph file layout the key paths in ``lines`` follow
        self.schema_version = 2

    # --- building -----------------------------------------------------------------
    def add(self, node: Node) -> str:
        """Add a ready node; its id must be new."""
        if not isinstance(node.id, str) or not _ID.match(node.id):
            raise GraphValidationError(
                "node ids start with a letter or '_' and hold letters, digits, '_' and '-'; "
                f"got {node.id!r}"
            )
        if node.id in self._nodes:
            raise GraphValidationError(f"a node with id {node.id!r} already exists", node=node.id)
        self._nodes[node.id] = node
        return node.id

    _add = add

    def source(self, source: str | Source, *, id: str = "source", **params: Any) -> str:
        """Add a source: a registry name with its parameters, or a loaded source."""
        if isinstance(source, str):
            return self.add(SourceNode(id, source, dict(params)))
        if params:
            raise GraphValidationError(
                "parameters go with a source *name*, not with a loaded source", node=id
            )
        return self.add(SourceNode(id, getattr(source, "name", "") or type(source).__name__,
                                   {}, obj=source))

    def partition(
        self,
        input: str | None = None,
        *,
        id: str = "partition",
        frames_per_partition: int | None = None,
        num_partitions: int | None = None,
        roi: Any = None,
        corrections: Any = None,
    ) -> str:
        """Add a partition node: how source ``input`` (default: the only source) is cut,
        the ROI, and the detector corrections applied to every frame read (a
        :class:`~detflow.sources.corrections.CorrectionSet` or a mapping of its arguments)."""
        src = input if input is not None else self._only(SourceNode, "source", "source")
        return self.add(PartitionNode(id, src, frames_per_partition, num_partitions, roi, corrections))

    def frames(self, kind: Any, *, id: str | None = None, input: str | None = None,
               skip: bool = False, **params: Any) -> str:
        """Add a frame node: a registry name (``"bin"``), an import path (``"pkg.mod:func"``)
        with its parameters, or a ready frame node. ``input`` is a partition or frames node
        (default: the only partition node)."""
        src = input if input is not None else self._only(PartitionNode, "partition", "input")
        if isinstance(kind, str):
            node = FramesNode(id or self._free_id(kind.rpartition(":")[2].lower()), src, kind,
                              dict(params), skip=skip)
        else:
            self._no_params(params, id or type(kind).__name__, "frame node")
            type_name = getattr(kind, "type_name", None) or f"{type(kind).__module__}:{type(kind).__qualname__}"
            node = FramesNode(id or self._free_id(type_name.rpartition(":")[2].lower()), src, type_name,
                              dict(kind.kwargs), obj=kind, skip=skip)
        return self.add(node)

    def udf(self, udf: str | UDF, *, id: str | None = None, input: str | None = None,
            skip: bool = False, save_results: bool = False, **params: Any) -> str:
        """Add a UDF node: a registry name (``"sum"``), an import path
        (``"package.module:MyUDF"``) with its parameters, or a UDF instance.

        ``input`` is a partition or frames node (default: the only partition node).
        ``skip`` leaves the node out of the run (sinks fed by it are told);
        ``save_results`` writes its results to ``{output_dir}/{input_stem}_{id}.zarr``.
        """
        src = input if input is not None else self._only(PartitionNode, "partition", "input")
        if isinstance(udf, str):
            node = UDFNode(id or self._free_id(udf.rpartition(":")[2].lower()), src, udf,
                           dict(params), skip=skip, save_results=save_results)
        else:
            self._no_params(params, id or type(udf).__name__, "UDF")
            node = UDFNode(id or self._free_id(_short(udf)), src, udf_type_name(udf),
                           udf.kwargs, obj=udf, skip=skip, save_results=save_results)
        return self.add(node)

    def result(self, kind: Any, *, id: str | None = None, input: str | list[str] | tuple[str, ...],
               skip: bool = False, save_results: bool = False, **params: Any) -> str:
        """Add a result node computed from the merged results of ``input`` (one node id or
        several): a registry name (``"find_disk"``), an import path, or a ready result node."""
        inputs = (input,) if isinstance(input, str) else tuple(input)
        if isinstance(kind, str):
            node = ResultNode(id or self._free_id(kind.rpartition(":")[2].lower()), inputs, kind,
                              dict(params), skip=skip, save_results=save_results)
        else:
            self._no_params(params, id or type(kind).__name__, "result node")
            type_name = getattr(kind, "type_name", None) or f"{type(kind).__module__}:{type(kind).__qualname__}"
            node = ResultNode(id or self._free_id(type_name.rpartition(":")[2].lower()), inputs, type_name,
                              dict(kind.kwargs), obj=kind, skip=skip, save_results=save_results)
        return self.add(node)

    def sink(self, type: str, *, inputs: list[str] | tuple[str, ...], id: str | None = None,
             skip: bool = False, **params: Any) -> str:
        """Add a sink (``"zarr"``, ``"npy"``, ...) fed by the nodes ``inputs``."""
        return self.add(SinkNode(id or self._free_id(type), type, tuple(inputs), dict(params),
                                 skip=skip))

    @staticmethod
    def ref(target: str, name: str | None = None) -> Ref:
        """A reference to a result of another node: ``g.ref("disk.cx")`` or ``g.ref("disk", "cx")``."""
        return Ref.parse(target) if name is None else Ref(target, name)

    def replace_node(self, node: Node) -> None:
        """Swap in a changed node with the same id (used when applying overrides)."""
        if node.id not in self._nodes:
            raise GraphValidationError(f"no node with id {node.id!r}", node=node.id)
        self._nodes[node.id] = node

    def _only(self, kind: type, label: str, parameter: str) -> str:
        found = [n.id for n in self._nodes.values() if isinstance(n, kind)]
        if len(found) == 1:
            return found[0]
        if not found:
            return label  # checked when the graph is validated
        raise GraphValidationError(
            f"the graph has several {label} nodes ({', '.join(found)}); say which one with {parameter}=",
            parameter=parameter,
        )

    @staticmethod
    def _no_params(params: Mapping[str, Any], node: str, what: str) -> None:
        if params:
            raise GraphValidationError(
                f"parameters go with a {what} *name*; an instance already has its own", node=node
            )

    def _free_id(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_\-]", "_", base) or "node"
        if not base[0].isalpha() and base[0] != "_":
            base = "n" + base
        candidate, i = base, 1
        while candidate in self._nodes:
            candidate, i = f"{base}_{i}", i + 1
        return candidate

    # --- reading ------------------------------------------------------------------
    @property
    def nodes(self) -> Mapping[str, Node]:
        return dict(self._nodes)

    def __getitem__(self, node_id: str) -> Node:
        return self._nodes[node_id]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def of_kind(self, kind: type, *, include_skipped: bool = False) -> list[Any]:
        return [n for n in self._nodes.values()
                if isinstance(n, kind) and (include_skipped or not getattr(n, "skip", False))]

    def udf_nodes(self, *, include_skipped: bool = False) -> list[UDFNode]:
        return self.of_kind(UDFNode, include_skipped=include_skipped)

    def result_nodes(self, *, include_skipped: bool = False) -> list[ResultNode]:
        return self.of_kind(ResultNode, include_skipped=include_skipped)

    def sink_nodes(self, *, include_skipped: bool = False) -> list[SinkNode]:
        return self.of_kind(SinkNode, include_skipped=include_skipped)

    def line_of(self, *path: Any) -> int | None:
        """Line in the graph file of the deepest known prefix of ``path``."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def param_path(self, node_id: str, parameter: str | None) -> tuple[Any, ...]:
        """Key path of a node (parameter) in the graph file this graph was read from."""
        node = self._nodes.get(node_id)
        if node is None:
            return ()
        group = "sinks" if isinstance(node, SinkNode) else "nodes"
        if self.schema_version == 1 and isinstance(node, SourceNode | PartitionNode):
            base: tuple[Any, ...] = ("source",) if isinstance(node, SourceNode) else ("partition",)
            if parameter is None:
                return base
            return (*base, "params", parameter) if isinstance(node, SourceNode) else (*base, parameter)
        if isinstance(node, SourceNode):
            group = "sources"
        if parameter is None:
            return (group, node_id)
        if parameter in ("input", "inputs", "type", "skip", "save_results", "kind"):
            return (group, node_id, parameter)
        return (group, node_id, "params", parameter)

    def locate(self, err: GraphValidationError) -> GraphValidationError:
        """``err`` naming the graph file and the line of its node and parameter."""
        if err.node is None or err.node not in self._nodes:
            return err.located(self.source_file, None)
        return err.located(self.source_file, self.line_of(*self.param_path(err.node, err.parameter)))

    def copy(self) -> Self:
        g = type(self)(self.name, description=self.description)
        g._nodes = dict(self._nodes)
        g.executor = None if self.executor is None else dict(self.executor)
        g.source_file = self.source_file
        g.lines = self.lines
        g.schema_version = self.schema_version
        return g

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self._nodes)} nodes>"


#: what each kind of node may take as input
_INPUT_KINDS: dict[type, tuple[type, ...]] = {
    PartitionNode: (SourceNode,),
    FramesNode: (PartitionNode, FramesNode),
    UDFNode: (PartitionNode, FramesNode),
    ResultNode: (UDFNode, ResultNode),
    SinkNode: (UDFNode, ResultNode, PartitionNode),
}
_INPUT_TEXT = {
    PartitionNode: "a source", FramesNode: "a partition or frames node", UDFNode: "a partition or frames node",
    ResultNode: "a UDF or result node", SinkNode: "a UDF or result node (or, for recorders, a partition node)",
}


def check_structure(g: GraphModel) -> None:
    """Inputs and references that exist and are of the right kind, no cycle, no skipped
    node that another needs. Errors name the nodes (and point into the graph file)."""
    nodes = g.nodes
    _check_cycles(g)
    for n in nodes.values():
        if isinstance(n, SourceNode):
            continue
        key = "inputs" if isinstance(n, ResultNode | SinkNode) else "input"
        for name in inputs_of(n):
            if name not in nodes:
                raise g.locate(GraphValidationError(
                    f"input {name!r} is not a node of this graph; nodes: {', '.join(sorted(nodes))}",
                    node=n.id, node_type=getattr(n, "type", None), parameter=key))
            if not isinstance(nodes[name], _INPUT_KINDS[type(n)]):
                raise g.locate(GraphValidationError(
                    f"input {name!r} is a {kind_of(nodes[name])} node; a {kind_of(n)} node takes "
                    f"{_INPUT_TEXT[type(n)]}", node=n.id, node_type=getattr(n, "type", None), parameter=key))
        for param, ref in refs_of(n):
            target = nodes.get(ref.node)
            if target is None:
                raise g.locate(GraphValidationError(
                    f"refers to {str(ref)!r}, but the graph has no node {ref.node!r}; nodes: "
                    f"{', '.join(sorted(nodes))}", node=n.id, node_type=getattr(n, "type", None), parameter=param))
            if not isinstance(target, UDFNode | ResultNode):
                raise g.locate(GraphValidationError(
                    f"refers to {str(ref)!r}, but {ref.node!r} is a {kind_of(target)} node; references "
                    "name a result of a UDF or result node", node=n.id, parameter=param))
    _check_skipped(g)


def _check_cycles(g: GraphModel) -> None:
    nodes = g.nodes
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = [*path[path.index(node):], node]
            raise g.locate(GraphValidationError(
                f"the inputs form a cycle: {' -> '.join(cycle)}", node=node, parameter="input"))
        state[node] = 1
        for nxt in dependencies(nodes[node]):
            if nxt in nodes:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in nodes:
        visit(node, [])


def _check_skipped(g: GraphModel) -> None:
    nodes = g.nodes
    for n in nodes.values():
        if not getattr(n, "skip", False):
            continue
        needed_by = [m.id for m in nodes.values()
                     if not isinstance(m, SinkNode) and not getattr(m, "skip", False) and n.id in dependencies(m)]
        if needed_by:
            raise g.locate(GraphValidationError(
                f"is skipped, but {', '.join(repr(m) for m in needed_by)} need"
                f"{'s' if len(needed_by) == 1 else ''} it (as input or by reference); skip "
                f"{'it' if len(needed_by) == 1 else 'them'} too, or do not skip this node",
                node=n.id, parameter="skip"))


def udf_type_name(udf: UDF) -> str:
    """The registry name of ``udf``'s class, else its import path."""
    cls = type(udf)
    for name in UDFS.names():
        try:
            if UDFS.get(name) is cls:
                return name
        except ImportError:
            continue
    return f"{cls.__module__}:{cls.__qualname__}"


def _short(udf: UDF) -> str:
    name = type(udf).__name__
    name = name[:-3] if name.endswith("UDF") and len(name) > 3 else name
    return name.lower()


def as_flat_roi(roi: Any, nav_shape: tuple[int, ...]) -> np.ndarray | None:
    """A ROI as a flat boolean array over the nav positions (``None`` stays ``None``)."""
    if roi is None:
        return None
    arr = np.asarray(roi)
    n = int(np.prod(nav_shape))
    if arr.dtype != bool:
        raise ValueError(f"must be a boolean array; got dtype {arr.dtype}")
    if arr.shape != tuple(nav_shape) and arr.shape != (n,):
        raise ValueError(f"must have the nav shape {tuple(nav_shape)}; got shape {arr.shape}")
    return np.ascontiguousarray(arr.reshape(-1))
