"""What ``detflow sim dectris`` serves: an acquisition from a ``.npy``, an HDF5 master file, or a stream dump.

:func:`load_recording` reads any of three inputs into a :class:`DectrisRecording`
(the detector configuration, the frames' shape and dtype, and the frames as encoded
blobs):

* a ``.npy`` array, ``(n, h, w)`` or ``(ny, nx, h, w)``: encoded on load
  (``bs{8,16,32}-lz4<`` by the dtype's size unless another encoding is asked for);
* an HDF5 **master file** as DECTRIS detectors write it: ``/entry/data/data_000001``,
  ``data_000002``, ... (external links to the data files, each an ``(n, h, w)``
  dataset of one chunk per frame), and the configuration under
  ``/entry/instrument/detector`` (``detectorSpecific/x_pixels_in_detector``, ...,
  ``bit_depth_image``, ``count_time``, ``frame_time``). Chunks stored with the
  bitshuffle-LZ4 filter are sent as they are in the file (read with
  ``read_direct_chunk``: the filter's chunk layout *is* the stream's ``bsNN-lz4<``
  blob); anything else is decoded by HDF5 and encoded again;
* a **dump of stream messages** (LiberTEM-live's simulator format,
  ``shared/reference/protocols.md`` 2.1): records of ``int64`` LE length + bytes, one
  per ZeroMQ part; the parts from the first ``dheader-1.0`` on are read (the header,
  the configuration, then four parts per image); its own footer is not needed.

:func:`write_dump` and :func:`write_master` write the last two (for tests, and to
make recordings to replay).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detflow.errors import ConfigurationError, SourceFormatError, SourceNotFoundError
from detflow.sources.live.dectris.codec import BSLZ4_ENCODINGS, decode, encode, image_dtype
from detflow.sources.live.dectris.control import TRIGGER_MODES, image_count

__all__ = ["DectrisRecording", "load_recording", "write_dump", "write_master"]

_RECORD = struct.Struct("<q")
#: bitshuffle's HDF5 filter id
_BSHUF_FILTER = 32008
#: the SIMPLON ``compression`` setting of each blob encoding, and back
COMPRESSION = {"bslz4": None, "lz4": "lz4<", "none": "<"}


def default_encoding(dtype: np.dtype) -> str:
    """``bs16-lz4<`` for uint16 and so on."""
    return BSLZ4_ENCODINGS[np.dtype(dtype).itemsize * 8]


def compression_encoding(compression: str, dtype: np.dtype) -> str:
    """The blob encoding of a SIMPLON ``compression`` value (``bslz4``, ``lz4``, ``none``)."""
    if compression not in COMPRESSION:
        raise ConfigurationError(f"compression {compression!r} is not one of {', '.join(COMPRESSION)}")
    return COMPRESSION[compression] or default_encoding(dtype)


@dataclass
class DectrisRecording:
    """An acquisition to serve: its configuration and its frames as blobs of ``encoding``."""

    config: dict[str, Any]
    sig_shape: tuple[int, int]
    dtype: np.dtype
    blobs: list[bytes] = field(repr=False)
    encoding: str
    source: str = "<array>"
    _encoded: dict[str, list[bytes]] = field(default_factory=dict, repr=False)
    _hashes: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def n_frames(self) -> int:
        return len(self.blobs)

    @property
    def frame_size(self) -> int:
        return math.prod(self.sig_shape)

    def blobs_as(self, encoding: str) -> list[bytes]:
        """The frames as blobs of ``encoding`` (re-encoded once, then kept)."""
        if encoding == self.encoding:
            return self.blobs
        if encoding not in self._encoded:
            self._encoded[encoding] = [encode(f, encoding) for f in self.frames()]
        return self._encoded[encoding]

    def hashes(self, encoding: str) -> list[str]:
        """The md5 of each blob of ``encoding`` (the ``hash`` of its ``dimage-1.0`` part)."""
        if encoding not in self._hashes:
            self._hashes[encoding] = [hashlib.md5(b).hexdigest() for b in self.blobs_as(encoding)]
        return self._hashes[encoding]

    def frames(self) -> Iterator[np.ndarray]:
        """The frames, decoded."""
        for i, blob in enumerate(self.blobs):
            yield decode(blob, self.encoding, self.dtype, self.frame_size, f"{self.source}, frame {i}").reshape(
                self.sig_shape)


def _config(sig_shape: Sequence[int], dtype: np.dtype, n: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    h, w = (int(s) for s in sig_shape)
    config: dict[str, Any] = {
        "x_pixels_in_detector": w, "y_pixels_in_detector": h, "bit_depth_image": dtype.itemsize * 8,
        "bit_depth_readout": dtype.itemsize * 8, "count_time": 0.001, "frame_time": 0.001,
        "nimages": 1, "ntrigger": int(n), "trigger_mode": "exte", "compression": "bslz4",
        "roi_mode": "disabled", "description": "detflow simulated DECTRIS detector",
        "detector_number": "detflow-sim", "software_version": "detflow",
    }
    config.update(extra or {})
    return config


def from_array(data: np.ndarray, encoding: str | None = None, source: str = "<array>") -> DectrisRecording:
    """A recording of the frames of ``data`` (``(n, h, w)`` or ``(..., h, w)``)."""
    data = np.asarray(data)
    if data.ndim < 3:
        raise ConfigurationError(f"{source}: a DECTRIS recording needs frames (n, h, w); got shape {data.shape}")
    if data.dtype not in (np.uint8, np.uint16, np.uint32):
        raise ConfigurationError(f"{source}: DECTRIS images are uint8, uint16 or uint32; got {data.dtype}")
    frames = data.reshape(-1, *data.shape[-2:])
    dtype = np.dtype(frames.dtype).newbyteorder("<")
    enc = encoding or default_encoding(dtype)
    blobs = [encode(f, enc) for f in frames]
    compression = "lz4" if enc == "lz4<" else "none" if enc == "<" else "bslz4"
    return DectrisRecording(_config(frames.shape[1:], dtype, len(frames), {"compression": compression}),
                            (int(frames.shape[1]), int(frames.shape[2])), dtype, blobs, enc, source)


def load_recording(path: str | os.PathLike[str], *, encoding: str | None = None) -> DectrisRecording:
    """Read a ``.npy``, an HDF5 master file or a stream dump (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise SourceNotFoundError(str(p), "the DECTRIS simulator serves a .npy, an HDF5 master file or a dump")
    with open(p, "rb") as f:
        magic = f.read(8)
    if magic.startswith(b"\x93NUMPY"):
        return from_array(np.load(p, mmap_mode="r"), encoding, str(p))
    if magic.startswith(b"\x89HDF"):
        return _from_master(p, encoding)
    return _from_dump(p, encoding)


def _from_master(path: Path, encoding: str | None) -> DectrisRecording:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise SourceFormatError(f"{path}: not a readable HDF5 file: {err}") from err
    with f:
        data_group = f.get("entry/data")
        names = sorted(k for k in (data_group.keys() if data_group is not None else ()) if k.startswith("data_"))
        if not names:
            raise SourceFormatError(f"{path}: no /entry/data/data_NNNNNN datasets: not a DECTRIS master file")
        det = f.get("entry/instrument/detector")
        extra: dict[str, Any] = {}
        if det is not None:
            for key in ("count_time", "frame_time", "bit_depth_image", "bit_depth_readout", "description"):
                if key in det:
                    extra[key] = _scalar(det[key][()])
            spec = det.get("detectorSpecific")
            if spec is not None:
                for key in ("x_pixels_in_detector", "y_pixels_in_detector", "nimages", "ntrigger", "trigger_mode",
                            "software_version", "compression"):
                    if key in spec:
                        extra[key] = _scalar(spec[key][()])
        blobs: list[bytes] = []
        first = None
        for name in names:
            try:
                ds = data_group[name]
            except KeyError as err:
                raise SourceNotFoundError(f"{path}: /entry/data/{name}",
                                          "the data file it links to is missing") from err
            if ds.ndim != 3:
                raise SourceFormatError(f"{path}: /entry/data/{name} has shape {ds.shape}; expected (n, h, w)")
            if first is None:
                first = ds
                dtype = np.dtype(ds.dtype).newbyteorder("<")
                sig = (int(ds.shape[1]), int(ds.shape[2]))
                enc = encoding or default_encoding(dtype)
            elif ds.shape[1:] != first.shape[1:] or ds.dtype != first.dtype:
                raise SourceFormatError(f"{path}: /entry/data/{name} holds {ds.shape[1:]} {ds.dtype} frames, "
                                        f"unlike {first.shape[1:]} {first.dtype} before it")
            blobs += _dataset_blobs(ds, enc, dtype)
    n = len(blobs)
    extra.setdefault("nimages", 1)
    extra.setdefault("ntrigger", n)
    extra["compression"] = {"lz4<": "lz4", "<": "none"}.get(enc, "bslz4")
    config = _config(sig, dtype, n, extra)
    if config["x_pixels_in_detector"] != sig[1] or config["y_pixels_in_detector"] != sig[0]:
        raise SourceFormatError(f"{path}: the master file says {config['x_pixels_in_detector']}x"
                                f"{config['y_pixels_in_detector']} pixels, its data holds {sig[1]}x{sig[0]} frames")
    config["ntrigger"], config["nimages"], config["trigger_mode"] = _counts(config, n)
    return DectrisRecording(config, sig, dtype, blobs, enc, str(path))


def _counts(config: dict[str, Any], n: int) -> tuple[int, int, str]:
    """``ntrigger, nimages, trigger_mode`` of the file if they count its frames, else ``n`` external triggers."""
    mode = str(config.get("trigger_mode", "exte"))
    nimages, ntrigger = int(config.get("nimages", 1)), int(config.get("ntrigger", n))
    if mode in TRIGGER_MODES and image_count(mode, nimages, ntrigger) == n:
        return ntrigger, nimages, mode
    return n, 1, "exte"


def _scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _dataset_blobs(ds: Any, encoding: str, dtype: np.dtype) -> list[bytes]:
    """The frames of one data file's dataset as blobs: raw chunks where they are already ``encoding``."""
    chunks = ds.chunks
    direct = (
        encoding in BSLZ4_ENCODINGS.values() and chunks is not None and chunks[0] == 1
        and tuple(chunks[1:]) == tuple(ds.shape[1:]) and _is_bslz4(ds)
    )
    if direct:
        return [bytes(ds.id.read_direct_chunk((i, 0, 0))[1]) for i in range(ds.shape[0])]
    return [encode(np.asarray(ds[i], dtype=dtype), encoding) for i in range(ds.shape[0])]


def _is_bslz4(ds: Any) -> bool:
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    # bitshuffle's cd_values: (version, version, element size, block size, compression); 2 is LZ4
    return len(filters) == 1 and filters[0][0] == _BSHUF_FILTER and len(filters[0][2]) >= 5 and \
        filters[0][2][4] == 2


def _from_dump(path: Path, encoding: str | None) -> DectrisRecording:
    parts = _dump_parts(path)
    start = None
    for i, part in enumerate(parts):
        msg = _json_or_none(part)
        if msg is not None and msg.get("htype") == "dheader-1.0":
            start = i
            break
    if start is None or start + 1 >= len(parts):
        raise SourceFormatError(f"{path}: no dheader-1.0 part followed by a config part: not a DECTRIS stream dump")
    config = _json_or_none(parts[start + 1])
    if not isinstance(config, dict):
        raise SourceFormatError(f"{path}: part {start + 1}, after the dheader, is not the JSON detector config")
    blobs: list[bytes] = []
    enc = dtype = sig = None
    i = start + 2
    while i < len(parts):
        head = _json_or_none(parts[i])
        if head is None or head.get("htype") != "dimage-1.0":
            break  # the footer (dseries_end-1.0), or the end of what was recorded
        if i + 3 >= len(parts):
            raise SourceFormatError(f"{path}: image {len(blobs)} is cut short (parts {i}..{len(parts) - 1} of 4)")
        info = _json_or_none(parts[i + 1]) or {}
        try:
            this = (info["encoding"], image_dtype(info["type"], str(path)), tuple(reversed(info["shape"])))
        except (KeyError, TypeError) as err:
            raise SourceFormatError(f"{path}: part {i + 1} is not a dimage_d-1.0 part: {err}") from err
        if enc is None:
            enc, dtype, sig = this
        elif this != (enc, dtype, sig):
            raise SourceFormatError(f"{path}: image {len(blobs)} is {this}, unlike {(enc, dtype, sig)} before it")
        blobs.append(parts[i + 2])
        i += 4
    if enc is None or dtype is None or sig is None:
        raise SourceFormatError(f"{path}: the dump holds a header but no image")
    rec = DectrisRecording(dict(config), (int(sig[0]), int(sig[1])), dtype, blobs, enc, str(path))
    rec.config["ntrigger"], rec.config["nimages"], rec.config["trigger_mode"] = _counts(rec.config, len(blobs))
    if encoding is not None and encoding != enc:
        rec = DectrisRecording(rec.config, rec.sig_shape, rec.dtype, rec.blobs_as(encoding), encoding, str(path))
    return rec


def _dump_parts(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    parts = []
    pos = 0
    while pos < len(raw):
        if pos + 8 > len(raw):
            raise SourceFormatError(f"{path}: {len(raw) - pos} stray bytes at offset {pos}, not a record length")
        (n,) = _RECORD.unpack_from(raw, pos)
        if n < 0 or pos + 8 + n > len(raw):
            raise SourceFormatError(f"{path}: the record at offset {pos} claims {n} bytes; "
                                    f"{len(raw) - pos - 8} are left: not a stream dump, or cut short")
        parts.append(raw[pos + 8 : pos + 8 + n])
        pos += 8 + n
    return parts


def _json_or_none(part: bytes) -> Any:
    if part[:1] != b"{":
        return None
    try:
        return json.loads(part)
    except ValueError:
        return None


def write_dump(path: str | os.PathLike[str], frames: np.ndarray, *, encoding: str | None = None, series: int = 1,
               config: dict[str, Any] | None = None) -> Path:
    """Write ``frames`` as a dump of the stream messages of one series."""
    frames = np.asarray(frames)
    flat = frames.reshape(-1, *frames.shape[-2:])
    dtype = np.dtype(flat.dtype).newbyteorder("<")
    enc = encoding or default_encoding(dtype)
    h, w = flat.shape[1:]
    cfg = _config((h, w), dtype, len(flat), config)
    parts = [json.dumps({"htype": "dheader-1.0", "header_detail": "basic", "series": series}).encode(),
             json.dumps(cfg).encode()]
    info = json.dumps({"htype": "dimage_d-1.0", "shape": [int(w), int(h)], "type": dtype.name,
                       "encoding": enc}).encode()
    for i, frame in enumerate(flat):
        blob = encode(frame, enc)
        parts += [json.dumps({"htype": "dimage-1.0", "series": series, "frame": i,
                              "hash": hashlib.md5(blob).hexdigest()}).encode(), info, blob,
                  json.dumps({"htype": "dconfig-1.0", "start_time": i, "stop_time": i + 1, "real_time": 1}).encode()]
    parts.append(json.dumps({"htype": "dseries_end-1.0", "series": series}).encode())
    p = Path(path)
    with open(p, "wb") as f:
        for part in parts:
            f.write(_RECORD.pack(len(part)))
            f.write(part)
    return p


def write_master(path: str | os.PathLike[str], frames: np.ndarray, *, frames_per_file: int = 1000,
                 compression: str = "bslz4", count_time: float = 0.001) -> Path:
    """Write ``frames`` as DECTRIS does: ``X_master.h5`` linking to ``X_data_000001.h5``, ...

    ``path`` is the master file (its name should end in ``_master.h5``); the data files
    go beside it, one chunk per frame, bitshuffle-LZ4 (``compression="bslz4"``) or
    uncompressed (``"none"``).
    """
    import h5py
    import hdf5plugin

    frames = np.asarray(frames)
    flat = frames.reshape(-1, *frames.shape[-2:])
    p = Path(path)
    stem = p.name[: -len("_master.h5")] if p.name.endswith("_master.h5") else p.stem
    filters: Any = hdf5plugin.Bitshuffle(cname="lz4") if compression == "bslz4" else {}
    with h5py.File(p, "w") as master:
        data = master.create_group("entry/data")
        for k, lo in enumerate(range(0, len(flat), frames_per_file), start=1):
            name = f"{stem}_data_{k:06d}.h5"
            with h5py.File(p.parent / name, "w") as df:
                df.create_dataset("entry/data/data", data=flat[lo : lo + frames_per_file],
                                  chunks=(1, *flat.shape[1:]), **filters)
            data[f"data_{k:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        det = master.create_group("entry/instrument/detector")
        det["count_time"] = count_time
        det["frame_time"] = count_time
        det["bit_depth_image"] = flat.dtype.itemsize * 8
        det["bit_depth_readout"] = flat.dtype.itemsize * 8
        spec = det.create_group("detectorSpecific")
        spec["x_pixels_in_detector"] = int(flat.shape[2])
        spec["y_pixels_in_detector"] = int(flat.shape[1])
        spec["nimages"] = 1
        spec["ntrigger"] = len(flat)
    return p
