"""``detflow rerun STORE``: run again exactly the graph a store records.

The graph comes from the store's provenance (:mod:`detflow.graph.provenance`), with
every parameter as it ran; it runs in the folder it ran in, so relative paths mean
what they meant. Outputs follow the usual rules: an existing one is replaced only
with the user's own ``overwrite`` (``--overwrite``), otherwise the run is refused
before it starts; ``output_dir`` sends ``{output_dir}`` outputs elsewhere.

Inputs are checked first: one that is gone, or whose size or modification time
differs from what the store recorded, is an error naming it, unless
``allow_changed`` (``--allow-changed``), which turns it into a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from detflow.errors import ConfigurationError
from detflow.graph.provenance import changed_inputs, read_provenance
from detflow.graph.run import Graph, default_context, run_graph

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["rerun"]

log = logging.getLogger("detflow")


def rerun(store: str | os.PathLike[str], *, output_dir: str | os.PathLike[str] | None = None,
          overwrite: bool = False, allow_changed: bool = False, executor: Any = None,
          progress: bool = False) -> dict[str, xr.Dataset]:
    """Run the graph recorded in ``store`` again; see the module docstring."""
    store = os.fspath(store)
    record = read_provenance(store)
    spec = record.get("graph")
    if spec is None and isinstance(record.get("conversion"), dict):
        return _convert_again(store, record, overwrite=overwrite, allow_changed=allow_changed,
                              executor=executor, progress=progress)
    if spec is None:
        raise ConfigurationError(f"{store!r}: the graph that wrote it cannot be rerun: "
                                 f"{record.get('graph_unavailable', 'it was not recorded')}")
    _check_inputs(store, record, allow_changed)
    cwd = record.get("cwd") or os.getcwd()
    out = os.path.abspath(os.fspath(output_dir)) if output_dir is not None else record.get("output_dir")
    with contextlib.chdir(cwd):
        g = Graph.from_dict(spec)
        ctx = default_context(g, output_dir=out, overwrite=overwrite)
        return run_graph(g, executor=executor, progress=progress, context=ctx)


def _check_inputs(store: str, record: dict[str, Any], allow_changed: bool) -> None:
    problems = changed_inputs(record)
    if problems and not allow_changed:
        raise ConfigurationError(f"{store!r}: its inputs are not as they were: " + "; ".join(problems)
                                 + " (--allow-changed reruns on them as they are now)")
    for line in problems:
        log.warning("rerun of %s: %s", store, line)


def _convert_again(store: str, record: dict[str, Any], *, overwrite: bool, allow_changed: bool, executor: Any,
                   progress: bool) -> dict[str, xr.Dataset]:
    """A store ``detflow convert`` wrote: convert its input again, into the store itself."""
    from detflow.api import Context

    _check_inputs(store, record, allow_changed)
    if not overwrite:
        raise ConfigurationError(f"{store!r} exists: converting again replaces it; pass --overwrite "
                                 "(overwrite=True)")
    conversion = record["conversion"]
    params = dict(conversion.get("params", {}))
    with contextlib.chdir(record.get("cwd") or os.getcwd()), Context.make_with(executor or "threads") as ctx:
        ds = ctx.load(conversion["type"], **params)
        ctx.export_dataset(ds, path=store, progress=progress, overwrite=True, provenance=record)
    return {}
