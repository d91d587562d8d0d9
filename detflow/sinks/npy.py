"""``npy``: record the raw frames passing the partition node to a ``.npy`` file.

In a graph file::

    sinks:
      raw: {type: npy, inputs: [partition], params: {path: "{output_dir}/{input_stem}-frames.npy"}}

The frames never travel to the driver: the sink adds a :class:`~detflow.nodes.record.RecordUDF`
to the run, which writes them on the workers, memory-mapped, at their nav positions.

They go to ``<path>.partial``, moved onto ``path`` only when the run completes: an
interrupted run leaves an existing file as it was and the partial file named as
such. An existing ``path`` is replaced only with the user's own ``--overwrite``
(never a graph-file parameter), and only if it is an ``.npy`` file.

How the file was made (the graph as run, its inputs, detflow's version:
:mod:`detflow.graph.provenance`) goes to a sidecar ``<path>.provenance.json``, written
when the file is moved into place; ``detflow rerun <path>`` reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from detflow.nodes.record import RecordUDF, check_replaceable

if TYPE_CHECKING:
    from detflow.graph.events import PassView as Plan
    from detflow.graph.events import RunInfo, Update
    from detflow.graph.results import UDFResults
    from detflow.nodes.base import UDF

__all__ = ["NpyRecorderSink"]


class NpyRecorderSink:
    """Records frames to ``path``; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str], *, sink_id: str = "npy", overwrite: bool = False,
                 meta: Any = None) -> None:
        self.path = os.fspath(path)
        self.sink_id = sink_id
        check_replaceable(self.path, overwrite)
        self.partial_path = self.path + ".partial"
        self._provenance: dict[str, Any] | None = None
        self._udf = RecordUDF(filename=self.partial_path, overwrite=True)  # a stale partial is ours to replace
        if meta is not None:
            from detflow.nodes.runner import main_meta

            self._udf.validate(meta)
            self._udf.meta = main_meta(self._udf, meta, None)

    @classmethod
    def from_node(cls, sink_id: str, inputs: Sequence[str], params: dict[str, Any], *, plan: Plan,
                  overwrite: bool = False) -> NpyRecorderSink:
        params = dict(params)
        if list(inputs) != [plan.partition_id]:
            raise TypeError(f"npy sink {sink_id!r}: records frames, so its input is the partition node "
                            f"{plan.partition_id!r}; got {list(inputs)}")
        if "path" not in params:
            raise TypeError(f"npy sink {sink_id!r}: parameter 'path' is required")
        from detflow.errors import GraphValidationError, ParameterError
        from detflow.sinks.base import refuse_overwrite_param

        refuse_overwrite_param(sink_id, "npy", params)
        try:
            return cls(params.pop("path"), sink_id=sink_id, overwrite=overwrite, meta=plan.meta, **params)
        except ParameterError as err:
            raise GraphValidationError(err.reason, node=sink_id, node_type="npy", parameter="path") from err

    @staticmethod
    def is_complete(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is a whole ``.npy`` file: a valid header and every byte it promises."""
        import math

        import numpy as np

        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
                size = os.fstat(f.fileno()).st_size
                return size >= f.tell() + math.prod(shape) * dtype.itemsize
        except (OSError, ValueError):
            return False

    def record_provenance(self, provenance: dict[str, Any] | None) -> None:
        """Keep how the file is made, for its sidecar."""
        self._provenance = provenance

    def udfs(self) -> list[tuple[str, UDF]]:
        return [(self.sink_id, self._udf)]

    def start(self, info: RunInfo) -> None:
        pass

    def update(self, update: Update) -> None:
        pass

    def finish(self, results: UDFResults | None) -> None:
        if results is not None and os.path.exists(self.partial_path):
            os.replace(self.partial_path, self.path)
            if self._provenance is not None:
                sidecar = self.path + ".provenance.json"
                with open(sidecar + ".partial", "w", encoding="utf-8") as f:
                    json.dump(self._provenance, f, indent=1, default=repr)
                os.replace(sidecar + ".partial", sidecar)
