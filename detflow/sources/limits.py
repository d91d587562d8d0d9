"""Upper bounds on sizes that come from someone else's numbers.

A length prefix on a socket, a frame size in a file header, a scan shape in an
``.hdr``: each is a number a peer or a file chose, and believing it blindly means
allocating (or buffering) whatever it says: a corrupt or hostile ``MPX,9999999999,``
prefix would have a reader buffer 10 GB. Every such number is checked here against a
maximum *before* anything is allocated, and the error names the field and the value.

The maxima are far above anything a real detector sends (a Merlin acquisition header
is about 1 KiB, a control reply a few dozen bytes, the largest Merlin frame 2 MiB) and
far below what would hurt a workstation.

Examples
--------
>>> check_size(1162, MAX_HEADER_BYTES, field="acquisition header length", where="merlin data port")
1162
>>> check_size(9999999999, MAX_HEADER_BYTES, field="header length", where="data port")
Traceback (most recent call last):
...
detflow.errors.SourceFormatError: data port: header length 9999999999 bytes is above the limit of 1 MiB; ...
"""

from __future__ import annotations

import os

from detflow.errors import SourceError, SourceFormatError

__all__ = ["MAX_FRAME_BYTES", "MAX_HEADER_BYTES", "MAX_MESSAGE_BYTES", "MAX_REST_BYTES", "check_size",
           "format_bytes", "physical_memory"]

#: an acquisition header (the text of a ``.hdr`` file, on a socket or on disk)
MAX_HEADER_BYTES = 1 << 20
#: a control-port message (request or reply)
MAX_MESSAGE_BYTES = 1 << 16
#: one detector frame, header and pixels (also the largest ZeroMQ message a DECTRIS stream may send)
MAX_FRAME_BYTES = 1 << 28
#: a REST answer of a DECTRIS detector (configuration values; a pixel mask is the largest)
MAX_REST_BYTES = 1 << 26


def physical_memory() -> int:
    """This machine's physical memory in bytes (``2**63`` where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not a POSIX system
        return 2**63


def format_bytes(n: int | float) -> str:
    """``n`` bytes in binary units: ``format_bytes(3 << 30) == '3 GiB'``."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.3g} {unit}" if unit != "bytes" else f"{int(value)} bytes"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_size(value: int, maximum: int, *, field: str, where: str,
               error: type[SourceError] = SourceFormatError) -> int:
    """``value`` if ``0 <= value <= maximum``, else ``error`` naming ``where``, ``field`` and ``value``.

    Parameters
    ----------
    value
        The size (bytes) a peer or a file announced.
    maximum
        The largest acceptable size.
    field, where
        What the number is and where it came from, for the message.
    error
        The exception class to raise (``DetectorProtocolError`` for sockets).
    """
    if 0 <= value <= maximum:
        return value
    raise error(
        f"{where}: {field} {value} bytes is above the limit of {format_bytes(maximum)}; "
        "the peer or file announced a size no real detector produces (corrupt or hostile data)"
        if value > maximum else f"{where}: {field} must be >= 0; got {value}"
    )
