"""The CBOR stream of newer DECTRIS detectors (SIMPLON stream ``format: cbor``, "stream v2").

One ZeroMQ part per message, each a CBOR map (usually behind the self-describing tag
55799) with a ``type``:

* ``start``: ``series_id``, ``number_of_images``, ``image_size_x``, ``image_size_y``,
  ``image_dtype`` (``uint8``, ``uint16``, ``uint32``, ...), ``channels`` and many more
  detector settings (flat field and pixel mask among them);
* ``image``: ``series_id``, ``image_id`` (0, 1, 2, ...), times, and ``data``: a map of
  channel name to the image, a row-major multi-dimensional array (tag 40: ``[[height,
  width], typed array]``) whose typed array (RFC 8746 tags 64-87, little-endian ones
  here) holds the pixels as a byte string, or the DECTRIS compression tag 56500:
  ``["bslz4", element size, bytes]`` (bitshuffle-LZ4 in the HDF5 filter's framing) or
  ``["lz4", 0, bytes]`` (LZ4 in the HDF5 LZ4 filter's framing);
* ``end``: ``series_id``.

:func:`load` parses a message with ``cbor2`` into plain values without decompressing
anything; :func:`image_of` takes an image message apart into its ids and the blob
that :mod:`.codec` decodes in the workers (``bs16-lz4<``, ``lz4-h5`` or ``<``), and
:func:`dumps` is the simulator's encoder. Where a detector sends several channels
(thresholds), the first one is taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detflow.errors import DetectorProtocolError, import_optional
from detflow.sources.live.dectris.codec import BSLZ4_ENCODINGS, LZ4_H5, image_dtype

__all__ = ["Image", "dumps", "image_message", "image_of", "is_cbor", "load"]

SELF_DESCRIBED = 55799
MULTI_DIM = 40
COMPRESSED = 56500
#: RFC 8746 typed-array tags this reader takes (little-endian and single-byte ones)
TYPED: dict[int, np.dtype] = {64: np.dtype("u1"), 68: np.dtype("u1"), 69: np.dtype("<u2"), 70: np.dtype("<u4"),
                              72: np.dtype("i1"), 77: np.dtype("<i2"), 78: np.dtype("<i4"), 85: np.dtype("<f4")}
_TAG_OF = {dt.str: tag for tag, dt in TYPED.items() if tag != 68}
_SIGNATURE = b"\xd9\xd9\xf7"


def _cbor2() -> Any:
    return import_optional("cbor2", "the DECTRIS CBOR stream")


@dataclass(frozen=True)
class _Compressed:
    algorithm: str
    modifier: Any
    data: bytes


@dataclass(frozen=True)
class _Typed:
    dtype: np.dtype
    value: Any


@dataclass(frozen=True)
class _Array:
    dims: tuple[int, ...]
    value: Any
    column_major: bool = False


@dataclass(frozen=True)
class Image:
    """An image message taken apart: ids, shape (rows, columns), pixel type and the blob."""

    series: int
    frame: int
    shape: tuple[int, ...]
    dtype: np.dtype
    encoding: str
    blob: bytes


def is_cbor(part: bytes) -> bool:
    """Does ``part`` look like a CBOR map (with or without the self-describing tag)?"""
    return part[:3] == _SIGNATURE or (len(part) > 0 and 0xA0 <= part[0] <= 0xBF)


def _hook(*args: Any) -> Any:
    """cbor2's tag hook: ``(decoder, tag)`` before cbor2 6, ``(tag, immutable)`` since."""
    cbor2 = _cbor2()
    tag = next(a for a in args if isinstance(a, cbor2.CBORTag))
    number, value = tag.tag, tag.value
    if number == COMPRESSED and isinstance(value, list | tuple) and len(value) == 3:
        return _Compressed(str(value[0]), value[1], value[2])
    if number in TYPED:
        return _Typed(TYPED[number], value)
    if number in (MULTI_DIM, 1040) and isinstance(value, list | tuple) and len(value) == 2:
        return _Array(tuple(int(d) for d in value[0]), value[1], column_major=number == 1040)
    if number == SELF_DESCRIBED:
        return value
    return tag


def load(part: bytes) -> dict[str, Any] | None:
    """A message as a map (tags turned into this module's records), or ``None`` if it is not CBOR."""
    cbor2 = _cbor2()
    try:
        msg = cbor2.loads(part, tag_hook=_hook)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
        return None
    return msg if isinstance(msg, dict) or hasattr(msg, "get") else None


def image_of(msg: Any, where: str) -> Image:
    """The ids and the first channel's blob of an ``image`` message (a protocol error if malformed)."""
    try:
        series, frame = int(msg["series_id"]), int(msg["image_id"])
        data = msg["data"]
        channel = next(iter(data.values()))
    except (KeyError, TypeError, ValueError, StopIteration, AttributeError) as err:
        raise DetectorProtocolError(f"{where}: a CBOR image message without {err} (series_id, image_id and "
                                    "a data map of channels are needed)") from None
    if not isinstance(channel, _Array) or channel.column_major or not isinstance(channel.value, _Typed):
        raise DetectorProtocolError(f"{where}: image {frame}: the data is not a row-major typed array "
                                    f"(tags 40 and 64-87); got {type(channel).__name__}")
    typed = channel.value
    inner = typed.value
    if isinstance(inner, _Compressed):
        if inner.algorithm == "bslz4":
            if inner.modifier != typed.dtype.itemsize:
                raise DetectorProtocolError(f"{where}: image {frame}: bslz4 with element size {inner.modifier} "
                                            f"for {typed.dtype.name} pixels")
            encoding = BSLZ4_ENCODINGS[typed.dtype.itemsize * 8]
        elif inner.algorithm == "lz4":
            encoding = LZ4_H5
        else:
            raise DetectorProtocolError(f"{where}: image {frame} is compressed with {inner.algorithm!r}; known: "
                                        "bslz4, lz4")
        blob = inner.data
    elif isinstance(inner, bytes | bytearray | memoryview):
        encoding, blob = "<", bytes(inner)
    else:
        raise DetectorProtocolError(f"{where}: image {frame}: the typed array holds {type(inner).__name__}, not bytes")
    if not isinstance(blob, bytes | bytearray):
        raise DetectorProtocolError(f"{where}: image {frame}: the compressed data is not a byte string")
    return Image(series, frame, channel.dims, typed.dtype, encoding, bytes(blob))


def start_config(msg: Any, where: str) -> dict[str, Any]:
    """The settings of a ``start`` message that the receiver uses, checked (the big arrays left out)."""
    try:
        config = {k: v for k, v in msg.items() if not isinstance(v, _Array | _Typed | list | dict)
                  or k == "channels"}
        for key in ("series_id", "number_of_images", "image_size_x", "image_size_y"):
            config[key] = int(msg[key])
        image_dtype(str(msg["image_dtype"]), where)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DetectorProtocolError(f"{where}: the CBOR start message lacks {err} (series_id, number_of_images, "
                                    "image_size_x, image_size_y and image_dtype are needed)") from None
    except DetectorProtocolError as err:
        raise DetectorProtocolError(f"{where}: the CBOR start message: {err}") from None
    return config


def dumps(msg: dict[str, Any]) -> bytes:
    """``msg`` as a self-described CBOR message."""
    cbor2 = _cbor2()
    return bytes(cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBED, msg)))


def image_message(series: int, frame: int, shape: tuple[int, int], dtype: np.dtype, encoding: str, blob: bytes,
                  times: tuple[int, int, int] = (0, 0, 0), channel: str = "threshold_1") -> bytes:
    """An ``image`` message for a blob of :mod:`.codec`'s ``encoding`` (the simulator's encoder)."""
    cbor2 = _cbor2()
    dtype = np.dtype(dtype)
    if encoding in BSLZ4_ENCODINGS.values():
        inner: Any = cbor2.CBORTag(COMPRESSED, ["bslz4", dtype.itemsize, blob])
    elif encoding == LZ4_H5:
        inner = cbor2.CBORTag(COMPRESSED, ["lz4", 0, blob])
    elif encoding in ("<", ""):
        inner = blob
    else:
        raise ValueError(f"the CBOR stream carries bslz4, lz4 (HDF5 framing) or plain images, not {encoding!r}")
    typed = cbor2.CBORTag(_TAG_OF[dtype.newbyteorder("<").str], inner)
    array = cbor2.CBORTag(MULTI_DIM, [list(shape), typed])
    start, stop, real = times
    return dumps({"type": "image", "series_id": series, "series_unique_id": f"detflow-sim-{series}",
                  "image_id": frame, "start_time": [start, 1_000_000_000], "stop_time": [stop, 1_000_000_000],
                  "real_time": [real, 1_000_000_000], "data": {channel: array}})
