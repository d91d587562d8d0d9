"""Crystallinity: each frame's Fourier amplitude summed over a ring (LiberTEM's ``CrystallinityUDF``).

Per frame: optionally zero a disk in real space (the direct beam), take the magnitude of
the real FFT, and sum it over a ring of spatial frequencies (``rad_in`` to ``rad_out``
pixels from the zero frequency, on the ``rfft2`` half plane), as LiberTEM 0.16 does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detflow.nodes import backends as bk
from detflow.nodes.base import UDF, BufferDecl
from detflow.nodes.masks import circular

__all__ = ["CrystallinityUDF", "run_analysis_crystall"]


class CrystallinityUDF(UDF):
    """``intensity[i]``: the summed FFT amplitude of frame ``i`` within a ring of frequencies.

    Parameters
    ----------
    rad_in, rad_out
        The ring in Fourier space, in pixels from the zero frequency.
    real_center, real_rad
        ``(y, x)`` and radius of a disk zeroed in real space first; both or neither.

    Examples
    --------
    >>> udf = CrystallinityUDF(rad_in=1, rad_out=5, real_center=None, real_rad=None)
    >>> ctx.run_udf(dataset=ds, udf=udf)["intensity"].data.shape == ds.shape.nav
    True
    """

    sig_cut_tiles = False  # whole frames: the kernels read every pixel of a frame at once

    def __init__(self, rad_in: float, rad_out: float, real_center: Any, real_rad: float | None) -> None:
        super().__init__(rad_in=rad_in, rad_out=rad_out, real_center=real_center, real_rad=real_rad)

    def get_result_buffers(self) -> dict[str, BufferDecl]:
        return {"intensity": self.buffer(kind="nav", dtype="float32")}

    def get_backends(self) -> Any:
        return bk.BUILTIN_BACKENDS

    def get_task_data(self) -> dict[str, Any]:
        h, w = tuple(self.meta.dataset_shape.sig)
        p = self.params
        real = None
        if p.real_center is not None and p.real_rad is not None:
            real = ~circular(p.real_center[1], p.real_center[0], w, h, p.real_rad)
        ring = circular(w * 0.5, h * 0.5, w, h, p.rad_out).astype(np.int8) - circular(
            w * 0.5, h * 0.5, w, h, p.rad_in).astype(np.int8)
        half = np.fft.fftshift(ring)[:, : w // 2 + 1]
        return {"real_mask": real, "half_mask": half.astype(np.float64)}

    def process_tile(self, tile: Any) -> None:
        if bk.is_sparse(tile):
            tile = bk.dense_tile(tile, tuple(self.meta.dataset_shape.sig))
        real = self.task_data.real_mask
        frames = tile if real is None else tile * real
        amp = np.abs(np.fft.rfft2(frames, axes=(-2, -1)))
        self.results.intensity[:] = (amp * self.task_data.half_mask).sum(axis=(-2, -1))


def run_analysis_crystall(
    ctx: Any, dataset: Any, rad_in: float, rad_out: float, real_center: Any = None, real_rad: float | None = None,
    roi: Any = None, progress: bool = False,
) -> Any:
    """LiberTEM's ``run_analysis_crystall``: the results of :class:`CrystallinityUDF`."""
    udf = CrystallinityUDF(rad_in=rad_in, rad_out=rad_out, real_center=real_center, real_rad=real_rad)
    return ctx.run_udf(dataset=dataset, udf=udf, roi=roi, progress=progress)
