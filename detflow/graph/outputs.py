"""Where a run's outputs go: output paths, overwrite rules, the sinks of a graph.

:func:`build_sinks` turns a graph's sink nodes, and every ``save_results`` node, into
sink objects, with their paths filled in from ``{output_dir}``, ``{input_stem}`` and
``{graph}``, and checks every path *before* anything runs: an existing path is
refused unless ``overwrite`` is given, and an output folder that cannot be written is
an error. Each sink subscribes to the pass that finishes the last of its inputs, so
it sees every input final or filling in. Sinks fed by a skipped node are told so in
the log (and lose that input only). Sinks that write stores are given the run's
provenance (:func:`~detflow.graph.provenance.run_provenance`: the graph as run, its
inputs, detflow's version) through their ``record_provenance`` method.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detflow.errors import ConfigurationError, GraphValidationError
from detflow.graph.events import Subscriber
from detflow.graph.model import GraphModel, PartitionNode, SourceNode
from detflow.graph.provenance import run_provenance
from detflow.registry import SINKS

if TYPE_CHECKING:
    from detflow.graph.lowering import CompiledGraph

__all__ = ["RunContext", "build_sinks", "check_sink_paths", "default_context", "source_path"]

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


def source_path(graph: GraphModel) -> str | None:
    """The path of the graph's data: its last source's (a dark scan comes before the data)."""
    srcs = [n for n in graph if isinstance(n, SourceNode)]
    if not srcs:
        return None
    src = srcs[-1]
    path = src.params.get("path") if src.obj is None else getattr(src.obj, "path", None)
    return None if path is None else os.fspath(path)


def default_context(graph: GraphModel, *, output_dir: str | os.PathLike[str] | None = None,
                    overwrite: bool = False) -> RunContext:
    path = source_path(graph)
    if output_dir is None:
        output_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    return RunContext(os.fspath(output_dir), path, overwrite)


def check_output_dir(path: str, *, create: bool = True) -> None:
    if not create:  # checking only (detflow validate): the nearest existing folder must be writable
        folder = os.path.abspath(path)
        while not os.path.exists(folder):
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder):
            raise ConfigurationError(f"output directory {path!r} cannot be created: {folder!r} is not a folder")
        path = folder
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise ConfigurationError(f"output directory {path!r} cannot be created: {err.strerror}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigurationError(f"output directory {path!r} cannot be written (permission denied)")


def _sink_path(template: Any, ctx: RunContext, *, graph: str, node: str) -> str | None:
    """A sink's ``path`` filled in; an absolute one must name a folder that exists (a typo
    in it should not grow a tree of folders), a relative one may create its folders."""
    if not isinstance(template, str | os.PathLike):
        return None
    template = os.fspath(template)
    path = ctx.fill(template, graph=graph, node=node)
    if os.path.isabs(template) and not template.startswith("{"):
        parent = os.path.dirname(os.path.normpath(path))
        if not os.path.isdir(parent):
            why = "is not a folder" if os.path.lexists(parent) else "does not exist"
            raise GraphValidationError(f"cannot write {path!r}: {parent!r} {why}", node=node, parameter="path")
    return path


def check_sink_paths(graph: GraphModel, ctx: RunContext) -> None:
    """Check every sink path as far as it can be before a run (``detflow validate``):
    an absolute path's folder exists, and whatever the sink type checks up front
    (its ``check_path``: for zarr, no other run holds the store, anything there is a
    store detflow wrote, the folder can be written). Whether an existing output may
    be replaced is for the run to say (``overwrite``)."""
    for node in graph.sink_nodes():
        if getattr(node, "skip", False):
            continue
        path = _sink_path(node.params.get("path"), ctx, graph=graph.name, node=node.id)
        try:
            check = getattr(SINKS.get(node.type), "check_path", None)
        except ConfigurationError:
            continue  # the unknown type is the run's error to give, with the known names
        if path is not None and check is not None:
            check(path)


def _pass_of(compiled: CompiledGraph, inputs: tuple[str, ...]) -> int:
    g = compiled.graph
    plan = compiled.plan
    found = [plan.pass_of[i] for i in inputs if i in plan.pass_of]
    for i in inputs:  # a recorder: the first pass that reads the partition node
        if isinstance(g[i], PartitionNode):
            found += [p.index for p in plan if p.partition == i][:1]
    return max(found, default=0)


def _view(compiled: CompiledGraph, index: int) -> Any:
    """Pass ``index`` as a sink sees it: with every UDF and result node done by its end."""
    here = compiled.passes[index]
    done = compiled.passes[: index + 1]
    return dataclasses.replace(here, udfs=[u for p in done for u in p.udfs],
                               inputs=[i for p in done for i in p.inputs],
                               results=[r for p in done for r in p.results])


def build_sinks(compiled: CompiledGraph, ctx: RunContext, *, create_dirs: bool = True) -> dict[int, list[Subscriber]]:
    """Subscriber objects for the graph's sink nodes and ``save_results`` nodes, by pass index.

    ``create_dirs=False`` checks the output folder without making it (for validation)."""
    graph = compiled.graph
    skipped = {n.id for n in graph if getattr(n, "skip", False)}
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
    for saved in graph.output_nodes():
        if saved.save_results:
            specs.append((f"{saved.id}.save_results", "zarr", (saved.id,),
                          {"path": "{output_dir}/{input_stem}_" + saved.id + ".zarr"}))
    if specs:
        check_output_dir(ctx.output_dir, create=create_dirs)
    sinks: dict[int, list[Subscriber]] = {}
    provenance = run_provenance(graph, output_dir=ctx.output_dir) if specs else None
    for sink_id, type_, inputs, params in specs:
        try:
            cls = SINKS.get(type_)
        except ConfigurationError as err:
            raise GraphValidationError(str(err), node=sink_id, parameter="type") from err
        if "path" in params and isinstance(params["path"], str):
            params["path"] = _sink_path(params["path"], ctx, graph=graph.name, node=sink_id)
        index = _pass_of(compiled, inputs)
        try:
            sink = cls.from_node(sink_id, inputs, params, plan=_view(compiled, index), overwrite=ctx.overwrite)
        except TypeError as err:
            raise GraphValidationError(str(err), node=sink_id, node_type=type_) from err
        record = getattr(sink, "record_provenance", None)
        if record is not None:
            record(provenance)
        sinks.setdefault(index, []).append(sink)
    return sinks
