"""Live plots: which images, how often, and what they show (no browser here).

The throttle runs on a fake clock that a sink ahead of the plot sink advances by a
fixed step per merged partition, so which updates are shown is exact, not timed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import detflow as df
from detflow.errors import ConfigurationError
from detflow.graph import Graph
from detflow.nodes import CoMUDF, SumSigUDF, SumUDF
from detflow.sinks.plots import Channel, LivePlot, LivePlotSink, NullPlot, Throttle


def _data(shape=(6, 8, 5, 4), seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 500, size=shape).astype(np.uint16)


class _Ticker:
    """A sink that advances a fake clock by ``step`` seconds per merged partition."""

    def __init__(self, now: list[float], step: float) -> None:
        self.now, self.step = now, step

    def start(self, info) -> None:
        pass

    def update(self, update) -> None:
        self.now[0] += self.step

    def finish(self, results) -> None:
        pass


def _run(data, *, plots=True, step=0.1, max_rate=4.0, fpp=4, roi=None, udf="sumsig"):
    g = Graph("plots")
    g.source("memory", data=data)
    g.partition(frames_per_partition=fpp, roi=roi)
    g.udf(udf, id="n")
    now = [0.0]
    sink = LivePlotSink(plots, plot_class=NullPlot, max_rate=max_rate, clock=lambda: now[0])
    out = g.run(executor="inline", sinks=[_Ticker(now, step), sink])
    return sink, out


def test_throttle_counts_from_the_end_of_the_last_event() -> None:
    now = [10.0]
    t = Throttle(2.0, clock=lambda: now[0])
    assert t.ready()
    t.done()
    now[0] = 10.4
    assert not t.ready()
    now[0] = 10.5
    assert t.ready()
    assert Throttle(None, clock=lambda: 0.0).ready()
    with pytest.raises(ConfigurationError, match="max_rate"):
        Throttle(0)


def test_updates_are_throttled_and_the_final_result_shown_once() -> None:
    data = _data()  # 48 frames, 12 partitions of 4
    sink, out = _run(data, step=0.1, max_rate=4.0)
    (plot,) = sink.plots
    # partitions merge 0.1 s apart; a shown update makes the next wait 0.25 s: every third partition,
    # and the last partition's update is left to finish, which shows the final result exactly once
    assert plot.history == [4, 16, 28, 40, 48]
    assert plot.final and plot.history.count(48) == 1
    np.testing.assert_array_equal(plot.data, data.sum(axis=(2, 3), dtype=np.float64))
    np.testing.assert_array_equal(plot.data, out["n"]["intensity"].values)


def test_a_clock_that_stands_still_shows_the_first_update_and_the_final_result() -> None:
    sink, _ = _run(_data(), step=0.0)
    assert sink.plots[0].history == [4, 48]


def test_unthrottled_every_partition_is_shown_once() -> None:
    sink, _ = _run(_data(), max_rate=None)
    assert sink.plots[0].history == list(range(4, 49, 4))


class _Recording(NullPlot):
    arrays: list[np.ndarray]

    def new_data(self, data, *, frames_done, final=False) -> None:
        super().new_data(data, frames_done=frames_done, final=final)
        self.__dict__.setdefault("arrays", []).append(data.copy())


def test_pixels_not_computed_yet_are_nan_not_zero() -> None:
    data = _data()
    g = Graph("nan")
    g.source("memory", data=data)
    g.partition(frames_per_partition=5)
    g.udf("sumsig", id="n")
    sink = LivePlotSink(True, plot_class=_Recording, max_rate=None)
    g.run(executor="inline", sinks=[sink])
    plot = sink.plots[0]
    expected = data.sum(axis=(2, 3), dtype=np.float64).reshape(-1)
    for frames_done, arr in zip(plot.history, plot.arrays, strict=True):
        assert arr.dtype.kind == "f"
        flat = arr.reshape(-1)
        assert np.isnan(flat[frames_done:]).all()
        np.testing.assert_array_equal(flat[:frames_done], expected[:frames_done])


def test_roi_positions_stay_nan_and_integer_results_become_float() -> None:
    data = _data()
    roi = np.zeros(data.shape[:2], dtype=bool)
    roi[1:4, 2:7] = True
    g = Graph("roi")
    g.source("memory", data=data)
    g.partition(frames_per_partition=7, roi=roi)
    g.udf("auto", id="n", f=lambda frame: frame.max())  # an integer nav result
    sink = LivePlotSink(True, plot_class=NullPlot, max_rate=None)
    g.run(executor="inline", sinks=[sink])
    shown = sink.plots[0].data
    assert shown.dtype.kind == "f"
    assert np.isnan(shown[~roi]).all()
    np.testing.assert_array_equal(shown[roi], data.max(axis=(2, 3))[roi])


def test_run_udf_plots_true_every_2d_result_and_kept_on_the_context() -> None:
    data = _data()
    with df.Context.make_with("inline", plot_class=NullPlot) as ctx:
        ds = ctx.load("memory", data=data, frames_per_partition=6)
        res, com = ctx.run_udf(dataset=ds, udf=[SumUDF(), CoMUDF.with_params(cx=2.0, cy=2.0, r=2.0)],
                               plots=True)
        titles = [p.title for p in ctx.plots]
    assert titles == ["sum: intensity", "com: field_y", "com: field_x", "com: magnitude", "com: divergence",
                      "com: curl"]
    assert all(p.final for p in ctx.plots)
    np.testing.assert_array_equal(ctx.plots[0].data, res["intensity"].data)
    np.testing.assert_allclose(ctx.plots[3].data, com["magnitude"].data)


def test_chosen_buffers_and_transforms() -> None:
    data = _data()
    with df.Context.make_with("inline", plot_class=NullPlot) as ctx:
        ds = ctx.load("memory", data=data, frames_per_partition=6)
        res, com = ctx.run_udf(
            dataset=ds, udf=[SumUDF(), CoMUDF.with_params(cx=2.0, cy=2.0, r=2.0)],
            plots=[["intensity"], [("field_x", np.abs), ("field", lambda f: np.hypot(f[..., 0], f[..., 1]))]])
    assert [p.title for p in ctx.plots] == ["sum: intensity", "com: absolute(field_x)", "com: <lambda>(field)"]
    np.testing.assert_allclose(ctx.plots[1].data, np.abs(com["field_x"].data))
    np.testing.assert_allclose(ctx.plots[2].data, com["magnitude"].data, rtol=1e-6)


def test_an_unknown_buffer_is_named_with_the_ones_there_are_before_any_data_is_read() -> None:
    class _Unreadable(SumSigUDF):
        def process_tile(self, tile):
            raise AssertionError("no data should be read")

    with df.Context.make_with("inline", plot_class=NullPlot) as ctx:
        ds = ctx.load("memory", data=_data())
        with pytest.raises(ConfigurationError, match=r"no result buffer 'intensty'; it has: intensity"):
            ctx.run_udf(dataset=ds, udf=_Unreadable(), plots=[["intensty"]])
        with pytest.raises(ConfigurationError, match=r"buffer 'field' .* has shape \(6, 8, 2\); a plot shows a 2-D"):
            ctx.run_udf(dataset=ds, udf=CoMUDF.with_params(cx=2.0, cy=2.0, r=2.0), plots=[["field"]])
        with pytest.raises(ConfigurationError, match=r"transform gives shape \(6, 8, 2\); reduce the last axis"):
            ctx.run_udf(dataset=ds, udf=CoMUDF.with_params(cx=2.0, cy=2.0, r=2.0), plots=[[("field", np.abs)]])
        with pytest.raises(ConfigurationError, match="one list per UDF"):
            ctx.run_udf(dataset=ds, udf=SumUDF(), plots=["intensity"])
        with pytest.raises(ConfigurationError, match="2 lists for 1 UDF"):
            ctx.run_udf(dataset=ds, udf=SumUDF(), plots=[["intensity"], ["intensity"]])


def test_without_the_udfs_the_channels_come_from_the_first_results() -> None:
    sink, out = _run(_data(), plots=[["intensity"]])
    assert [p.title for p in sink.plots] == ["n: intensity"]
    with pytest.raises(ConfigurationError, match="no result buffer 'nope'"):
        _run(_data(), plots=[["nope"]])


def test_a_1d_scan_has_nothing_to_plot_unless_a_buffer_is_chosen() -> None:
    sink, _ = _run(_data((12, 5, 4)))
    assert sink.plots == []


def test_a_stopped_run_shows_what_was_merged() -> None:
    data = _data()
    with df.Context.make_with("inline", plot_class=NullPlot) as ctx:
        ds = ctx.load("memory", data=data, frames_per_partition=4)
        for i, part in enumerate(ctx.run_udf_iter(dataset=ds, udf=SumSigUDF(), plots=True)):
            if i == 2:
                frames = part.frames_done
                break
    plot = ctx.plots[0]
    assert plot.frames_done == frames == 12 and not plot.final
    assert np.isnan(plot.data.reshape(-1)[12:]).all()


class _Displayed(LivePlot):
    shown = 0

    def display(self) -> None:
        type(self).shown += 1


def test_display_is_called_when_asked_and_not_outside_a_notebook() -> None:
    g = Graph("d")
    g.source("memory", data=_data())
    g.partition(num_partitions=2)
    g.udf("sum")
    g.run(executor="inline", sinks=[LivePlotSink(True, plot_class=_Displayed)])
    assert _Displayed.shown == 0
    g.run(executor="inline", sinks=[LivePlotSink(True, plot_class=_Displayed, display=True)])
    assert _Displayed.shown == 1


def test_channel_names() -> None:
    c = Channel(0, "com", "field", "nav", np.abs)
    assert (c.key, c.title, c.dims) == ("com/field:absolute", "com: absolute(field)", ("nav_y", "nav_x"))


def test_final_plot_equals_result_on_every_executor(ctx) -> None:
    data = _data()
    roi = np.ones(data.shape[:2], dtype=bool)
    roi[0, :3] = False
    ctx.plot_class = NullPlot
    ds = ctx.load("memory", data=data, frames_per_partition=5)
    res = ctx.run_udf(dataset=ds, udf=SumSigUDF(), roi=roi, plots=True)
    (plot,) = ctx.plots
    assert plot.final and plot.frames_done == roi.sum()
    np.testing.assert_array_equal(np.isnan(plot.data), ~roi)
    np.testing.assert_array_equal(plot.data[roi], res["intensity"].data[roi])


# --- the HoloViews plot class --------------------------------------------------------------
def test_holoviews_plots_draw_images_with_a_colour_bar_and_nan_where_missing() -> None:
    hv = pytest.importorskip("holoviews")
    from bokeh.models import ColorBar

    from detflow.sinks.plots import HoloViewsPlot

    data = _data()
    roi = np.ones(data.shape[:2], dtype=bool)
    roi[2] = False
    with df.Context.make_with("inline") as ctx:  # plot_class None: HoloViews
        ds = ctx.load("memory", data=data, frames_per_partition=6)
        res, total = ctx.run_udf(dataset=ds, udf=[SumUDF(), SumSigUDF()], roi=roi, plots=True)
    sig, nav = ctx.plots
    assert isinstance(nav, HoloViewsPlot)
    assert isinstance(nav.dmap, hv.DynamicMap) and isinstance(nav.pipe, hv.streams.Pipe)
    for plot, expected in ((nav, total["intensity"].data), (sig, res["intensity"].data)):
        fig = hv.renderer("bokeh").get_plot(plot.dmap).state
        assert fig.title.text == plot.title
        assert any(isinstance(r, ColorBar) for r in fig.right)
        (shown,) = fig.renderers[0].data_source.data["image"]
        np.testing.assert_array_equal(shown, expected)  # NaN (outside the ROI) in the same places
    assert [d.name for d in nav.dmap.last.kdims] == ["nav_x", "nav_y"]
    assert [d.name for d in sig.dmap.last.kdims] == ["sig_x", "sig_y"]


def test_holoviews_plot_before_any_data_is_all_nan() -> None:
    pytest.importorskip("holoviews")
    from detflow.graph.stream import RunInfo
    from detflow.sinks.plots import HoloViewsPlot
    from detflow.sources.base import DatasetMeta

    meta = DatasetMeta(nav_shape=(3, 4), sig_shape=(5, 6), dtype=np.dtype("uint16"))
    info = RunInfo("g", ("n",), meta, None, 12, 3)
    plot = HoloViewsPlot(Channel(0, "n", "intensity", "nav"), info)
    assert plot.pipe.data.shape == (3, 4) and np.isnan(plot.pipe.data).all()
    import holoviews as hv

    hv.renderer("bokeh").get_plot(plot.dmap)  # an all-NaN image renders without a warning


def test_holoviews_and_panel_are_imported_only_when_plots_are_asked_for() -> None:
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import detflow, detflow.api, detflow.sinks.plots
        from detflow.nodes import SumUDF
        from detflow.sinks.plots import NullPlot
        ctx = detflow.Context.make_with("inline", plot_class=NullPlot)
        ds = ctx.load("memory", data=np.ones((2, 2, 4, 4)))
        ctx.run_udf(dataset=ds, udf=SumUDF(), plots=True)
        ctx.run_udf(dataset=ds, udf=SumUDF())
        assert "holoviews" not in sys.modules and "panel" not in sys.modules and "bokeh" not in sys.modules, \\
            sorted(m for m in sys.modules if m.split(".")[0] in ("holoviews", "panel", "bokeh"))
        ctx.plot_class = None
        ctx.run_udf(dataset=ds, udf=SumUDF(), plots=True)
        assert "holoviews" in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_in_a_notebook_the_plots_are_displayed_when_the_run_starts(kernel_name: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent("""
        import numpy as np, detflow as df
        from detflow.nodes import SumUDF, SumSigUDF
        ctx = df.Context.make_with("inline")
        ds = ctx.load("memory", data=np.ones((8, 8, 16, 16)), frames_per_partition=8)
        print("run starts")
        res = ctx.run_udf(dataset=ds, udf=[SumUDF(), SumSigUDF()], plots=True)
        print("run ends", [p.title for p in ctx.plots], [p.final for p in ctx.plots])
    """))]
    nbclient.NotebookClient(nb, timeout=120, kernel_name=kernel_name).execute()
    outputs = nb.cells[0].outputs
    texts = [o.get("text", "") for o in outputs]
    start = next(i for i, t in enumerate(texts) if "run starts" in t)
    end = next(i for i, t in enumerate(texts) if "run ends" in t)
    shown = [i for i, o in enumerate(outputs) if "application/vnd.holoviews_exec.v0+json" in o.get("data", {})]
    # HoloViews' extension and the two images are displayed while the run goes, not after it
    assert len(shown) >= 2 and all(start < i < end for i in shown)
    assert "run ends ['sum: intensity', 'sumsig: intensity'] [True, True]" in texts[end]


@pytest.mark.parametrize(("shape", "udf_type", "buffer", "label"),
                         [((3, 8), "sumsig", "intensity", "intensity [counts]"),
                          ((40, 10), "com", "magnitude", "magnitude [px]"),
                          ((5, 5), "my_udf", "score", "score")])
def test_holoviews_images_keep_square_pixels_and_label_the_colour_bar(shape, udf_type, buffer, label) -> None:
    hv = pytest.importorskip("holoviews")
    from bokeh.models import ColorBar

    from detflow.sinks.plots import HoloViewsPlot

    plot = HoloViewsPlot(Channel(0, "n", buffer, "nav", udf_type=udf_type), width=400)
    plot.new_data(np.arange(shape[0] * shape[1], dtype=float).reshape(shape), frames_done=1)
    fig = hv.renderer("bokeh").get_plot(plot.dmap).state
    assert fig.frame_width == 400 and fig.frame_height == round(400 * shape[0] / shape[1])
    assert [r.title for r in fig.right if isinstance(r, ColorBar)] == [label]
