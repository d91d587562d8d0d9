"""``empad``: an EMPAD acquisition (an ``.xml`` header naming its ``.raw`` frames).

The format's facts, as the EMPAD software writes it (and as rosettasciio reads it):

* the ``.xml`` file names the raw file in ``<raw_file filename="...">``, relative to the
  XML's folder;
* a scan gives its shape as ``<pix_x>``/``<pix_y>`` (older files) or in the raw file's
  name, ``scan_x{X}_y{Y}.raw``; a series of images gives
  ``<scan_parameters><series_count>``;
* the raw file is little-endian ``float32`` frames of 128 x 130 pixels, in scan order;
  the last 2 rows of each frame are metadata, so the signal is 128 x 128.

The XML is parsed with the standard library, so the source needs no optional package;
the frames are read through a memory map that skips each frame's 2 metadata rows.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from detflow.errors import SourceFormatError, SourceNotFoundError
from detflow.nodes.params import Param
from detflow.sources.base import FrameReader, read_head
from detflow.sources.file import FileSource
from detflow.sources.params import COMMON_PARAMS, path_param
from detflow.sources.readers import RecordReader, forget_mappings

__all__ = ["EmpadSource", "read_empad_xml"]

WIDTH = 128
HEIGHT = 128
#: rows stored per frame: the 128 of the image and 2 of metadata
RAW_HEIGHT = 130
DTYPE = np.dtype("<f4")
_SCAN_NAME = re.compile(r"scan_x(\d+)_y(\d+)")


def read_empad_xml(path: str) -> tuple[str, tuple[int, ...]]:
    """``(raw file path, nav shape)`` from an EMPAD ``.xml`` header; an error names the file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise SourceFormatError(f"{path}: not a readable EMPAD XML header ({err})") from err
    raw = root.find("raw_file")
    name = None if raw is None else (raw.get("filename") or (raw.findtext("filename") or "").strip() or None)
    if not name:
        raise SourceFormatError(f"{path}: the EMPAD header names no raw file (<raw_file filename=...>)")

    def number(tag: str) -> int | None:
        text = root.findtext(tag)
        if text is None:
            return None
        try:
            return int(text.strip())
        except ValueError as err:
            raise SourceFormatError(f"{path}: <{tag}> is {text.strip()!r}, not an integer") from err

    series = number("scan_parameters/series_count")
    pix_x, pix_y = number("pix_x"), number("pix_y")
    if series is not None:
        nav: tuple[int, ...] = (series,)
    elif pix_x is not None and pix_y is not None:
        nav = (pix_y, pix_x)
    elif (m := _SCAN_NAME.search(os.path.basename(name))) is not None:
        nav = (int(m.group(2)), int(m.group(1)))
    else:
        raise SourceFormatError(f"{path}: the EMPAD header gives no scan shape (pix_x/pix_y, "
                                f"scan_parameters/series_count, or a raw file named scan_x{{X}}_y{{Y}}.raw)")
    if min(nav) < 1:
        raise SourceFormatError(f"{path}: the EMPAD header gives the scan shape {nav}")
    return os.path.join(os.path.dirname(path), name), nav


class EmpadSource(FileSource):
    """A dataset from an EMPAD acquisition.

    Parameters
    ----------
    path
        The acquisition's ``.xml`` header.
    nav_shape, sig_shape, sync_offset, allow_short
        As for every source; the scan shape comes from the header.
    """

    name: ClassVar[str] = "empad"
    params_spec: ClassVar[tuple[Param, ...]] = (path_param("the EMPAD .xml header"), *COMMON_PARAMS)
    suffixes: ClassVar[tuple[str, ...]] = (".xml",)

    @classmethod
    def can_open(cls, path: str) -> bool:
        """An XML file (``<?xml`` or ``<root`` at the start) naming a ``raw_file`` near its top."""
        head = read_head(path, 1 << 16)
        return head.lstrip()[:5] in (b"<?xml", b"<root") and b"<raw_file" in head

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        sync_offset: int = 0,
        allow_short: bool = False,
    ) -> None:
        self.raw_path = ""
        super().__init__(path, nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

    def close(self) -> None:
        """Unmap the raw file in this process (partitions already handed out stay valid)."""
        forget_mappings(self.raw_path)

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        if not os.path.isfile(self.path):
            raise SourceNotFoundError(self.path)
        self.raw_path, nav = read_empad_xml(self.path)
        if not os.path.isfile(self.raw_path):
            raise SourceNotFoundError(self.raw_path, f"{self.path} names it as its raw file")
        record = RAW_HEIGHT * WIDTH * DTYPE.itemsize
        size = os.path.getsize(self.raw_path)
        if size % record:
            raise SourceFormatError(f"{self.raw_path}: {size} bytes is not a whole number of EMPAD frames "
                                    f"of {WIDTH}x{RAW_HEIGHT} float32 ({record} bytes)")
        reader = RecordReader(self.raw_path, 0, record, 0, DTYPE, WIDTH * HEIGHT, size // record)
        return nav, (HEIGHT, WIDTH), reader
