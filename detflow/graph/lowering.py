"""Lowering: from a validated graph to partition tasks on an executor, and back.

``compile_graph`` resolves every node of a :class:`~detflow.graph.model.Graph` into a
:class:`Plan` (the opened source, the partition plan, the ROI, the UDF instances),
checking everything it can before any data is read.

``run_plan`` is the driver loop, and the only place that knows both sides:

1. cut the source into partitions; drop those with no frame in the ROI;
2. ``executor.map_unordered(run_partition, tasks)`` runs them, anywhere, in any
   order; each returns one :class:`~detflow.nodes.runner.PartialResult`;
3. each partial result enters a :class:`~detflow.graph.stream.ResultStream`, whose
   first step merges it into the running result of every UDF node (``UDF.merge``,
   in completion order, each partition exactly once) and whose subscribers (progress,
   sinks) then see the update;
4. after each merge a lazily evaluated :class:`~detflow.graph.results.UDFResults` is
   yielded; ``get_results`` runs only when someone reads it.

Executors see a picklable function and picklable tasks, nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from detflow.graph.model import Graph, PartitionNode, SourceNode, UDFNode, as_flat_roi
from detflow.graph.results import ResultBuffer, UDFResults, check_returned, result_buffer
from detflow.graph.stream import ResultStream, RunInfo, Update
from detflow.nodes.backends import choose_backend
from detflow.nodes.base import UDF, BufferDecl, UDFData, UDFMeta
from detflow.nodes.params import unknown_parameter
from detflow.nodes.runner import (
    PartialResult,
    PartitionTask,
    UDFSpec,
    check_result_only,
    input_dtype_for,
    run_partition,
)
from detflow.registry import SINKS, SOURCES, UDFS, import_object
from detflow.sources.base import DatasetMeta, PartitionPlan, Source
from detflow.sources.corrections import CorrectionSet
from detflow.sources.live.base import LiveAcquisition, LivePartitions
from detflow.sources.params import open_source

if TYPE_CHECKING:
    from detflow.executors.base import Executor
    from detflow.sinks.base import Sink

__all__ = ["Plan", "compile_graph", "run_plan"]


@dataclass
class Plan:
    """A graph resolved and checked, ready to run."""

    name: str
    source_id: str
    source: Source
    partition_id: str
    frames_per_partition: int | None
    num_partitions: int | None
    roi: np.ndarray | None
    udfs: list[tuple[str, UDF]]
    corrections: CorrectionSet | None = None
    backends: tuple[str, ...] | None = None
    #: the source was opened from the graph's parameters (not handed in), so the plan closes it
    owns_source: bool = False

    def close(self) -> None:
        """Close the source if this plan opened it (a file, a detector connection)."""
        if self.owns_source:
            self.source.close()

    @property
    def meta(self) -> DatasetMeta:
        return self.source.meta

    def partition_plan(self, min_partitions: int = 1) -> PartitionPlan:
        return PartitionPlan(
            frames_per_partition=self.frames_per_partition,
            num_partitions=self.num_partitions,
            min_partitions=min_partitions,
        )


def _one(graph: Graph, kind: type, label: str) -> Any:
    found = [n for n in graph if isinstance(n, kind)]
    if len(found) != 1:
        ids = ", ".join(repr(n.id) for n in found) or "none"
        raise GraphValidationError(f"a graph needs exactly one {label} node; found {ids}")
    return found[0]


def resolve_udf_class(node: UDFNode) -> type[UDF]:
    try:
        cls = UDFS.get(node.type) if ":" not in node.type else import_object(node.type)
    except UnknownNameError as err:
        raise GraphValidationError(str(err), node=node.id, parameter="type") from err
    except (ImportError, AttributeError, ValueError) as err:
        raise GraphValidationError(
            f"cannot import UDF type {node.type!r}: {err}", node=node.id
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, UDF)):
        raise GraphValidationError(f"{node.type!r} is not a UDF class", node=node.id)
    return cls


def _open_source(node: SourceNode) -> Source:
    if node.obj is not None:
        return node.obj
    try:
        cls = SOURCES.get(node.type)
    except ConfigurationError as err:
        raise GraphValidationError(str(err), node=node.id, parameter="type") from err
    try:
        return open_source(cls, **node.params)
    except ParameterError as err:
        raise GraphValidationError(err.reason, node=node.id, node_type=node.type, parameter=err.parameter) from err
    except TypeError as err:  # an unknown keyword of a source that declares no parameters
        raise GraphValidationError(str(err), node=node.id, node_type=node.type) from err
    except ConfigurationError as err:
        raise GraphValidationError(str(err), node=node.id, node_type=node.type) from err


def compile_graph(graph: Graph) -> Plan:
    """Resolve and check every node of ``graph``."""
    from detflow.graph.io import check_structure

    check_structure(graph)
    for sink in graph.sink_nodes(include_skipped=True):
        try:
            SINKS.get(sink.type)
        except ConfigurationError as err:
            raise GraphValidationError(str(err), node=sink.id, parameter="type") from err
    src_node: SourceNode = _one(graph, SourceNode, "source")
    part_node: PartitionNode = _one(graph, PartitionNode, "partition")
    if part_node.input != src_node.id:
        raise GraphValidationError(
            f"input {part_node.input!r} is not a source node (the source is {src_node.id!r})",
            node=part_node.id, parameter="input",
        )
    udf_nodes = graph.udf_nodes()
    if not udf_nodes:
        skipped = [n.id for n in graph.udf_nodes(include_skipped=True)]
        raise GraphValidationError(
            "the graph has no UDF node" + (f" that is not skipped (skipped: {', '.join(skipped)})"
                                           if skipped else "") + ": nothing would be computed")
    for node in udf_nodes:
        if node.input != part_node.id:
            raise GraphValidationError(
                f"input {node.input!r} is not a partition node (the partition node is "
                f"{part_node.id!r})", node=node.id, node_type=node.type, parameter="input",
            )
    source = _open_source(src_node)
    try:
        return _compile(graph, src_node, part_node, udf_nodes, source)
    except BaseException:
        if src_node.obj is None:
            source.close()
        raise


def _compile(graph: Graph, src_node: SourceNode, part_node: PartitionNode, udf_nodes: list[UDFNode],
             source: Source) -> Plan:
    meta = source.meta
    for name in ("frames_per_partition", "num_partitions"):
        value = getattr(part_node, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1):
            raise GraphValidationError(f"must be an integer >= 1; got {value!r}", node=part_node.id,
                                       parameter=name)
    try:
        PartitionPlan(part_node.frames_per_partition, part_node.num_partitions)
    except ConfigurationError as err:
        raise GraphValidationError(str(err), node=part_node.id) from err
    try:
        roi = as_flat_roi(part_node.roi, meta.nav_shape)
    except ValueError as err:
        raise GraphValidationError(str(err), node=part_node.id, parameter="roi") from err
    try:
        corrections = CorrectionSet.coerce(part_node.corrections)
        if corrections is not None:
            corrections.check(meta.sig_shape)
            corrections = corrections if corrections.have_corrections() else None
    except ConfigurationError as err:
        raise GraphValidationError(str(err), node=part_node.id, parameter="corrections") from err

    udfs: list[tuple[str, UDF]] = []
    for node in udf_nodes:
        if node.obj is not None:
            udf = node.obj
        else:
            cls = resolve_udf_class(node)
            if cls.params_spec:
                known = {p.name for p in cls.params_spec}
                for name in node.params:
                    if name not in known:
                        reason = unknown_parameter(name, known, node.type).reason
                        raise GraphValidationError(reason, node=node.id, node_type=node.type, parameter=name)
            try:
                udf = cls(**node.params)
            except (TypeError, ValueError) as err:
                raise GraphValidationError(str(err), node=node.id, node_type=node.type) from err
        try:
            udf.validate(meta)
            udf.meta = main_meta(udf, meta, roi, corrections)
            udf.get_method()
            udf.get_result_buffers()
            choose_backend(udf.get_backends(), part_node.backends, udf_name=type(udf).__name__)
        except (UDFMethodError, TypeError, NotImplementedError) as err:
            # LiberTEM raises these types for these contract breaks: ported tests catch them
            raise annotate_node_error(err, node_id=node.id, node_type=type(udf).__name__,
                                      where="while checking the UDF") from None
        except ParameterError as err:
            raise GraphValidationError(
                err.reason, node=node.id, node_type=node.type, parameter=err.parameter
            ) from err
        except (UDFError, ConfigurationError) as err:
            raise GraphValidationError(str(err), node=node.id, node_type=node.type) from err
        udfs.append((node.id, udf))
    return Plan(
        name=graph.name,
        source_id=src_node.id,
        source=source,
        partition_id=part_node.id,
        frames_per_partition=part_node.frames_per_partition,
        num_partitions=part_node.num_partitions,
        roi=roi,
        udfs=udfs,
        corrections=corrections,
        backends=part_node.backends,
        owns_source=src_node.obj is None,
    )


def main_meta(
    udf: UDF, meta: DatasetMeta, roi: np.ndarray | None, corrections: CorrectionSet | None = None
) -> UDFMeta:
    """``self.meta`` on the driver: the dataset, no partition."""
    return UDFMeta(
        dataset_shape=meta.shape,
        dataset_dtype=meta.dtype,
        input_dtype=input_dtype_for(udf, meta.dtype, corrections),
        roi=None if roi is None else roi.reshape(meta.nav_shape),
        corrections=corrections,
    )


class _Merger:
    """The running result of one UDF node on the driver."""

    def __init__(self, node_id: str, udf: UDF, meta: DatasetMeta, roi: np.ndarray | None) -> None:
        self.node_id = node_id
        self.udf = udf
        self.meta = meta
        self.roi = roi
        self.decls = udf.get_result_buffers()
        n_rows = meta.n_frames if roi is None else int(np.count_nonzero(roi))
        self.dest = {
            k: d.allocate(meta, n_rows) for k, d in self.decls.items() if d.use != "result_only"
        }
        # row of each frame's result in the (ROI-filtered) nav buffers
        self.rows_before = None if roi is None else np.concatenate(([0], np.cumsum(roi)))

    def _with_valid(self, valid: np.ndarray) -> None:
        # LiberTEM's get_valid_nav_mask(): over the ROI positions, what is merged so far
        mask = valid if self.roi is None else valid[self.roi]
        self.udf.meta = self.udf.meta.replace(valid_nav_mask=mask.copy())

    def merge(self, partial: PartialResult, buffers: dict[str, np.ndarray], valid: np.ndarray) -> None:
        start = partial.frames.start
        lo = start if self.rows_before is None else int(self.rows_before[start])
        hi = lo + partial.n_processed
        owner = type(self.udf).__name__
        dest = UDFData(
            {k: (b[lo:hi] if self.decls[k].kind == "nav" else b) for k, b in self.dest.items()}, owner=owner
        )
        self._with_valid(valid)
        try:
            self.udf.merge(dest, UDFData(buffers, owner=owner))
        except Exception as err:
            raise annotate_node_error(
                err, node_id=self.node_id, node_type=type(self.udf).__name__,
                where=f"in merge of partition {partial.index}",
            ) from None

    def results(self, valid: np.ndarray) -> dict[str, ResultBuffer]:
        self.udf.results = UDFData(self.dest, owner=type(self.udf).__name__)
        self._with_valid(valid)
        try:
            computed = self.udf.get_results() or {}
            check_returned(self.udf, computed, self.decls)
        except Exception as err:
            raise annotate_node_error(
                err, node_id=self.node_id, node_type=type(self.udf).__name__,
                where="in get_results",
            ) from None
        check_result_only(self.udf, computed, self.node_id)
        out = {}
        names = [k for k, d in self.decls.items() if d.use != "private"]
        for name in names:
            decl = self.decls[name]
            value = computed[name] if name in computed else self.dest[name]
            out[name] = result_buffer(
                value, decl, nav_shape=self.meta.nav_shape, sig_shape=self.meta.sig_shape,
                roi=self.roi, valid=valid, flat_nav=lambda v, n=name: self._flat_nav(n, v),
            )
        return out

    def _flat_nav(self, name: str, value: np.ndarray) -> np.ndarray:
        nav = self.meta.nav_shape
        rows = self.meta.n_frames if self.roi is None else int(np.count_nonzero(self.roi))
        if value.ndim >= 1 and value.shape[0] == rows:
            return value
        if value.shape[: len(nav)] == nav:  # returned nav-shaped: flatten (a ROI keeps it whole)
            return value.reshape((self.meta.n_frames, *value.shape[len(nav):]))
        raise UDFError(
            f"node {self.node_id!r} ({type(self.udf).__name__}): get_results() returned nav "
            f"buffer {name!r} with shape {value.shape}; expected ({rows}, ...) "
            f"(flat over the ROI) or {nav} + extra"
        )


def run_plan(
    plan: Plan,
    executor: Executor,
    *,
    progress: bool = False,
    sinks: list[Sink] | None = None,
) -> Iterator[UDFResults]:
    """Run ``plan`` on ``executor``; yield results after each merged partition."""
    meta = plan.meta
    roi = plan.roi
    specs = tuple(UDFSpec.of(node_id, udf, plan.backends) for node_id, udf in plan.udfs)
    live = bool(getattr(plan.source, "is_live", False))
    tasks: list[PartitionTask] | _LiveTasks
    if live:
        tasks = _LiveTasks(plan, specs, executor.remote, shared=bool(getattr(executor, "shares_memory", False)))
        n_tasks = tasks.n_tasks
    else:
        tasks = [
            PartitionTask(p, specs, roi, executor.remote, corrections=plan.corrections)
            for p in plan.source.partitions(plan.partition_plan(executor.n_workers))
            if roi is None or roi[p.frames].any()
        ]
        n_tasks = len(tasks)
    mergers = [_Merger(node_id, udf, meta, roi) for node_id, udf in plan.udfs]
    frames_total = meta.n_frames if roi is None else int(np.count_nonzero(roi))
    valid = np.zeros(meta.n_frames, dtype=bool)
    node_ids = tuple(node_id for node_id, _ in plan.udfs)
    info = RunInfo(
        graph_name=plan.name, node_ids=node_ids, meta=meta, roi=roi,
        frames_total=frames_total, partitions_total=n_tasks,
    )
    done = {"frames": 0, "partitions": 0}

    def merge(partial: PartialResult) -> Update:
        if isinstance(tasks, _LiveTasks):
            tasks.done(partial.index)
        for merger, buffers in zip(mergers, partial.buffers, strict=True):
            if partial.n_processed:
                merger.merge(partial, buffers, valid)
        frames = partial.frames
        valid[frames] = True if roi is None else roi[frames]
        done["frames"] += partial.n_processed
        done["partitions"] += partial.partitions
        return Update(partial=partial, frames_done=done["frames"],
                      partitions_done=done["partitions"], info=info, results=snapshot())

    def snapshot() -> UDFResults:
        return UDFResults(
            [lambda m=m: m.results(valid) for m in mergers],
            _damage(valid, meta),
            frames_done=done["frames"], frames_total=frames_total,
            partitions_done=done["partitions"], partitions_total=n_tasks,
            node_ids=node_ids,
        )

    consumers: list[Sink] = list(sinks or [])
    if progress:
        from detflow.sinks.progress import ProgressSink

        consumers.append(ProgressSink())
    for node_id, udf in plan.udfs:
        try:
            udf.prepare_run()
        except Exception as err:
            raise annotate_node_error(err, node_id=node_id, node_type=type(udf).__name__,
                                      where="in prepare_run") from None
    stream = ResultStream(merge)
    for sink in consumers:
        stream.subscribe(sink)
    stream.start(info)
    ok = False
    try:
        if not n_tasks:
            yield snapshot()
        reduce_tree = getattr(executor, "reduce_tree", None)
        if isinstance(tasks, _LiveTasks):
            for partial in executor.map_unordered(run_partition, tasks):
                yield stream.emit(partial).results
            failure = tasks.error
            if failure is not None:  # every frame that arrived is merged; now say what went wrong
                with contextlib.suppress(AttributeError):
                    failure.partial_results = snapshot()  # type: ignore[attr-defined]
                raise failure
        elif reduce_tree is not None and tasks:
            # the executor merges in a task tree; the driver merges the root once
            from detflow.nodes.reduce import ReduceContext

            ctx = ReduceContext(specs, meta, plan.corrections, roi)
            yield stream.emit(reduce_tree(run_partition, tasks, ctx)).results
        else:
            for partial in executor.map_unordered(run_partition, tasks):
                yield stream.emit(partial).results
        ok = True
    finally:
        if isinstance(tasks, _LiveTasks):
            tasks.close()
        stream.finish(snapshot() if ok else None)


class _LiveTasks(Iterator[PartitionTask]):
    """Tasks of a live source, made as its partitions arrive.

    Partitions with no frame in the ROI are received (the detector sends them all)
    and dropped. ``ready()`` tells an executor whether ``next()`` would block, so it
    can keep collecting results while the detector is still sending.
    """

    def __init__(self, plan: Plan, specs: tuple[UDFSpec, ...], remote: bool, *, shared: bool = False) -> None:
        self.plan = plan
        self.specs = specs
        self.remote = remote
        self.roi = plan.roi
        source = plan.source
        assert isinstance(source, LiveAcquisition)
        self.n_tasks = sum(1 for r in source._ranges(plan.partition_plan()) if self.roi is None or self.roi[r].any())
        self.parts: LivePartitions = source.partitions(plan.partition_plan(), shared=shared)

    @property
    def error(self) -> BaseException | None:
        return self.parts.error

    def ready(self) -> bool:
        return self.parts.ready()

    def __next__(self) -> PartitionTask:
        while True:
            p = next(self.parts)
            if self.roi is None or self.roi[p.frames].any():
                return PartitionTask(p, self.specs, self.roi, self.remote, corrections=self.plan.corrections)
            self.parts.release(p.index)

    def done(self, index: int) -> None:
        """The result of partition ``index`` is merged: its buffer can go."""
        self.parts.release(index)

    def close(self) -> None:
        self.parts.close()


def _damage(valid: np.ndarray, meta: DatasetMeta) -> ResultBuffer:
    decl = BufferDecl(kind="nav", dtype=np.dtype(bool))
    return ResultBuffer(valid.copy(), decl, nav_shape=meta.nav_shape, sig_shape=meta.sig_shape,
                        roi=None)
