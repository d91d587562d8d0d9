"""Writes DigitalMicrograph files (DM3 and DM4) from the format's published layout, for the tests.

No maintained library writes DM files (rosettasciio and ncempy read them only), so the
tests write them here, independently of detflow's reader, and check every file with
rosettasciio's reader first. The layout (Gatan's format as documented by its readers):
a header (version, length, byte order of the data), then a tree of tags; a tag is a
group (type 20) or data (type 21) with a label; data tags hold ``%%%%``, an info array
(the encoded type) and the value. DM4 widens every length to 8 bytes and adds each
tag's size in bytes after its label. Header and info numbers are big-endian; values are
in the byte order the header names (little-endian here).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

#: encoded types of simple values, by numpy dtype
_SIMPLE = {np.dtype("<i2"): 2, np.dtype("<i4"): 3, np.dtype("<u2"): 4, np.dtype("<u4"): 5, np.dtype("<f4"): 6,
           np.dtype("<f8"): 7, np.dtype("<i1"): 10}
#: DataType codes of image data
IMAGE_TYPES = {np.dtype("int16"): 1, np.dtype("float32"): 2, np.dtype("uint8"): 6, np.dtype("int32"): 7,
               np.dtype("int8"): 9, np.dtype("uint16"): 10, np.dtype("uint32"): 11, np.dtype("float64"): 12}


class _Writer:
    def __init__(self, version: int) -> None:
        self.version = version
        self.n = ">Q" if version == 4 else ">I"  # lengths, counts and info entries

    def _label(self, tag_id: int, label: str) -> bytes:
        b = label.encode("latin-1")
        return struct.pack(">bh", tag_id, len(b)) + b

    def _sized(self, head: bytes, body: bytes) -> bytes:
        return head + (struct.pack(">Q", len(body)) if self.version == 4 else b"") + body

    def data(self, label: str, info: list[int], payload: bytes) -> bytes:
        body = b"%%%%" + struct.pack(self.n, len(info)) + b"".join(struct.pack(self.n, i) for i in info) + payload
        return self._sized(self._label(21, label), body)

    def long(self, label: str, value: int) -> bytes:
        return self.data(label, [3], struct.pack("<i", value))

    def real(self, label: str, value: float) -> bytes:
        return self.data(label, [6], struct.pack("<f", value))

    def text(self, label: str, value: str) -> bytes:  # a string: an array of uint16 characters
        return self.data(label, [20, 4, len(value)], np.array([ord(c) for c in value], "<u2").tobytes())

    def group(self, label: str, tags: list[bytes]) -> bytes:
        body = struct.pack(">bb", 0, 1) + struct.pack(self.n, len(tags)) + b"".join(tags)
        return self._sized(self._label(20, label), body)

    def image(self, data: np.ndarray, name: str) -> bytes:
        dims = data.shape[::-1]  # DM lists the dimensions x first
        unit = [self.real("Origin", 0.0), self.real("Scale", 1.0), self.text("Units", "")]
        pixels = np.ascontiguousarray(data, data.dtype.newbyteorder("<")).tobytes()
        element = {1: 10, 2: 4, 4: 5, 8: 7}[data.dtype.itemsize]  # any simple type of the pixel's size
        return self.group("", [
            self.group("ImageData", [
                self.group("Calibrations", [self.group("Brightness", unit),
                                            self.group("Dimension", [self.group("", unit) for _ in dims])]),
                self.data("Data", [20, element, data.size], pixels),
                self.long("DataType", IMAGE_TYPES[data.dtype]),
                self.group("Dimensions", [self.long("", d) for d in dims]),
                self.long("PixelDepth", data.dtype.itemsize),
            ]),
            self.group("ImageTags", []),
            self.text("Name", name),
        ])


def write_dm(path: Path, *images: np.ndarray, version: int = 4) -> Path:
    """A DM3 or DM4 file holding ``images`` (in its ImageList, in order)."""
    w = _Writer(version)
    root = struct.pack(">bb", 0, 1) + struct.pack(w.n, 1)
    root += w.group("ImageList", [w.image(a, f"image {i}") for i, a in enumerate(images)])
    size = struct.pack(">Q", len(root) + 8) if version == 4 else struct.pack(">I", len(root) + 8)
    Path(path).write_bytes(struct.pack(">I", version) + size + struct.pack(">I", 1) + root + bytes(8))
    return Path(path)
