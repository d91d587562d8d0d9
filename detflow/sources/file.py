"""The part every memory-mapped single-file source shares: ``path``, ``describe``, ``close``.

A format module subclasses :class:`FileSource`, sets ``name``, ``params_spec``,
``suffixes`` and ``can_open``, and implements ``_open``. One with parameters of its own
takes them in its ``__init__``, stores them, and passes ``path`` and the common
parameters on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from detflow.sources.base import Source
from detflow.sources.readers import forget_mappings

__all__ = ["FileSource"]


class FileSource(Source):
    """A source reading one file (``path``) through memory maps."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        sync_offset: int = 0,
        allow_short: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        super().__init__(nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

    def describe(self) -> str:
        return f"{self.name} source {self.path!r}"

    def close(self) -> None:
        """Unmap the file in this process (partitions already handed out stay valid)."""
        forget_mappings(self.path)
