"""Lowering: from a graph and its plan to the objects that run, checked before any read.

:func:`compile_graph` opens every source, checks every partition node (sizing, ROI,
corrections), and walks the passes of :func:`~detflow.graph.planning.plan_graph` in
order, building for each pass a :class:`PassPlan`: the frame nodes with the signal
shape and dtype each one hands on (``FrameNode.output_signature``, so a mask made
for 256×256 frames after a ``bin`` of 2 fails here, naming both nodes), the UDF
instances validated against the geometry they will see, and the result nodes checked
against the buffers their inputs declare. References are checked too: a missing
result name is an error naming both nodes.

Parameters that reference results are not known before the run. At validation they
are stood in for: a reference to a UDF buffer by an array of the declared shape and
dtype, a reference to a result node's output by leaving the parameter at its code
default. :meth:`CompiledGraph.bind` builds the pass again with the real values once
they are known (the driver does this before each pass), checking everything again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detflow.errors import (
    ConfigurationError,
    GraphValidationError,
    ParameterError,
    UDFError,
    UDFMethodError,
    UnknownNameError,
    annotate_node_error,
)
from detflow.graph.model import (
    FramesNode,
    GraphModel,
    PartitionNode,
    Ref,
    ResultNode,
    SourceNode,
    UDFNode,
    as_flat_roi,
    bind_refs,
    refs_of,
)
from detflow.graph.planning import GraphPlan, Pass, plan_graph
from detflow.nodes.backends import choose_backend
from detflow.nodes.base import UDF
from detflow.nodes.params import unknown_parameter
from detflow.nodes.resolve import node_class
from detflow.nodes.runner import FrameSpec, UDFSpec, main_meta
from detflow.registry import SINKS, SOURCES
from detflow.sources.base import DatasetMeta, PartitionPlan, Source
from detflow.sources.corrections import CorrectionSet
from detflow.sources.params import open_source

__all__ = ["CompiledGraph", "PassPlan", "compile_graph", "resolve_class"]

#: a stand-in for a parameter whose value is a result node's output: leave it at its default
_DEFAULT = object()


@dataclass
class PassPlan:
    """One pass resolved and checked, ready to run (what the driver and the sinks see)."""

    name: str
    index: int
    source_id: str
    source: Source
    partition_id: str
    frames_per_partition: int | None
    num_partitions: int | None
    roi: np.ndarray | None
    udfs: list[tuple[str, UDF]]
    corrections: CorrectionSet | None = None
    #: frame nodes: (node id, instance, input index (-1: partition), geometry it hands on)
    frames: list[tuple[str, Any, int, DatasetMeta]] = field(default_factory=list)
    #: per UDF: the frame node it reads (-1: partition) and the dataset as it sees it
    inputs: list[tuple[int, DatasetMeta]] = field(default_factory=list)
    #: result nodes computed after (and during) this pass: (node id, instance or None until its
    #: references are known, input ids)
    results: list[tuple[str, Any, tuple[str, ...]]] = field(default_factory=list)
    #: array backends the UDFs may take their input in (the partition node's ``backends``)
    backends: tuple[str, ...] | None = None
    #: the source was opened from the graph's parameters (not handed in), so the plan closes it
    owns_source: bool = False

    @property
    def meta(self) -> DatasetMeta:
        return self.source.meta

    def close(self) -> None:
        if self.owns_source:
            self.source.close()

    def partition_plan(self, min_partitions: int = 1) -> PartitionPlan:
        return PartitionPlan(frames_per_partition=self.frames_per_partition,
                             num_partitions=self.num_partitions, min_partitions=min_partitions)

    def frame_specs(self) -> tuple[FrameSpec, ...]:
        return tuple(FrameSpec(fid, obj, inp) for fid, obj, inp, _ in self.frames)

    def udf_specs(self) -> tuple[UDFSpec, ...]:
        out = []
        for (node_id, udf), (inp, meta) in zip(self.udfs, self.inputs, strict=False):
            out.append(UDFSpec.of(node_id, udf, self.backends, input=inp, meta=None if inp < 0 else meta))
        out += [UDFSpec.of(node_id, udf, self.backends) for node_id, udf in self.udfs[len(self.inputs):]]
        return tuple(out)

    def with_udfs(self, extra: list[tuple[str, UDF]]) -> PassPlan:
        """This pass with more UDFs reading the partition (a recorder sink's)."""
        return dataclasses.replace(self, udfs=[*self.udfs, *extra],
                                   inputs=[*self.inputs, *((-1, self.meta) for _ in extra)])


#: what an earlier pass's run gave: ``{(node, result name): value}``
Values = Mapping[tuple[str, str], Any]


def resolve_class(node: FramesNode | UDFNode | ResultNode) -> Any:
    """The class behind a node's ``type``; an error names the node."""
    if node.obj is not None:
        return type(node.obj)
    kind = {FramesNode: "frames", UDFNode: "udf", ResultNode: "result"}[type(node)]
    try:
        return node_class(kind, node.type)
    except UnknownNameError as err:
        raise GraphValidationError(str(err), node=node.id, parameter="type") from err
    except (ImportError, AttributeError, ValueError) as err:
        label = {"udf": "UDF", "frames": "frame node", "result": "result node"}[kind]
        raise GraphValidationError(f"cannot import {label} type {node.type!r}: {err}", node=node.id) from err
    except TypeError as err:
        raise GraphValidationError(str(err), node=node.id) from err


@dataclass
class _Stream:
    """What a partition or frames node hands on: its geometry, and where it sits in its pass."""

    meta: DatasetMeta
    index: int = -1  # in the pass's frame list
    known: bool = True  # False: a frame node before it waits for its references


class CompiledGraph:
    """A graph checked against its data: opened sources, partition nodes, passes.

    Build with :func:`compile_graph`; :meth:`bind` a pass with known reference values
    before running it; :meth:`close` the sources it opened.
    """

    def __init__(self, graph: GraphModel, plan: GraphPlan) -> None:
        self.graph = graph
        self.plan = plan
        self.sources: dict[str, Any] = {}  # Source (or its geometry only, in a detached copy)
        self._owned: list[Source] = []
        self.partitions: dict[str, dict[str, Any]] = {}
        #: declared buffers of each UDF node: name -> BufferInfo (for references and result nodes)
        self.buffers: dict[str, dict[str, Any]] = {}
        #: output names of each result node (empty: not declared)
        self.result_names: dict[str, tuple[str, ...]] = {}
        self.passes: list[PassPlan] = []

    @property
    def output_ids(self) -> tuple[str, ...]:
        """Every node with results, UDF nodes first, in graph order."""
        return (*(n.id for n in self.graph.udf_nodes()), *(n.id for n in self.graph.result_nodes()))

    def close(self) -> None:
        for s in self._owned:
            s.close()
        self._owned.clear()

    # --- building ---------------------------------------------------------------------
    def _open_sources(self) -> None:
        for node in self.graph.of_kind(SourceNode):
            if node.obj is not None:
                self.sources[node.id] = node.obj
                continue
            try:
                cls = SOURCES.get(node.type)
            except ConfigurationError as err:
                raise GraphValidationError(str(err), node=node.id, parameter="type") from err
            try:
                src = open_source(cls, **node.params)
            except ParameterError as err:
                raise GraphValidationError(err.reason, node=node.id, node_type=node.type,
                                           parameter=err.parameter) from err
            except (TypeError, ConfigurationError) as err:  # a source that declares no parameters, a bad value
                raise GraphValidationError(str(err), node=node.id, node_type=node.type) from err
            self.sources[node.id] = src
            self._owned.append(src)

    def _check_partitions(self) -> None:
        for node in self.graph.of_kind(PartitionNode):
            meta = self.sources[node.input].meta
            for name in ("frames_per_partition", "num_partitions"):
                value = getattr(node, name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer)
                                          or value < 1):
                    raise GraphValidationError(f"must be an integer >= 1; got {value!r}", node=node.id,
                                               parameter=name)
            try:
                PartitionPlan(node.frames_per_partition, node.num_partitions)
            except ConfigurationError as err:
                raise GraphValidationError(str(err), node=node.id) from err
            try:
                roi = as_flat_roi(node.roi, meta.nav_shape)
            except ValueError as err:
                raise GraphValidationError(str(err), node=node.id, parameter="roi") from err
            try:
                corrections = CorrectionSet.coerce(node.corrections)
                if corrections is not None:
                    corrections.check(meta.sig_shape)
                    corrections = corrections if corrections.have_corrections() else None
            except ConfigurationError as err:
                raise GraphValidationError(str(err), node=node.id, parameter="corrections") from err
            dtype = meta.dtype if corrections is None else corrections.output_dtype(meta.dtype)
            self.partitions[node.id] = {"roi": roi, "corrections": corrections,
                                        "meta": DatasetMeta(meta.nav_shape, meta.sig_shape, dtype)}

    def _check_live(self) -> None:
        seen: dict[str, Pass] = {}
        for p in self.plan:
            if not getattr(self.sources[p.source], "is_live", False):
                continue
            first = seen.setdefault(p.source, p)
            if first is not p:
                later = ", ".join(repr(u) for u in p.udfs)
                raise GraphValidationError(
                    f"{later} would need a second pass over the live stream of source {p.source!r} "
                    f"(they reference results of {', '.join(repr(u) for u in first.udfs)}, which read the same "
                    "stream); a live stream is read once: record it (an 'npy' sink on the partition node) "
                    "and run this graph on the recording", node=p.udfs[0])

    # --- one pass -----------------------------------------------------------------------
    def bind(self, index: int, values: Values | None) -> PassPlan:
        """Pass ``index`` with its nodes built; ``values`` are the results of the passes
        before (``None``: validation, with stand-ins)."""
        p = self.plan[index]
        g = self.graph
        part = self.partitions[p.partition]
        source = self.sources[p.source]
        streams: dict[str, _Stream] = {p.partition: _Stream(part["meta"])}
        frames: list[tuple[str, Any, int, DatasetMeta]] = []
        for fid in p.frames:
            node = g[fid]
            assert isinstance(node, FramesNode)
            src = streams[node.input]
            obj = self._build(node, values)
            sig, dtype = src.meta.sig_shape, src.meta.dtype
            if obj is not None:
                try:
                    sig, dtype = obj.output_signature(tuple(sig), np.dtype(dtype))
                except ParameterError as err:
                    raise GraphValidationError(
                        f"{err.reason} (its input {node.input!r} gives frames of {tuple(sig)} {np.dtype(dtype)})",
                        node=fid, node_type=node.type, parameter=err.parameter) from err
                frames.append((fid, obj, src.index, DatasetMeta(src.meta.nav_shape, sig, dtype)))
                streams[fid] = _Stream(frames[-1][3], len(frames) - 1, known=src.known)
            else:  # built only once its references are known
                streams[fid] = _Stream(src.meta, src.index, known=False)
        udfs: list[tuple[str, UDF]] = []
        inputs: list[tuple[int, DatasetMeta]] = []
        for uid in p.udfs:
            node = g[uid]
            assert isinstance(node, UDFNode)
            stream = streams[node.input]
            udf = self._build(node, values)
            if udf is None or not stream.known:
                continue
            corrections = part["corrections"] if stream.index < 0 else None
            self._check_udf(node, udf, stream.meta if stream.index >= 0 else source.meta, part["roi"],
                            corrections, via=None if stream.index < 0 else node.input,
                            backends=getattr(g[p.partition], "backends", None))
            udfs.append((uid, udf))
            inputs.append((stream.index, stream.meta))
        results = []
        for rid in p.results:
            node = g[rid]
            assert isinstance(node, ResultNode)
            if values is not None and any((r.node, r.name) not in values for _, r in refs_of(node)):
                results.append((rid, None, node.inputs))  # references this pass's results: built after it
                continue
            obj = self._build(node, values)
            if obj is not None:
                self._check_result(node, obj)
            results.append((rid, obj, node.inputs))
        return PassPlan(
            name=g.name, index=index, source_id=p.source, source=source, partition_id=p.partition,
            frames_per_partition=getattr(g[p.partition], "frames_per_partition", None),
            num_partitions=getattr(g[p.partition], "num_partitions", None), roi=part["roi"], udfs=udfs,
            corrections=part["corrections"], frames=frames, inputs=inputs, results=results,
            backends=getattr(g[p.partition], "backends", None),
        )

    def build_result(self, node_id: str, values: Values) -> Any:
        """Result node ``node_id`` built with ``values`` (once everything it references is known)."""
        node = self.graph[node_id]
        assert isinstance(node, ResultNode)
        obj = self._build(node, values)
        self._check_result(node, obj)
        return obj

    def detached(self) -> CompiledGraph:
        """A copy holding the sources' geometry only (what :meth:`bind` needs), to send to workers."""
        out = CompiledGraph(self.graph, self.plan)
        out.sources = {k: _MetaOnly(v.meta, bool(getattr(v, "is_live", False))) for k, v in self.sources.items()}
        out.partitions, out.buffers, out.result_names = self.partitions, self.buffers, self.result_names
        return out

    def _params(self, node: FramesNode | UDFNode | ResultNode, values: Values | None) -> dict[str, Any] | None:
        """The node's parameters with references filled in (``None``: cannot be built yet)."""
        refs = refs_of(node)
        if not refs:
            return dict(node.params)
        if values is not None:
            return bind_refs(dict(node.params), values)
        stand_in: dict[tuple[str, str], Any] = {}
        for _, ref in refs:
            stand_in[(ref.node, ref.name)] = self._stand_in(ref)
        params = bind_refs(dict(node.params), stand_in)
        return {k: v for k, v in params.items() if not _holds_default(v)}

    def _stand_in(self, ref: Ref) -> Any:
        info = self.buffers.get(ref.node, {}).get(ref.name)
        if info is None:
            return _DEFAULT
        return np.zeros(info.shape, dtype=info.dtype)

    def _build(self, node: FramesNode | UDFNode | ResultNode, values: Values | None) -> Any:
        if node.obj is not None:
            return node.obj
        cls = resolve_class(node)
        params = self._params(node, values)
        declared = {p.name for p in getattr(cls, "params_spec", ())}
        if declared:
            for name in node.params:
                if name not in declared:
                    reason = unknown_parameter(name, declared, node.type).reason
                    raise GraphValidationError(reason, node=node.id, node_type=node.type, parameter=name)
        try:
            return cls(**(params or {}))
        except ParameterError as err:
            if values is None and len(params or {}) < len(node.params):
                return None  # needs its references to be valid; checked when they are known
            raise GraphValidationError(err.reason, node=node.id, node_type=node.type,
                                       parameter=err.parameter) from err
        except (TypeError, ValueError, ConfigurationError) as err:
            if values is None and len(params or {}) < len(node.params):
                return None
            raise GraphValidationError(str(err), node=node.id, node_type=node.type) from err

    def _check_udf(self, node: UDFNode, udf: UDF, meta: DatasetMeta, roi: np.ndarray | None,
                   corrections: CorrectionSet | None, *, via: str | None,
                   backends: tuple[str, ...] | None = None) -> None:
        try:
            udf.validate(meta)
            udf.meta = main_meta(udf, meta, roi, corrections)
            udf.get_method()
            decls = udf.get_result_buffers()
            choose_backend(udf.get_backends(), backends, udf_name=type(udf).__name__)
        except (UDFMethodError, TypeError, NotImplementedError) as err:
            # LiberTEM raises these types for these contract breaks: ported tests catch them
            raise annotate_node_error(err, node_id=node.id, node_type=type(udf).__name__,
                                      where="while checking the UDF") from None
        except ParameterError as err:
            hint = (f" (its input {via!r} gives frames of {meta.sig_shape} {meta.dtype})" if via else "")
            raise GraphValidationError(err.reason + hint, node=node.id, node_type=node.type,
                                       parameter=err.parameter) from err
        except (UDFError, ConfigurationError) as err:
            raise GraphValidationError(str(err), node=node.id, node_type=node.type) from err
        from detflow.nodes.results.base import BufferInfo

        infos = {}
        for name, d in decls.items():
            if d.use == "private":
                continue
            shape = (*meta.nav_shape, *d.extra_shape) if d.kind == "nav" else d.shape_for(meta, 0)
            infos[name] = BufferInfo(kind=d.kind, shape=tuple(shape), dtype=np.dtype(d.dtype))
        self.buffers[node.id] = infos

    def _check_result(self, node: ResultNode, obj: Any) -> None:
        inputs = {i: self.buffers[i] for i in node.inputs if i in self.buffers}
        try:
            obj.check_inputs(inputs)
            names = tuple(obj.output_names())
        except ParameterError as err:
            raise GraphValidationError(err.reason, node=node.id, node_type=node.type,
                                       parameter=err.parameter) from err
        except (ConfigurationError, KeyError, ValueError) as err:
            raise GraphValidationError(str(err), node=node.id, node_type=node.type) from err
        self.result_names[node.id] = names

    def check_refs(self) -> None:
        """Every reference names a result its node has (where that is known before running)."""
        g = self.graph
        for n in g:
            for param, ref in refs_of(n):
                target = g[ref.node]
                if isinstance(target, UDFNode):
                    names: tuple[str, ...] = tuple(self.buffers.get(ref.node, {}))
                else:
                    names = self.result_names.get(ref.node, ())
                if names and ref.name not in names:
                    raise GraphValidationError(
                        f"refers to {str(ref)!r}, but node {ref.node!r} ({getattr(target, 'type', '')}) has no "
                        f"result {ref.name!r}; it has: {', '.join(names)}",
                        node=n.id, node_type=getattr(n, "type", None), parameter=param)


@dataclass(frozen=True)
class _MetaOnly:
    """A source's geometry without the source."""

    meta: DatasetMeta
    is_live: bool = False


def _holds_default(value: Any) -> bool:
    if value is _DEFAULT:
        return True
    if isinstance(value, Mapping):
        return any(_holds_default(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_default(v) for v in value)
    return False


def compile_graph(graph: GraphModel) -> CompiledGraph:
    """Resolve and check every node of ``graph`` (see the module docstring)."""
    plan = plan_graph(graph)
    for sink in graph.sink_nodes(include_skipped=True):
        try:
            SINKS.get(sink.type)
        except ConfigurationError as err:
            raise GraphValidationError(str(err), node=sink.id, parameter="type") from err
    if not plan.passes:
        skipped = [n.id for n in graph.udf_nodes(include_skipped=True) if n.skip]
        raise GraphValidationError(
            "the graph has no UDF node" + (f" that is not skipped (skipped: {', '.join(skipped)})"
                                           if skipped else "") + ": nothing would be computed")
    for src in graph.of_kind(SourceNode):
        if not any(isinstance(n, PartitionNode) and n.input == src.id for n in graph):
            raise GraphValidationError("no partition node reads this source; add one "
                                       f"(g.partition(input={src.id!r})) or remove the source", node=src.id)
    compiled = CompiledGraph(graph, plan)
    try:
        compiled._open_sources()
        compiled._check_partitions()
        compiled._check_live()
        for i in range(len(plan)):
            compiled.passes.append(compiled.bind(i, None))
        compiled.check_refs()
    except BaseException:
        compiled.close()
        raise
    return compiled
