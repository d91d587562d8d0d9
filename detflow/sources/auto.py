"""``auto``: pick the source of a file by its contents first, its suffix second.

Every registered source (built-in or from a ``detflow.sources`` entry point) that
declares ``can_open(path)`` and ``suffixes`` takes part, in the manner of xarray's
backend entry points:

1. the sources whose suffixes match are asked ``can_open(path)`` first (cheap: the
   usual case imports only the module that matches),
2. then every other source: magic bytes win over a misleading suffix,
3. then, where no contents match, the first source whose suffixes match.

=========  ===============================================  ==========================
format     contents                                         suffixes
=========  ===============================================  ==========================
npy        ``\\x93NUMPY`` at 0                               ``.npy``
hdf5       ``\\x89HDF\\r\\n\\x1a\\n`` at 0, 512, 1024, ...        ``.h5 .hdf5 .hdf .nxs .emd``
mib        ``MQ1,`` at 0 (data) or ``HDR,`` at 0 (header)     ``.mib .hdr``
zarr       a directory holding ``zarr.json``/``.zarray``/     ``.zarr``
           ``.zgroup``
mrc        ``MAP`` at byte 208                               ``.mrc .mrcs .rec .st``
tvips      a TVIPS header (version 1 or 2 at byte 4)        ``.tvips``
blockfile  ``IMGBLO`` at 0                                   ``.blo``
empad      an XML header with a ``<raw_file>`` element       ``.xml``
seq        ``0xFEED`` at 0, ``Norpix seq`` (UTF-16) at 4      ``.seq``
dm         version 3 or 4 at 0, then a tag tree             ``.dm3 .dm4``
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

_NEVER = Source.__dict__["can_open"].__func__  # the base class's answer: not this format


def _candidates() -> list[tuple[str, Any]]:
    """Every registered source that can judge a file; one whose module cannot import is left out."""
    from detflow.registry import SOURCES

    out = []
    for name in SOURCES.names():
        if name == "auto":
            continue
        try:
            obj = SOURCES.get(name)
        except ImportError:  # an optional dependency at module level, or a broken plugin
            continue
        judge = getattr(obj, "can_open", None)
        if callable(judge) and getattr(judge, "__func__", None) is not _NEVER:
            out.append((name, obj))  # sources that keep the base's "never" have no contents to go by
    return out


def _suffixes_of(obj: Any) -> tuple[str, ...]:
    return tuple(s.lower() for s in getattr(obj, "suffixes", ()))


def detect_format(path: str | os.PathLike[str]) -> str:
    """The registry name of the source for ``path``; an error lists what was tried."""
    from detflow.registry import SOURCES

    p = os.fspath(path)
    if not os.path.exists(p):
        raise SourceNotFoundError(p)
    suffix = os.path.splitext(p.rstrip("/"))[1].lower()

    def opens(obj: Any) -> bool:
        try:
            return bool(obj.can_open(p))
        except Exception:  # a plugin's can_open must not break detection of the others
            return False

    # suffix matches first: the common case imports nothing but the module that matches
    by_suffix = [n for n, paths in _builtin_suffix_hints().items() if suffix in paths and n in SOURCES]
    for name in by_suffix:
        try:
            obj = SOURCES.get(name)
        except ImportError:
            continue
        if opens(obj):
            return name
    candidates = _candidates()
    for name, obj in candidates:
        if name not in by_suffix and opens(obj):
            return name
    for name, obj in candidates:
        if suffix and suffix in _suffixes_of(obj):
            return name
    tried = ", ".join(n for n, _ in candidates)
    suffixes = " ".join(sorted({s for _, obj in candidates for s in _suffixes_of(obj)}))
    raise SourceFormatError(f"{p}: cannot tell the file format; tried the contents as: {tried}; "
                            f"suffixes: {suffixes}. Name the type (e.g. 'raw' with dtype and shapes)")


def _builtin_suffix_hints() -> dict[str, tuple[str, ...]]:
    """Suffixes of the registered sources, read without importing them where possible.

    The built-in sources' suffixes are known here so that a ``.npy`` file does not
    import the HDF5 or MIB modules to be recognised; any other source is imported
    (in :func:`_candidates`) and asked.
    """
    return {
        "npy": (".npy",),
        "hdf5": (".h5", ".hdf5", ".hdf", ".nxs", ".emd"),
        "mib": (".mib", ".hdr"),
        "zarr": (".zarr",),
        "mrc": (".mrc", ".mrcs", ".rec", ".st"),
        "tvips": (".tvips",),
        "blockfile": (".blo",),
        "empad": (".xml",),
        "seq": (".seq",),
        "dm": (".dm3", ".dm4"),
    }


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
