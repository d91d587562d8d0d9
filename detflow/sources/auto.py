"""``auto``: pick the format of a file from its magic bytes first, its suffix second.

=========  ===============================================  ==========================
format     magic bytes                                      suffixes
=========  ===============================================  ==========================
npy        ``\\x93NUMPY`` at 0                               ``.npy``
hdf5       ``\\x89HDF\\r\\n\\x1a\\n`` at 0, 512, 1024, ...        ``.h5 .hdf5 .hdf .nxs .emd``
mib        ``MQ1,`` at 0 (data) or ``HDR,`` at 0 (header)     ``.mib .hdr``
zarr       a directory holding ``zarr.json``/``.zarray``/     ``.zarr``
           ``.zgroup``
=========  ===============================================  ==========================

Raw files have no magic and no shape: load them with ``"raw"``. Every other keyword
goes to the format's source, so ``ctx.load("auto", path=p, nav_shape=(4, 4))`` works.
"""

from __future__ import annotations

import os
from typing import Any

from detflow.errors import ConfigurationError, SourceFormatError, SourceNotFoundError
from detflow.sources.base import Source

__all__ = ["detect_format", "load_auto"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_SUFFIXES = {
    ".npy": "npy",
    ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".nxs": "hdf5", ".emd": "hdf5",
    ".mib": "mib", ".hdr": "mib",
    ".zarr": "zarr",
}
_TRIED = (
    "magic bytes: npy (\\x93NUMPY), hdf5 (\\x89HDF at 0, 512, 1024, ...), mib (MQ1, / HDR,), "
    "zarr (a directory with zarr.json, .zarray or .zgroup); suffixes: "
    + " ".join(sorted(_SUFFIXES))
)


def _magic(path: str) -> str | None:
    if os.path.isdir(path):
        if any(os.path.exists(os.path.join(path, n)) for n in ("zarr.json", ".zarray", ".zgroup")):
            return "zarr"
        return None
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(b"\x93NUMPY"):
            return "npy"
        if head.startswith(_HDF5_MAGIC):
            return "hdf5"
        if head.startswith(b"MQ1,") or head.startswith(b"HDR,"):
            return "mib"
        size = os.fstat(f.fileno()).st_size
        offset = 512
        while offset + 8 <= size:  # HDF5 allows a user block of 512 * 2**k bytes
            f.seek(offset)
            if f.read(8) == _HDF5_MAGIC:
                return "hdf5"
            offset *= 2
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """The registry name of the format of ``path``; an error lists what was tried."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise SourceNotFoundError(p)
    found = _magic(p)
    if found is None:
        found = _SUFFIXES.get(os.path.splitext(p.rstrip("/"))[1].lower())
    if found is None:
        raise SourceFormatError(f"{p}: cannot tell the file format; tried {_TRIED}. "
                                "Name the type (e.g. 'raw' with dtype and shapes)")
    return found


def load_auto(path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Source:
    """Open ``path`` with the source its format calls for (see the module docstring).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "data.bin")   # the suffix says nothing
    >>> with open(p, "wb") as f:
    ...     np.save(f, np.zeros((2, 2, 4, 4), np.uint8))
    >>> load_auto(p).name
    'npy'
    """
    from detflow.registry import SOURCES
    from detflow.sources.params import open_source

    if path is None:
        raise ConfigurationError("auto source: parameter 'path' is required")
    kind = detect_format(path)
    return open_source(SOURCES.get(kind), path, **kwargs)
