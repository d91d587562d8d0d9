"""The graph model: :class:`GraphModel`, which holds the nodes by id."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self

from detflow.errors import GraphValidationError
from detflow.graph.model.nodes import (
    FramesNode,
    Node,
    PartitionNode,
    Ref,
    ResultNode,
    SinkNode,
    SourceNode,
    UDFNode,
    _short,
    udf_type_name,
)

if TYPE_CHECKING:
    from detflow.nodes.base import UDF
    from detflow.sources.base import Source

__all__ = ["GraphModel"]

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


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
        #: import folders a graph file lists (``python_path:``, absolute), and whether the user
        #: allowed them (a graph file cannot add import folders by itself)
        self.python_path: tuple[str, ...] = ()
        self.python_path_trusted = False
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
        backends: Any = None,
    ) -> str:
        """Add a partition node: how source ``input`` (default: the only source) is cut,
        the ROI, the detector corrections applied to every frame read (a
        :class:`~detflow.sources.corrections.CorrectionSet` or a mapping of its arguments),
        and the array ``backends`` UDFs may get their input in (``None``: any they take)."""
        src = input if input is not None else self._only(SourceNode, "source", "source")
        if isinstance(backends, str):
            backends = (backends,)
        return self.add(PartitionNode(id, src, frames_per_partition, num_partitions, roi, corrections,
                                      None if backends is None else tuple(backends)))

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
        out: list[UDFNode] = self.of_kind(UDFNode, include_skipped=include_skipped)
        return out

    def result_nodes(self, *, include_skipped: bool = False) -> list[ResultNode]:
        out: list[ResultNode] = self.of_kind(ResultNode, include_skipped=include_skipped)
        return out

    def output_nodes(self) -> list[UDFNode | ResultNode]:
        """UDF nodes, then result nodes (not skipped): every node with results."""
        return [*self.udf_nodes(), *self.result_nodes()]

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
        g.python_path, g.python_path_trusted = self.python_path, self.python_path_trusted
        g.source_file = self.source_file
        g.lines = self.lines
        g.schema_version = self.schema_version
        return g

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self._nodes)} nodes>"
