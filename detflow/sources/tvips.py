"""``tvips``: a TVIPS camera recording (``*_000.tvips`` and its sequels), read by rosettasciio.

rosettasciio (``pip install 'detflow[formats]'``) parses the recording's headers and
its per-frame records and hands the frames over as a lazy dask array; detflow reads
that array chunk by chunk, as the ``dask`` source does. ``scan_shape`` (or
``nav_shape``) gives the scan's shape; by default the frames form one line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from detflow.errors import SourceFormatError, SourceNotFoundError, import_optional
from detflow.nodes.params import Param
from detflow.sources.base import read_head
from detflow.sources.dask_ import DaskSource
from detflow.sources.params import COMMON_PARAMS, path_param

__all__ = ["TvipsSource"]


class TvipsSource(DaskSource):
    """A dataset from a TVIPS recording.

    Parameters
    ----------
    path
        The first file of the recording (``..._000.tvips``).
    nav_shape, sig_shape, sync_offset, allow_short
        As for every source.
    """

    name: ClassVar[str] = "tvips"
    params_spec: ClassVar[tuple[Param, ...]] = (path_param("the first .tvips file of the recording"),
                                                *COMMON_PARAMS)
    suffixes: ClassVar[tuple[str, ...]] = (".tvips",)

    @classmethod
    def can_open(cls, path: str) -> bool:
        """A ``.tvips`` file whose general header says version 1 or 2 (bytes 4-8)."""
        if not str(path).lower().endswith(".tvips"):
            return False
        head = read_head(path, 8)
        return len(head) == 8 and int(np.frombuffer(head, "<u4")[1]) in (1, 2)

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
        super().__init__(_read(self.path), sig_dims=2, nav_shape=nav_shape, sig_shape=sig_shape,
                         sync_offset=sync_offset, allow_short=allow_short)

    def describe(self) -> str:
        return f"tvips source {self.path!r}"


def _read(path: str) -> Any:
    tvips = import_optional("rsciio.tvips", "the tvips source")
    if not os.path.isfile(path):
        raise SourceNotFoundError(path)
    try:
        signals = tvips.file_reader(path, lazy=True)
    except (ValueError, OSError, KeyError) as err:
        raise SourceFormatError(f"{path}: not a readable TVIPS recording ({err})") from err
    return signals[0]["data"]
