"""A UDF for the batch tests: it holds its task mid-run until the test opens the gate.

``gate``: a folder. On each partition the UDF writes ``started-<pid>-<n>`` there (holding
its process id) and waits until a file ``go`` appears, so a test can kill a launcher or a
worker while tasks are certainly running, with outputs staged and not yet in place. Its
result ``frames`` is 1 at every position it processed. ``min_frames`` makes the graph
fail validation on inputs with fewer frames.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import numpy as np

from detflow.errors import ParameterError
from detflow.nodes.base import UDF, BufferDecl
from detflow.nodes.params import Param

_counter = itertools.count()


class GateUDF(UDF):
    params_spec = (
        Param("gate", str, doc="folder of the started-* files and the go file"),
        Param("min_frames", int, default=0, doc="inputs with fewer frames fail validation"),
    )

    def __init__(self, gate: str, min_frames: int = 0) -> None:
        super().__init__(gate=gate, min_frames=min_frames)

    def validate(self, meta: Any) -> None:
        super().validate(meta)
        if meta.n_frames < self.params.min_frames:
            raise ParameterError("min_frames", f"needs at least {self.params.min_frames} frames; "
                                               f"the input has {meta.n_frames}")

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        return {"frames": self.buffer(kind="nav", dtype=np.float64)}

    def process_partition(self, partition: np.ndarray) -> None:
        gate = self.params.gate
        with open(os.path.join(gate, f"started-{os.getpid()}-{next(_counter)}"), "w") as f:
            f.write(str(os.getpid()))
        deadline = time.monotonic() + 600
        while not os.path.exists(os.path.join(gate, "go")):
            if time.monotonic() > deadline:
                raise TimeoutError("the test never opened the gate")
            time.sleep(0.02)
        self.results.frames[:] = 1.0
