"""``record``: write the raw frames that pass through a run to a ``.npy`` file.

The file is created on the driver before the run (``prepare_run``), shaped
``nav_shape + sig_shape`` in the dataset's dtype, and every worker writes the frames
of its partitions straight into it through a memory map, at their nav positions, so
the file is in nav order whatever order partitions finish in. Frames outside a ROI
stay zero. As LiberTEM-live's ``RecordUDF``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from detflow.errors import ParameterError
from detflow.nodes.base import UDF, BufferDecl
from detflow.nodes.params import Param
from detflow.sources.base import DatasetMeta

__all__ = ["RecordUDF", "check_replaceable"]


def check_replaceable(path: str, overwrite: bool) -> None:
    """An existing ``path`` may be replaced only with ``overwrite``, and only if it is an ``.npy`` file."""
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise ParameterError("filename", f"{path!r} already exists; pass overwrite=True (--overwrite)")
    try:
        with open(path, "rb") as f:
            is_npy = os.path.isfile(path) and f.read(6) == b"\x93NUMPY"
    except OSError:
        is_npy = False
    if not is_npy:
        raise ParameterError("filename", f"{path!r} exists and is not a .npy file; overwrite replaces only "
                                         ".npy files: move it away or choose another path")


class RecordUDF(UDF):
    """Record frames to ``filename`` (a ``.npy`` file).

    Parameters
    ----------
    filename
        Where to write; an existing file is refused unless ``overwrite``.
    overwrite
        Replace an existing file.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "frames.npy")
    >>> _ = ctx.run_udf(dataset=ds, udf=RecordUDF(filename=path))
    >>> bool((np.load(path) == data).all())
    True
    """

    sig_cut_tiles = False  # whole frames: the kernels read every pixel of a frame at once

    params_spec = (
        Param("filename", str, doc="the .npy file to write"),
        Param("overwrite", bool, default=False, doc="replace an existing file"),
    )

    def __init__(self, filename: str | os.PathLike[str], overwrite: bool = False) -> None:
        super().__init__(filename=os.fspath(filename), overwrite=overwrite)

    def validate(self, meta: DatasetMeta) -> None:
        super().validate(meta)
        check_replaceable(self.params.filename, self.params.overwrite)
        folder = os.path.dirname(os.path.abspath(self.params.filename))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise ParameterError("filename", f"cannot write into {folder!r}")

    def get_preferred_input_dtype(self) -> Any:
        return self.USE_NATIVE_DTYPE

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        return {}

    def prepare_run(self) -> None:
        shape = (*self.meta.dataset_shape.nav, *self.meta.dataset_shape.sig)
        mm = np.lib.format.open_memmap(self.params.filename, mode="w+", dtype=self.meta.dataset_dtype,
                                       shape=shape)
        del mm

    def get_task_data(self) -> dict[str, Any]:
        mm = np.load(self.params.filename, mmap_mode="r+")
        return {"frames": mm.reshape((-1, *mm.shape[len(self.meta.dataset_shape.nav):]))}

    def process_tile(self, tile: np.ndarray) -> None:
        nav = self.meta.dataset_shape.nav
        coords = self.meta.coordinates
        assert coords is not None  # always set for tiles
        idx = np.ravel_multi_index(tuple(coords.T), nav)
        self.task_data.frames[idx] = tile

    def postprocess(self) -> None:
        self.task_data.frames.flush()
