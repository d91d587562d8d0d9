"""``progress``: a progress bar over frames (tqdm)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detflow.graph.events import RunInfo, Update
    from detflow.graph.results import UDFResults

__all__ = ["ProgressSink"]


class ProgressSink:
    """Shows frames done out of frames to do; counts ROI frames only.

    Parameters
    ----------
    **tqdm_kwargs
        Passed to ``tqdm`` (e.g. ``file=``, ``disable=``).
    """

    def __init__(self, **tqdm_kwargs: Any) -> None:
        self._kwargs = tqdm_kwargs
        self._bar: Any = None
        self.frames_done = 0

    def start(self, info: RunInfo) -> None:
        with warnings.catch_warnings():
            # in a Jupyter kernel without ipywidgets, tqdm.auto warns and falls back to the text
            # bar; the text bar works there, so the warning only alarms the reader
            warnings.filterwarnings("ignore", message="IProgress not found")
            from tqdm.auto import tqdm

        self._bar = tqdm(
            total=info.frames_total, unit="frame", desc=info.graph_name, **self._kwargs
        )

    def update(self, update: Update) -> None:
        self._bar.update(update.frames_done - self.frames_done)
        self.frames_done = update.frames_done

    def finish(self, results: UDFResults | None) -> None:
        if self._bar is not None:
            self._bar.close()
