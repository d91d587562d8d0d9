"""Export a loaded dataset to ``.npy`` or zarr, partition by partition.

What is written is the dataset as loaded: its nav and sig shape, ``sync_offset``
applied, native dtype. The partitions run on the context's executor:

* ``.npy``: the file is created (header and size) on the driver; each partition task
  opens it memory-mapped and writes its own frames, so no data returns to the driver.
* zarr (v3): each task reads its partition and hands it back; the driver writes it.
  Zarr chunks hold whole bands of scan rows, and partitions need not line up with
  them, so writes from one place keep two tasks from rewriting the same chunk.

Both are written under a temporary name beside ``path`` and renamed into place
when complete, so a failed export leaves any earlier file at ``path`` untouched.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.errors import ConfigurationError
from detflow.sources.base import Partition, PartitionPlan, Source
from detflow.sources.chunked import nav_hyperslabs

if TYPE_CHECKING:
    from detflow.executors.base import Executor

__all__ = ["export_dataset"]

#: target bytes of one zarr chunk of the export
ZARR_CHUNK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class _Task:
    partition: Partition
    npy_path: str | None  # None: return the data to the driver


def _run(task: _Task) -> tuple[slice, np.ndarray | None]:
    part = task.partition
    data = part.read()
    if task.npy_path is None:
        return part.frames, np.ascontiguousarray(data)
    mm = np.load(task.npy_path, mmap_mode="r+")
    flat = mm.reshape((-1, *part.meta.sig_shape))
    flat[part.frames] = data
    mm.flush()
    del mm
    return part.frames, None


def _format_of(path: str) -> str:
    lower = path.lower().rstrip("/")
    if lower.endswith(".npy"):
        return "npy"
    if lower.endswith(".zarr") or os.path.isdir(path):
        return "zarr"
    raise ConfigurationError(
        f"export_dataset: parameter 'path': the suffix says the format: '.npy' or '.zarr'; got {path!r}"
    )


def _zarr_chunks(nav: tuple[int, ...], sig: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    row_bytes = math.prod(nav[1:]) * math.prod(sig) * itemsize
    c0 = max(1, min(nav[0], ZARR_CHUNK_BYTES // max(1, row_bytes)))
    return (c0, *nav[1:], *sig)


def export_dataset(
    dataset: Source,
    path: str | os.PathLike[str],
    *,
    executor: Executor,
    progress: bool = False,
    overwrite: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> str:
    """Write ``dataset`` to ``path`` (``.npy`` or ``.zarr``); see the module docstring.

    ``provenance`` (a JSON-able mapping: how the output was made) goes into a zarr
    store's attributes, or into ``<path>.provenance.json`` next to an ``.npy`` file,
    where :func:`detflow.graph.provenance.read_provenance` finds it."""
    from tqdm.auto import tqdm

    path = os.fspath(path)
    fmt = _format_of(path)
    if os.path.exists(path) and not overwrite:
        raise ConfigurationError(
            f"export_dataset: {path!r} exists; pass overwrite=True to replace it"
        )
    meta = dataset.meta
    shape = (*meta.nav_shape, *meta.sig_shape)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path.rstrip('/'))}.partial")
    _remove(tmp)
    zarr_array: Any = None
    if fmt == "npy":
        np.lib.format.open_memmap(tmp, mode="w+", dtype=meta.dtype, shape=shape).flush()
    else:
        import zarr

        zarr_array = zarr.create_array(
            tmp, shape=shape, dtype=meta.dtype,
            chunks=_zarr_chunks(meta.nav_shape, meta.sig_shape, meta.dtype.itemsize),
            config={"write_empty_chunks": True},  # every chunk on disk: a missing one means a broken store
        )
    fpp, nparts = getattr(dataset, "partition_sizing", (None, None))
    plan = PartitionPlan(frames_per_partition=fpp, num_partitions=nparts, min_partitions=executor.n_workers)
    tasks = [_Task(p, tmp if fmt == "npy" else None) for p in dataset.partitions(plan)]
    try:
        desc = f"export {os.path.basename(path)}"
        with tqdm(total=meta.n_frames, disable=not progress, unit="frame", desc=desc) as bar:
            for frames, data in executor.map_unordered(_run, tasks):
                if data is not None:
                    pos = 0
                    for n, sel in nav_hyperslabs(frames.start, frames.stop, meta.nav_shape):
                        region = data[pos : pos + n]
                        zarr_array[sel] = region.reshape(
                            tuple(len(range(*s.indices(d))) for s, d in zip(sel, meta.nav_shape, strict=True))
                            + meta.sig_shape
                        )
                        pos += n
                bar.update(frames.stop - frames.start)
    except BaseException:
        _remove(tmp)
        raise
    if zarr_array is not None and provenance is not None:
        zarr_array.attrs["provenance"] = dict(provenance)
    _remove(path)
    os.replace(tmp, path)
    if fmt == "npy" and provenance is not None:  # the sidecar name of graph.provenance.sidecar_path
        with open(path + ".provenance.json", "w", encoding="utf-8") as f:
            json.dump(dict(provenance), f, indent=1)
    return path


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
