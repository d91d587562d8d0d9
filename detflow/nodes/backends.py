"""Array backends: which array type a UDF's input arrives in, as LiberTEM's ``BACKEND_*``.

A UDF lists the backends it can take (:meth:`UDF.get_backends`); a run may restrict
them (``run_udf(backends=...)``). Per UDF the runner picks one (:func:`choose_backend`):

1. the input's own backend, if the UDF takes it (no conversion at all);
2. else the first backend in LiberTEM's priority order (:data:`BACKEND_ALL`) that the
   UDF takes, the run allows, and this machine has (CuPy backends need a GPU, which
   detflow does not drive: they are never chosen);
3. else the run fails before any data is read, naming the UDF and the backends.

Tiles are converted once per (dtype, backend) and shared by every UDF that wants them.
Sparse backends follow LiberTEM's layout: ``scipy.sparse`` matrices are 2-D, with the
signal dimensions flattened (``(n_frames, prod(sig))``); ``sparse.COO``/``GCXS`` keep
the tile's shape. Results computed from them go into dense buffers through
:func:`make_like` (``UDF.forbuf``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from detflow.errors import UDFError, import_optional

__all__ = [
    "BACKEND_ALL",
    "CPU_BACKENDS",
    "D2_BACKENDS",
    "SPARSE_BACKENDS",
    "choose_backend",
    "get_backend",
    "make_like",
    "to_backend",
    "to_numpy",
]

NUMPY = "numpy"
CUDA = "cuda"
CUPY = "cupy"
SPARSE_COO = "sparse.COO"
SPARSE_GCXS = "sparse.GCXS"
SPARSE_DOK = "sparse.DOK"
SCIPY_COO = "scipy.sparse.coo_matrix"
SCIPY_CSR = "scipy.sparse.csr_matrix"
SCIPY_CSC = "scipy.sparse.csc_matrix"
SCIPY_COO_ARRAY = "scipy.sparse.coo_array"
SCIPY_CSR_ARRAY = "scipy.sparse.csr_array"
SCIPY_CSC_ARRAY = "scipy.sparse.csc_array"
CUPY_SCIPY_COO = "cupyx.scipy.sparse.coo_matrix"
CUPY_SCIPY_CSR = "cupyx.scipy.sparse.csr_matrix"
CUPY_SCIPY_CSC = "cupyx.scipy.sparse.csc_matrix"

#: every backend, in LiberTEM's priority order (scipy.sparse first, pydata sparse last)
BACKEND_ALL: tuple[str, ...] = (
    CUPY_SCIPY_CSR, CUPY_SCIPY_CSC, CUPY_SCIPY_COO,
    SCIPY_COO_ARRAY, SCIPY_CSC_ARRAY, SCIPY_CSR_ARRAY,
    SCIPY_CSR, SCIPY_CSC, SCIPY_COO,
    CUPY, NUMPY,
    SPARSE_COO, SPARSE_GCXS,
)
CUPY_BACKENDS = frozenset((CUPY, CUPY_SCIPY_COO, CUPY_SCIPY_CSR, CUPY_SCIPY_CSC))
CUDA_BACKENDS = CUPY_BACKENDS | {CUDA}
CPU_BACKENDS = frozenset((
    NUMPY, SPARSE_COO, SPARSE_GCXS, SPARSE_DOK, SCIPY_COO, SCIPY_CSR, SCIPY_CSC,
    SCIPY_COO_ARRAY, SCIPY_CSR_ARRAY, SCIPY_CSC_ARRAY,
))
BACKENDS = CPU_BACKENDS | CUDA_BACKENDS
D2_BACKENDS = frozenset((
    SCIPY_COO, SCIPY_CSR, SCIPY_CSC, SCIPY_COO_ARRAY, SCIPY_CSR_ARRAY, SCIPY_CSC_ARRAY,
    CUPY_SCIPY_COO, CUPY_SCIPY_CSR, CUPY_SCIPY_CSC,
))
ND_BACKENDS = frozenset((NUMPY, CUDA, CUPY, SPARSE_COO, SPARSE_GCXS, SPARSE_DOK))
SPARSE_BACKENDS = frozenset((
    SPARSE_COO, SPARSE_GCXS, SPARSE_DOK, SCIPY_COO, SCIPY_CSR, SCIPY_CSC,
    SCIPY_COO_ARRAY, SCIPY_CSR_ARRAY, SCIPY_CSC_ARRAY, CUPY_SCIPY_COO, CUPY_SCIPY_CSR, CUPY_SCIPY_CSC,
))
DENSE_BACKENDS = BACKENDS - SPARSE_BACKENDS
#: what this process can produce (detflow runs on CPUs)
AVAILABLE = CPU_BACKENDS


def _as_tuple(backends: Any) -> tuple[str, ...]:
    if backends is None:
        return ()
    if isinstance(backends, str):
        return (backends,)
    return tuple(backends)


def get_backend(arr: Any) -> str:
    """The backend name of ``arr`` (``"numpy"`` for anything dense)."""
    mod = type(arr).__module__
    if mod.startswith("scipy.sparse"):
        return f"scipy.sparse.{type(arr).__name__}"
    if mod.startswith("sparse"):
        return f"sparse.{type(arr).__name__}"
    return NUMPY


def choose_backend(
    udf_backends: Iterable[str], user_backends: Any = None, native: str = NUMPY, *, udf_name: str = "UDF"
) -> str:
    """The backend a UDF gets its input in (see the module docstring)."""
    offered = tuple(_as_tuple(udf_backends)) or (NUMPY,)
    unknown = [b for b in offered if b not in BACKENDS]
    if unknown:
        raise ValueError(f"{udf_name}.get_backends() returned unknown backend(s) {unknown}; "
                         f"known: {sorted(BACKENDS)}")
    allowed = set(offered)
    user = _as_tuple(user_backends)
    if user:
        allowed &= set(user)
    allowed &= AVAILABLE
    if native in allowed:
        return native
    for b in BACKEND_ALL:
        if b in allowed:
            return b
    raise UDFError(
        f"{udf_name}: no array backend to run on: the UDF takes {list(offered)}"
        + (f", the run allows {list(user)}" if user else "")
        + f", this machine provides {sorted(AVAILABLE)}"
    )


def to_numpy(arr: Any) -> np.ndarray:
    """Any supported array as a dense numpy array (same shape)."""
    if isinstance(arr, np.matrix):  # what scipy.sparse reductions return
        return np.asarray(arr)
    if isinstance(arr, np.ndarray):
        return arr
    if hasattr(arr, "toarray"):  # scipy.sparse
        return np.asarray(arr.toarray())
    if hasattr(arr, "todense"):  # pydata sparse
        return np.asarray(arr.todense())
    return np.asarray(arr)


def to_backend(arr: Any, backend: str) -> Any:
    """``arr`` (a tile, frames first) converted to ``backend``; see the module docstring."""
    if backend in (NUMPY, CUDA):
        return to_numpy(arr)
    if backend in D2_BACKENDS:
        sp = import_optional("scipy.sparse", f"the {backend} backend")
        flat = arr.reshape((arr.shape[0], -1)) if arr.ndim != 2 else arr
        if not isinstance(flat, np.ndarray) and not sp.issparse(flat):
            flat = to_numpy(flat).reshape((arr.shape[0], -1))
        return getattr(sp, backend.rsplit(".", 1)[1])(flat)
    if backend in (SPARSE_COO, SPARSE_GCXS, SPARSE_DOK):
        sparse = import_optional("sparse", f"the {backend} backend")
        cls = getattr(sparse, backend.split(".", 1)[1])
        if isinstance(arr, np.ndarray):
            return cls.from_numpy(arr)
        return cls(sparse.COO.from_scipy_sparse(arr) if hasattr(arr, "tocoo") else arr)
    raise UDFError(f"array backend {backend!r} is not available in detflow; available: {sorted(AVAILABLE)}")


def make_like(arr: Any, target: np.ndarray) -> Any:
    """``arr`` made assignable to ``target``: dense, and reshaped where sig was flattened.

    A no-op for numpy arrays whose shape already fits (broadcasting is kept).
    """
    if isinstance(arr, np.ndarray) and not isinstance(arr, np.matrix):
        if arr.size == target.size and arr.shape != target.shape and arr.ndim != target.ndim:
            return arr.reshape(target.shape)
        return arr
    if np.isscalar(arr):
        return arr
    dense = to_numpy(arr)
    if dense.size == target.size:
        return dense.reshape(target.shape)
    return dense


#: the CPU backends the built-in UDFs take (numpy first: dense data is never converted)
BUILTIN_BACKENDS: tuple[str, ...] = (
    NUMPY, SCIPY_CSR, SCIPY_CSC, SCIPY_COO, SCIPY_CSR_ARRAY, SCIPY_CSC_ARRAY, SCIPY_COO_ARRAY,
    SPARSE_COO, SPARSE_GCXS,
)


def is_sparse(arr: Any) -> bool:
    """Whether ``arr`` is a scipy.sparse or pydata sparse array."""
    return get_backend(arr) in SPARSE_BACKENDS


def as_scipy_2d(tile: Any) -> Any:
    """A sparse tile as a scipy CSR matrix ``(n_frames, n_pixels)``."""
    sp = import_optional("scipy.sparse", "sparse tiles")
    if sp.issparse(tile):
        return sp.csr_matrix(tile)
    flat = tile.reshape((tile.shape[0], -1))
    return sp.csr_matrix(flat.tocsr() if hasattr(flat, "tocsr") else flat.to_scipy_sparse())


def sparse_to_backend(tile: Any, backend: str, sig_shape: tuple[int, ...]) -> Any:
    """A sparse tile (scipy 2-D or pydata) in another sparse ``backend``, never densified.

    scipy.sparse backends get ``(n_frames, prod(sig))``, pydata sparse ones ``(n_frames, *sig)``.
    """
    if get_backend(tile) == backend:
        return tile
    if backend in D2_BACKENDS:
        sp = import_optional("scipy.sparse", f"the {backend} backend")
        return getattr(sp, backend.rsplit(".", 1)[1])(as_scipy_2d(tile))
    sparse = import_optional("sparse", f"the {backend} backend")
    coo = tile if isinstance(tile, sparse.SparseArray) else sparse.COO.from_scipy_sparse(tile)
    coo = sparse.COO(coo).reshape((tile.shape[0], *sig_shape))
    return coo if backend == SPARSE_COO else getattr(sparse, backend.split(".", 1)[1])(coo)


def dense_tile(tile: Any, sig_shape: tuple[int, ...]) -> np.ndarray:
    """Any tile as a dense ``(n_frames, *sig_shape)`` array (sparse input is densified)."""
    arr = to_numpy(tile)
    return arr.reshape((arr.shape[0], *sig_shape))
