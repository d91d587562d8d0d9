"""The UDF contract and the built-in UDFs.

Built-ins are imported on first use, so ``import detflow`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

from detflow.nodes.base import (
    UDF,
    BufferDecl,
    NoOpUDF,
    UDFMeta,
    UDFMethod,
    UDFPostprocessMixin,
    UDFPreprocessMixin,
)
from detflow.nodes.params import Param

_LAZY = {
    "SumUDF": "detflow.nodes.sum",
    "SumSigUDF": "detflow.nodes.sumsig",
    "StdDevUDF": "detflow.nodes.stddev",
    "LogsumUDF": "detflow.nodes.logsum",
    "PickUDF": "detflow.nodes.pick",
    "ApplyMasksUDF": "detflow.nodes.masks_udf",
    "CoMUDF": "detflow.nodes.com",
    "AutoUDF": "detflow.nodes.auto",
    "RecordUDF": "detflow.nodes.record",
    "FEMUDF": "detflow.nodes.fem",
    "CrystallinityUDF": "detflow.nodes.crystallinity",
    "SignalMonitorUDF": "detflow.nodes.monitor",
    "PartitionMonitorUDF": "detflow.nodes.monitor",
    "masks": "detflow.nodes.masks",
}

__all__ = [
    "UDF",
    "BufferDecl",
    "NoOpUDF",
    "Param",
    "UDFMeta",
    "UDFMethod",
    "UDFPostprocessMixin",
    "UDFPreprocessMixin",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if name == "masks" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'detflow.nodes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
