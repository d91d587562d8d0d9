"""The graph model: nodes as frozen data, a :class:`Graph` that holds them.

A graph is a source node, a partition node fed by it, and UDF nodes fed by the
partition node. Nodes are plain data: a type name (or a ready object: a loaded
source, a UDF instance) and parameters. Nothing is opened or run until the graph is
validated (:meth:`Graph.validate`), which resolves every node and checks every
parameter, so a graph that cannot run fails before the first byte is read, with an
error naming the node and the parameter.

Examples
--------
>>> import numpy as np
>>> from detflow.graph import Graph
>>> g = Graph("demo")
>>> g.source("memory", data=np.ones((2, 3, 4, 4), dtype=np.uint8))
'source'
>>> g.partition(num_partitions=2)
'partition'
>>> g.udf("sumsig", id="total")
'total'
>>> float(g.run(executor="inline")["total"]["intensity"].sum())
96.0
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.errors import GraphValidationError

if TYPE_CHECKING:
    import xarray as xr

    from detflow.executors.base import Executor
    from detflow.graph.lowering import Plan
    from detflow.graph.results import UDFResults
    from detflow.nodes.base import UDF
    from detflow.sinks.base import Sink
    from detflow.sources.base import Source

__all__ = ["Graph", "PartitionNode", "SourceNode", "UDFNode"]

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


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


@dataclass(frozen=True)
class UDFNode:
    id: str
    input: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    obj: UDF | None = field(default=None, compare=False)


Node = SourceNode | PartitionNode | UDFNode


def udf_type_name(udf: UDF) -> str:
    """The registry name of ``udf``'s class, else its import path."""
    from detflow.registry import UDFS

    cls = type(udf)
    for name in UDFS.names():
        try:
            if UDFS.get(name) is cls:
                return name
        except ImportError:
            continue
    return f"{cls.__module__}:{cls.__qualname__}"


class Graph:
    """A dataflow graph: source → partition → UDF nodes.

    Parameters
    ----------
    name
        Shown in views, logs and result attributes.
    """

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self._nodes: dict[str, Node] = {}

    # --- building -----------------------------------------------------------------
    def _add(self, node: Node) -> str:
        if not isinstance(node.id, str) or not _ID.match(node.id):
            raise GraphValidationError(
                "node ids start with a letter or '_' and hold letters, digits, '_' and '-'; "
                f"got {node.id!r}"
            )
        if node.id in self._nodes:
            raise GraphValidationError(f"a node with id {node.id!r} already exists", node=node.id)
        self._nodes[node.id] = node
        return node.id

    def source(self, source: str | Source, *, id: str = "source", **params: Any) -> str:
        """Add the source: a registry name with its parameters, or a loaded source."""
        if isinstance(source, str):
            return self._add(SourceNode(id, source, dict(params)))
        if params:
            raise GraphValidationError(
                "parameters go with a source *name*, not with a loaded source", node=id
            )
        return self._add(SourceNode(id, getattr(source, "name", "") or type(source).__name__,
                                    {}, obj=source))

    def partition(
        self,
        input: str = "source",
        *,
        id: str = "partition",
        frames_per_partition: int | None = None,
        num_partitions: int | None = None,
        roi: Any = None,
    ) -> str:
        """Add the partition node: how the source is cut, and the ROI."""
        return self._add(PartitionNode(id, input, frames_per_partition, num_partitions, roi))

    def udf(self, udf: str | UDF, *, id: str | None = None, input: str = "partition",
            **params: Any) -> str:
        """Add a UDF node: a registry name (``"sum"``), an import path
        (``"package.module:MyUDF"``) with its parameters, or a UDF instance."""
        if isinstance(udf, str):
            node = UDFNode(id or self._free_id(udf.rpartition(":")[2].lower()), input, udf,
                           dict(params))
        else:
            if params:
                raise GraphValidationError(
                    "parameters go with a UDF *name*; an instance already has its own",
                    node=id or type(udf).__name__,
                )
            type_name = udf_type_name(udf)
            node = UDFNode(id or self._free_id(_short(udf)), input, type_name,
                           udf.kwargs, obj=udf)
        return self._add(node)

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

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def udf_nodes(self) -> list[UDFNode]:
        return [n for n in self._nodes.values() if isinstance(n, UDFNode)]

    # --- validating, viewing, running -------------------------------------------------
    def validate(self) -> Plan:
        """Resolve and check every node; return the runnable plan.

        Raises :class:`~detflow.errors.GraphValidationError` naming the node and the
        parameter at the first problem.
        """
        from detflow.graph.lowering import compile_graph

        return compile_graph(self)

    def to_text(self) -> str:
        """The graph as an indented tree, with parameters and (when known) shapes."""
        from detflow.graph.view import graph_text

        return graph_text(self)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self._nodes)} nodes>"

    def run_iter(
        self,
        *,
        executor: str | Executor | None = None,
        progress: bool = False,
        sinks: list[Sink] | None = None,
    ) -> Iterator[UDFResults]:
        """Run the graph, yielding partial results after each partition is merged."""
        from detflow.graph.lowering import run_plan

        with _executor_scope(executor) as ex:
            yield from run_plan(self.validate(), ex, progress=progress, sinks=sinks)

    def run(
        self,
        *,
        executor: str | Executor | None = None,
        progress: bool = False,
        sinks: list[Sink] | None = None,
    ) -> dict[str, xr.Dataset]:
        """Run the graph; results as ``{node_id: xarray.Dataset}`` with named dims.

        Nav dims are ``nav_y, nav_x`` (``nav`` for 1-D), signal dims ``sig_y, sig_x``.
        """
        from detflow.graph.results import to_xarray

        last: UDFResults | None = None
        plan = None
        with _executor_scope(executor) as ex:
            from detflow.graph.lowering import run_plan

            plan = self.validate()
            for last in run_plan(plan, ex, progress=progress, sinks=sinks):  # noqa: B007
                pass
        assert last is not None and plan is not None
        out = {}
        for (node_id, udf), buffers in zip(plan.udfs, last.buffers, strict=True):
            out[node_id] = to_xarray(
                buffers,
                extra_dims=type(udf).extra_dims,
                attrs={"graph": self.name, "node": node_id, "type": udf_type_name(udf)},
            )
        return out


def _short(udf: UDF) -> str:
    name = type(udf).__name__
    name = name[:-3] if name.endswith("UDF") and len(name) > 3 else name
    return name.lower()


class _executor_scope:
    """Use a given executor as is; make (and close afterwards) one named by a string."""

    def __init__(self, executor: str | Executor | None) -> None:
        self._spec = "threads" if executor is None else executor
        self._owned = isinstance(self._spec, str)

    def __enter__(self) -> Executor:
        from detflow.executors.base import make_executor

        self._ex = make_executor(self._spec)
        return self._ex

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            self._ex.close()


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
