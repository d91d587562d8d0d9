"""Tree reduction of partial results, for executors that build a whole task graph.

The ``delayed`` executor lowers a run to one task per partition plus a binary tree of
``combine`` tasks, so merging runs on the workers, in parallel, instead of one by one
on the driver. State of a subtree (:class:`PartialGroup`):

* ``nav`` buffers of each partition, kept apart (they are placed by position, as
  LiberTEM's ``merge_all`` does for nav buffers; nothing is summed);
* every other buffer (``sig``, ``single``) merged with the UDF's own ``merge``.

``combine(a, b)`` calls ``udf.merge(dest, src)`` with ``dest`` holding ``a``'s merged
buffers and ``src`` holding ``b``'s, each with its nav rows alongside, so a merge that
reads nav buffers still finds them. As with any tree reduction, ``merge`` must be
associative, which a merge that sums (all the built-ins) is. ``finish`` turns the
root into one :class:`~detflow.nodes.runner.PartialResult` covering every partition,
which the driver merges like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detflow.errors import annotate_node_error
from detflow.nodes.base import UDF, UDFData, UDFMeta
from detflow.nodes.runner import PartialResult, UDFSpec, input_dtype_for, visible_decls
from detflow.sources.base import DatasetMeta

__all__ = ["PartialGroup", "ReduceContext", "combine", "finish", "to_group"]


@dataclass(frozen=True)
class ReduceContext:
    """What combining needs to know: the UDFs and the dataset."""

    specs: tuple[UDFSpec, ...]
    meta: DatasetMeta
    corrections: Any = None
    roi: np.ndarray | None = None  # flat over the dataset

    def merged_mask(self, group: PartialGroup) -> np.ndarray:
        """``get_valid_nav_mask()`` while merging into ``group``: its frames, over the ROI."""
        full = np.zeros(self.meta.n_frames, dtype=bool)
        for frames, _, _ in group.pieces:
            full[frames] = True
        return full if self.roi is None else full[self.roi]

    def udfs(self) -> list[UDF]:
        out = []
        for spec in self.specs:
            udf = spec.instantiate()
            meta = self.meta if spec.meta is None else spec.meta  # after its frame nodes
            corrections = self.corrections if spec.meta is None else None
            udf.meta = UDFMeta(dataset_shape=meta.shape, dataset_dtype=meta.dtype,
                               input_dtype=input_dtype_for(udf, meta.dtype, corrections),
                               corrections=corrections,
                               roi=None if self.roi is None else self.roi.reshape(meta.nav_shape))
            out.append(udf)
        return out

    def meta_of(self, i: int) -> DatasetMeta:
        spec = self.specs[i]
        return self.meta if spec.meta is None else spec.meta


@dataclass
class PartialGroup:
    """Merged partial results of a set of partitions."""

    pieces: list[tuple[slice, int, tuple[dict[str, np.ndarray], ...]]]  # (frames, rows, nav buffers)
    rest: tuple[dict[str, np.ndarray], ...]  # merged non-nav buffers, per UDF
    indices: tuple[int, ...]  # the partitions covered


def _split(udf: UDF, buffers: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    decls = visible_decls(udf)
    nav = {k: v for k, v in buffers.items() if decls[k].kind == "nav"}
    rest = {k: v for k, v in buffers.items() if decls[k].kind != "nav"}
    return nav, rest


def to_group(partial: PartialResult, ctx: ReduceContext) -> PartialGroup:
    navs, rests = [], []
    for udf, buffers in zip(ctx.udfs(), partial.buffers, strict=True):
        nav, rest = _split(udf, buffers)
        navs.append(nav)
        rests.append(rest)
    pieces = [(partial.frames, partial.n_processed, tuple(navs))] if partial.n_processed else []
    return PartialGroup(pieces, tuple(rests), partial.covered)


def _nav_of(group: PartialGroup, i: int, udf: UDF, meta: DatasetMeta) -> dict[str, np.ndarray]:
    """The nav buffers of UDF ``i`` over all of ``group``'s partitions, in frame order."""
    decls = {k: d for k, d in visible_decls(udf).items() if d.kind == "nav"}
    pieces = sorted(group.pieces, key=lambda p: p[0].start)
    return {
        k: (np.concatenate([p[2][i][k] for p in pieces]) if pieces else d.allocate(meta, 0))
        for k, d in decls.items()
    }


def combine(a: PartialGroup, b: PartialGroup, ctx: ReduceContext) -> PartialGroup:
    """``b`` merged into ``a``."""
    rests = []
    for i, udf in enumerate(ctx.udfs()):
        if not b.pieces:  # b processed nothing (no frame of it in the ROI)
            rests.append(a.rest[i])
            continue
        if not a.pieces:
            rests.append(b.rest[i])
            continue
        if not a.rest[i]:  # nav buffers only: nothing to merge here
            rests.append({})
            continue
        src_nav = _nav_of(b, i, udf, ctx.meta_of(i))
        dest = UDFData({**{k: np.zeros_like(v) for k, v in src_nav.items()},
                        **{k: v.copy() for k, v in a.rest[i].items()}})
        udf.meta = udf.meta.replace(valid_nav_mask=ctx.merged_mask(a))
        try:
            udf.merge(dest, UDFData({**src_nav, **b.rest[i]}))
        except Exception as err:
            raise annotate_node_error(err, node_id=ctx.specs[i].node_id, node_type=ctx.specs[i].cls.__name__,
                                      where="in merge (tree reduction)") from None
        rests.append({k: dest.get_buffer(k) for k in a.rest[i]})
    return PartialGroup(a.pieces + b.pieces, tuple(rests), a.indices + b.indices)


def finish(group: PartialGroup, ctx: ReduceContext) -> PartialResult:
    """One partial result covering every partition of ``group``."""
    udfs = ctx.udfs()
    buffers = tuple({**_nav_of(group, i, udf, ctx.meta_of(i)), **group.rest[i]} for i, udf in enumerate(udfs))
    rows = sum(p[1] for p in group.pieces)
    return PartialResult(index=-1, frames=slice(0, ctx.meta.n_frames), n_processed=rows, buffers=buffers,
                         indices=tuple(sorted(group.indices)))
