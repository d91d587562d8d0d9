"""How a store was made: the graph as run, its inputs, detflow's version.

Every store a graph run writes records a *provenance* mapping:

``graph``
    the graph as plain data (what a graph file holds, ``schema_version: 2``) with every
    parameter as it ran: after ``--config`` and ``--set``, sources' paths absolute.
    ``None`` for a graph that a file cannot hold (an array in memory, a UDF object),
    with ``graph_unavailable`` saying why.
``inputs``
    one entry per source with a path: ``path`` (absolute), ``size`` in bytes and
    ``mtime_ns`` (a folder, such as a zarr store: the sum of its files' sizes and the
    latest modification time among them).
``detflow_version``, ``created`` (UTC, ISO 8601), ``cwd`` and ``output_dir``
    what relative paths and ``{output_dir}`` meant.

A zarr store holds it in its root attributes (``provenance``); an ``.npy`` file gets
a sidecar ``<file>.provenance.json`` next to it (:func:`sidecar_path`).
``detflow rerun STORE`` reads it back (:func:`read_provenance`), checks the inputs
(:func:`changed_inputs`) and runs the graph again (:mod:`detflow.rerun`).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from typing import Any

from detflow.errors import ConfigurationError, GraphValidationError
from detflow.graph.io import graph_to_dict
from detflow.graph.model import GraphModel, SourceNode

__all__ = ["changed_inputs", "conversion_provenance", "input_stamp", "read_provenance", "run_provenance",
           "sidecar_path"]

SIDECAR_SUFFIX = ".provenance.json"


def sidecar_path(path: str | os.PathLike[str]) -> str:
    """Where the provenance of a single-file output (``.npy``) is written."""
    return os.fspath(path) + SIDECAR_SUFFIX


def input_stamp(path: str) -> dict[str, Any]:
    """``{path, size, mtime_ns}`` of a file, or of a folder's files taken together."""
    path = os.path.abspath(path)
    st = os.stat(path)
    if not os.path.isdir(path):
        return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    size, mtime = 0, st.st_mtime_ns
    for folder, _, files in os.walk(path):
        for name in files:
            fst = os.stat(os.path.join(folder, name))
            size += fst.st_size
            mtime = max(mtime, fst.st_mtime_ns)
    return {"path": path, "size": size, "mtime_ns": mtime}


def _source_paths(node: SourceNode) -> list[str]:
    path = node.params.get("path") if node.obj is None else getattr(node.obj, "path", None)
    if path is None:
        return []
    paths = path if isinstance(path, list | tuple) else [path]
    return [os.path.abspath(os.fspath(p)) for p in paths if isinstance(p, str | os.PathLike)]


def run_provenance(graph: GraphModel, *, output_dir: str) -> dict[str, Any]:
    """The provenance of a run of ``graph`` (as resolved: overrides applied), taken now."""
    from detflow import __version__

    record: dict[str, Any] = {"detflow_version": __version__,
                              "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                              "cwd": os.getcwd(), "output_dir": os.path.abspath(output_dir)}
    try:
        spec = graph_to_dict(graph)
    except GraphValidationError as err:
        record["graph"] = None
        record["graph_unavailable"] = str(err)
    else:
        for body in spec.get("sources", {}).values():
            path = body.get("params", {}).get("path")
            if isinstance(path, str):
                body["params"]["path"] = os.path.abspath(path)
            elif isinstance(path, list) and all(isinstance(p, str) for p in path):
                body["params"]["path"] = [os.path.abspath(p) for p in path]
        record["graph"] = spec
    inputs = []
    for node in graph:
        if isinstance(node, SourceNode):
            for path in _source_paths(node):
                try:
                    inputs.append({"node": node.id, **input_stamp(path)})
                except OSError:  # the source reports a missing file better, when it opens
                    inputs.append({"node": node.id, "path": path})
    record["inputs"] = inputs
    return record


def conversion_provenance(kind: str, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance of ``detflow convert`` (:func:`detflow.export.export_dataset`): no graph
    ran, so ``conversion`` records the source as loaded (``type`` and ``params``, the path
    absolute) and ``detflow rerun`` converts again from it."""
    from detflow import __version__

    record: dict[str, Any] = {
        "detflow_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cwd": os.getcwd(),
        "graph": None,
        "graph_unavailable": "written by detflow convert (a copy of the data), not by a graph run",
        "conversion": {"type": kind, "params": {**params, "path": os.path.abspath(path)}},
    }
    try:
        record["inputs"] = [{"node": "source", **input_stamp(path)}]
    except OSError:
        record["inputs"] = [{"node": "source", "path": os.path.abspath(path)}]
    return record


def read_provenance(store: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance recorded in ``store``: a zarr store, an ``.npy`` file (its sidecar)
    or the sidecar itself."""
    store = os.fspath(store)
    if os.path.isdir(store):
        where = os.path.join(store, "zarr.json")
        try:
            with open(where, encoding="utf-8") as f:
                attrs = json.load(f).get("attributes", {})
        except (OSError, ValueError) as err:
            raise ConfigurationError(f"{store!r} is not a zarr store detflow wrote (cannot read {where!r}: "
                                     f"{err})") from err
        record = attrs.get("provenance") if isinstance(attrs, Mapping) else None
    else:
        where = store if store.endswith(SIDECAR_SUFFIX) else sidecar_path(store)
        try:
            with open(where, encoding="utf-8") as f:
                record = json.load(f)
        except FileNotFoundError as err:
            raise ConfigurationError(f"{store!r}: no provenance next to it ({where!r} does not exist)") from err
        except (OSError, ValueError) as err:
            raise ConfigurationError(f"{store!r}: cannot read its provenance {where!r}: {err}") from err
    if not isinstance(record, Mapping):
        raise ConfigurationError(f"{store!r} records no provenance (written by a detflow before it did, "
                                 "or not by a graph run)")
    return dict(record)


def changed_inputs(record: Mapping[str, Any]) -> list[str]:
    """One line per input that is gone or differs in size or modification time."""
    problems = []
    for entry in record.get("inputs", ()):
        path = entry["path"]
        try:
            now = input_stamp(path)
        except OSError as err:
            problems.append(f"{path!r} cannot be read any more ({err.strerror})")
            continue
        what = []
        if "size" in entry and now["size"] != entry["size"]:
            what.append(f"size {entry['size']} -> {now['size']} bytes")
        if "mtime_ns" in entry and now["mtime_ns"] != entry["mtime_ns"]:
            what.append(f"modified {_when(entry['mtime_ns'])} -> {_when(now['mtime_ns'])}")
        if what:
            problems.append(f"{path!r} changed since the store was written: {', '.join(what)}")
    return problems


def _when(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).isoformat(timespec="microseconds")
