"""``zarr``: UDF results written to a zarr (v3) store, partition by partition.

Layout: one array per result buffer at the root of the store, named ``{node}_{buffer}``
(just ``{buffer}`` when the sink has one input node). Dims, coordinates and attributes
come from :func:`~detflow.graph.results.buffers_to_xarray`, the function that makes
``g.run()``'s and ``run_udf(...).to_xarray()``'s datasets, so ``xarray.open_zarr(path)``
gives the same dims as in memory (``nav_y, nav_x, yx``; ``mask`` labelled with the mask
names), integer ``nav_*``/``sig_*`` coordinates, ``units``/``long_name`` where known,
plus node, buffer, node type and parameters. Only where two input nodes of one sink
give one dim name different sizes or labels (two mask nodes with different masks)
does the later node's dim get its node's prefix (``b_mask``). Internal accumulators
(the std-dev UDF's ``varsum`` and ``num_frames``) are written only with the sink
parameter ``internal: true``. The root attributes hold the graph name, the source
path (absolute), the detflow version, ``partitions_total``, ``partitions_done``,
``complete`` and ``provenance`` (the graph as run with every parameter, the inputs
with size and modification time: :mod:`detflow.graph.provenance`; ``detflow rerun``
reads it).

When results arrive:

* ``nav`` buffers are created on the first update, filled with NaN (0 for integers),
  and each merged partition's rows are written as it arrives, together with the
  ``valid`` array (True where a result is written). A run killed halfway leaves a
  valid store with every partition finished so far, listed in ``partitions_done``.
* At the end every buffer is written whole (results computed from neighbours, such
  as a divergence, are only final then), ``complete`` becomes true and the metadata
  is consolidated.

Existing paths are refused unless ``overwrite`` is set; then the new store is written
beside the old one (``<path>.partial``) and swapped in only when the run completes,
so an old store is never half overwritten. ``overwrite`` is the user's own flag
(``--overwrite``, ``run(..., overwrite=True)``), never a graph-file parameter, and it
replaces only a zarr store detflow wrote (its root attributes carry ``written_by:
detflow``): any other file or folder at the path is an error naming it.

A run holds its store from ``start`` to ``finish`` with a lock file beside it,
``<path>.lock`` (made with ``O_EXCL``, holding pid, host and start time): a second run
into the same store, with or without ``overwrite``, is refused naming the store and
the run that holds it, before it touches anything. A lock whose process is gone (on
the same host) is taken over. These checks, and the ones above that do not depend on
``overwrite``, also run at validation (``detflow validate``: :func:`check_store_path`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import shutil
import socket
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.errors import ConfigurationError

if TYPE_CHECKING:
    from detflow.graph.events import PassView as Plan
    from detflow.graph.events import RunInfo, Update
    from detflow.graph.results import ResultBuffer, UDFResults

__all__ = ["ZarrSink", "check_store_path"]

#: a stored buffer's dims and attributes
_Layout = tuple[tuple[str, ...], dict[str, Any]]


def _written_by_detflow(path: str) -> bool:
    """Whether ``path`` is a zarr (v3) store whose root says detflow wrote it."""
    try:
        with open(os.path.join(path, "zarr.json")) as f:
            attrs = json.load(f).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(attrs, dict) and (attrs.get("written_by") == "detflow" or "detflow_version" in attrs)


def _check_writable(path: str) -> None:
    """The nearest existing folder above ``path`` is a folder we may write in."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ConfigurationError(f"zarr sink: cannot write {path!r}: {folder!r} is not a writable folder")


def _lock_path(path: str) -> str:
    return path + ".lock"


def _lock_holder(path: str) -> str | None:
    """Who holds the store's lock (``pid N on HOST since T``), or ``None`` when nobody does.

    A lock whose process is gone on this host is stale: removed here."""
    lock = _lock_path(path)
    try:
        with open(lock, encoding="utf-8") as f:
            owner = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"unknown (unreadable lock file {lock!r})"
    pid, host = owner.get("pid"), owner.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
        return None
    return f"pid {pid} on {host} since {owner.get('since', '?')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _busy_error(path: str, holder: str) -> ConfigurationError:
    return ConfigurationError(
        f"zarr sink: {path!r}: another run is writing it ({holder}; lock file {_lock_path(path)!r}); "
        "wait for that run to end, choose another path, or remove the lock file if that run is gone"
    )


def check_store_path(path: str) -> None:
    """What can be told about a store path before a run, whatever ``overwrite`` says: no
    other run holds it, anything there is a store detflow wrote, and the nearest folder
    that exists above it can be written."""
    holder = _lock_holder(path)
    if holder is not None:
        raise _busy_error(path, holder)
    if os.path.lexists(path) and not _written_by_detflow(path):
        raise ConfigurationError(
            f"zarr sink: {path!r} exists and is not a zarr store detflow wrote; --overwrite replaces "
            "only those: move it away or choose another path"
        )
    _check_writable(path)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_jsonable(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return repr(value)


def _row_blocks(start: int, stop: int, nav_shape: tuple[int, ...]) -> list[tuple[slice | int, ...]]:
    """Index tuples into a nav-shaped array covering flat positions ``start:stop``."""
    if len(nav_shape) == 1:
        return [(slice(start, stop),)]
    inner = math.prod(nav_shape[1:])
    blocks: list[tuple[slice | int, ...]] = []
    pos = start
    while pos < stop:
        row, offset = divmod(pos, inner)
        if offset == 0 and stop - pos >= inner:
            rows = (stop - pos) // inner
            blocks.append((slice(row, row + rows),))
            pos += rows * inner
        else:
            end = min(stop, (row + 1) * inner)
            for sub in _row_blocks(offset, end - row * inner, nav_shape[1:]):
                blocks.append((row, *sub))
            pos = end
    return blocks


class ZarrSink:
    """Write the results of ``nodes`` to the zarr store at ``path``.

    Parameters
    ----------
    path
        The store (a folder).
    nodes
        UDF node ids whose results to write.
    overwrite
        Replace an existing store (swapped in only when the run completes).
    attrs
        Extra root attributes.
    internal
        Also write internal accumulators (``varsum`` and ``num_frames`` of the
        std-dev UDF): left out by default.
    """

    def __init__(self, path: str | os.PathLike[str], *, nodes: Sequence[str], overwrite: bool = False,
                 attrs: dict[str, Any] | None = None, node_info: dict[str, dict[str, Any]] | None = None,
                 internal: bool = False) -> None:
        if not isinstance(internal, bool):
            raise TypeError(f"zarr sink {os.fspath(path)!r}: parameter 'internal' must be true or false; "
                            f"got {internal!r}")
        self.internal = internal
        self.path = os.fspath(path)
        self.nodes = list(nodes)
        self.overwrite = overwrite
        self.attrs = dict(attrs or {})
        self.node_info = node_info or {}
        holder = _lock_holder(self.path)
        if holder is not None:
            raise _busy_error(self.path, holder)
        if os.path.exists(self.path) and not overwrite:
            raise ConfigurationError(
                f"zarr sink: {self.path!r} already exists; pass overwrite (--overwrite) to replace it"
            )
        check_store_path(self.path)
        self._locked = False
        self._write_path = self.path + ".partial" if os.path.exists(self.path) else self.path
        self._group: Any = None
        self._arrays: dict[tuple[str, str], Any] = {}
        # per node: {buffer: (dims, attributes)} from buffers_to_xarray, once the node has results
        self._layout: dict[str, dict[str, _Layout]] = {}
        self._coords: dict[str, Any] = {}  # coordinate arrays written, by dim
        self._sizes: dict[str, int] = {}  # every dim in the store
        self._done: list[int] = []

    @classmethod
    def from_node(cls, sink_id: str, inputs: Sequence[str], params: dict[str, Any], *, plan: Plan,
                  overwrite: bool = False) -> ZarrSink:
        params = dict(params)
        if "path" not in params:
            raise TypeError(f"zarr sink {sink_id!r}: parameter 'path' is required")
        from detflow import __version__
        from detflow.graph.model import udf_type_name
        from detflow.graph.results import absolute_source

        known = {n: (udf_type_name(u), u.kwargs) for n, u in plan.udfs}
        known.update({n: (getattr(r, "type_name", type(r).__name__), getattr(r, "kwargs", {}))
                      for n, r, _ in getattr(plan, "results", ())})
        for node in inputs:
            if node not in known:
                raise TypeError(f"zarr sink {sink_id!r}: input {node!r} is not a UDF or result node of the run")
        info = {n: {"type": known[n][0], "params": _jsonable(known[n][1])} for n in inputs}
        attrs = {"graph": plan.name, "detflow_version": __version__,
                 "source": _jsonable(absolute_source(plan.source) or plan.source.describe()),
                 "sink": sink_id}
        from detflow.sinks.base import refuse_overwrite_param

        refuse_overwrite_param(sink_id, "zarr", params)
        return cls(params.pop("path"), nodes=inputs, overwrite=overwrite, attrs=attrs, node_info=info, **params)

    #: what :func:`~detflow.graph.outputs.check_sink_paths` calls at validation
    check_path = staticmethod(check_store_path)

    def record_provenance(self, provenance: dict[str, Any] | None) -> None:
        """Keep how this store is made (the graph as run, its inputs) in the root attributes."""
        if provenance is not None:
            self.attrs["provenance"] = _jsonable(provenance)

    @staticmethod
    def is_complete(path: str | os.PathLike[str]) -> bool:
        """Whether the store at ``path`` was written to the end (its ``complete`` attribute)."""
        try:
            with open(os.path.join(os.fspath(path), "zarr.json"), encoding="utf-8") as f:
                attrs = json.load(f).get("attributes", {})
        except (OSError, ValueError, AttributeError):
            return False
        return attrs.get("complete") is True

    # --- Sink protocol ------------------------------------------------------------
    def start(self, info: RunInfo) -> None:
        import zarr

        self._info = info
        missing = [n for n in self.nodes if n not in info.node_ids]
        if missing:
            raise ConfigurationError(f"zarr sink {self.path!r}: nodes {missing} are not in this run")
        self._lock()
        try:
            if self._write_path == self.path and os.path.lexists(self.path):
                raise ConfigurationError(f"zarr sink: cannot create {self.path!r}: it appeared after the run "
                                         "was checked; pass overwrite (--overwrite) to replace it")
            if self._write_path != self.path and os.path.exists(self._write_path):
                shutil.rmtree(self._write_path)  # a killed run's: the lock says no run writes it now
            self._group = zarr.open_group(self._write_path, mode="w-", zarr_format=3)
        except Exception:
            self._unlock()
            raise
        self._group.attrs.update({**self.attrs, "written_by": "detflow", "partitions_total": info.partitions_total,
                                  "partitions_done": [], "complete": False})
        nav = info.meta.nav_shape
        self._valid = self._group.create_array(
            "valid", shape=nav, dtype=bool, chunks=self._nav_chunks(nav, ()), fill_value=False,
            dimension_names=self._dims("nav", len(nav)), attributes={"kind": "nav"},
        )
        import xarray as xr

        from detflow.graph.results import AXIS_ATTRS

        for dim, size in zip(self._dims("nav", len(nav)), nav, strict=True):
            self._write_coord(dim, xr.Variable((dim,), np.arange(size, dtype=np.int64), attrs=AXIS_ATTRS["nav"]))
            self._sizes[dim] = size

    def update(self, update: Update) -> None:
        buffers = self._selected(update.results)
        meta = self._info.meta
        frames = update.partial.frames
        if not self._arrays:
            self._create_nav_arrays(buffers)
        for (node, name), arr in self._arrays.items():
            buf = buffers[node][name]
            flat = buf.data.reshape((meta.n_frames, *buf.extra_shape))
            self._write_rows(arr, flat, frames.start, frames.stop)
        roi = self._info.roi
        valid = np.ones(meta.n_frames, dtype=bool) if roi is None else roi
        self._write_rows(self._valid, valid, frames.start, frames.stop)
        self._done.extend(update.partial.covered)
        self._group.attrs["partitions_done"] = sorted(self._done)

    def finish(self, results: UDFResults | None) -> None:
        try:
            self._finish(results)
        finally:
            self._unlock()

    def _lock(self) -> None:
        """Hold the store for this run: ``<path>.lock``, made atomically (O_EXCL)."""
        for _ in range(2):  # a second try after a stale lock was removed
            try:
                fd = os.open(_lock_path(self.path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _lock_holder(self.path)
                if holder is not None:
                    raise _busy_error(self.path, holder) from None
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}, f)
            self._locked = True
            return
        raise _busy_error(self.path, "a lock that keeps coming back")

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            with contextlib.suppress(FileNotFoundError):
                os.remove(_lock_path(self.path))

    def _finish(self, results: UDFResults | None) -> None:
        if self._group is None:
            return
        if results is None:  # failed or stopped: keep what was written, say it is incomplete
            self._group.attrs["complete"] = False
            return
        buffers = self._selected(results)
        if not self._arrays:
            self._create_nav_arrays(buffers)
        for node, bufs in buffers.items():
            for name in self._node_layout(node, bufs):
                key = (node, name)
                if key not in self._arrays:
                    self._arrays[key] = self._create(node, name, bufs[name])
                self._arrays[key][...] = bufs[name].data
        self._valid[...] = results.damage.data & (True if self._info.roi is None
                                                  else self._info.roi.reshape(self._info.meta.nav_shape))
        self._group.attrs.update({"complete": True, "partitions_done": sorted(self._done)})
        import zarr

        with warnings.catch_warnings():  # zarr notes that consolidation is not in the v3 spec yet
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(self._write_path)
        if self._write_path != self.path:
            old = self.path + ".old"
            os.replace(self.path, old)
            os.replace(self._write_path, self.path)
            shutil.rmtree(old)

    # --- helpers --------------------------------------------------------------------
    def _selected(self, results: UDFResults) -> dict[str, dict[str, ResultBuffer]]:
        index = {n: i for i, n in enumerate(self._info.node_ids)}
        return {n: results.buffers[index[n]] for n in self.nodes}

    def _name(self, node: str, buffer: str) -> str:
        return buffer if len(self.nodes) == 1 else f"{node}_{buffer}"

    @staticmethod
    def _dims(prefix: str, ndim: int) -> tuple[str, ...]:
        from detflow.graph.results import dim_names

        return dim_names(prefix, ndim)

    @staticmethod
    def _nav_chunks(nav: tuple[int, ...], extra: tuple[int, ...]) -> tuple[int, ...]:
        inner = math.prod(nav[1:]) * max(1, math.prod(extra))
        rows = max(1, min(nav[0], (1 << 20) // max(1, inner)))
        return (rows, *nav[1:], *extra)

    def _create_nav_arrays(self, buffers: dict[str, dict[str, ResultBuffer]]) -> None:
        for node, bufs in buffers.items():
            for name in self._node_layout(node, bufs):
                if bufs[name].kind == "nav":
                    self._arrays[(node, name)] = self._create(node, name, bufs[name])

    def _node_layout(self, node: str, bufs: dict[str, ResultBuffer]) -> dict[str, _Layout]:
        """Dims and attributes of ``node``'s stored buffers, as :func:`buffers_to_xarray`
        gives them; its coordinates are written on the way."""
        if node in self._layout or not bufs:
            return self._layout.get(node, {})
        from detflow.graph.results import buffers_to_xarray

        ds = buffers_to_xarray(bufs, udf=getattr(bufs, "udf", None), internal=self.internal)
        rename = {dim: f"{node}_{dim}" for dim in ds.dims if not self._fits(str(dim), ds)}
        if rename:
            ds = ds.rename(rename)
        for dim, coord in ds.coords.items():
            if dim not in self._coords:
                self._write_coord(str(dim), coord.variable)
        self._sizes.update({str(d): int(n) for d, n in ds.sizes.items()})
        info = _jsonable(self.node_info.get(node, {}))
        self._layout[node] = {
            str(name): (tuple(str(d) for d in var.dims), {"node": node, "buffer": str(name), **var.attrs, **info})
            for name, var in ds.data_vars.items()
        }
        return self._layout[node]

    def _fits(self, dim: str, ds: Any) -> bool:
        """Whether ``dim`` of ``ds`` can share the store's dim of that name: same size, same labels."""
        if dim in self._sizes and self._sizes[dim] != ds.sizes[dim]:
            return False
        if dim in self._coords:
            return dim in ds.coords and list(self._coords[dim]) == list(ds.coords[dim].values)
        return dim not in ds.coords or dim not in self._sizes

    def _write_coord(self, dim: str, var: Any) -> None:
        values = np.asarray(var.values)
        dtype: Any = str if values.dtype.kind in "UO" else values.dtype
        arr = self._group.create_array(dim, shape=values.shape, dtype=dtype, chunks=values.shape or (1,),
                                       dimension_names=(dim,), attributes=_jsonable(dict(var.attrs)))
        arr[...] = values
        self._coords[dim] = values

    def _create(self, node: str, name: str, buf: ResultBuffer) -> Any:
        from detflow.graph.results import fill_value

        dims, attrs = self._layout[node][name]
        chunks = self._nav_chunks(buf.nav_shape, buf.extra_shape) if buf.kind == "nav" else buf.data.shape
        return self._group.create_array(
            self._name(node, name), shape=buf.data.shape, dtype=buf.dtype, chunks=chunks,
            fill_value=fill_value(buf.dtype), dimension_names=dims, attributes=attrs,
        )

    def _write_rows(self, arr: Any, flat: np.ndarray, start: int, stop: int) -> None:
        nav = self._info.meta.nav_shape
        for index in _row_blocks(start, stop, nav):
            block = np.asarray(flat.reshape((*nav, *flat.shape[1:]))[index])
            arr[index] = block
