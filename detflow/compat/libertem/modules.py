"""Which detflow objects stand behind each ``libertem`` module path.

``MODULES`` maps a LiberTEM module name to a function returning its namespace: the
names a UDF file or a script imports from it (``from libertem.udf.base import UDF``).
Each function imports what it needs when first called, so ``import libertem.udf``
does not pull in executors or dask. Adding a module is one entry here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from detflow.errors import UDFError

__all__ = ["MODULES", "PACKAGES"]


class UDFFrameMixin:
    """Marker (LiberTEM): the UDF implements ``process_frame``."""


class UDFTileMixin:
    """Marker (LiberTEM): the UDF implements ``process_tile``."""


class UDFPartitionMixin:
    """Marker (LiberTEM): the UDF implements ``process_partition``."""


class UDFMergeAllMixin:
    """Marker (LiberTEM): the UDF implements ``merge_all`` (detflow merges with ``merge``)."""


class UDFRunCancelled(Exception):  # noqa: N818 - LiberTEM's name
    """LiberTEM's exception for a cancelled run (detflow does not raise it itself)."""


def check_cast(fromvar: Any, tovar: Any) -> None:
    """LiberTEM's ``check_cast``: ``TypeError`` unless ``fromvar`` casts safely to ``tovar``."""
    if not np.can_cast(fromvar.dtype, tovar.dtype, casting="safe"):
        raise TypeError(f"Unsafe automatic casting from {fromvar.dtype} to {tovar.dtype}")


def _udf_base() -> dict[str, Any]:
    from detflow.graph.results import ResultBuffer, UDFResults
    from detflow.nodes.base import (
        UDF,
        NoOpUDF,
        UDFData,
        UDFMeta,
        UDFMethod,
        UDFPostprocessMixin,
        UDFPreprocessMixin,
    )

    return {
        "UDF": UDF, "UDFMeta": UDFMeta, "UDFData": UDFData, "MergeAttrMapping": UDFData,
        "UDFMethod": UDFMethod, "NoOpUDF": NoOpUDF, "UDFResults": UDFResults, "BufferWrapper": ResultBuffer,
        "UDFPreprocessMixin": UDFPreprocessMixin, "UDFPostprocessMixin": UDFPostprocessMixin,
        "UDFFrameMixin": UDFFrameMixin, "UDFTileMixin": UDFTileMixin, "UDFPartitionMixin": UDFPartitionMixin,
        "UDFMergeAllMixin": UDFMergeAllMixin, "UDFRunCancelled": UDFRunCancelled, "check_cast": check_cast,
    }


def _udf_package() -> dict[str, Any]:
    from detflow.nodes.auto import AutoUDF

    return {**_udf_base(), "AutoUDF": AutoUDF}


def _common_udf() -> dict[str, Any]:
    from detflow.nodes.base import UDF, UDFMethod

    return {"UDFMethod": UDFMethod, "UDFProtocol": UDF}


def _buffers() -> dict[str, Any]:
    from detflow.graph.results import ResultBuffer
    from detflow.nodes import buffers
    from detflow.nodes.backends import to_numpy
    from detflow.nodes.base import AuxBufferWrapper

    return {
        "BufferWrapper": ResultBuffer, "AuxBufferWrapper": AuxBufferWrapper, "reshaped_view": buffers.reshaped_view,
        "get_bbox": buffers.get_bbox, "get_bbox_slice": buffers.get_bbox_slice,
        "get_inner_slice": buffers.get_inner_slice, "InvalidMaskError": buffers.InvalidMaskError,
        "ArrayWithMask": buffers.ArrayWithMask, "to_numpy": to_numpy,
    }


def _common() -> dict[str, Any]:
    from detflow.nodes.meta import Slice
    from detflow.sources.shape import Shape

    return {"Shape": Shape, "Slice": Slice}


def prod(iterable: Any) -> int:
    """LiberTEM's ``prod``: the product as a Python int (1 for an empty iterable)."""
    return int(math.prod(int(i) for i in iterable))


def count_nonzero(array: Any) -> int:
    """LiberTEM's ``count_nonzero``, also for sparse arrays."""
    if hasattr(array, "nnz"):
        return int(array.nnz)
    return int(np.count_nonzero(array))


def flat_nonzero(array: Any) -> np.ndarray:
    """LiberTEM's ``flat_nonzero``: flat indices of the non-zero entries."""
    return np.flatnonzero(np.asarray(array))


def _common_math() -> dict[str, Any]:
    return {"prod": prod, "count_nonzero": count_nonzero, "flat_nonzero": flat_nonzero}


def _exceptions() -> dict[str, Any]:
    from detflow.errors import ConfigurationError

    return {"UDFException": UDFError, "ExecutorSpecException": ConfigurationError,
            "DataSetException": ConfigurationError}


def _warnings() -> dict[str, Any]:
    from detflow.nodes.buffers import UseDiscouragedWarning

    return {"UseDiscouragedWarning": UseDiscouragedWarning}


def _api() -> dict[str, Any]:
    from detflow.compat.libertem.analysis import Context  # detflow's, with the analysis helpers

    return {"Context": Context}


def _analysis() -> dict[str, Any]:
    from detflow.compat.libertem import analysis

    return {"AnalysisResult": analysis.AnalysisResult, "AnalysisResultSet": analysis.AnalysisResultSet}


def _memory() -> dict[str, Any]:
    from detflow.compat.libertem.shims import MemoryDataSet

    return {"MemoryDataSet": MemoryDataSet}


def _executors(name: str) -> Callable[[], dict[str, Any]]:
    def load() -> dict[str, Any]:
        from detflow.compat.libertem import shims

        return {name: getattr(shims, name)}

    return load


def _builtin(module: str, *names: str) -> Callable[[], dict[str, Any]]:
    def load() -> dict[str, Any]:
        import importlib

        mod = importlib.import_module(module)
        return {n: getattr(mod, n) for n in names if hasattr(mod, n)}

    return load


def _masks() -> dict[str, Any]:
    from detflow.nodes import masks

    return {k: getattr(masks, k) for k in dir(masks) if not k.startswith("_")}


#: LiberTEM module name -> its namespace
MODULES: dict[str, Callable[[], dict[str, Any]]] = {
    "libertem": lambda: {},
    "libertem.api": _api,
    "libertem.analysis": _analysis,
    "libertem.analysis.base": _analysis,
    "libertem.udf": _udf_package,
    "libertem.udf.base": _udf_base,
    "libertem.common": _common,
    "libertem.common.shape": lambda: {"Shape": _common()["Shape"]},
    "libertem.common.slice": lambda: {"Slice": _common()["Slice"]},
    "libertem.common.udf": _common_udf,
    "libertem.common.buffers": _buffers,
    "libertem.common.math": _common_math,
    "libertem.common.exceptions": _exceptions,
    "libertem.exceptions": _exceptions,
    "libertem.warnings": _warnings,
    "libertem.masks": _masks,
    "libertem.io": lambda: {},
    "libertem.io.dataset": lambda: {},
    "libertem.io.dataset.memory": _memory,
    "libertem.executor": lambda: {},
    "libertem.executor.inline": _executors("InlineJobExecutor"),
    "libertem.executor.concurrent": _executors("ConcurrentJobExecutor"),
    "libertem.executor.dask": _executors("DaskJobExecutor"),
    "libertem.executor.delayed": _executors("DelayedJobExecutor"),
    "libertem.executor.pipelined": _executors("PipelinedExecutor"),
    "libertem.udf.sum": _builtin("detflow.nodes.sum", "SumUDF"),
    "libertem.udf.sumsigudf": _builtin("detflow.nodes.sumsig", "SumSigUDF"),
    "libertem.udf.stddev": _builtin("detflow.nodes.stddev", "StdDevUDF", "run_stddev", "consolidate_result"),
    "libertem.udf.logsum": _builtin("detflow.nodes.logsum", "LogsumUDF", "run_logsum"),
    "libertem.udf.masks": _builtin("detflow.nodes.masks_udf", "ApplyMasksUDF"),
    "libertem.udf.com": _builtin("detflow.nodes.com", "CoMUDF", "CoMParams", "RegressionOptions",
                                 "guess_corrections"),
    "libertem.udf.auto": _builtin("detflow.nodes.auto", "AutoUDF"),
    "libertem.udf.raw": _builtin("detflow.nodes.pick", "PickUDF"),
    "libertem.udf.record": _builtin("detflow.nodes.record", "RecordUDF"),
    "libertem.udf.FEM": _builtin("detflow.nodes.fem", "FEMUDF", "run_fem"),
    "libertem.udf.crystallinity": _builtin("detflow.nodes.crystallinity", "CrystallinityUDF",
                                           "run_analysis_crystall"),
}

#: names that are packages in LiberTEM (they hold submodules)
PACKAGES = frozenset(
    {name.rsplit(".", 1)[0] for name in MODULES if "." in name}
)
