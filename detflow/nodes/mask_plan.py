"""How ``ApplyMasksUDF`` multiplies tiles with its masks: four kernels and the choice among them.

A tile ``(n_frames, n_pixels)`` times a mask matrix ``(n_pixels, n_masks)``:

``classes``
    Binary or few-valued masks split the pixels into few *classes* of equal membership
    (16 overlapping rings: 17 classes, and one of pixels in no mask). Each frame's class
    sums are taken over runs of same-class pixels, as contiguous slices, in one pass that
    never touches pixels outside every mask; the class sums ``(n_frames, n_classes)``
    are then multiplied with the small ``(n_classes, n_masks)`` weights. Its cost grows
    with the covered pixels and the number of runs, not with the number of masks.
    Integer tiles are summed exactly (int64), float32 tiles in float32 runs, class sums
    in float64.
``sparse``
    The masks as CSR rows; only the pixels some mask covers are read (numba, float64).
``rows``
    A numba dot product of the native tile with each dense mask row: best for a few
    dense masks with arbitrary weights (no conversion of the tile).
``blas``
    The tile converted to the mask dtype and multiplied with BLAS: many dense masks with
    arbitrary weights.

Policy (``kernel="auto"``): estimate each kernel's cost per frame from the masks alone
(:data:`COSTS`, in nanoseconds per unit, measured on one core of an x86-64 machine with
256 x 256 uint16 frames) and take the cheapest; ``classes`` is considered only when
there are at most :data:`MAX_CLASSES` classes. ``ApplyMasksUDF(kernel=...)`` forces one.
The choice is in the plan's ``repr`` and in a debug log line of ``detflow.nodes.mask_plan``.

Examples
--------
>>> import numpy as np
>>> from detflow.nodes.masks import make_mask_stack, ring
>>> stack = make_mask_stack([lambda i=i: ring(32, 32, 64, 64, 8 + 2 * i, 4) for i in range(8)], (64, 64))
>>> plan = plan_masks(stack, kernel="classes")  # forced; "auto" weighs the estimates
>>> plan
MaskPlan(kernel='classes', masks=8, classes=8, runs=460, covered=1468 of 4096 pixels)
>>> tile = np.random.default_rng(0).integers(0, 100, (5, 64 * 64)).astype(np.uint16)
>>> out = np.zeros((5, 8), np.float32)
>>> plan.apply(tile, out)
>>> bool(np.allclose(out, tile.astype(np.float64) @ stack.dense))
True
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from detflow.errors import ParameterError
from detflow.nodes.masks import MaskStack

__all__ = [
    "COSTS",
    "KERNELS",
    "MAX_CLASSES",
    "MaskClasses",
    "MaskPlan",
    "cached",
    "mask_classes",
    "plan_masks",
]

log = logging.getLogger(__name__)

#: the kernels a plan can use; ``"auto"`` chooses among them
KERNELS = ("classes", "sparse", "rows", "blas")
#: beyond this many classes the class kernel is not considered by ``auto``
MAX_CLASSES = 4096
#: rough ns per unit and frame: per covered pixel and run (classes; then the class sums are
#: combined per non-zero weight or by BLAS per class x mask, whichever is cheaper), per
#: stored mask entry (sparse), per pixel read or converted and per pixel x mask (rows, blas)
COSTS = {
    "classes_pixel": 0.3,
    "classes_run": 2.0,
    "combine_entry": 1.0,  # per non-zero class weight, one at a time
    "combine_blas": 0.05,  # per class x mask, by BLAS
    "sparse_entry": 1.5,
    "rows_pixel": 0.05,
    "rows_entry": 0.03,
    "blas_pixel": 0.2,
    "blas_entry": 0.045,
}
#: the rows kernel streams every mask once per two frames: worth it while they stay in cache
ROWS_MAX_BYTES = 8 * 2**20
#: dense matrices are built for the class analysis of sparse masks up to this many entries
_DENSE_ANALYSIS_ENTRIES = 2**25


@dataclass(frozen=True)
class MaskClasses:
    """Pixels grouped by their weights across the masks.

    ``weights[c]`` is class ``c``'s weight in every mask ``(n_classes, n_masks)``;
    ``starts``, ``stops``, ``labels`` describe runs of same-class pixels in flat pixel
    order (pixels in no mask are in no run); ``covered`` counts the pixels in runs.
    """

    weights: np.ndarray
    starts: np.ndarray
    stops: np.ndarray
    labels: np.ndarray
    covered: int

    @property
    def count(self) -> int:
        return int(self.weights.shape[0])

    @property
    def entries(self) -> int:
        """Non-zero weights: one per class for disjoint masks."""
        return int(np.count_nonzero(self.weights))

    @property
    def sparse_combine(self) -> bool:
        """Whether class sums meet the weights one entry at a time rather than by BLAS."""
        return self.entries * COSTS["combine_entry"] < self.weights.size * COSTS["combine_blas"]

    @property
    def weights_csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indptr, indices, data)`` of :attr:`weights`, computed once."""
        cached_csr = self.__dict__.get("_csr")
        if cached_csr is None:
            rows, cols = np.nonzero(self.weights)
            indptr = np.zeros(self.weights.shape[0] + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=self.weights.shape[0]), out=indptr[1:])
            cached_csr = (indptr, cols.astype(np.int64), np.ascontiguousarray(self.weights[rows, cols]))
            object.__setattr__(self, "_csr", cached_csr)
        return cached_csr

    def combine_cost(self) -> float:
        """Estimated ns per frame to combine the class sums into mask sums."""
        return min(self.entries * COSTS["combine_entry"], self.weights.size * COSTS["combine_blas"])


def mask_classes(dense: np.ndarray) -> MaskClasses | None:
    """Classes of equal rows of ``dense`` ``(n_pixels, n_masks)``; ``None`` beyond
    :data:`MAX_CLASSES` or for weights that are not real numbers."""
    from detflow.nodes import kernels

    if dense.dtype.kind not in "biuf":
        return None
    w = np.ascontiguousarray(dense)
    if w.dtype.kind == "f":
        w = w + w.dtype.type(0)  # -0.0 becomes 0.0: equal values, equal bits
        if not np.isfinite(w).all():
            return None
    bits = w.view(np.dtype(f"u{w.dtype.itemsize}")) if w.dtype.kind == "f" else w
    rng = np.random.default_rng(0x5EED)
    mult = np.asarray(rng.integers(1, 2**63, size=w.shape[1], dtype=np.uint64) | np.uint64(1), dtype=np.uint64)
    hashes = np.empty(w.shape[0], dtype=np.uint64)
    kernels.row_hashes(bits, mult, hashes)
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    if len(first) > MAX_CLASSES + 1:
        return None
    if not kernels.rows_match(w, first[inverse]):  # a hash collision: rare, so be exact the slow way
        _, first, inverse = np.unique(w, axis=0, return_index=True, return_inverse=True)
        if len(first) > MAX_CLASSES + 1:
            return None
    inverse = inverse.reshape(-1)
    class_weights = w[first].astype(np.float64)
    empty = ~class_weights.any(axis=1)
    # renumber: classes with some weight 0..C-1, the class of pixels in no mask -1
    keep = np.flatnonzero(~empty)
    new = np.full(len(first), -1, dtype=np.int64)
    new[keep] = np.arange(len(keep))
    labels = new[inverse]
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(labels)) + 1, [len(labels)]))
    starts, stops = bounds[:-1], bounds[1:]
    run_labels = labels[starts]
    inside = run_labels >= 0
    starts, stops, run_labels = starts[inside], stops[inside], run_labels[inside]
    return MaskClasses(
        weights=np.ascontiguousarray(class_weights[keep]),
        starts=np.ascontiguousarray(starts, dtype=np.int64),
        stops=np.ascontiguousarray(stops, dtype=np.int64),
        labels=np.ascontiguousarray(run_labels, dtype=np.int64),
        covered=int((stops - starts).sum()),
    )


@dataclass(frozen=True)
class MaskPlan:
    """The kernel chosen for a mask stack, with the data it needs; see the module docstring."""

    kernel: str
    stack: MaskStack
    classes: MaskClasses | None = None
    estimates: dict[str, float] = field(default_factory=dict, compare=False)
    parallel: bool = False

    def __repr__(self) -> str:
        n_pixels = self._n_pixels()
        extra = ""
        if self.kernel == "classes" and self.classes is not None:
            c = self.classes
            extra = f", classes={c.count}, runs={len(c.starts)}, covered={c.covered} of {n_pixels} pixels"
        elif self.kernel == "sparse":
            extra = f", entries={self._csr().nnz} of {n_pixels * self.stack.count}"
        return f"MaskPlan(kernel={self.kernel!r}, masks={self.stack.count}{extra})"

    def _n_pixels(self) -> int:
        s = self.stack
        return int(s.dense.shape[0]) if s.dense is not None else int(s.csr.shape[1])

    def _dense(self) -> np.ndarray:
        return _dense_of(self.stack)

    def _csr(self) -> Any:
        return _csr_of(self.stack)

    def apply(self, tile: np.ndarray, out: np.ndarray) -> None:
        """``out += tile @ masks`` for a tile ``(n_frames, n_pixels)``; ``out`` ``(n_frames, n_masks)``."""
        from detflow.nodes import kernels

        if self.kernel == "classes":
            c = self.classes
            assert c is not None
            sums = np.zeros((tile.shape[0], c.count), dtype=np.float64)
            zero = _accumulator(tile.dtype)
            run = kernels.class_sums_parallel if self.parallel else kernels.class_sums
            run(tile, c.starts, c.stops, c.labels, zero, sums)
            if c.sparse_combine:
                indptr, indices, data = c.weights_csr
                acc = np.zeros(out.shape, dtype=np.float64)
                kernels.combine_sparse(sums, indptr, indices, data, acc)
                out += acc
            else:
                out += sums @ c.weights
        elif self.kernel == "sparse":
            csr = self._csr()
            if csr.dtype.kind in "biuf" and tile.dtype.kind in "biuf":
                acc = np.zeros(out.shape, dtype=np.float64)
                kernels.csr_rows_dot(tile, csr.indptr, csr.indices, csr.data, acc)
                out += acc
            else:
                out += (csr @ tile.T).T
        elif self.kernel == "rows":
            rows = _rows_of(self.stack)
            if tile.dtype.kind in "biuf" and rows.dtype == np.float32:
                kernels.dense_rows_dot32(tile, rows, out)
            elif tile.dtype.kind in "biuf" and rows.dtype.kind in "biuf":
                kernels.dense_rows_dot64(tile, rows.astype(np.float64, copy=False), out)
            else:
                out += tile @ rows.T
        else:
            dense = self._dense()
            data = tile if tile.dtype == dense.dtype else tile.astype(dense.dtype)
            out += data @ dense


def _accumulator(dtype: np.dtype) -> Any:
    if dtype.kind in "biu" and not (dtype.kind == "u" and dtype.itemsize == 8):
        return np.int64(0)
    if dtype == np.float32:
        return np.float32(0)
    return np.float64(0)


def _dense_of(stack: MaskStack) -> np.ndarray:
    if stack.dense is not None:
        return stack.dense
    return _cached(stack, "_dense", lambda: np.ascontiguousarray(stack.csr.toarray().T))


def _rows_of(stack: MaskStack) -> np.ndarray:
    if stack.dense is not None:
        return stack.rows
    return _cached(stack, "_rows", lambda: np.ascontiguousarray(stack.csr.toarray()))


def _csr_of(stack: MaskStack) -> Any:
    if stack.csr is not None:
        return stack.csr
    import scipy.sparse as sp

    dense = stack.dense
    assert dense is not None
    return _cached(stack, "_csr", lambda: sp.csr_array(np.ascontiguousarray(dense.T)))


def _cached(stack: MaskStack, name: str, make: Any) -> Any:
    value = stack.__dict__.get(name)
    if value is None:
        value = make()
        object.__setattr__(stack, name, value)  # frozen dataclass: a cache, not state
    return value


def plan_masks(stack: MaskStack, *, kernel: str = "auto", parallel: bool = False) -> MaskPlan:
    """The kernel for ``stack``: the cheapest by :data:`COSTS` (``"auto"``), or ``kernel``.

    ``parallel`` spreads the frames of a tile over numba's threads (the class kernel);
    executors that already run one partition per core leave it off.
    """
    if kernel != "auto" and kernel not in KERNELS:
        raise ParameterError("kernel", f"must be one of {['auto', *KERNELS]}; got {kernel!r}")
    count = stack.count
    n_pixels = int(stack.dense.shape[0]) if stack.dense is not None else int(stack.csr.shape[1])
    nnz = int(np.count_nonzero(stack.dense)) if stack.dense is not None else int(stack.csr.nnz)
    classes = None
    if kernel in ("auto", "classes"):
        if stack.dense is not None:
            classes = mask_classes(stack.dense)
        elif n_pixels * count <= _DENSE_ANALYSIS_ENTRIES or kernel == "classes":
            classes = mask_classes(_dense_of(stack))
        if classes is None and kernel == "classes":
            raise ParameterError("kernel", f"'classes' needs masks of at most {MAX_CLASSES} distinct pixel "
                                 "weight combinations; these masks have more (use 'auto', 'sparse' or 'blas')")
    c = COSTS
    est = {
        "sparse": nnz * c["sparse_entry"],
        "blas": n_pixels * (c["blas_pixel"] + count * c["blas_entry"]),
    }
    itemsize = stack.dense.dtype.itemsize if stack.dense is not None else 4
    if n_pixels * count * itemsize <= ROWS_MAX_BYTES or kernel == "rows":
        est["rows"] = n_pixels * (c["rows_pixel"] + count * c["rows_entry"])
    if classes is not None:
        est["classes"] = (classes.covered * c["classes_pixel"] + len(classes.starts) * c["classes_run"]
                          + classes.combine_cost())
    chosen = kernel if kernel != "auto" else min(est, key=est.__getitem__)
    plan = MaskPlan(kernel=chosen, stack=stack, classes=classes if chosen == "classes" else None,
                    estimates={k: round(v / 1000, 3) for k, v in est.items()}, parallel=parallel)
    log.debug("%r chosen (%s); estimated us per frame: %s", plan, "forced" if kernel != "auto" else "auto",
              plan.estimates)
    return plan


_CACHE: OrderedDict[bytes, Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: stacks and plans kept per process: 256 masks of 256 x 256 pixels hold 64 MiB
CACHE_SIZE = 6

T = TypeVar("T")


def cached(key: Any, make: Callable[[], T]) -> T:
    """``make()``, or what it made before for an equal ``key`` in this process.

    Masks and their plan are the same for every partition of a run, and worth keeping:
    256 masks take a third of a second to make and analyse, and the UDF is rebuilt
    for every partition. ``key`` is anything picklable that determines the result
    (the factories or declarations of the masks, the signal shape, the options); a
    key that cannot be pickled (a lambda) is not cached.
    """
    try:
        digest = pickle.dumps(key, protocol=5)
    except Exception:  # lambdas, local functions: made afresh each time
        return make()
    with _CACHE_LOCK:
        value = _CACHE.get(digest)
        if value is not None:
            _CACHE.move_to_end(digest)
            return value
    value = make()
    with _CACHE_LOCK:
        _CACHE[digest] = value
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value
