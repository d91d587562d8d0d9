"""Short lowercase names for the built-in parts, and entry points for everyone else's.

A registry maps a name (``"npy"``, ``"sum"``, ``"threads"``) to a dotted path
``"package.module:Attribute"``; the module is imported only when the name is first
used, so optional dependencies cost nothing until asked for. Third-party packages add
their own through the entry-point groups ``detflow.sources``, ``detflow.udfs``,
``detflow.frames``, ``detflow.results``, ``detflow.sinks`` and ``detflow.executors``;
an explicitly registered or built-in name wins over an entry point of the same name.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from detflow.errors import UnknownNameError

__all__ = ["CONNECTIONS", "EXECUTORS", "FRAMES", "RESULTS", "SINKS", "SOURCES", "UDFS", "Registry", "import_object"]


def import_object(path: str) -> Any:
    """Import ``"package.module:Attr"`` (or ``"package.module.Attr"``) and return ``Attr``."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"not an import path: {path!r}; expected 'package.module:Name'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry:
    """Names of one kind of part, resolved lazily.

    Examples
    --------
    >>> from detflow.registry import SOURCES
    >>> "npy" in SOURCES.names()
    True
    """

    def __init__(self, kind: str, group: str, builtins: dict[str, str]) -> None:
        self.kind = kind
        self.group = group
        self._paths: dict[str, str | Any] = dict(builtins)
        self._loaded: dict[str, Any] = {}
        self._entry_points_read = False

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        for ep in entry_points(group=self.group):
            self._paths.setdefault(ep.name, ep.value)

    def register(self, name: str, obj_or_path: str | Any) -> None:
        """Register ``obj_or_path`` (an object or a dotted path) under ``name``."""
        self._paths[name] = obj_or_path
        self._loaded.pop(name, None)

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def name_of(self, obj: Any) -> str | None:
        """The name ``obj`` is registered under, or ``None``; imports nothing it need not.

        >>> from detflow.nodes.sum import SumUDF
        >>> UDFS.name_of(SumUDF)
        'sum'
        """
        path = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
        for name, target in self._paths.items():  # by import path first: no module is imported
            if target is obj or target == path or self._loaded.get(name) is obj:
                return name
        self._read_entry_points()
        for name in list(self._paths):
            try:
                if self.get(name) is obj:
                    return name
            except ImportError:
                continue
        return None

    def target(self, name: str) -> str | Any | None:
        """What ``name`` is registered as (an import path, or the object), importing nothing; ``None`` if unknown."""
        if name not in self._paths:
            self._read_entry_points()
        return self._paths.get(name)

    def get(self, name: str) -> Any:
        """The object registered as ``name``; an unknown name lists the known ones."""
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._paths:
            self._read_entry_points()
        if name not in self._paths:
            raise UnknownNameError(self.kind, name, self.names())
        target = self._paths[name]
        obj = import_object(target) if isinstance(target, str) else target
        self._loaded[name] = obj
        return obj


SOURCES = Registry(
    "source",
    "detflow.sources",
    {
        "memory": "detflow.sources.memory:MemorySource",
        "npy": "detflow.sources.npy:NpySource",
        "csr": "detflow.sources.csr:CsrSource",
        "raw": "detflow.sources.raw:RawSource",
        "mib": "detflow.sources.mib:MibSource",
        "hdf5": "detflow.sources.hdf5_:HDF5Source",
        "zarr": "detflow.sources.zarr_:ZarrSource",
        "dask": "detflow.sources.dask_:DaskSource",
        "mrc": "detflow.sources.mrc:MrcSource",
        "tvips": "detflow.sources.tvips:TvipsSource",
        "blockfile": "detflow.sources.blockfile:BlockfileSource",
        "empad": "detflow.sources.empad:EmpadSource",
        "seq": "detflow.sources.seq:SeqSource",
        "dm": "detflow.sources.dm:DMSource",
        "auto": "detflow.sources.auto:load_auto",
        "merlin": "detflow.sources.live.merlin.connection:merlin_source",
        "dectris": "detflow.sources.live.dectris.connection:dectris_source",
        "asi_tpx3": "detflow.sources.live.asi_tpx3.connection:asi_tpx3_source",
    },
)

UDFS = Registry(
    "UDF",
    "detflow.udfs",
    {
        "sum": "detflow.nodes.sum:SumUDF",
        "sumsig": "detflow.nodes.sumsig:SumSigUDF",
        "stddev": "detflow.nodes.stddev:StdDevUDF",
        "logsum": "detflow.nodes.logsum:LogsumUDF",
        "pick": "detflow.nodes.pick:PickUDF",
        "masks": "detflow.nodes.masks_udf:ApplyMasksUDF",
        "com": "detflow.nodes.com:CoMUDF",
        "auto": "detflow.nodes.auto:AutoUDF",
        "record": "detflow.nodes.record:RecordUDF",
        "signal_monitor": "detflow.nodes.monitor:SignalMonitorUDF",
        "partition_monitor": "detflow.nodes.monitor:PartitionMonitorUDF",
    },
)

FRAMES = Registry(
    "frame node",
    "detflow.frames",
    {
        "correct": "detflow.nodes.frames.correct:CorrectFrames",
        "crop": "detflow.nodes.frames.geometry:CropFrames",
        "bin": "detflow.nodes.frames.geometry:BinFrames",
        "flip": "detflow.nodes.frames.geometry:FlipFrames",
        "rotate90": "detflow.nodes.frames.geometry:Rotate90Frames",
        "transpose": "detflow.nodes.frames.geometry:TransposeFrames",
        "threshold": "detflow.nodes.frames.levels:ThresholdFrames",
        "cast": "detflow.nodes.frames.levels:CastFrames",
        "function": "detflow.nodes.frames.function:FunctionFrames",
    },
)

RESULTS = Registry(
    "result node",
    "detflow.results",
    {
        "find_disk": "detflow.nodes.results.find_disk:FindDiskResult",
        "idpc": "detflow.nodes.results.idpc:IDPCResult",
        "function": "detflow.nodes.results.function:FunctionResult",
    },
)

SINKS = Registry(
    "sink",
    "detflow.sinks",
    {
        "progress": "detflow.sinks.progress:ProgressSink",
        "zarr": "detflow.sinks.zarr_:ZarrSink",
        "npy": "detflow.sinks.npy:NpyRecorderSink",
    },
)

CONNECTIONS = Registry(
    "detector",
    "detflow.detectors",
    {
        "memory": "detflow.sources.live.memory:MemoryConnection",
        "merlin": "detflow.sources.live.merlin.connection:MerlinConnection",
        "dectris": "detflow.sources.live.dectris.connection:DectrisConnection",
        "asi_tpx3": "detflow.sources.live.asi_tpx3.connection:AsiTpx3Connection",
    },
)

EXECUTORS = Registry(
    "executor",
    "detflow.executors",
    {
        "inline": "detflow.executors.inline:InlineExecutor",
        "threads": "detflow.executors.threads:ThreadedExecutor",
        "pipelined": "detflow.executors.pipelined:PipelinedExecutor",
        "dask": "detflow.executors.dask_:DaskExecutor",
        "delayed": "detflow.executors.delayed:DelayedExecutor",
    },
)
