"""Running a graph: :class:`Graph`, the model with the abilities that need the layers below.

:class:`Graph` is :class:`~detflow.graph.model.GraphModel` (plain data) plus what a
user runs: :meth:`~Graph.validate`, :meth:`~Graph.plan`, :meth:`~Graph.run`,
:meth:`~Graph.run_iter`, :meth:`~Graph.call`, :meth:`~Graph.to_delayed`, the YAML
round trip and the text view. It sits at the top of the graph layer, so the model
below needs none of them. ``run_graph_iter`` is what ``Graph.run``, ``Graph.call``
and ``detflow run`` share:

1. validate the graph (:func:`~detflow.graph.lowering.compile_graph`);
2. build the sinks of its sink nodes and ``save_results`` nodes, paths checked first
   (:func:`~detflow.graph.outputs.build_sinks`), and the worker-side UDFs some of
   them need (the ``.npy`` recorder);
3. run every pass (:func:`~detflow.graph.driver.run_compiled`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from detflow.errors import GraphValidationError
from detflow.executors.base import Executor, make_executor
from detflow.graph import io, view
from detflow.graph.config import apply_overrides, load_config_file, use_python_path
from detflow.graph.delayed_ import graph_to_delayed
from detflow.graph.driver import GraphResults, run_compiled
from detflow.graph.events import Subscriber
from detflow.graph.lowering import CompiledGraph, compile_graph, resolve_class
from detflow.graph.model import GraphModel, SourceNode, UDFNode, udf_type_name
from detflow.graph.outputs import RunContext, build_sinks, check_sink_paths, default_context
from detflow.graph.planning import GraphPlan, plan_graph
from detflow.graph.results import buffers_to_xarray

if TYPE_CHECKING:
    import xarray as xr


__all__ = ["Graph", "RunContext", "RunStats", "check_run", "default_context", "resolve_call", "run_graph",
           "run_graph_iter"]


class RunStats:
    """What a run did, for a launcher's summary: frames and bytes read over every pass,
    and the paths its sinks (and ``save_results`` nodes) write.

    Hand one to :func:`run_graph_iter` as ``stats=``; it subscribes to every pass.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.passes = 0
        self.partitions = 0
        #: the path of every sink that writes a file or store
        self.outputs: list[str] = []
        self._frame_bytes = 0
        self._pass_frames = 0

    def start(self, info: Any) -> None:
        self.passes += 1
        self.partitions += info.partitions_total
        self._frame_bytes = info.meta.frame_bytes
        self._pass_frames = 0

    def update(self, update: Any) -> None:
        self._pass_frames = update.frames_done

    def finish(self, results: Any) -> None:
        self.frames += self._pass_frames
        self.bytes += self._pass_frames * self._frame_bytes
        self._pass_frames = 0


class _executor_scope:
    """Use a given executor as is; make (and close afterwards) one named by a string."""

    def __init__(self, executor: str | Executor | None) -> None:
        self._spec = "threads" if executor is None else executor
        self._owned = isinstance(self._spec, str)

    def __enter__(self) -> Executor:
        self._ex = make_executor(self._spec)
        return self._ex

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            self._ex.close()


def validate(graph: GraphModel) -> CompiledGraph:
    """:func:`compile_graph`, with errors pointing into the graph file."""
    use_python_path(graph)
    try:
        return compile_graph(graph)
    except GraphValidationError as err:
        raise graph.locate(err) from err.__cause__


def _output_paths(by_pass: Mapping[int, list[Subscriber]]) -> list[str]:
    """The path of every sink that writes a file or a store."""
    paths = (getattr(s, "path", None) for ps in by_pass.values() for s in ps)
    return [os.fspath(p) for p in paths if isinstance(p, str | os.PathLike)]


def _workers_of(executor: str | Executor | None, graph: GraphModel) -> int | None:
    """How many workers the executor a run would make has (``None``: a cluster's, not known here)."""
    if executor is not None and not isinstance(executor, str):
        return int(executor.n_workers)
    spec = graph.executor or {"type": "threads"}
    name = executor or spec["type"]
    params = dict(spec.get("params", {})) if name == spec["type"] else {}
    if name in ("inline", "synchronous"):
        return 1
    if params.get("address") or params.get("scheduler"):
        return None
    cpus = params.get("cpus")
    if cpus is None:
        from detflow.executors.base import default_cpus

        return default_cpus()
    return cpus if isinstance(cpus, int) else len(list(cpus))


def check_run(graph: GraphModel, *, context: RunContext | None = None,
              executor: str | Executor | None = None) -> tuple[list[int | None], list[str]]:
    """Everything a run checks before it reads a frame, without running or writing anything.

    Returns the number of partitions each pass will cut on ``executor`` (``None`` where a
    cluster's worker count decides it) and the paths the sinks will write; raises what
    the run would raise (:class:`~detflow.errors.GraphValidationError` naming the node
    and parameter, a refused existing output, an output folder that cannot be written).
    """
    compiled = validate(graph)
    try:
        by_pass = build_sinks(compiled, context or default_context(graph), create_dirs=False)
        outputs = _output_paths(by_pass)
        workers = _workers_of(executor, graph)
        counts: list[int | None] = []
        for plan in compiled.passes:
            if workers is None:
                counts.append(None)
                continue
            part_plan = plan.partition_plan(workers)
            if plan.roi is None or hasattr(plan.source, "task_feed"):
                counts.append(plan.source.get_num_partitions(part_plan))
            else:
                roi = plan.roi
                counts.append(sum(1 for p in plan.source.partitions(part_plan) if roi[p.frames].any()))
        return counts, outputs
    finally:
        compiled.close()


def run_graph_iter(
    graph: GraphModel,
    *,
    executor: str | Executor | None = None,
    progress: bool = False,
    sinks: list[Subscriber] | None = None,
    context: RunContext | None = None,
    max_rate: float | None = 4.0,
    stats: RunStats | None = None,
) -> Iterator[GraphResults]:
    """Run ``graph``; yield :class:`~detflow.graph.driver.GraphResults` after each merge.

    ``sinks`` given here see the last pass (where every node's result is there);
    ``stats`` sees every pass and learns where the graph's sinks write."""
    compiled = validate(graph)
    owned: Executor | None = None
    try:
        by_pass = build_sinks(compiled, context or default_context(graph))
        extra: dict[int, list[tuple[str, Any]]] = {}
        for index, pass_sinks in by_pass.items():
            for sink in pass_sinks:
                extra.setdefault(index, []).extend(getattr(sink, "udfs", lambda: [])())
        if sinks:
            by_pass.setdefault(len(compiled.plan) - 1, []).extend(sinks)
        if stats is not None:
            stats.outputs = _output_paths(by_pass)
            for index in range(len(compiled.plan)):
                by_pass.setdefault(index, []).append(stats)
        if executor is None and graph.executor is not None:
            executor = owned = make_executor(graph.executor["type"], **graph.executor.get("params", {}))
        with _executor_scope(executor) as ex:
            yield from run_compiled(compiled, ex, sinks=by_pass, extra_udfs=extra, progress=progress,
                                    max_rate=max_rate)
    finally:
        if owned is not None:
            owned.close()
        compiled.close()


def to_datasets(graph: GraphModel, last: GraphResults) -> dict[str, xr.Dataset]:
    """``{node_id: xarray.Dataset}`` for every (non-skipped) UDF and result node."""
    out = {}
    for node in graph.output_nodes():
        if node.id not in last.node_ids:
            continue
        extra_dims: Mapping[str, tuple[str, ...]] = {}
        type_name = node.type
        if isinstance(node, UDFNode):
            extra_dims = resolve_class(node).extra_dims
            type_name = node.type if node.obj is None else udf_type_name(node.obj)
        buffers = last[node.id]
        attrs = {**getattr(buffers, "attrs", {}), "graph": graph.name, "node": node.id, "type": type_name}
        out[node.id] = buffers_to_xarray(buffers, udf=getattr(buffers, "udf", None), extra_dims=extra_dims,
                                         attrs=attrs)
    return out


def run_graph(graph: GraphModel, **kwargs: Any) -> dict[str, xr.Dataset]:
    """Run to the end; ``{node_id: xarray.Dataset}`` for every (non-skipped) UDF and result node."""
    last = None
    for last in run_graph_iter(graph, **kwargs):  # noqa: B007
        pass
    assert last is not None
    return to_datasets(graph, last)


def resolve_call(
    graph: GraphModel,
    input: str | os.PathLike[str] | None = None,
    *,
    nodes: Mapping[str, Mapping[str, Any]] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Any:
    """The graph with its input replaced and the overrides applied, in precedence order.

    ``input`` replaces the ``path`` of the graph's last source (the data; a dark
    reference scan comes before it)."""
    g = graph
    if input is not None:
        srcs = [n for n in g if isinstance(n, SourceNode)]
        src = srcs[-1] if srcs else None
        if src is None or src.obj is not None:
            raise GraphValidationError("the input can only replace the 'path' of a source given by type",
                                       node="source", parameter="path")
        g = apply_overrides(g, {src.id: {"path": os.fspath(input)}})
    if config_file is not None:
        overrides, lines = load_config_file(config_file)
        g = apply_overrides(g, overrides, file=os.fspath(config_file), lines=lines)
    if nodes:
        g = apply_overrides(g, nodes)
    return g


class Graph(GraphModel):
    """A dataflow graph you can run: sources, partition, frame, UDF, result and sink nodes.

    Examples
    --------
    >>> import numpy as np
    >>> from detflow.graph import Graph
    >>> g = Graph("demo")
    >>> g.source("memory", data=np.ones((2, 3, 4, 4), dtype=np.uint8))
    'source'
    >>> g.partition(num_partitions=2)
    'partition'
    >>> g.frames("bin", factor=2)
    'bin'
    >>> g.udf("sumsig", id="total", input="bin")
    'total'
    >>> float(g.run(executor="inline")["total"]["intensity"].sum())
    96.0
    """

    # --- files ----------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, trust_python_path: bool = False) -> Graph:
        """Read a graph file (checked for structure; :meth:`validate` checks the rest).

        A graph file is code: its node types and functions are imported. They come from
        installed packages and ``sys.path``, never from the file's folder implicitly; the
        folders of the file's ``python_path:`` key are used only with ``trust_python_path``
        (without it, running the graph is refused)."""
        return io.read_graph_file(path, cls=cls, trust_python_path=trust_python_path)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], *, file: str | None = None) -> Graph:
        return io.graph_from_dict(spec, file=file, cls=cls)

    def to_dict(self) -> dict[str, Any]:
        """The graph as plain data, as a graph file (``schema_version: 2``) holds it."""
        return io.graph_to_dict(self)

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The graph as YAML text; also written to ``path`` if given."""
        return io.write_graph_file(self, path)

    # --- checking and viewing -----------------------------------------------------------
    def validate(self) -> CompiledGraph:
        """Resolve and check every node against its data; the caller closes the result.

        Raises :class:`~detflow.errors.GraphValidationError` naming the node and the
        parameter (and the graph file's line) at the first problem. Sink paths are
        checked as far as they can be before a run, with the default output folder
        (:func:`~detflow.graph.outputs.check_sink_paths`).
        """
        compiled = validate(self)
        try:
            check_sink_paths(self, default_context(self))
        except GraphValidationError as err:
            compiled.close()
            raise self.locate(err) from err.__cause__
        except BaseException:
            compiled.close()
            raise
        return compiled

    def plan(self) -> GraphPlan:
        """The passes over the data this graph runs in (see :mod:`detflow.graph.planning`)."""
        try:
            return plan_graph(self)
        except GraphValidationError as err:
            raise self.locate(err) from err.__cause__

    def to_text(self) -> str:
        """The graph as an indented tree, with parameters, frame chains and the passes."""
        return view.graph_text(self)

    def __str__(self) -> str:
        return self.to_text()

    def to_dot(self) -> str:
        """The graph in graphviz's DOT language (inputs solid, references dotted, a box per pass)."""
        return view.graph_dot(self)

    def _repr_html_(self) -> str:
        """Jupyter's view: an SVG drawing (graphviz's ``dot``, where installed) or a table, and the passes."""
        return view.graph_html(self)

    # --- running --------------------------------------------------------------------------
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
        ``nodes`` (``{"com": {"r": 35, "save_results": True}}``); overrides reach every
        kind of node. ``input`` replaces the data source's ``path``; sink paths may use
        ``{output_dir}``, ``{input_stem}`` and ``{graph}``; ``output_dir`` defaults to
        the input's directory.
        """
        g = resolve_call(self, input, nodes=nodes, config_file=config_file)
        ctx = default_context(g, output_dir=output_dir, overwrite=overwrite)
        return run_graph(g, executor=executor, progress=progress, context=ctx)

    def run_iter(
        self,
        *,
        executor: str | Executor | None = None,
        progress: bool = False,
        sinks: list[Subscriber] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        max_rate: float | None = 4.0,
    ) -> Iterator[GraphResults]:
        """Run the graph, yielding partial results of every node after each merged partition.

        Result nodes are re-evaluated on partial results at most ``max_rate`` times a
        second (``None``: every time). ``output_dir`` and ``overwrite`` are as for :meth:`run`."""
        context = default_context(self, output_dir=output_dir, overwrite=overwrite)
        yield from run_graph_iter(self, executor=executor, progress=progress, sinks=sinks, context=context,
                                  max_rate=max_rate)

    def run(
        self,
        *,
        executor: str | Executor | None = None,
        progress: bool = False,
        sinks: list[Subscriber] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> dict[str, xr.Dataset]:
        """Run the graph; results as ``{node_id: xarray.Dataset}`` for every UDF and result node.

        Nav dims are ``nav_y, nav_x`` (``nav`` for 1-D), signal dims ``sig_y, sig_x``.
        The graph's own sinks write where their paths say; ``{output_dir}`` in them is
        ``output_dir`` (default: the input's folder). An output that exists is refused
        unless ``overwrite``.
        """
        context = default_context(self, output_dir=output_dir, overwrite=overwrite)
        return run_graph(self, executor=executor, progress=progress, sinks=sinks, context=context)

    def to_delayed(self) -> dict[str, Any]:
        """The whole graph as one dask graph: ``{node_id: dask.delayed}`` for every UDF and
        result node (each computes to ``{result name: array or scalar}``); references and
        result nodes are edges of that graph, so ``dask.compute(*g.to_delayed().values())``
        or a ``distributed.Client`` runs every pass."""
        return graph_to_delayed(self)


