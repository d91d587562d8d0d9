"""Generated DPC data: a bright-field disk shifted at each scan position by the gradient of
a known phase, so the integrated centre of mass can be checked against that phase."""

from __future__ import annotations

import numpy as np

NAV = (12, 14)
SIG = (32, 32)
CENTRE = (15.5, 16.25)  # (y, x) of the unshifted disk
RADIUS = 7.0
#: CoM shift in pixels per unit of the phase's gradient per scan step
SCALE = 1.0


def true_phase(nav: tuple[int, int] = NAV) -> np.ndarray:
    """A smooth phase whose gradient averages to zero over the scan (so the disk's mean
    position is its unshifted centre) and stays under a pixel per step."""
    y, x = np.indices(nav, dtype=float)
    return 1.2 * np.cos(2 * np.pi * y / nav[0]) + 1.0 * np.sin(2 * np.pi * x / nav[1]) ** 2


def disk_frames(nav: tuple[int, int] = NAV, sig: tuple[int, int] = SIG, *, dtype: str = "float32",
                dark: np.ndarray | None = None, oversample: int = 4) -> np.ndarray:
    """Frames ``nav + sig``: a uniform disk (area-weighted at its rim) moved by the phase's gradient."""
    phase = true_phase(nav)
    gy, gx = np.gradient(phase)
    s = oversample
    yy, xx = np.indices((sig[0] * s, sig[1] * s), dtype=float)
    yy, xx = (yy + 0.5) / s - 0.5, (xx + 0.5) / s - 0.5
    out = np.empty((*nav, *sig), dtype=dtype)
    for iy in range(nav[0]):
        for ix in range(nav[1]):
            cy = CENTRE[0] + SCALE * gy[iy, ix]
            cx = CENTRE[1] + SCALE * gx[iy, ix]
            fine = ((yy - cy) ** 2 + (xx - cx) ** 2 <= RADIUS ** 2).astype(float)
            out[iy, ix] = 100.0 * fine.reshape(sig[0], s, sig[1], s).mean(axis=(1, 3))
    if dark is not None:
        out = out + dark
    return out.astype(dtype)
