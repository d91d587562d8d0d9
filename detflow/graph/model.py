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

import os
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
    from detflow.sinks.plots.dashboard import DashboardServer
    from detflow.sources.base import Source

__all__ = ["Graph", "PartitionNode", "SinkNode", "SourceNode", "UDFNode"]

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
    #: a CorrectionSet, or a mapping of dark/gain/excluded_pixels (arrays or .npy paths)
    corrections: Any = field(default=None, compare=False)
    #: array backends the UDFs may take their input in (LiberTEM's ``run_udf(backends=)``)
    backends: tuple[str, ...] | None = None


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
class SinkNode:
    """A sink fed by UDF nodes (or, for recorders, by the partition node)."""

    id: str
    type: str
    inputs: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    skip: bool = False


Node = SourceNode | PartitionNode | UDFNode | SinkNode


def udf_type_name(udf: UDF) -> str:
    """The registry name of ``udf``'s class, else its import path."""
    from detflow.registry import UDFS

    cls = type(udf)
    return UDFS.name_of(cls) or f"{cls.__module__}:{cls.__qualname__}"


class Graph:
    """A dataflow graph: source → partition → UDF nodes.

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
        corrections: Any = None,
        backends: Any = None,
    ) -> str:
        """Add the partition node: how the source is cut, the ROI, the detector
        corrections applied to every frame read (a
        :class:`~detflow.sources.corrections.CorrectionSet` or a mapping of its arguments),
        and the array ``backends`` UDFs may get their input in (``None``: any they take)."""
        if isinstance(backends, str):
            backends = (backends,)
        return self._add(PartitionNode(id, input, frames_per_partition, num_partitions, roi, corrections,
                                       None if backends is None else tuple(backends)))

    def udf(self, udf: str | UDF, *, id: str | None = None, input: str = "partition",
            skip: bool = False, save_results: bool = False, **params: Any) -> str:
        """Add a UDF node: a registry name (``"sum"``), an import path
        (``"package.module:MyUDF"``) with its parameters, or a UDF instance.

        ``skip`` leaves the node out of the run (sinks fed by it are told);
        ``save_results`` writes its results to ``{output_dir}/{input_stem}_{id}.zarr``
        when the graph runs through :meth:`call`.
        """
        if isinstance(udf, str):
            node = UDFNode(id or self._free_id(udf.rpartition(":")[2].lower()), input, udf,
                           dict(params), skip=skip, save_results=save_results)
        else:
            if params:
                raise GraphValidationError(
                    "parameters go with a UDF *name*; an instance already has its own",
                    node=id or type(udf).__name__,
                )
            type_name = udf_type_name(udf)
            node = UDFNode(id or self._free_id(_short(udf)), input, type_name,
                           udf.kwargs, obj=udf, skip=skip, save_results=save_results)
        return self._add(node)

    def sink(self, type: str, *, inputs: list[str] | tuple[str, ...], id: str | None = None,
             skip: bool = False, **params: Any) -> str:
        """Add a sink (``"zarr"``, ``"npy"``, ...) fed by the nodes ``inputs``."""
        return self._add(SinkNode(id or self._free_id(type), type, tuple(inputs), dict(params),
                                  skip=skip))

    def replace_node(self, node: Node) -> None:
        """Swap in a changed node with the same id (used when applying overrides)."""
        if node.id not in self._nodes:
            raise GraphValidationError(f"no node with id {node.id!r}", node=node.id)
        self._nodes[node.id] = node

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

    def udf_nodes(self, *, include_skipped: bool = False) -> list[UDFNode]:
        return [n for n in self._nodes.values()
                if isinstance(n, UDFNode) and (include_skipped or not n.skip)]

    def sink_nodes(self, *, include_skipped: bool = False) -> list[SinkNode]:
        return [n for n in self._nodes.values()
                if isinstance(n, SinkNode) and (include_skipped or not n.skip)]

    def line_of(self, *path: Any) -> int | None:
        """Line in the graph file of the deepest known prefix of ``path``."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    # --- files ----------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Graph:
        """Read a graph file (checked for structure; :meth:`validate` checks the rest)."""
        from detflow.graph.io import read_graph_file

        return read_graph_file(path)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], *, file: str | None = None) -> Graph:
        from detflow.graph.io import graph_from_dict

        return graph_from_dict(spec, file=file)

    def to_dict(self) -> dict[str, Any]:
        """The graph as plain data, as a graph file holds it."""
        from detflow.graph.io import graph_to_dict

        return graph_to_dict(self)

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The graph as YAML text; also written to ``path`` if given."""
        from detflow.graph.io import write_graph_file

        return write_graph_file(self, path)

    def copy(self) -> Graph:
        g = Graph(self.name, description=self.description)
        g._nodes = dict(self._nodes)
        g.executor = None if self.executor is None else dict(self.executor)
        g.source_file = self.source_file
        g.lines = self.lines
        return g

    def call(
        self,
        input: str | os.PathLike[str] | None = None,
        *,
        nodes: Mapping[str, Mapping[str, Any]] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        executor: str | Executor | None = None,
        progress: bool = False,
        overwrite: bool = False,
    ) -> dict[str, xr.Dataset]:
        """Run the graph on ``input`` with overrides, as a calibration pipeline does.

        Parameters win in this order, each over the one before: the node's code
        default, the graph file, ``config_file`` (a YAML file of per-node overrides),
        ``nodes`` (``{"com": {"r": 35, "save_results": True}}``). ``input`` replaces the
        source's ``path``; sink paths may use ``{output_dir}``, ``{input_stem}`` and
        ``{graph}``; ``output_dir`` defaults to the input's directory.
        """
        from detflow.graph.run import default_context, resolve_call, run_graph

        g = resolve_call(self, input, nodes=nodes, config_file=config_file)
        ctx = default_context(g, output_dir=output_dir, overwrite=overwrite)
        return run_graph(g, executor=executor, progress=progress, context=ctx)

    # --- validating, viewing, running -------------------------------------------------
    def validate(self) -> Plan:
        """Resolve and check every node; return the runnable plan.

        Raises :class:`~detflow.errors.GraphValidationError` naming the node and the
        parameter at the first problem.
        """
        from detflow.graph.lowering import compile_graph

        try:
            return compile_graph(self)
        except GraphValidationError as err:
            path = (err.node,) if err.node is not None else ()
            if err.node in self._nodes and err.parameter is not None:
                path = _param_path(self._nodes[err.node], err.parameter)
            raise err.located(self.source_file, self.line_of(*path)) from err.__cause__

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
        output_dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> Iterator[UDFResults]:
        """Run the graph, yielding partial results after each partition is merged.

        ``output_dir`` and ``overwrite`` are as for :meth:`run`."""
        from detflow.graph.run import default_context, run_graph_iter

        context = default_context(self, output_dir=output_dir, overwrite=overwrite)
        yield from run_graph_iter(self, executor=executor, progress=progress, sinks=sinks, context=context)

    def run(
        self,
        *,
        executor: str | Executor | None = None,
        progress: bool = False,
        sinks: list[Sink] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> dict[str, xr.Dataset]:
        """Run the graph; results as ``{node_id: xarray.Dataset}`` with named dims.

        Nav dims are ``nav_y, nav_x`` (``nav`` for 1-D), signal dims ``sig_y, sig_x``.
        The graph's own sinks write where their paths say; ``{output_dir}`` in them is
        ``output_dir`` (default: the input's folder). An output that exists is refused
        unless ``overwrite``.
        """
        from detflow.graph.run import default_context, run_graph

        context = default_context(self, output_dir=output_dir, overwrite=overwrite)
        return run_graph(self, executor=executor, progress=progress, sinks=sinks, context=context)

    def serve(
        self,
        *,
        port: int = 5006,
        address: str = "127.0.0.1",
        show: bool = True,
        autostart: bool = True,
        threaded: bool = False,
        executor: str | Executor | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        max_rate: float | None = 4.0,
    ) -> DashboardServer:
        """Serve a live dashboard of this graph, as ``detflow serve`` does.

        The page (``http://127.0.0.1:5006/``; ``port=0`` picks a free port) shows the
        graph, a progress bar, every 2-D result as an image filling in, the latest frame
        and the sum frame, with start / stop / re-run buttons; every browser tab watches
        the same run. Blocks until Ctrl-C unless ``threaded``, in which case the
        returned server's ``stop()`` ends it. See :mod:`detflow.sinks.plots.dashboard`.
        """
        from detflow.graph.run import default_context
        from detflow.sinks.plots.dashboard import serve

        context = default_context(self, output_dir=output_dir, overwrite=overwrite)
        return serve(self, port=port, address=address, show=show, autostart=autostart, threaded=threaded,
                     executor=executor, context=context, max_rate=max_rate)


def _param_path(node: Node, parameter: str) -> tuple[Any, ...]:
    """Key path of a node parameter in a graph file (see :mod:`detflow.graph.io`)."""
    if isinstance(node, SourceNode):
        return ("source", "params", parameter)
    if isinstance(node, PartitionNode):
        return ("partition", parameter)
    group = "sinks" if isinstance(node, SinkNode) else "nodes"
    if parameter in ("input", "inputs", "type", "skip", "save_results"):
        return (group, node.id, parameter)
    return (group, node.id, "params", parameter)


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
