"""LiberTEM's analysis helpers: ``ctx.create_*_analysis(...)`` and ``ctx.run(analysis)``.

An analysis is a UDF run plus named results (``AnalysisResultSet``): ``res.intensity``,
``res["mask_0"]``, ``res[0]`` are :class:`AnalysisResult` objects whose ``raw_data`` is a
plain array, with LiberTEM's keys and default parameters (a disk of 0.3 times the half
frame, a ring from 0.8 of the half frame to its edge, the frame centre). ``visualized``
is the raw data here: detflow draws its images with its own plots, not with LiberTEM's
colour maps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detflow.api import Context as _Context
from detflow.errors import ConfigurationError

__all__ = ["AnalysisResult", "AnalysisResultSet", "Context", "UDFAnalysis"]


@dataclass
class AnalysisResult:
    """One named result of an analysis."""

    raw_data: Any
    key: str
    title: str = ""
    desc: str = ""

    @property
    def visualized(self) -> Any:
        return self.raw_data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = np.asarray(self.raw_data)
        return arr if dtype is None else arr.astype(dtype)


class AnalysisResultSet:
    """Results by key (attribute or ``[key]``) or by position (``[0]``)."""

    def __init__(self, results: Sequence[AnalysisResult], raw_results: Any = None) -> None:
        self.results = list(results)
        self.raw_results = raw_results

    def __getattr__(self, key: str) -> AnalysisResult:
        for r in self.__dict__.get("results", ()):
            if r.key == key:
                return r
        raise AttributeError(f"no result {key!r}; there are: {[r.key for r in self.__dict__.get('results', ())]}")

    def __getitem__(self, item: int | str) -> AnalysisResult:
        return self.results[item] if isinstance(item, int) else getattr(self, item)

    def __iter__(self) -> Iterator[AnalysisResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def keys(self) -> list[str]:
        return [r.key for r in self.results]


@dataclass
class UDFAnalysis:
    """A UDF to run and how to turn its results into an :class:`AnalysisResultSet`."""

    dataset: Any
    udf: Any
    make_results: Callable[[dict[str, Any]], list[AnalysisResult]]
    #: the ROI the analysis runs with unless ``ctx.run`` is given one (a pick's position)
    roi: Any = None
    #: what ``AnalysisResultSet.raw_results`` holds; by default the UDF's results
    raw_results: Callable[[dict[str, Any]], Any] | None = None

    def get_udf(self) -> Any:
        return self.udf


def _single(data: np.ndarray, desc: str) -> list[AnalysisResult]:
    return [AnalysisResult(data, "intensity", "intensity [lin]", desc),
            AnalysisResult(data, "intensity_log", "intensity [log]", desc)]


class Context(_Context):
    """detflow's :class:`~detflow.api.Context` with LiberTEM's analysis helpers."""

    def _masks_analysis(self, dataset: Any, factories: Any, single: str | None, **kw: Any) -> UDFAnalysis:
        from detflow.nodes.masks_udf import ApplyMasksUDF

        udf = ApplyMasksUDF(mask_factories=factories, **kw)

        def results(res: dict[str, Any]) -> list[AnalysisResult]:
            data = res["intensity"].data
            if single is not None:
                return _single(data[..., 0], single)
            return [AnalysisResult(data[..., i], f"mask_{i}", f"mask {i}", f"integrated intensity for mask {i}")
                    for i in range(data.shape[-1])]

        return UDFAnalysis(dataset, udf, results)

    def create_mask_analysis(self, factories: Any, dataset: Any, use_sparse: bool | None = None,
                             mask_count: int | None = None, mask_dtype: Any = None, dtype: Any = None) -> UDFAnalysis:
        """One result per mask: ``mask_0``, ``mask_1``, ..."""
        return self._masks_analysis(dataset, factories, None, use_sparse=use_sparse, mask_count=mask_count,
                                    mask_dtype=mask_dtype, preferred_dtype=dtype)

    def create_disk_analysis(self, dataset: Any, cx: float | None = None, cy: float | None = None,
                             r: float | None = None) -> UDFAnalysis:
        """Integrate over a disk: ``intensity``, ``intensity_log``."""
        from detflow.nodes import masks

        h, w = tuple(dataset.shape.sig)
        cx = w / 2 if cx is None else cx
        cy = h / 2 if cy is None else cy
        r = min(h, w) / 2 * 0.3 if r is None else r
        return self._masks_analysis(dataset, [lambda: masks.circular(cx, cy, w, h, r)],
                                    "intensity of the integration over the selected disk")

    def create_ring_analysis(self, dataset: Any, cx: float | None = None, cy: float | None = None,
                             ri: float | None = None, ro: float | None = None) -> UDFAnalysis:
        """Integrate over a ring: ``intensity``, ``intensity_log``."""
        from detflow.nodes import masks

        h, w = tuple(dataset.shape.sig)
        cx = w / 2 if cx is None else cx
        cy = h / 2 if cy is None else cy
        ro = min(h, w) / 2 if ro is None else ro
        ri = ro * 0.8 if ri is None else ri
        return self._masks_analysis(dataset, [lambda: masks.ring(cx, cy, w, h, ro, ri)],
                                    "intensity of the integration over the selected ring")

    def create_point_analysis(self, dataset: Any, x: float | None = None, y: float | None = None) -> UDFAnalysis:
        """The pixel ``(y, x)`` of each frame: ``intensity``, ``intensity_log``."""
        h, w = tuple(dataset.shape.sig)
        px, py = int(w / 2 if x is None else x), int(h / 2 if y is None else y)

        def point() -> np.ndarray:
            m = np.zeros((h, w), dtype=np.float32)
            m[py, px] = 1
            return m

        return self._masks_analysis(dataset, [point], "intensity of the selected pixel")

    def create_sum_analysis(self, dataset: Any) -> UDFAnalysis:
        """The sum frame: ``intensity`` and ``intensity_lin``."""
        from detflow.nodes.sum import SumUDF

        def results(res: dict[str, Any]) -> list[AnalysisResult]:
            data = res["intensity"].data
            return [AnalysisResult(data, "intensity", "intensity [log]", "sum of frames log-scaled"),
                    AnalysisResult(data, "intensity_lin", "intensity [lin]", "sum of frames lin-scaled")]

        return UDFAnalysis(dataset, SumUDF(), results)

    def create_com_analysis(self, dataset: Any, cx: float | None = None, cy: float | None = None,
                            mask_radius: float | None = None, flip_y: bool = False,
                            mask_radius_inner: float | None = None, scan_rotation: float = 0.0) -> UDFAnalysis:
        """Centre of mass: ``field`` (``(x, y)``), ``magnitude``, ``divergence``, ``curl``, ``x``, ``y``."""
        from detflow.nodes.com import CoMUDF

        h, w = tuple(dataset.shape.sig)
        udf = CoMUDF.with_params(
            cy=h / 2 if cy is None else cy, cx=w / 2 if cx is None else cx,
            r=float("inf") if mask_radius is None else mask_radius,
            ri=0.0 if mask_radius_inner is None else mask_radius_inner, flip_y=flip_y, scan_rotation=scan_rotation,
        )

        def results(res: dict[str, Any]) -> list[AnalysisResult]:
            fy, fx = res["field_y"].data, res["field_x"].data
            out = [AnalysisResult((fx, fy), "field", "field", "the vector field (x, y)"),
                   AnalysisResult(res["magnitude"].data, "magnitude", "magnitude", "magnitude of the vector field"),
                   AnalysisResult(fx, "x", "x", "x component of the center"),
                   AnalysisResult(fy, "y", "y", "y component of the center")]
            if all(s > 1 for s in fy.shape):
                out[2:2] = [
                    AnalysisResult(res["divergence"].data, "divergence", "divergence",
                                   "divergence of the vector field"),
                    AnalysisResult(res["curl"].data, "curl", "curl", "curl of the 2D vector field"),
                ]
            return out

        return UDFAnalysis(dataset, udf, results)

    def create_pick_analysis(self, dataset: Any, x: int, y: int | None = None, z: int | None = None) -> UDFAnalysis:
        """The frame at ``(z, y, x)`` (as many coordinates as nav dimensions): ``intensity``,
        ``intensity_lin``; for complex data the magnitude and ``intensity_real``, ``_imag``,
        ``_angle``, ``_complex``, as LiberTEM's ``PickResultSet``."""
        from detflow.nodes.pick import PickUDF

        dims = len(tuple(dataset.shape.nav))
        if dims not in (1, 2, 3):
            raise ValueError(f"can only handle 1D/2D/3D nav currently, received {dims} dimensions")
        zyx = (z, y, x)
        keep, drop = zyx[-dims:], zyx[:-dims]
        if None in keep or any(d is not None for d in drop):
            need = {1: "x, not y and not z", 2: "x, y and not z", 3: "x, y z"}[dims]
            raise ValueError(f"Need {need} to index {dims}D dataset, received z={z}, y={y}, x={x}")
        roi = np.zeros(tuple(dataset.shape.nav), dtype=bool)
        roi[tuple(int(c) for c in keep if c is not None)] = True
        at = " ".join(f"{k}={v}" for k, v in (("x", x), ("y", y), ("z", z)) if v is not None)

        def results(res: dict[str, Any]) -> list[AnalysisResult]:
            frame = res["intensity"].data[0]
            if frame.dtype.kind != "c":
                return [AnalysisResult(frame, "intensity", "intensity [log]", f"the frame at {at} log-scaled"),
                        AnalysisResult(frame, "intensity_lin", "intensity [lin]", f"the frame at {at} lin-scaled")]
            magnitude = np.abs(frame)
            return [AnalysisResult(magnitude, "intensity_lin", "intensity [lin]", f"the frame at {at}"),
                    AnalysisResult(magnitude, "intensity", "intensity [log]", f"the frame at {at}"),
                    AnalysisResult(frame.real, "intensity_real", "intensity [real]", f"the frame at {at}"),
                    AnalysisResult(frame.imag, "intensity_imag", "intensity [imag]", f"the frame at {at}"),
                    AnalysisResult(np.angle(frame), "intensity_angle", "intensity [angle]", f"the frame at {at}"),
                    AnalysisResult(frame, "intensity_complex", "intensity [complex]", f"the frame at {at}")]

        return UDFAnalysis(dataset, PickUDF(), results, roi=roi)

    def create_radial_fourier_analysis(self, dataset: Any, cx: float | None = None, cy: float | None = None,
                                       ri: float | None = None, ro: float | None = None, n_bins: int | None = None,
                                       max_order: int | None = None, use_sparse: Any = None) -> UDFAnalysis:
        """Fourier coefficients of rings around the centre (LiberTEM's ``RadialFourierAnalysis``).

        For each of ``n_bins`` rings between ``ri`` and ``ro`` and each order ``o`` up to
        ``max_order``: ``sum(frame * ring * exp(i o phi))``. Results per bin ``b``:
        ``dominant_b``, ``absolute_b_o``, ``phase_b_o``, ``complex_b_o`` (orders above 0
        divided by ``max(1, |order 0|)``); ``raw_results`` is ``(n_bins, max_order + 1, *nav)``.
        """
        from detflow.nodes import masks
        from detflow.nodes.masks_udf import ApplyMasksUDF

        if len(tuple(dataset.shape.sig)) != 2:
            raise ValueError("incompatible dataset: need two signal dimensions")
        h, w = tuple(dataset.shape.sig)
        cx = w / 2 if cx is None else cx
        cy = h / 2 if cy is None else cy
        ri = 0 if ri is None else ri
        ro = masks.bounding_radius(cx, cy, w, h) if ro is None else ro
        n_bins = 1 if n_bins is None else int(n_bins)
        max_order = 24 if max_order is None else int(max_order)
        orders = max_order + 1
        if use_sparse is None:  # LiberTEM's choice: dense when the stack is small or the rings wide
            width = (ro - ri) / n_bins
            area = np.pi * ro**2 - np.pi * (ro - width) ** 2
            small = n_bins * orders * h * w * 8 < 2**18
            use_sparse = False if small or (area / (w * h) > 0.05 and n_bins < 10) else "scipy.sparse"
        nav = tuple(dataset.shape.nav)

        def stack() -> np.ndarray:
            rings = np.asarray(masks.radial_bins(cx, cy, w, h, radius=ro, radius_inner=ri, n_bins=n_bins,
                                                 use_sparse=False, dtype=np.complex64))
            _, phi = masks.polar_map(cx, cy, w, h)
            modulator = np.exp(phi.astype(np.complex64) * np.arange(orders, dtype=np.complex64)[:, None, None] * 1j)
            return (rings[:, None] * modulator).reshape((-1, h, w))

        udf = ApplyMasksUDF(mask_factories=stack, use_sparse=use_sparse, mask_count=n_bins * orders,
                            mask_dtype=np.complex64)

        def coefficients(res: dict[str, Any]) -> np.ndarray:
            data = res["intensity"].data.reshape((int(np.prod(nav)), -1)).T  # LiberTEM's (historical) order
            return data.reshape((n_bins, orders, *nav))

        def results(res: dict[str, Any]) -> list[AnalysisResult]:
            c = coefficients(res)
            absolute, angle = np.absolute(c), np.angle(c)
            normal = np.maximum(1, absolute[:, 0])
            threshold = absolute[:, 1:].reshape((n_bins, -1)).max(axis=1) * 0.2
            below = np.all(absolute[:, 1:] < threshold[:, None, None, None], axis=1)
            dominant = np.argmax(absolute[:, 1:], axis=1) + 1
            dominant[below] = 0
            out = []
            for b in range(n_bins):
                out.append(AnalysisResult(dominant[b], f"dominant_{b}", f"dominant order of bin {b}",
                                          "Dominant Fourier component"))
                out += [AnalysisResult(absolute[b, o], f"absolute_{b}_{o}", f"absolute of bin {b} order {o}",
                                       "Absolute value of Fourier component") for o in range(orders)]
            out += [AnalysisResult(angle[b, o], f"phase_{b}_{o}", f"phase of bin {b} order {o}",
                                   "Phase of Fourier component") for b in range(n_bins) for o in range(orders)]
            out += [AnalysisResult(c[b, o] if o == 0 else c[b, o] / normal[b], f"complex_{b}_{o}",
                                   f"bin {b} order {o}", "Fourier component")
                    for b in range(n_bins) for o in range(orders)]
            return out

        return UDFAnalysis(dataset, udf, results, raw_results=coefficients)

    def run(self, job: UDFAnalysis, roi: Any = None, progress: bool = False,
            corrections: Any = None) -> AnalysisResultSet:
        """Run an analysis made by a ``create_*_analysis`` helper."""
        if not isinstance(job, UDFAnalysis):
            raise ConfigurationError(f"ctx.run: expected an analysis from ctx.create_*_analysis(); got {job!r}")
        roi = job.roi if roi is None else roi
        res = self.run_udf(dataset=job.dataset, udf=job.udf, roi=roi, progress=progress, corrections=corrections)
        raw = res if job.raw_results is None else job.raw_results(res)
        return AnalysisResultSet(job.make_results(res), raw_results=raw)
