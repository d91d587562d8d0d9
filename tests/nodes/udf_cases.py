"""Shared cases for the built-in UDF tests: dtypes x nav shapes x sig shapes x ROI.

The fixture ``case`` (import ``case_fixture`` to use it) yields a :class:`Case`;
``load(ctx)`` gives a dataset cut into 3 partitions, and ``expect_nav`` builds the
expected ``.data`` of nav results from plain numpy values over all frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

DTYPES = ("uint8", "uint16", "uint32", "float32")
NAVS = ((3, 5), (7,))
SIGS = ((16, 16), (12, 20))


@dataclass
class Case:
    data: np.ndarray
    roi: np.ndarray | None

    @property
    def nav(self) -> tuple[int, ...]:
        return self.data.shape[:-2]

    @property
    def sig(self) -> tuple[int, ...]:
        return self.data.shape[-2:]

    @property
    def frames(self) -> np.ndarray:
        """The frames in the ROI, flat nav order, as float64."""
        flat = self.data.reshape(-1, *self.sig).astype(np.float64)
        return flat if self.roi is None else flat[self.roi.reshape(-1)]

    def load(self, ctx: Any, num_partitions: int = 3) -> Any:
        return ctx.load("memory", data=self.data, num_partitions=num_partitions)

    def run(self, ctx: Any, udf: Any) -> dict[str, Any]:
        return ctx.run_udf(dataset=self.load(ctx), udf=udf, roi=self.roi)

    def expect_nav(self, per_frame: np.ndarray, fill: Any = np.nan) -> np.ndarray:
        """``per_frame`` (one row per frame of the dataset) with ``fill`` outside the ROI."""
        out = np.array(per_frame, dtype=np.float64 if fill is np.nan else None, copy=True)
        if self.roi is not None:
            out[~self.roi.reshape(-1)] = fill
        return out.reshape(*self.nav, *out.shape[1:])


def make_data(dtype: str, nav: tuple[int, ...], sig: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.gamma(2.0, 30.0, size=(*nav, *sig))
    if np.dtype(dtype).kind == "f":
        return data.astype(dtype)
    return np.minimum(data, np.iinfo(dtype).max).astype(dtype)


def make_roi(nav: tuple[int, ...]) -> np.ndarray:
    roi = np.zeros(int(np.prod(nav)), dtype=bool)
    roi[[0, 2, 3, len(roi) - 2]] = True
    return roi.reshape(nav)


@pytest.fixture(
    name="case",
    params=[(dt, nav, sig, with_roi) for dt in DTYPES for nav in NAVS for sig in SIGS for with_roi in (False, True)],
    ids=lambda p: f"{p[0]}-nav{'x'.join(map(str, p[1]))}-sig{'x'.join(map(str, p[2]))}" + ("-roi" if p[3] else ""),
)
def case_fixture(request: pytest.FixtureRequest) -> Case:
    dtype, nav, sig, with_roi = request.param
    return Case(make_data(dtype, nav, sig), make_roi(nav) if with_roi else None)
