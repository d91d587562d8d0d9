"""The worker side: run every UDF of a graph over one partition, reading it once.

State per task: fresh UDF instances rebuilt from their keyword arguments (so nothing
a previous partition left behind leaks in), their partition-sized buffers, and one
converted copy of the current tile per (input dtype, array backend) some UDF asked for.

Policy:

* The partition is read in *tiles*, stacks of whole frames of about
  ``TILE_BYTES`` native bytes, small enough to stay in cache while every UDF sees
  them. The tile is converted at most once per distinct input dtype.
* Detector corrections (:class:`~detflow.sources.corrections.CorrectionSet`) are
  applied to each tile right after it is read, so every UDF sees corrected data.
* Frame nodes (:class:`FrameSpec`) run on each tile after the corrections, before
  any UDF sees it: each node's output is computed once per tile, the first time a UDF
  (or a later frame node) asks for it, so a chain prefix that several UDFs share runs
  once, and nothing between frame nodes and UDFs leaves the task.
* With a ROI, frames outside it are dropped from each tile before any UDF sees it;
  ``nav`` buffers hold only ROI frames, in order.
* A UDF whose method is ``process_partition`` gets the whole partition at once (read
  once and shared by the tile UDFs); ``process_frame`` UDFs get the tile's frames one
  by one, which is the only per-frame Python here, and theirs by choice.
* An exception from UDF code keeps its type and gains notes naming the node and the
  partition (:func:`detflow.errors.annotate_node_error`).
* Each UDF gets its input in the array backend chosen for it
  (:func:`detflow.nodes.backends.choose_backend`), converted once per tile for all
  UDFs that want the same (dtype, backend); a source's tile depth (a memory dataset's
  ``tileshape``) sets the tile; a tile UDF with tiling preferences gets the tile shape
  LiberTEM would negotiate for it (:mod:`detflow.nodes.tiling`), cut from the tiles read
  (:meth:`~detflow.nodes.running.RunningUDF.plan_tiles`), and a tile UDF on a dataset
  with a tile shape gets that shape, signal cut included; the others keep whole frames.
* Per-unit state (``self.meta``, the buffer views, aux data in ``self.params``) is set
  by :class:`~detflow.nodes.running.RunningUDF`, with LiberTEM's conventions.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detflow.errors import UDFError, annotate_node_error
from detflow.nodes import backends as bk
from detflow.nodes.base import UDF, UDFMeta
from detflow.nodes.buffers import UseDiscouragedWarning
from detflow.nodes.meta import Slice
from detflow.nodes.running import RunningUDF, coords_of, densified, visible_decls
from detflow.sources.base import DatasetMeta, Partition
from detflow.sources.corrections import CorrectionSet
from detflow.sources.shape import Shape

__all__ = [
    "FrameSpec", "PartialResult", "PartitionTask", "UDFSpec", "UseDiscouragedWarning", "input_dtype_for",
    "main_meta", "run_partition", "visible_decls",
]

#: native bytes per tile: a few MiB keeps the tile in L2/L3 while all UDFs read it
TILE_BYTES = 2 * 2**20


@dataclass(frozen=True)
class FrameSpec:
    """A frame node as it travels to workers: its id, the node itself (frame nodes hold
    only their parameters and pickle small), and its input: ``-1`` for the (corrected)
    partition, else the index of another frame spec of the same task, which comes earlier."""

    node_id: str
    node: Any
    input: int = -1

    @property
    def cls(self) -> type:
        return type(self.node)

    def instantiate(self) -> Any:
        return self.node


@dataclass(frozen=True)
class UDFSpec:
    """A UDF node as it travels to workers: its id, class and keyword arguments.

    ``input`` is ``-1`` for the partition's frames, else the index of the frame spec
    whose output it reads; ``meta`` is the dataset as that input shows it (signal shape
    and dtype after the frame nodes), ``None`` for the partition's own.
    """

    node_id: str
    cls: type[UDF]
    kwargs: dict[str, Any]
    input: int = -1
    meta: DatasetMeta | None = None
    #: the run's restriction of array backends (``run_udf(backends=...)``); None: any
    backends: tuple[str, ...] | None = None

    @classmethod
    def of(cls, node_id: str, udf: UDF, backends: Any = None, *, input: int = -1,
           meta: DatasetMeta | None = None) -> UDFSpec:
        if isinstance(backends, str):
            backends = (backends,)
        return cls(node_id, type(udf), udf.kwargs, input, meta, None if backends is None else tuple(backends))

    def instantiate(self) -> UDF:
        return self.cls(**self.kwargs)


@dataclass(frozen=True)
class PartitionTask:
    """One unit of work: a partition and the UDFs that run over it."""

    partition: Partition
    udfs: tuple[UDFSpec, ...]
    roi: np.ndarray | None = field(default=None, repr=False)  # flat over the dataset
    remote: bool = False  # attach the worker traceback to errors (other process)
    corrections: CorrectionSet | None = field(default=None, repr=False)  # applied to each tile read
    frames: tuple[FrameSpec, ...] = ()  # frame nodes between the tile and the UDFs


@dataclass
class PartialResult:
    """What a partition sends back: its index, frames and each UDF's buffers."""

    index: int
    frames: slice
    n_processed: int
    buffers: tuple[dict[str, np.ndarray], ...]
    #: indices of the partitions this result covers (several after a tree reduction)
    indices: tuple[int, ...] = ()

    @property
    def partitions(self) -> int:
        return len(self.indices) or 1

    @property
    def covered(self) -> tuple[int, ...]:
        return self.indices or (self.index,)


def input_dtype_for(udf: UDF, native: np.dtype, corrections: CorrectionSet | None = None) -> np.dtype:
    """The dtype ``udf`` gets its data in: corrected data is float32 at least."""
    if corrections is not None:
        native = corrections.output_dtype(native)
    preferred = udf.get_preferred_input_dtype()
    if preferred is UDF.USE_NATIVE_DTYPE:
        return np.dtype(native)
    return np.result_type(native, preferred)


def _tile_depth(running: Sequence[RunningUDF], frame_bytes: int, n: int, source_depth: int | None = None) -> int:
    """Frames per tile read: the source's tile depth, else ``TILE_BYTES`` of native data,
    deepened to what the deepest tile UDF negotiated (:meth:`RunningUDF.plan_tiles`)."""
    depth = max(1, TILE_BYTES // max(1, frame_bytes)) if source_depth is None else source_depth
    for r in running:
        if r.depth is not None:
            depth = max(depth, r.depth)
        elif r.udf.get_tiling_preferences().get("depth") == UDF.TILE_DEPTH_MAX:
            depth = n
    return max(1, min(depth, n))


def _guarded(task: PartitionTask, spec: UDFSpec, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as err:
        p = task.partition
        where = (
            f"in {getattr(fn, '__name__', 'a call')} on partition {p.index} "
            f"(frames {p.frames.start}:{p.frames.stop})"
        )
        tb = traceback.format_exc() if task.remote else ""
        raise annotate_node_error(
            err, node_id=spec.node_id, node_type=spec.cls.__name__, where=where, traceback_text=tb
        ) from None


def _start(task: PartitionTask, spec: UDFSpec, base_meta: UDFMeta, rows: int,
           partition_coords: np.ndarray, sparse_input: bool = False) -> RunningUDF:
    udf = spec.instantiate()
    row0 = base_meta.slice.origin[0] if base_meta.slice is not None else 0
    if spec.meta is not None:  # reads a frame node's output: its geometry, corrections done
        dmeta = spec.meta
        sig = dmeta.sig_shape
        base_meta = base_meta.replace(
            dataset_shape=dmeta.shape, dataset_dtype=dmeta.dtype,
            partition_shape=Shape((rows, *sig), len(sig)),
            slice=Slice((row0,) + (0,) * len(sig), Shape((rows, *sig), len(sig))),
            sig_slice=Slice((0,) * len(sig), Shape(sig, len(sig))),
        )
        input_dtype = input_dtype_for(udf, dmeta.dtype)
    else:
        dmeta = task.partition.meta
        input_dtype = input_dtype_for(udf, dmeta.dtype, task.corrections)
    udf.meta = base_meta
    # a sparse block goes to a UDF that takes scipy's csr_array as it is, else in the first
    # backend it takes (numpy: one dense copy per block, shared by all such UDFs)
    native = bk.SCIPY_CSR_ARRAY if sparse_input else bk.NUMPY
    backend = bk.choose_backend(udf.get_backends(), spec.backends, native, udf_name=type(udf).__name__)
    return RunningUDF(udf, base_meta, rows, dmeta, input_dtype=input_dtype,
                      backend=backend, partition_coords=partition_coords, row0=row0)


def run_partition(task: PartitionTask) -> PartialResult:
    """Run all UDFs of ``task`` over its partition; return their partition buffers."""
    part = task.partition
    dmeta = part.meta
    n = part.n_frames
    roi_part = None if task.roi is None else task.roi[part.frames]
    rows = n if roi_part is None else int(np.count_nonzero(roi_part))
    if rows == 0:
        return PartialResult(part.index, part.frames, 0, tuple({} for _ in task.udfs))

    # LiberTEM's slices count rows among the ROI frames: where this partition's rows start
    row0 = part.frames.start if task.roi is None else int(np.count_nonzero(task.roi[: part.frames.start]))
    roi_nav = None if task.roi is None else task.roi.reshape(dmeta.nav_shape)
    sig = dmeta.sig_shape
    flat_idx_all = np.arange(part.frames.start, part.frames.stop)
    part_idx = flat_idx_all if roi_part is None else flat_idx_all[roi_part]
    coords = coords_of(dmeta.nav_shape)
    part_coords = coords(part_idx)
    sig_shape = Shape(sig, len(sig))
    base_meta = UDFMeta(
        dataset_shape=dmeta.shape,
        dataset_dtype=dmeta.dtype,
        input_dtype=dmeta.dtype,
        roi=roi_nav,
        partition_shape=Shape((rows, *sig), len(sig)),
        partition_index=part.index,
        slice=Slice((row0,) + (0,) * len(sig), Shape((rows, *sig), len(sig))),
        sig_slice=Slice((0,) * len(sig), sig_shape),
        corrections=task.corrections,
    )
    # sparse partitions (CSR sources) are read as CSR blocks; corrections make them dense
    sparse = part.sparse and task.corrections is None
    chain = _Chain(task, sparse)
    running: list[RunningUDF] = []
    specs: dict[int, UDFSpec] = {}
    for spec in task.udfs:
        r = _guarded(task, spec, _start, task, spec, base_meta, rows, part_coords, chain.sparse[spec.input])
        specs[id(r)] = spec
        running.append(r)
    tileshape = None
    if part.tile_sig_shape is not None and part.tile_depth is not None:
        tileshape = (part.tile_depth, *part.tile_sig_shape)
    for r in running:  # first what each tile UDF negotiates, then the depth read for all
        r.plan_tiles(n, tuple(r.udf.meta.dataset_shape.sig), n, tileshape if specs[id(r)].input < 0 else None)
    depth = _tile_depth(running, dmeta.frame_bytes, n, part.tile_depth)
    for r in running:
        scheme = r.plan_tiles(depth, tuple(r.udf.meta.dataset_shape.sig), n,
                              tileshape if specs[id(r)].input < 0 else None)
        r.udf.meta = r.udf.meta.replace(tiling_scheme=scheme, sig_slice=scheme[0])
        _guarded(task, specs[id(r)], r.udf.preprocess)

    # frames the data does not hold (shifted out by sync_offset) are not fed to any UDF, as
    # in LiberTEM: their rows keep the buffers' initial values
    fed = part.fed_frames
    row_fed = fed.start if roi_part is None else int(np.count_nonzero(roi_part[: fed.start]))
    fed_sel = None if roi_part is None else roi_part[fed]
    fed_idx = flat_idx_all[fed] if fed_sel is None else flat_idx_all[fed][fed_sel]
    whole: Any = None
    wholes = _Block(None)
    if any(r.method == "partition" for r in running) and fed.stop > fed.start:
        whole = _read(part, fed.start, fed.stop, sparse)
        if fed_sel is not None:
            whole = whole[np.flatnonzero(fed_sel)] if sparse else whole[fed_sel]
        if task.corrections is not None:
            whole = task.corrections.apply(whole)
        wholes = _Block(whole)

    row = row_fed
    tile_udfs = [r for r in running if r.method != "partition"]
    if tile_udfs:
        for t0 in range(fed.start, fed.stop, depth):
            t1 = min(t0 + depth, fed.stop)
            if whole is not None:  # whole is already ROI-filtered: index by rows
                sel = None if roi_part is None else roi_part[t0:t1]
                k = t1 - t0 if sel is None else int(np.count_nonzero(sel))
                if k == 0:
                    continue
                tile = whole[row - row_fed : row - row_fed + k]
                idx = flat_idx_all[t0:t1] if sel is None else flat_idx_all[t0:t1][sel]
            else:
                idx = flat_idx_all[t0:t1]
                sel = None if roi_part is None else roi_part[t0:t1]
                if sel is not None and not sel.any():
                    continue
                tile = _read(part, t0, t1, sparse)
                if sel is not None and not sel.all():
                    tile = tile[np.flatnonzero(sel)] if sparse else tile[sel]
                    idx = idx[sel]
                if task.corrections is not None:
                    tile = task.corrections.apply(tile)
                k = tile.shape[0]
            block = _Block(tile)
            for r in tile_udfs:
                inp = specs[id(r)].input
                data = r.convert(chain.get(block, inp), block.cache(inp))
                _process_tile(task, specs[id(r)], r, data, idx, row, coords)
            row += k

    for r in running:
        if r.method == "partition" and whole is not None:
            r.enter(row_fed, len(fed_idx), fed_idx, coords(fed_idx))
            inp = specs[id(r)].input
            _guarded(task, specs[id(r)], r.udf.process_partition, r.convert(chain.get(wholes, inp), wholes.cache(inp)))

    out = []
    for r in running:
        r.leave(rows, part_coords)
        _guarded(task, specs[id(r)], r.udf.postprocess)
        _guarded(task, specs[id(r)], r.udf.cleanup)
        out.append(r.buffers)
    return PartialResult(part.index, part.frames, rows, tuple(out))


def _read(part: Partition, start: int, stop: int, sparse: bool) -> Any:
    return part.read_sparse_frames(start, stop) if sparse else part.read_frames(start, stop)


class _Block:
    """One block as the frame nodes and UDFs of a task see it: the outputs of the frame
    nodes (``-1``: the block read), and per output its conversions by (dtype, backend)."""

    def __init__(self, block: Any) -> None:
        self.outputs: dict[int, Any] = {-1: block}
        self.conversions: dict[int, dict[tuple[Any, str], Any]] = {}

    def cache(self, i: int) -> dict[tuple[Any, str], Any]:
        return self.conversions.setdefault(i, {})


class _Chain:
    """The frame nodes of a task, instantiated once; outputs computed on demand per block.

    ``sparse[i]``: whether output ``i`` is a CSR block (``-1``: the block read). An output
    stays sparse through nodes that declare ``sparse_input``; before the first that does
    not, the block is densified once (and shared with UDFs that want it dense).
    """

    def __init__(self, task: PartitionTask, sparse: bool = False) -> None:
        self.task = task
        self.specs = task.frames
        self.nodes = [_guarded_frames(task, f, f.instantiate) for f in self.specs]
        meta = task.partition.meta
        self.sig: dict[int, tuple[int, ...]] = {-1: tuple(meta.sig_shape)}
        self.sparse: dict[int, bool] = {-1: sparse}
        dtypes: dict[int, np.dtype] = {-1: meta.dtype}
        for i, (spec, node) in enumerate(zip(self.specs, self.nodes, strict=True)):
            sig, dtype = _guarded_frames(task, spec, node.output_signature, self.sig[spec.input], dtypes[spec.input])
            self.sig[i], dtypes[i] = tuple(sig), np.dtype(dtype)
            self.sparse[i] = self.sparse[spec.input] and bool(getattr(node, "sparse_input", False))

    def get(self, block: _Block, i: int) -> Any:
        """Output ``i`` for ``block``, computing it (and what it reads) once."""
        out = block.outputs.get(i)
        if out is None:
            spec = self.specs[i]
            src = self.get(block, spec.input)
            if self.sparse[spec.input] and self.sparse[i]:
                out = _guarded_frames(self.task, spec, self.nodes[i].apply, src, sig_shape=self.sig[spec.input])
            else:
                src = densified(src, block.cache(spec.input), self.sig[spec.input])
                out = _guarded_frames(self.task, spec, self.nodes[i].apply, src)
            block.outputs[i] = out
        return out


def _guarded_frames(task: PartitionTask, spec: FrameSpec, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except Exception as err:
        p = task.partition
        where = (f"in frame node {getattr(fn, '__name__', 'call')} on partition {p.index} "
                 f"(frames {p.frames.start}:{p.frames.stop})")
        tb = traceback.format_exc() if task.remote else ""
        raise annotate_node_error(err, node_id=spec.node_id, node_type=spec.cls.__name__, where=where,
                                  traceback_text=tb) from None


def _process_tile(
    task: PartitionTask,
    spec: UDFSpec,
    r: RunningUDF,
    data: Any,
    idx: np.ndarray,
    row: int,
    coords: Callable[[np.ndarray], np.ndarray],
) -> None:
    """Feed one tile to ``r``; ``row`` is the tile's first row in the partition's buffers."""
    k = data.shape[0]
    all_coords = coords(idx)
    if r.method == "tile":
        step = k if r.depth is None else r.depth  # the UDF asked for shallower tiles
        for j0 in range(0, k, step):
            j1 = min(j0 + step, k)
            r.enter(row + j0, j1 - j0, idx[j0:j1], all_coords[j0:j1])
            sub = data if (j0, j1) == (0, k) else data[j0:j1]
            if not r.cuts:
                _guarded(task, spec, r.udf.process_tile, sub)
                continue
            for i, cut in enumerate(r.cuts):  # ... or tiles cut in the signal
                r.enter_cut(i)
                _guarded(task, spec, r.udf.process_tile, sub[(slice(None), *cut)])
        return
    for i in range(k):
        r.enter(row + i, 1, idx[i : i + 1], all_coords[i : i + 1], frame=True)
        _guarded(task, spec, r.udf.process_frame, data[i])


def check_result_only(udf: UDF, results: dict[str, Any], node_id: str) -> None:
    missing = [
        k for k, d in udf.get_result_buffers().items()
        if d.use == "result_only" and k not in results
    ]
    if missing:
        raise UDFError(
            f"node {node_id!r} ({type(udf).__name__}): get_results() did not return the "
            f"result_only buffer(s) {missing}"
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
