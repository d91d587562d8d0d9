"""``HoloViewsPlot``: a live image as a HoloViews ``DynamicMap`` fed through a ``Pipe``.

Each plot owns an ``hv.streams.Pipe``; :meth:`HoloViewsPlot.new_data` sends the new
array down it and the ``DynamicMap`` redraws an ``hv.Image`` (bokeh backend, colour
bar, colour range fitted to each update, NaN drawn as missing). Nav results are drawn
in scan coordinates, sig results in detector coordinates, pixel centres at integer
positions and row 0 at the top, as a detector image is shown.

HoloViews is imported here only, when the first plot is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.errors import import_optional
from detflow.sinks.plots.base import Channel, LivePlot

if TYPE_CHECKING:
    from detflow.graph.events import RunInfo

__all__ = ["HoloViewsPlot"]


def _holoviews() -> Any:
    hv = import_optional("holoviews", "live plots")
    import_optional("holoviews.plotting.bokeh", "live plots")  # registers the bokeh backend
    return hv


def _shape(channel: Channel, info: RunInfo | None) -> tuple[int, int] | None:
    if info is None:
        return None
    shape = info.meta.nav_shape if channel.kind == "nav" else info.meta.sig_shape
    return (shape[0], shape[1]) if channel.kind in ("nav", "sig") and len(shape) == 2 else None


class HoloViewsPlot(LivePlot):
    """One live image: ``plot.dmap`` is the ``hv.DynamicMap``, ``plot.pipe`` its ``Pipe``.

    Parameters
    ----------
    channel
        What to show.
    info
        The run (for the image's shape before the first update).
    cmap, width, height
        Look of the image: ``width`` is the image area's width in screen pixels; its
        height follows the data, so pixels stay square, unless ``height`` is given.
        The colour bar is labelled with the buffer's name and unit (``intensity [counts]``).

    Examples
    --------
    >>> import numpy as np
    >>> from detflow.sinks.plots.base import Channel
    >>> plot = HoloViewsPlot(Channel(0, "sum", "intensity", "sig"))
    >>> plot.new_data(np.eye(3), frames_done=9, final=True)
    >>> plot.pipe.data.shape
    (3, 3)
    """

    def __init__(self, channel: Channel, info: RunInfo | None = None, *, cmap: str = "viridis",
                 width: int = 360, height: int | None = None) -> None:
        super().__init__(channel, info)
        hv = _holoviews()
        self._hv = hv
        self.cmap = cmap
        self.width = width
        self.height = height
        shape = _shape(channel, info) or (1, 1)
        self.pipe = hv.streams.Pipe(data=np.full(shape, np.nan))
        self.dmap = hv.DynamicMap(self._image, streams=[self.pipe])

    def _image(self, data: np.ndarray) -> Any:
        import xarray as xr

        hv = self._hv
        ny, nx = data.shape
        ydim, xdim = self.channel.dims
        # as xarray: its NaN-skipping min/max take an all-NaN image (nothing computed yet) quietly
        array = xr.DataArray(data, dims=(ydim, xdim), coords={ydim: np.arange(ny), xdim: np.arange(nx)},
                             name=self.channel.buffer)
        image = hv.Image(array, kdims=[xdim, ydim], vdims=[self.channel.buffer])
        finite = np.isfinite(data)
        clim = (float(data[finite].min()), float(data[finite].max())) if finite.any() else (0.0, 1.0)
        if clim[0] == clim[1]:
            clim = (clim[0] - 0.5, clim[1] + 0.5)
        # square pixels: the frame (the image area, colour bar and axes aside) is as many
        # pixels high per data row as it is wide per column
        frame = {"frame_width": self.width, "data_aspect": 1} if self.height is None else {
            "frame_width": self.width, "frame_height": self.height}
        return image.opts(
            colorbar=True, cmap=self.cmap, clim=clim, framewise=True, invert_yaxis=True,
            title=self.title, tools=["hover"], clabel=self.channel.value_label,
            clipping_colors={"NaN": "transparent"}, **frame,
        )

    def new_data(self, data: np.ndarray, *, frames_done: int, final: bool = False) -> None:
        super().new_data(data, frames_done=frames_done, final=final)
        self.pipe.send(data)

    def display(self) -> None:
        """Display in a notebook (loads HoloViews' bokeh extension there once)."""
        from IPython.display import display

        if not self._hv.extension._loaded:
            self._hv.extension("bokeh")
        display(self.dmap)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.dmap._repr_mimebundle_(include, exclude)
