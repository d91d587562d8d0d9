"""``mib``: Quantum Detectors Merlin acquisitions (``.hdr`` + one or more ``.mib`` files).

Opening an acquisition (on the driver, reading a few hundred bytes per file):

1. From the path given, the acquisition header and the data files: ``X.hdr`` →
   ``X.mib`` alone when it exists, else ``X<digits>.mib`` (``X_<digits>``, ``X-<digits>``),
   leaving out files that have a ``.hdr`` of their own (``r12.mib`` next to ``r12.hdr``
   is not part of ``r1``) and, of several, those whose counter depth is not the
   header's; ``X123.mib`` → its own ``X123.hdr``, else ``X.hdr`` and its files, else
   ``X<digits>.mib``. ``disable_glob=True`` takes the one file.
2. The first frame header of each file: the files are ordered by its sequence number
   and must all share one layout (frame size, pixel format); a file whose size is not
   a whole number of frames is truncated, and its last frame header must parse, or
   the file mixes frame sizes. Each error names the file and the frame.
3. The nav shape: ``ScanY x ScanX`` from the ``.hdr`` when it has them, else
   ``(frames // Frames per Trigger, Frames per Trigger)``; without a ``.hdr``, the
   frames found, flat, unless the user gives ``nav_shape``.

Reading (on the worker): :class:`MibReader` maps a range of the flat pixel stream
onto whole frames of the files, checks that each of those frames starts with a frame
header (so a file that changes frame size half-way is caught at the frame where it
does), and decodes them (:mod:`detflow.sources.mib_decode`). Files are memory-mapped
per process and the frames go to the decoder as a strided view: no copy before the
one that decodes. The reader pickles as paths, frame counts and the layout.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError, SourceFormatError, SourceNotFoundError
from detflow.sources.base import FrameReader, Source
from detflow.sources.mib_decode import MAX_HEADER_BYTES, MibLayout, decode_frames, parse_frame_header
from detflow.sources.mib_write import write_mib
from detflow.sources.readers import MmapReader

log = logging.getLogger(__name__)

__all__ = ["MibFile", "MibReader", "MibSource", "find_files", "read_hdr", "write_mib"]

REQUIRED_HDR_KEYS = ("Frames in Acquisition (Number)", "Frames per Trigger (Number)")


def read_hdr(path: str) -> dict[str, str]:
    """The ``Key: Value`` pairs of a ``.hdr`` file; an error names what is missing."""
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20).decode("latin-1")
    except FileNotFoundError as err:
        raise SourceNotFoundError(path) from err
    if not text.startswith("HDR"):
        raise SourceFormatError(f"{path}: not a Merlin acquisition header: it does not start with 'HDR,'")
    out: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        if line.strip().startswith("End"):
            break
        key, sep, value = line.partition(":")  # values may hold colons, keys do not
        if sep:
            out[key.strip()] = value.strip(" \t\x00")
    missing = [k for k in REQUIRED_HDR_KEYS if k not in out]
    if missing:
        raise SourceFormatError(
            f"{path}: the acquisition header lacks the required key(s) {', '.join(map(repr, missing))}"
        )
    for key in REQUIRED_HDR_KEYS + ("ScanX", "ScanY"):
        if key in out and not out[key].strip().lstrip("-").isdigit():
            raise SourceFormatError(f"{path}: header key {key!r} must be an integer; got {out[key]!r}")
    return out


def _strip_digits(stem: str) -> str:
    return re.sub(r"[_-]?[0-9]+$", "", stem)


def _numbered(base: str) -> list[str]:
    """The numbered data files of acquisition ``base``: ``base<digits>.mib`` (or with
    ``_``/``-`` before the digits), less those that have a ``.hdr`` of their own: for
    ``r1``, ``r12.mib`` next to ``r12.hdr`` is acquisition ``r12``, not file 2 of ``r1``."""
    name = re.compile(re.escape(os.path.basename(base)) + r"[_-]?[0-9]+\.mib$", re.IGNORECASE)
    found = glob.glob(glob.escape(base) + "*.[mM][iI][bB]")
    return [f for f in found
            if name.match(os.path.basename(f)) and not os.path.isfile(os.path.splitext(f)[0] + ".hdr")]


def _data_files(stem: str) -> list[str]:
    """``stem.mib`` alone when it exists, else the numbered files of ``stem``."""
    alone = [stem + ext for ext in (".mib", ".MIB") if os.path.isfile(stem + ext)]
    return alone[:1] or _numbered(stem)


def find_files(path: str, *, disable_glob: bool = False) -> tuple[str | None, list[str]]:
    """``(hdr_path or None, [mib paths])`` of the acquisition ``path`` belongs to.

    From ``X.hdr``: ``X.mib`` when it exists, taken alone; else the numbered files
    ``X<digits>.mib`` that have no ``.hdr`` of their own. From ``X<digits>.mib``: its
    own ``.hdr`` if there is one, else ``X.hdr`` and that acquisition's files (which
    must include the one given), else the numbered files of ``X``.
    """
    stem, ext = os.path.splitext(path)
    ext = ext.lower()
    if ext == ".hdr":
        if not os.path.isfile(path):
            raise SourceNotFoundError(path)
        mibs = [stem + ".mib"] if disable_glob else _data_files(stem)
        mibs = [m for m in mibs if os.path.isfile(m)]
        if not mibs:
            raise SourceNotFoundError(
                stem + "*.mib", f"no data files found for the acquisition header {path!r} "
                f"(looked for {os.path.basename(stem)}.mib, then {os.path.basename(stem)}<number>.mib)"
            )
        return path, sorted(mibs)
    if ext != ".mib":
        raise ConfigurationError(f"mib source: expected a .hdr or .mib path; got {path!r}")
    if not os.path.isfile(path):
        raise SourceNotFoundError(path)
    if os.path.isfile(stem + ".hdr"):
        return stem + ".hdr", [path] if disable_glob else sorted(_data_files(stem))
    base = _strip_digits(stem)
    hdr = next((c for c in (base + ".hdr", base.rstrip("_-") + ".hdr") if os.path.isfile(c)), None)
    if disable_glob or base == stem:
        return hdr, [path]
    mibs = _data_files(base) if hdr is not None else _numbered(base)
    if os.path.abspath(path) not in {os.path.abspath(m) for m in mibs}:
        mibs = [path]  # the header's acquisition is another one (its .mib stands alone)
    return hdr, sorted(mibs)


@dataclass(frozen=True)
class MibFile:
    """One ``.mib`` file: where its frames sit in the acquisition."""

    path: str
    first_frame: int  # index in the acquisition of this file's first frame
    n_frames: int
    size: int


def _matching_header(mibs: list[str], header: dict[str, str], hdr_path: str | None) -> list[str]:
    """Of several candidate files, those whose frames have the header's counter depth.

    A numbered file of another depth belongs to another acquisition; if none is left,
    the error names the header and the files.
    """
    depth = header.get("Counter Depth (number)", "").strip()
    if len(mibs) < 2 or not depth.isdigit():
        return mibs
    depths = {p: parse_frame_header(_read_head(p), f"{p}, frame 0").counter_depth for p in mibs}
    keep = [p for p in mibs if depths[p] == int(depth)]
    if keep and len(keep) < len(mibs):
        log.warning("%s: left out data files of another counter depth than the header's %s: %s", hdr_path, depth,
                    ", ".join(sorted(os.path.basename(p) for p in mibs if p not in keep)))
    if not keep:
        raise SourceFormatError(
            f"{hdr_path}: the header says counter depth {depth}, but its data files hold other depths: "
            + ", ".join(f"{os.path.basename(p)} ({d} bits)" for p, d in sorted(depths.items()))
        )
    return keep


def _read_head(path: str, offset: int = 0) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(MAX_HEADER_BYTES)


def _open_files(mibs: list[str]) -> tuple[MibLayout, list[MibFile]]:
    """Layout shared by all files, and the files in sequence order."""
    infos = []
    for p in mibs:
        size = os.path.getsize(p)
        if size == 0:
            raise SourceFormatError(f"{p}: the file is empty: no frame 0")
        fh = parse_frame_header(_read_head(p), f"{p}, frame 0")
        infos.append((fh.sequence, p, size, fh))
    infos.sort(key=lambda t: (t[0], t[1]))
    seq0, first_path, _, fh0 = infos[0]
    layout = MibLayout.from_header(fh0, f"{first_path}, frame 0")
    files: list[MibFile] = []
    frame = 0
    prev_end: tuple[int, str] | None = None
    for seq, p, size, fh in infos:
        lay = MibLayout.from_header(fh, f"{p}, frame 0")
        if lay != layout:
            raise SourceFormatError(
                f"{p}, frame 0: mixed frame sizes in one acquisition: {lay.describe()} "
                f"({lay.frame_bytes} bytes a frame), but {first_path} has {layout.describe()} "
                f"({layout.frame_bytes} bytes)"
            )
        n, rest = divmod(size, layout.frame_bytes)
        if rest:
            raise SourceFormatError(
                f"{p}: truncated or mixed frame sizes: frame {n} has {rest} of its "
                f"{layout.frame_bytes} bytes ({layout.describe()} frames)"
            )
        if n > 1:  # a file that changes frame size shows it by its last frame at the latest
            where = f"{p}, frame {n - 1}"
            try:
                last = parse_frame_header(_read_head(p, (n - 1) * layout.frame_bytes), where)
            except SourceFormatError as err:
                raise SourceFormatError(
                    f"{err}; with frames of {layout.frame_bytes} bytes as frame 0 has, a header should "
                    "start here: mixed frame sizes in one file, or a corrupt file"
                ) from None
            if MibLayout.from_header(last, where) != layout:
                raise SourceFormatError(f"{where}: mixed frame sizes: this frame differs from frame 0")
        if prev_end is not None and seq < prev_end[0]:
            raise SourceFormatError(
                f"{p}: its frames (sequence numbers {seq}..{seq + n - 1}) overlap those of "
                f"{prev_end[1]}: two acquisitions match the same file pattern; load one with "
                "disable_glob=True or move the other away"
            )
        prev_end = (seq + n, p)
        files.append(MibFile(p, frame, n, size))
        frame += n
    return layout, files


@dataclass(frozen=True)
class MibReader:
    """Decoded pixels of an acquisition's frames, as one flat stream."""

    layout: MibLayout
    files: tuple[MibFile, ...]
    total_frames: int

    @property
    def dtype(self) -> np.dtype:
        return self.layout.dtype

    @property
    def n_pixels(self) -> int:
        return self.total_frames * self.layout.frame_size

    def read_pixels(self, start: int, stop: int) -> np.ndarray:
        fsize = self.layout.frame_size
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        f0, f1 = start // fsize, -(-stop // fsize)
        out = self.read_frames(f0, f1)
        flat = out.reshape(-1)
        return flat[start - f0 * fsize : stop - f0 * fsize]

    def read_frames(self, f0: int, f1: int) -> np.ndarray:
        """Frames ``f0:f1`` of the acquisition, decoded: ``(n, H, W)``."""
        lay = self.layout
        out = np.empty((f1 - f0, *lay.sig_shape), dtype=lay.dtype)
        for mf in self.files:
            lo, hi = max(f0, mf.first_frame), min(f1, mf.first_frame + mf.n_frames)
            if lo >= hi:
                continue
            a, b = lo - mf.first_frame, hi - mf.first_frame
            mm = np.asarray(MmapReader(mf.path, 0, np.dtype(np.uint8), mf.size)._mapping())
            region = mm[a * lay.frame_bytes : b * lay.frame_bytes].reshape(b - a, lay.frame_bytes)
            self._check_headers(mf, region, a)
            decode_frames(lay, region, out[lo - f0 : hi - f0])
        return out

    @staticmethod
    def _check_headers(mf: MibFile, region: np.ndarray, first: int) -> None:
        bad = np.flatnonzero((region[:, :4] != np.frombuffer(b"MQ1,", dtype=np.uint8)).any(axis=1))
        if bad.size:
            k = first + int(bad[0])
            got = bytes(region[bad[0], :16]).decode("latin-1").encode("unicode_escape").decode()
            raise SourceFormatError(
                f"{mf.path}, frame {k}: expected a frame header ('MQ1,...') at byte "
                f"{(k * region.shape[1])}; got {got!r}: the file mixes frame sizes or is corrupt"
            )

    def restrict(self, start: int, stop: int) -> MibReader:
        fsize = self.layout.frame_size
        f0, f1 = start // fsize, -(-stop // fsize)
        keep = tuple(f for f in self.files if f.first_frame < f1 and f.first_frame + f.n_frames > f0)
        return MibReader(self.layout, keep, self.total_frames)


class MibSource(Source):
    """A Merlin acquisition.

    Parameters
    ----------
    path
        The ``.hdr`` file, or any one of the acquisition's ``.mib`` files.
    nav_shape
        Overrides the header's scan shape (needed for a flat scan without ``.hdr``).
    sig_shape, sync_offset, allow_short
        As for every source: an acquisition cut short (fewer frames than its header's
        scan shape) is an error unless ``allow_short=True``.
    disable_glob
        Read only the file given (a ``.mib``), not its siblings.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> frames = np.arange(6 * 32 * 32, dtype=np.uint32).reshape(2, 3, 32, 32)
    >>> _ = write_mib(os.path.join(d, "scan.hdr"), frames, raw=True, counter_depth=24)
    >>> src = MibSource(os.path.join(d, "scan.hdr"))
    >>> src.shape, src.dtype, src.counter_depth
    (Shape(nav=(2, 3), sig=(32, 32)), dtype('uint32'), 24)
    """

    name: ClassVar[str] = "mib"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        nav_shape: Sequence[int] | None = None,
        sig_shape: Sequence[int] | None = None,
        sync_offset: int = 0,
        allow_short: bool = False,
        disable_glob: bool = False,
    ) -> None:
        if path is None:
            raise ConfigurationError("mib source: parameter 'path' is required")
        self.path = os.fspath(path)
        self._disable_glob = bool(disable_glob)
        self.header: dict[str, str] = {}
        super().__init__(nav_shape=nav_shape, sig_shape=sig_shape, sync_offset=sync_offset,
                         allow_short=allow_short)

    def describe(self) -> str:
        return f"mib source {self.path!r}"

    def _open(self) -> tuple[tuple[int, ...], tuple[int, ...], FrameReader]:
        hdr_path, mibs = find_files(self.path, disable_glob=self._disable_glob)
        self.hdr_path = hdr_path
        self.header = read_hdr(hdr_path) if hdr_path is not None else {}
        self.layout, files = _open_files(_matching_header(mibs, self.header, hdr_path))
        self.files = [f.path for f in files]
        total = sum(f.n_frames for f in files)
        reader = MibReader(self.layout, tuple(files), total)
        return self._native_nav(total), self.layout.sig_shape, reader

    def _native_nav(self, found: int) -> tuple[int, ...]:
        h = self.header
        if "ScanX" in h and "ScanY" in h and int(h["ScanX"]) > 0 and int(h["ScanY"]) > 0:
            return (int(h["ScanY"]), int(h["ScanX"]))
        if h:
            frames = int(h["Frames in Acquisition (Number)"])
            fpt = int(h["Frames per Trigger (Number)"])
            if frames > 0 and 1 < fpt < frames:
                return (frames // fpt, fpt)
            if frames > 0:
                return (frames,)
        return (found,)

    @property
    def counter_depth(self) -> int:
        return self.layout.counter_depth

    @property
    def is_raw(self) -> bool:
        return self.layout.raw

    def diagnostics(self) -> dict[str, Any]:
        """What was found: files, layout, header keys used."""
        return {
            "files": list(self.files),
            "hdr": self.hdr_path,
            "layout": self.layout.describe(),
            "counter_depth": self.layout.counter_depth,
            "frames": math.prod(self.meta.nav_shape),
        }
