"""Running a graph with its sinks: output paths, overwrite rules, skipped nodes.

``run_graph_iter`` is what ``Graph.run``, ``Graph.call`` and ``detflow run`` share:

1. validate the graph into a plan (skipped UDF nodes are left out);
2. turn its sink nodes, and every ``save_results`` node, into sink objects, with
   their paths filled in from ``{output_dir}``, ``{input_stem}`` and ``{graph}``, and
   check every path *before* anything runs: an existing path is refused unless
   ``overwrite`` is given, and an output folder that cannot be written is an error;
3. sinks fed by a skipped node are told so in the log (and lose that input only);
4. add the worker-side UDFs that some sinks need (the ``.npy`` recorder), and run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detflow.errors import ConfigurationError, GraphValidationError
from detflow.graph.model import Graph, SourceNode, _executor_scope
from detflow.registry import SINKS

if TYPE_CHECKING:
    import xarray as xr

    from detflow.executors.base import Executor
    from detflow.graph.lowering import Plan
    from detflow.graph.results import UDFResults
    from detflow.sinks.base import Sink

__all__ = ["RunContext", "resolve_call", "run_graph", "run_graph_iter"]

log = logging.getLogger("detflow")


@dataclass(frozen=True)
class RunContext:
    """Where outputs go and what they are named after."""

    output_dir: str
    input_path: str | None
    overwrite: bool = False

    @property
    def input_stem(self) -> str:
        if self.input_path is None:
            return "results"
        name = Path(self.input_path).name
        for suffix in (".zarr", ".hdf5", ".h5", ".npy", ".raw", ".mib", ".hdr"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return Path(name).stem

    def fill(self, template: str, *, graph: str, node: str) -> str:
        try:
            return template.format(output_dir=self.output_dir, input_stem=self.input_stem, graph=graph)
        except (KeyError, IndexError, ValueError) as err:
            raise GraphValidationError(
                f"path {template!r} uses an unknown placeholder {err}; known: {{output_dir}}, "
                "{input_stem}, {graph}", node=node, parameter="path",
            ) from err


def source_path(graph: Graph) -> str | None:
    src = next((n for n in graph if isinstance(n, SourceNode)), None)
    if src is None:
        return None
    path = src.params.get("path") if src.obj is None else getattr(src.obj, "path", None)
    return None if path is None else os.fspath(path)


def default_context(graph: Graph, *, output_dir: str | os.PathLike[str] | None = None,
                    overwrite: bool = False) -> RunContext:
    path = source_path(graph)
    if output_dir is None:
        output_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    return RunContext(os.fspath(output_dir), path, overwrite)


def check_output_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise ConfigurationError(f"output directory {path!r} cannot be created: {err.strerror}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigurationError(f"output directory {path!r} cannot be written (permission denied)")


def build_sinks(graph: Graph, plan: Plan, ctx: RunContext) -> list[Sink]:
    """Sink objects for the graph's sink nodes and its ``save_results`` nodes."""
    skipped = {n.id for n in graph.udf_nodes(include_skipped=True) if n.skip}
    specs: list[tuple[str, str, tuple[str, ...], dict[str, Any]]] = []
    for node in graph.sink_nodes():
        inputs = tuple(i for i in node.inputs if i not in skipped)
        for name in node.inputs:
            if name in skipped:
                log.warning("sink %r: input node %r is skipped; the sink gets the other inputs", node.id, name)
        if not inputs:
            log.warning("sink %r: every input is skipped; the sink does not run", node.id)
            continue
        specs.append((node.id, node.type, inputs, dict(node.params)))
    for udf_node in graph.udf_nodes():
        if udf_node.save_results:
            specs.append((f"{udf_node.id}.save_results", "zarr", (udf_node.id,),
                          {"path": "{output_dir}/{input_stem}_" + udf_node.id + ".zarr"}))
    if specs:
        check_output_dir(ctx.output_dir)
    sinks = []
    for sink_id, type_, inputs, params in specs:
        try:
            cls = SINKS.get(type_)
        except ConfigurationError as err:
            raise GraphValidationError(str(err), node=sink_id, parameter="type") from err
        if "path" in params and isinstance(params["path"], str):
            params["path"] = ctx.fill(params["path"], graph=graph.name, node=sink_id)
        try:
            sinks.append(cls.from_node(sink_id, inputs, params, plan=plan, overwrite=ctx.overwrite))
        except TypeError as err:
            raise GraphValidationError(str(err), node=sink_id, node_type=type_) from err
    return sinks


def run_graph_iter(
    graph: Graph,
    *,
    executor: str | Executor | None = None,
    progress: bool = False,
    sinks: list[Sink] | None = None,
    context: RunContext | None = None,
) -> Iterator[UDFResults]:
    from detflow.graph.lowering import run_plan

    plan = graph.validate()
    owned: Executor | None = None
    try:
        graph_sinks = build_sinks(graph, plan, context or default_context(graph))
        extra = [udf for sink in graph_sinks for udf in getattr(sink, "udfs", lambda: [])()]
        if extra:
            plan = replace(plan, udfs=[*plan.udfs, *extra])
        if executor is None and graph.executor is not None:
            from detflow.executors.base import make_executor

            executor = owned = make_executor(graph.executor["type"], **graph.executor.get("params", {}))
        with _executor_scope(executor) as ex:
            yield from run_plan(plan, ex, progress=progress, sinks=[*graph_sinks, *(sinks or [])])
    finally:
        if owned is not None:
            owned.close()
        plan.close()


def run_graph(graph: Graph, **kwargs: Any) -> dict[str, xr.Dataset]:
    """Run to the end; ``{node_id: xarray.Dataset}`` for every (non-skipped) UDF node."""
    from detflow.graph.model import udf_type_name
    from detflow.graph.results import to_xarray

    last = None
    for last in run_graph_iter(graph, **kwargs):  # noqa: B007
        pass
    assert last is not None
    out = {}
    udf_nodes = graph.udf_nodes()
    from detflow.graph.lowering import resolve_udf_class

    for node, buffers in zip(udf_nodes, last.buffers, strict=False):
        udf = node.obj
        cls = type(udf) if udf is not None else resolve_udf_class(node)
        out[node.id] = to_xarray(
            buffers, extra_dims=cls.extra_dims,
            attrs={"graph": graph.name, "node": node.id,
                   "type": node.type if udf is None else udf_type_name(udf)},
        )
    return out


def resolve_call(
    graph: Graph,
    input: str | os.PathLike[str] | None = None,
    *,
    nodes: Mapping[str, Mapping[str, Any]] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Graph:
    """The graph with its input replaced and the overrides applied, in precedence order."""
    from detflow.graph.config import apply_overrides, load_config_file

    g = graph
    if input is not None:
        src = next((n for n in g if isinstance(n, SourceNode)), None)
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
