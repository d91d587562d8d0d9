"""Integrate frames over masks (LiberTEM's ``ApplyMasksUDF``).

The product of a tile ``(n_frames, n_pixels)`` with the mask stack, per tile:

* dense masks: up to four, a numba kernel reads the native tile and sums in float32
  (15 GB/s of uint16 input for 3 masks on one core, against 5 GB/s for conversion +
  ``sgemm``); more, the tile is converted to the mask dtype and multiplied with BLAS
  (about 4 GB/s for 16 masks, where a numba loop managed 0.6). BLAS runs one thread
  per call under the threaded executor, which already runs partitions in parallel.
* sparse masks: a numba kernel over the CSR rows of the masks reads only the pixels
  the masks cover, without converting the tile (scipy for complex masks).

``ApplyMasksUDF`` itself chooses among these and a class-accumulation kernel for binary
or few-valued masks (:mod:`detflow.nodes.mask_plan`; ``kernel=`` forces one);
:func:`apply_mask_stack` above is the dense/sparse product other UDFs use.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from detflow.errors import ParameterError
from detflow.nodes import backends as bk
from detflow.nodes.base import UDF, BufferDecl, UDFMeta
from detflow.nodes.mask_plan import KERNELS, MaskPlan, cached, plan_masks
from detflow.nodes.masks import MaskStack, check_mask_spec, make_mask_stack, mask_from_spec
from detflow.nodes.params import Param, one_of
from detflow.nodes.sum import tile_2d
from detflow.sources.base import Shape

__all__ = ["ApplyMasksUDF", "apply_mask_stack"]

_SPARSE_CHOICES = (None, False, True, "scipy.sparse", "scipy.sparse.csc", "sparse.pydata")
#: up to this many dense masks a numba kernel on the native tile beats convert + BLAS
KERNEL_MAX_MASKS = 4


def apply_mask_stack(tile: np.ndarray, stack: MaskStack, out: np.ndarray) -> None:
    """``out += tile_2d(tile) @ masks``; ``out`` is ``(n_frames, n_masks)``.

    A sparse tile (scipy.sparse or pydata sparse) is multiplied as CSR, reading only
    its stored pixels, whatever the masks are.
    """
    if bk.is_sparse(tile):
        t_csr = bk.as_scipy_2d(tile)
        prod = t_csr @ stack.dense if stack.dense is not None else (t_csr @ stack.csr.T).toarray()
        out += np.asarray(prod).astype(out.dtype, copy=False)
        return
    t2 = tile_2d(tile)
    if stack.dense is not None:
        dense = stack.dense
        if stack.count <= KERNEL_MAX_MASKS and t2.dtype.kind in "biuf" and dense.dtype.kind == "f":
            from detflow.nodes import kernels

            if dense.dtype == np.float32:
                kernels.dense_rows_dot32(t2, stack.rows, out)
            else:
                kernels.dense_rows_dot64(t2, stack.rows.astype(np.float64, copy=False), out)
            return
        data = t2 if t2.dtype == dense.dtype else t2.astype(dense.dtype)
        # BLAS threads: the threaded executor holds them to one while several tiles run at once
        out += data @ dense
        return
    csr = stack.csr
    if csr.dtype.kind in "biuf" and t2.dtype.kind in "biuf":
        from detflow.nodes import kernels

        acc = np.zeros(out.shape, dtype=np.float64)
        kernels.csr_rows_dot(t2, csr.indptr, csr.indices, csr.data, acc)
        out += acc
    else:
        out += (csr @ t2.T).T


def _file_stamp(path: Any) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


def _factories(value: Any) -> str | None:
    if callable(value) or (isinstance(value, Iterable) and all(callable(f) for f in value)):
        return None
    return f"must be a callable or a list of callables; got {value!r}"


def _specs(value: Any) -> str | None:
    if not isinstance(value, list | tuple) or not value:
        return f"must be a non-empty list of mask declarations; got {value!r}"
    for i, spec in enumerate(value):
        problem = check_mask_spec(spec, i)
        if problem:
            return problem
    return None


class ApplyMasksUDF(UDF):
    """Integrate each frame over each mask: ``intensity``, ``nav`` with ``(n_masks,)``.

    Parameters
    ----------
    mask_factories
        A callable returning one sig-shaped mask or a stack ``(n, *sig_shape)``, or a
        list of callables each returning one mask; dense numpy, ``scipy.sparse`` or
        pydata ``sparse`` arrays.
    masks
        Instead of ``mask_factories``: masks declared as data, as graph files hold
        them, e.g. ``[{"type": "circular", "cx": 64, "cy": 64, "r": 20},
        {"type": "ring", "cx": 64, "cy": 64, "r": 60, "ri": 30}]``; types
        ``circular``, ``ring``, ``rectangular`` (x, y, width, height) and ``npy`` (path).
    use_sparse
        ``None``: sparse product if every mask is sparse; ``False``: dense; ``True`` or
        a LiberTEM backend name: sparse.
    mask_count, mask_dtype
        Number and dtype of the masks, if known without calling the factories.
    preferred_dtype
        Base dtype of the computation instead of float32.
    backends, use_torch
        Accepted for LiberTEM compatibility; only numpy runs.
    kernel
        ``"auto"`` (default): the cheapest of ``"classes"``, ``"sparse"``, ``"rows"``
        and ``"blas"`` for these masks (:mod:`detflow.nodes.mask_plan`); or one of them,
        forced. :meth:`plan` shows the choice.
    shifts
        Per-frame mask shifts: not supported, must be ``None``.

    Examples
    --------
    >>> from detflow.nodes.masks import circular
    >>> udf = ApplyMasksUDF(mask_factories=[lambda: circular(8, 8, 16, 16, 4)])
    >>> res = ctx.run_udf(dataset=ds, udf=udf)
    >>> res["intensity"].data.shape == (*ds.shape.nav, 1)
    True
    """

    sig_cut_tiles = False  # whole frames: the kernels read every pixel of a frame at once

    params_spec = (
        Param("mask_factories", object, default=None, doc="callable(s) making the masks", check=_factories),
        Param("masks", object, default=None, doc="masks declared as data (graph files)", check=_specs),
        Param("use_torch", bool, default=True, doc="ignored (LiberTEM compatibility)"),
        Param("use_sparse", object, default=None, check=one_of(*_SPARSE_CHOICES)),
        Param("mask_count", int, default=None, doc="number of masks, if known"),
        Param("mask_dtype", "dtype", default=None, doc="dtype of the masks, if known"),
        Param("preferred_dtype", "dtype", default=None, doc="base dtype instead of float32"),
        Param("backends", object, default=None,
              doc="array backends to take the input in (default: numpy, scipy.sparse, pydata sparse)"),
        Param("shifts", object, default=None, doc="not supported; must be None"),
        Param("kernel", str, default="auto", doc="'auto' or one of " + ", ".join(KERNELS),
              check=one_of("auto", *KERNELS)),
    )
    extra_dims = {"intensity": ("mask",)}
    buffer_attrs = {"intensity": {"long_name": "masked intensity", "units": "counts"}}

    def __init__(
        self,
        mask_factories: Callable[[], Any] | Iterable[Callable[[], Any]] | None = None,
        use_torch: bool = True,
        use_sparse: Any = None,
        mask_count: int | None = None,
        mask_dtype: Any = None,
        preferred_dtype: Any = None,
        backends: Any = None,
        shifts: Any = None,
        masks: list[dict[str, Any]] | None = None,
        kernel: str = "auto",
    ) -> None:
        if shifts is not None:
            raise ParameterError("shifts", "(per-frame mask shifts) is not supported by detflow")
        if (mask_factories is None) == (masks is None):
            raise ParameterError("mask_factories", "give either mask_factories or masks (declared as data)")
        if mask_factories is not None and not callable(mask_factories):
            mask_factories = list(mask_factories)
        super().__init__(
            mask_factories=mask_factories,
            masks=None if masks is None else list(masks),
            use_torch=use_torch,
            use_sparse=use_sparse,
            mask_count=mask_count,
            mask_dtype=mask_dtype,
            preferred_dtype=preferred_dtype,
            backends=backends,
            shifts=shifts,
            kernel=kernel,
        )
        self._stack: MaskStack | None = None

    def _factories(self, sig_shape: tuple[int, ...]) -> Any:
        if self.params.masks is None:
            return self.params.mask_factories
        return [functools.partial(mask_from_spec, spec, sig_shape) for spec in self.params.masks]

    def _masks_key(self) -> tuple[Any, ...]:
        """What determines the masks, for the per-process cache of stacks and plans."""
        p = self.params
        factories = p.mask_factories if p.masks is None else None
        files = [_file_stamp(spec["path"]) for spec in p.masks or () if spec.get("type") == "npy"]
        return (factories, p.masks, files, p.use_sparse, p.mask_dtype)

    def _make_stack(self, sig: tuple[int, ...]) -> MaskStack:
        """The masks for frames of ``sig``, made once per process for equal parameters.

        Factories are taken to be pure (equal arguments, equal masks), as they must be
        for every partition to see the same masks; a declared ``npy`` mask is made again
        when its file changes.
        """
        p = self.params
        key = ("ApplyMasksUDF.stack", self._masks_key(), sig)
        return cached(key, lambda: make_mask_stack(self._factories(sig), sig, use_sparse=p.use_sparse,
                                                   dtype=p.mask_dtype))

    def _masks(self, sig_shape: tuple[int, ...] | None = None) -> MaskStack:
        if self._stack is None:
            sig = tuple(sig_shape if sig_shape is not None else self.meta.sig_shape)
            self._stack = self._make_stack(sig)
        return self._stack

    def validate(self, meta: Any) -> None:
        super().validate(meta)
        sig = tuple(meta.sig_shape)
        if self.params.masks is not None and len(sig) != 2:
            raise ParameterError("masks", f"declared masks need a 2-D signal; the data has sig_shape {sig}")
        declared = self.params.masks is not None
        try:
            stack = self._make_stack(sig)
        except ParameterError as err:
            if not declared:
                raise
            raise ParameterError("masks", err.reason) from err
        except (OSError, ValueError) as err:  # e.g. an npy mask file that cannot be read
            if not declared:
                raise
            raise ParameterError("masks", f"cannot make the masks: {err}") from err
        for i, spec in enumerate(self.params.masks or ()):  # a mask off the frame sums nothing: all zeros
            if spec.get("type") != "npy" and not mask_from_spec(spec, sig).any():
                raise ParameterError("masks", f"mask {i} ({spec['type']}) has no pixel inside the "
                                              f"{sig[0]}x{sig[1]} frame: {spec}")
        count = self.params.mask_count
        if count is not None and count != stack.count:
            raise ParameterError("mask_count", f"must match the masks made ({stack.count}); got {count}")

    def get_preferred_input_dtype(self) -> Any:
        return self.USE_NATIVE_DTYPE

    def result_coords(self) -> dict[str, list[Any]]:
        """The mask axis labelled with each declared mask's ``name`` (default
        ``{type}_{index}``), or ``mask_{index}`` for mask factories."""
        if self.params.masks is not None:
            return {"mask": [s.get("name", f"{s['type']}_{i}") for i, s in enumerate(self.params.masks)]}
        count = self.params.mask_count if self.params.mask_count is not None else self._masks().count
        return {"mask": [f"mask_{i}" for i in range(count)]}

    def _result_dtype(self) -> np.dtype:
        p = self.params
        mask_dtype = p.mask_dtype if p.mask_dtype is not None else self._masks().dtype
        base = np.float32 if p.preferred_dtype is None else p.preferred_dtype
        return np.result_type(self.meta.input_dtype, base, mask_dtype)

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        count = self.params.mask_count
        if count is None:
            count = self._masks().count
        return {"intensity": self.buffer(kind="nav", extra_shape=(count,), dtype=self._result_dtype())}

    def plan(self, sig_shape: tuple[int, ...] | None = None, input_dtype: Any = "uint16") -> MaskPlan:
        """The kernel plan for these masks; its ``repr`` says which kernel runs.

        Inside a run the dataset's geometry is used; outside one, give ``sig_shape``
        (and the input dtype).

        >>> from detflow.nodes.masks import ring
        >>> udf = ApplyMasksUDF(mask_factories=[lambda: ring(128, 128, 256, 256, 60, 40)])
        >>> udf.plan((256, 256)).kernel
        'classes'
        """
        if self.meta is not None:
            return self._plan()
        if sig_shape is None:
            raise ParameterError("sig_shape", "is needed to plan the masks outside a run")
        dtype = np.dtype(input_dtype)
        self.meta = UDFMeta(dataset_shape=Shape((1,), tuple(sig_shape)), dataset_dtype=dtype, input_dtype=dtype)
        try:
            return self._plan()
        finally:
            self.meta = None
            self._stack = None

    def _plan(self) -> MaskPlan:
        p = self.params
        dtype = self._result_dtype()
        parallel = (self.meta.threads_per_worker or 1) > 1

        def make() -> MaskPlan:
            stack = self._masks()
            if stack.dense is not None and stack.dense.dtype != dtype:
                stack = MaskStack(stack.count, stack.dtype, dense=np.ascontiguousarray(stack.dense, dtype))
            return plan_masks(stack, kernel=p.kernel, parallel=parallel)

        key = ("ApplyMasksUDF.plan", self._masks_key(), tuple(self.meta.sig_shape), str(dtype), p.kernel, parallel)
        return cached(key, make)

    def get_task_data(self) -> dict[str, Any]:
        plan = self._plan()
        return {"stack": plan.stack, "plan": plan}

    def get_backends(self) -> Any:
        return bk.BUILTIN_BACKENDS if self.params.backends is None else self.params.backends

    def process_tile(self, tile: np.ndarray) -> None:
        if bk.is_sparse(tile):  # stored pixels only, whatever kernel the dense plan chose
            apply_mask_stack(tile, self.task_data.stack, self.results.intensity)
        else:
            self.task_data.plan.apply(tile_2d(tile), self.results.intensity)
