"""Shared checks for frame nodes: generated blocks of every dtype, read-only inputs,
block-at-a-time against whole-partition, sparse against dense."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from detflow.nodes.frames import FrameNode

DTYPES = ["uint8", "uint16", "uint32", "int16", "float32", "float64"]


def make_block(dtype: Any, n: int, h: int, w: int, *, seed: int = 0, density: float = 1.0) -> np.ndarray:
    """Random frames with values spread over a good part of ``dtype``'s range, read-only."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        data = rng.normal(100.0, 40.0, size=(n, h, w))
    else:
        hi = min(np.iinfo(dtype).max, 5000)
        lo = -hi if dtype.kind == "i" else 0
        data = rng.integers(lo, hi, size=(n, h, w), endpoint=True)
    if density < 1.0:
        data = np.where(rng.random((n, h, w)) < density, data, 0)
    block = data.astype(dtype)
    block.setflags(write=False)
    return block


def apply_checked(node: FrameNode, block: np.ndarray) -> np.ndarray:
    """``node.apply(block)``, checked against ``output_signature`` and for writes into ``block``."""
    before = block.copy()
    shape, dtype = node.output_signature(tuple(block.shape[1:]), block.dtype)
    out = node.apply(block)
    assert out.shape == (block.shape[0], *shape), (out.shape, shape)
    assert out.dtype == dtype, (out.dtype, dtype)
    np.testing.assert_array_equal(block, before)
    return np.asarray(out)


def blockwise(node: FrameNode, block: np.ndarray, sizes: tuple[int, ...] = (1, 2, 3)) -> np.ndarray:
    """The node applied to consecutive pieces of ``block`` of ``sizes`` (then the rest), joined."""
    parts, start = [], 0
    for size in (*sizes, block.shape[0]):
        if start >= block.shape[0]:
            break
        parts.append(node.apply(block[start : start + size]))
        start += size
    return np.concatenate(parts)


def check_sparse(node: FrameNode, block: np.ndarray, *, array_api: bool = False) -> None:
    """The node on a CSR block equals the node on the dense block, and stays CSR."""
    n = block.shape[0]
    kind = sp.csr_array if array_api else sp.csr_matrix
    csr = kind(np.asarray(block).reshape(n, -1))
    out = node.apply(csr, sig_shape=tuple(block.shape[1:]))
    assert sp.issparse(out) and out.format == "csr", type(out)
    assert isinstance(out, sp.sparray) == array_api
    dense = node.apply(block)
    assert out.dtype == dense.dtype, (out.dtype, dense.dtype)
    np.testing.assert_allclose(out.toarray().reshape(dense.shape), dense, rtol=1e-6)
