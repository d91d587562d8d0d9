"""Write Merlin ``.hdr`` + ``.mib`` acquisitions: every variant the reader reads.

Used by the tests to make data, by the benchmarks, and by the detector simulator.
The encoders here are plain numpy, written from the format notes independently of the
numba decoders in :mod:`detflow.sources.mib_kernels`, so a round trip checks one
against the other; the tests also check both against hand-built bytes.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from detflow.sources.mib import MibSource
>>> d = tempfile.mkdtemp()
>>> data = np.arange(2 * 3 * 64 * 64, dtype=np.uint16).reshape(2, 3, 64, 64) % 4096
>>> files = write_mib(os.path.join(d, "scan.hdr"), data, raw=True)
>>> src = MibSource(os.path.join(d, "scan.hdr"))
>>> src.shape, src.dtype
(Shape(nav=(2, 3), sig=(64, 64)), dtype('uint16'))
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detflow.sources.mib_decode import GAP

__all__ = ["encode_frames", "frame_header", "hdr_text", "write_mib"]

_TIMESTAMP = "2020-05-18 16:51:49.971626"
_EXT_TIMESTAMP = "2020-05-18T14:51:49.971626178Z"
_THRESHOLDS = ",".join(["1.200000E+2", "5.110000E+2"] + ["0.000000E+0"] * 6)
_DACS = ("175,511,000,000,000,000,000,000,125,255,125,125,100,100,080,100,090,030,128,004,"
         "255,129,128,176,168,511,511")
_FORMAT_OF_DEPTH = {1: "U08", 6: "U08", 12: "U16", 24: "U32"}
_DEPTH_OF_DTYPE = {np.dtype("uint8"): 6, np.dtype("uint16"): 12, np.dtype("uint32"): 24}


def _chips(layout: str) -> int:
    return 1 if layout == "1x1" else 4


def _check_layout(layout: str, sig: tuple[int, int], raw: bool, depth: int) -> tuple[int, int]:
    """The chip shape ``(ch, cw)`` of ``layout`` for frames of shape ``sig``."""
    h, w = sig
    if layout == "1x1":
        ch, cw = h, w
    elif layout in ("2x2", "2x2G"):
        gap = GAP if layout == "2x2G" else 0
        if (h - gap) % 2 or (w - gap) % 2:
            raise ValueError(f"a {layout} quad frame is two chips each way (+{gap} gap); got {h}x{w}")
        ch, cw = (h - gap) // 2, (w - gap) // 2
    else:
        raise ValueError(f"layout must be '1x1', '2x2' or '2x2G'; got {layout!r}")
    chunk = {1: 64, 6: 8, 12: 4, 24: 4}[depth]
    if raw and cw % chunk:
        raise ValueError(f"raw {depth}-bit chip rows must be a multiple of {chunk} pixels wide; got {cw}")
    return ch, cw


def frame_header(
    sequence: int,
    *,
    sig_shape: tuple[int, int],
    counter_depth: int,
    raw: bool = False,
    layout: str = "1x1",
) -> bytes:
    """One MQ1 frame header, NUL-padded to its declared size (384 or 768 bytes)."""
    chips = _chips(layout)
    size = 256 + 128 * chips
    h, w = sig_shape
    if raw:
        ch, cw = _check_layout(layout, sig_shape, True, counter_depth)
        w, h = cw * chips, ch
        if counter_depth == 24:
            w *= 2
        fmt = "R64"
    else:
        fmt = _FORMAT_OF_DEPTH[counter_depth]
    select = "01" if chips == 1 else "0F"
    exposure = "0.000555"
    head = f"MQ1,{sequence:06d},{size:05d},{chips:02d},{w:04d},{h:04d},{fmt},{layout:>6},{select},"
    head += f"{_TIMESTAMP},{exposure},0,0,0,"
    # raw mode: the thresholds and DACs are replaced by one empty field
    body = "," if raw else _THRESHOLDS + "," + ",".join(f"3RX,{_DACS}" for _ in range(chips)) + ","
    tail = f"MQ1A,{_EXT_TIMESTAMP},555000ns,{counter_depth},"
    text = (head + body + tail).encode("ascii")
    if len(text) > size:  # pragma: no cover - the fields above always fit
        raise AssertionError(f"frame header of {len(text)} bytes does not fit {size}")
    return text + b"\x00" * (size - len(text))


def _raw_rows(frames: np.ndarray, layout: str, ch: int, cw: int) -> np.ndarray:
    """Image frames ``(n, H, W)`` -> raw rows ``(n, ch, chips * cw)`` in raw order."""
    if layout == "1x1":
        return frames
    n, h, w = frames.shape
    right = w - cw
    bottom = frames[:, h - ch :][:, ::-1]  # raw row r takes image row H-1-r
    if layout == "2x2G" and (frames[:, ch : h - ch].any() or frames[:, :, cw:right].any()):
        raise ValueError("raw 2x2G frames cannot store the gap pixels; they must be 0")
    return np.concatenate(
        [bottom[:, :, right:][:, :, ::-1], bottom[:, :, :cw][:, :, ::-1],
         frames[:, :ch, right:], frames[:, :ch, :cw]],
        axis=2,
    )


def encode_frames(frames: np.ndarray, *, counter_depth: int, raw: bool, layout: str = "1x1") -> np.ndarray:
    """The pixel bytes of ``frames`` (``(n, H, W)``): ``(n, data_bytes)`` uint8."""
    n = frames.shape[0]
    if not raw:
        be = np.dtype({1: ">u1", 6: ">u1", 12: ">u2", 24: ">u4"}[counter_depth])
        return np.ascontiguousarray(frames.astype(be)).view(np.uint8).reshape(n, -1)
    ch, cw = _check_layout(layout, frames.shape[1:], True, counter_depth)
    rows = _raw_rows(frames, layout, ch, cw).astype(np.uint32)
    if counter_depth == 24:
        hi = encode_frames(rows >> 12, counter_depth=12, raw=True)
        lo = encode_frames(rows & 0xFFF, counter_depth=12, raw=True)
        return np.concatenate([hi, lo], axis=1)
    if counter_depth == 1:
        bits = rows.reshape(n, -1, 64).astype(np.uint8)
        packed = np.packbits(bits, axis=-1, bitorder="little")  # byte j: pixels 8j..8j+7
        return np.ascontiguousarray(packed[..., ::-1]).reshape(n, -1)  # the u64 is big-endian
    if counter_depth == 6:
        return np.ascontiguousarray(rows.astype(np.uint8).reshape(n, -1, 8)[..., ::-1]).reshape(n, -1)
    swapped = rows.astype(">u2").reshape(n, -1, 4)[..., ::-1]
    return np.ascontiguousarray(swapped).view(np.uint8).reshape(n, -1)


def hdr_text(
    *,
    n_frames: int,
    counter_depth: int,
    layout: str = "1x1",
    frames_per_trigger: int | None = None,
    scan: tuple[int, int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """An acquisition header: ``HDR,`` line, ``Key:\\tValue`` lines, ``End\\t`` (no newline)."""
    lines: list[tuple[str, Any]] = [
        ("Time and Date Stamp (day, mnth, yr, hr, min, s)", "18/05/2020 16:51:48"),
        ("Chip ID", "W529_F5" + (",W529_F6,W529_F7,W529_F8" if _chips(layout) == 4 else ",-,-,-")),
        ("Chip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX)", "Medipix 3RX"),
        ("Assembly Size (NX1, 2X2)", f"{layout:>6}"),
        ("Chip Mode  (SPM, CSM, CM, CSCM)", "SPM"),
        ("Counter Depth (number)", counter_depth),
        ("Gain", "SLGM"),
        ("Active Counters", "Alternating"),
        ("Thresholds (keV)", _THRESHOLDS),
        ("DACs", _DACS.replace(",", "; ")),
        ("Gap Fill Mode", "None"),
        ("Flat Field File", "None"),
        ("Dead Time File", "Dummy (C:\\\x00\\)"),
        ("Acquisition Type (Normal, Th_scan, Config)", "Normal"),
        ("Frames in Acquisition (Number)", n_frames),
        ("Frames per Trigger (Number)", frames_per_trigger if frames_per_trigger is not None else n_frames),
        ("Trigger Start (Positive, Negative, Internal)", "Rising Edge"),
        ("Trigger Stop (Positive, Negative, Internal)", "Rising Edge"),
        ("Sensor Bias (V)", "120 V"),
        ("Sensor Polarity (Positive, Negative)", "Positive"),
        ("Temperature (C)", "Board Temp 0.000000 Deg C"),
        ("Humidity (%)", "Board Humidity 0.000000 "),
        ("Medipix Clock (MHz)", "120MHz"),
        ("Readout System", "Merlin Quad"),
        ("Software Version", "0.75.4.84"),
    ]
    if scan is not None:
        lines += [("ScanX", scan[1]), ("ScanY", scan[0])]
    lines += list((extra or {}).items())
    return "HDR,\t\n" + "".join(f"{k}:\t{v}\n" for k, v in lines) + "End\t"


def write_mib(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    counter_depth: int | None = None,
    raw: bool = False,
    layout: str = "1x1",
    frames_per_file: int | None = None,
    nav_shape: Sequence[int] | None = None,
    scan_xy: bool = True,
    frames_per_trigger: int | None = None,
    write_hdr: bool = True,
    first_sequence: int = 1,
    hdr_extra: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> list[Path]:
    """Write ``data`` as a Merlin acquisition; return the files written (``.hdr`` first).

    Parameters
    ----------
    path
        ``X.hdr`` (or ``X``, or ``X.mib``): writes ``X.hdr`` and ``X.mib``, or
        ``X1.mib``, ``X2.mib``, ... with ``frames_per_file``.
    data
        Frames, ``(n, H, W)`` or ``nav_shape + (H, W)``; unsigned integers that fit the
        counter depth.
    counter_depth
        1, 6, 12 or 24; by default from the dtype (uint8: 6, uint16: 12, uint32: 24).
    raw
        Write raw ``R64`` frames instead of ``U08``/``U16``/``U32``.
    layout
        ``"1x1"`` (one chip, any frame size), ``"2x2"`` or ``"2x2G"`` (quad; frames of
        two chips each way, plus 2 gap pixels for ``2x2G``).
    nav_shape, scan_xy, frames_per_trigger
        The header's ``ScanX``/``ScanY`` (when ``scan_xy``) and ``Frames per Trigger``
        (default: the scan width); ``nav_shape`` defaults to ``data``'s nav axes.
    progress
        Show a progress bar of the frames written (tqdm, on stderr).
    """
    data = np.asarray(data)
    if data.ndim < 3:
        raise ValueError(f"data must be frames (n, H, W) or nav + (H, W); got shape {data.shape}")
    nav = tuple(nav_shape) if nav_shape is not None else tuple(data.shape[:-2])
    frames = data.reshape((-1, *data.shape[-2:]))
    if frames.dtype.kind not in "ui" and frames.size:
        raise ValueError(f"MIB holds unsigned integer counts; got dtype {frames.dtype}")
    depth = counter_depth if counter_depth is not None else _DEPTH_OF_DTYPE.get(frames.dtype)
    if depth not in (1, 6, 12, 24):
        raise ValueError(f"counter_depth must be 1, 6, 12 or 24; got {depth!r} (data dtype {frames.dtype})")
    if frames.size and (frames.min() < 0 or int(frames.max()) >= 2**depth):
        raise ValueError(f"values must lie in 0..{2**depth - 1} for a {depth}-bit counter")
    sig = (int(frames.shape[1]), int(frames.shape[2]))
    _check_layout(layout, sig, raw, depth)
    n = frames.shape[0]
    stem = re.sub(r"\.(hdr|mib)$", "", os.fspath(path), flags=re.IGNORECASE)
    per = n if not frames_per_file else int(frames_per_file)
    written: list[Path] = []
    if write_hdr:
        fpt = frames_per_trigger if frames_per_trigger is not None else (nav[-1] if len(nav) > 1 else n)
        scan = (int(nav[0]), int(nav[1])) if scan_xy and len(nav) == 2 else None
        text = hdr_text(n_frames=n, counter_depth=depth, layout=layout, frames_per_trigger=fpt,
                        scan=scan, extra=hdr_extra)
        Path(stem + ".hdr").write_bytes(text.encode("latin-1"))
        written.append(Path(stem + ".hdr"))
    n_files = max(1, math.ceil(n / per))
    from tqdm.auto import tqdm

    bar = tqdm(total=n, unit="frame", desc=f"write {Path(stem).name}.mib", disable=not progress)
    for k in range(n_files):
        name = f"{stem}.mib" if n_files == 1 else f"{stem}{k + 1}.mib"
        with open(name, "wb") as f:
            for lo in range(k * per, min(n, (k + 1) * per), 256):
                hi = min(lo + 256, n, (k + 1) * per)
                pixels = encode_frames(frames[lo:hi], counter_depth=depth, raw=raw, layout=layout)
                for i in range(hi - lo):
                    f.write(frame_header(first_sequence + lo + i, sig_shape=sig, counter_depth=depth,
                                         raw=raw, layout=layout))
                    f.write(pixels[i].tobytes())
                bar.update(hi - lo)
        written.append(Path(name))
    bar.close()
    return written
