"""The ``correct`` frame node: dark frame, gain map and excluded pixels, in the graph.

The same corrections a source applies when given ``corrections=``
(:class:`detflow.sources.corrections.CorrectionSet`, whose semantics this node keeps:
``(frame - dark) * gain``, then each excluded pixel replaced by the mean of its valid
neighbours), but as a node, so the dark frame can be the result of another node
(``dark: {ref: dark_mean.intensity}``) and the correction can sit anywhere in a chain.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from detflow.errors import ConfigurationError, ParameterError
from detflow.nodes.frames.base import FrameNode
from detflow.nodes.params import Param
from detflow.sources.corrections import CorrectionSet

__all__ = ["CorrectFrames"]


def _array_or_path(value: Any) -> str | None:
    if value is None or isinstance(value, str | os.PathLike | np.ndarray | list | tuple) or hasattr(value, "coords"):
        return None
    return f"must be an array or the path of a .npy file; got {type(value).__name__}"


class CorrectFrames(FrameNode):
    """Dark subtraction, gain and repair of excluded pixels.

    Parameters
    ----------
    dark
        Array (or ``.npy`` path) shaped like a frame, subtracted first.
    gain
        Array (or ``.npy`` path) shaped like a frame, multiplied after.
    excluded_pixels
        Boolean mask shaped like a frame, a ``sparse.COO``, or ``(y, x)`` coordinates;
        each becomes the mean of its valid neighbours.
    allow_empty
        Leave an excluded pixel with no valid neighbour as it is instead of refusing.

    The output dtype is ``result_type(input, float32)`` when any correction is given
    (float32 for integer detectors up to 16 bit), the input's otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> node = CorrectFrames(dark=np.full((2, 2), 1.0), excluded_pixels=[[0, 0]])
    >>> node.output_signature((2, 2), np.dtype("uint16"))
    ((2, 2), dtype('float32'))
    >>> node.apply(np.array([[[9, 2], [4, 6]]], dtype=np.uint16))
    array([[[3., 1.],
            [3., 5.]]], dtype=float32)
    >>> node.output_signature((3, 3), np.dtype("uint16"))
    Traceback (most recent call last):
    ...
    detflow.errors.ParameterError: parameter 'dark' must have the frame shape (3, 3); got (2, 2)
    """

    type_name = "correct"
    params_spec = (
        Param("dark", object, default=None, doc="dark frame: array or .npy path", check=_array_or_path),
        Param("gain", object, default=None, doc="gain map: array or .npy path", check=_array_or_path),
        Param("excluded_pixels", object, default=None, doc="bad pixels: mask, sparse.COO or (y, x) list",
              check=_array_or_path),
        Param("allow_empty", bool, default=False, doc="leave excluded pixels without valid neighbours as they are"),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self._set = self._build(dark=p.dark, gain=p.gain, excluded_pixels=p.excluded_pixels,
                                allow_empty=p.allow_empty)

    @staticmethod
    def _build(*, dark: Any, gain: Any, excluded_pixels: Any, allow_empty: bool) -> CorrectionSet:
        # one parameter at a time, so a file that cannot be read names its parameter
        try:
            dark = None if dark is None else CorrectionSet(dark=dark).get_dark_frame()
        except ConfigurationError as err:
            raise ParameterError("dark", str(err).removeprefix("corrections: dark: ")) from err
        try:
            gain = None if gain is None else CorrectionSet(gain=gain).get_gain_map()
        except ConfigurationError as err:
            raise ParameterError("gain", str(err).removeprefix("corrections: gain: ")) from err
        try:
            return CorrectionSet(dark=dark, gain=gain, excluded_pixels=excluded_pixels, allow_empty=allow_empty)
        except ConfigurationError as err:
            raise ParameterError("excluded_pixels", str(err).removeprefix("corrections: excluded_pixels ")) from err

    @property
    def corrections(self) -> CorrectionSet:
        """The :class:`~detflow.sources.corrections.CorrectionSet` this node applies."""
        return self._set

    def output_signature(self, sig_shape: tuple[int, ...], dtype: np.dtype) -> tuple[tuple[int, ...], np.dtype]:
        sig_shape = tuple(int(s) for s in sig_shape)
        cs = self._set
        for name, arr in (("dark", cs.get_dark_frame()), ("gain", cs.get_gain_map())):
            if arr is not None and arr.shape != sig_shape:
                raise ParameterError(name, f"must have the frame shape {sig_shape}; got {arr.shape}")
            if arr is not None and arr.dtype.kind not in "biuf":
                raise ParameterError(name, f"must be numeric; got dtype {arr.dtype}")
        try:
            cs.check(sig_shape)
        except ConfigurationError as err:
            text = str(err).removeprefix("corrections: excluded_pixels ").removeprefix("corrections: ")
            if not text.startswith("must"):
                text = f"does not fit frames of shape {sig_shape}: {text}"
            raise ParameterError("excluded_pixels", text) from err
        return sig_shape, cs.output_dtype(dtype)

    def apply(self, block: np.ndarray, *, sig_shape: tuple[int, ...] | None = None) -> np.ndarray:
        return self._set.apply(block)
