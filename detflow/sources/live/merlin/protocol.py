"""The Merlin wire format: ``MPX`` message framing and the acquisition header.

Both Merlin ports (control, default 6341; data, default 6342) frame every message as::

    b"MPX," + 10 decimal digits + b"," + payload

The number counts the bytes *after* the 10 digits, the comma included: ``len(payload)
+ 1``. A reader reads the 15-byte prefix, then ``n - 1`` more bytes. (Some simulators
answer control requests with ``len(payload)``; :class:`~.control.MerlinControl`
copes with both.)

On the data port the first message of an acquisition is the acquisition header, the
text of the ``.hdr`` file (``HDR,`` line, ``Key:\\tValue`` lines, ``End\\t``); every
following message is one frame, its MQ1 header and pixels exactly as in a ``.mib``
file. :class:`AcquisitionHeader` parses the former; frame headers are parsed by
:func:`detflow.sources.mib_decode.parse_frame_header`.

Examples
--------
>>> encode_message(b"GET,IMAGEX,0")
b'MPX,0000000013,GET,IMAGEX,0'
>>> hdr = AcquisitionHeader.parse(
...     "HDR,\\t\\nFrames in Acquisition (Number):\\t16\\nFrames per Trigger (Number):\\t4\\n"
...     "Counter Depth (number):\\t12\\nScanX:\\t4\\nScanY:\\t4\\nEnd\\t   ", "example")
>>> hdr.n_frames, hdr.frames_per_trigger, hdr.counter_depth, hdr.scan_shape
(16, 4, 12, (4, 4))
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import ClassVar, Self

from detflow.errors import (
    ConfigurationError,
    DetectorDisconnectedError,
    DetectorProtocolError,
    DetectorTimeoutError,
)
from detflow.sources.limits import MAX_MESSAGE_BYTES, check_size

__all__ = [
    "PortClient",
    "connect",
    "HEADER_PATTERN",
    "PREFIX_BYTES",
    "AcquisitionHeader",
    "encode_message",
    "message_prefix",
    "parse_prefix",
    "shown",
]

#: ``MPX,`` + 10 digits + ``,``
PREFIX_BYTES = 15
#: the prefix of an acquisition header message, wherever it starts in a byte stream
HEADER_PATTERN = re.compile(rb"MPX,([0-9]{10}),HDR,")
_PREFIX = re.compile(rb"MPX,([0-9]{10}),")

KEY_FRAMES = "Frames in Acquisition (Number)"
KEY_FRAMES_PER_TRIGGER = "Frames per Trigger (Number)"
KEY_COUNTER_DEPTH = "Counter Depth (number)"


def shown(raw: bytes | bytearray | memoryview, limit: int = 40) -> str:
    """Bytes as a short, printable string for an error message."""
    return bytes(raw[:limit]).decode("latin-1").encode("unicode_escape").decode("ascii")


def message_prefix(payload_bytes: int) -> bytes:
    """The 15-byte ``MPX,<length>,`` prefix of a message carrying ``payload_bytes``."""
    return b"MPX,%010d," % (payload_bytes + 1)


def encode_message(payload: bytes) -> bytes:
    """``payload`` framed as one MPX message (length = ``len(payload) + 1``)."""
    return message_prefix(len(payload)) + payload


def parse_prefix(prefix: bytes | bytearray | memoryview, where: str, *, maximum: int = MAX_MESSAGE_BYTES,
                 what: str = "message length") -> int:
    """The payload length announced by a 15-byte ``MPX,<10 digits>,`` prefix.

    Returns ``n - 1``, the bytes that follow the prefix under the documented
    convention. Raises :class:`~detflow.errors.DetectorProtocolError` naming ``where``,
    also when the length is above ``maximum`` (nothing is allocated for it).
    """
    raw = bytes(prefix[:PREFIX_BYTES])
    m = _PREFIX.fullmatch(raw)
    if m is None:
        raise DetectorProtocolError(
            f"{where}: expected a message prefix 'MPX,<10 digits>,'; got {shown(raw)!r}"
        )
    n = int(m.group(1))
    if n < 1:
        raise DetectorProtocolError(f"{where}: message prefix {shown(raw)!r} announces {n} bytes; expected >= 1")
    return check_size(n - 1, maximum, field=what, where=where, error=DetectorProtocolError)


def _int_field(fields: dict[str, str], key: str, where: str, *, required: bool) -> int | None:
    if key not in fields:
        if required:
            raise DetectorProtocolError(
                f"{where}: the acquisition header lacks the required key {key!r}; "
                f"keys found: {', '.join(map(repr, list(fields)[:12])) or '(none)'}"
            )
        return None
    value = fields[key]
    try:
        number = int(value)
    except ValueError:
        raise DetectorProtocolError(
            f"{where}: acquisition header key {key!r} must be an integer; got {value!r}"
        ) from None
    if number < 0:
        raise DetectorProtocolError(f"{where}: acquisition header key {key!r} must be >= 0; got {number}")
    return number


@dataclass(frozen=True)
class AcquisitionHeader:
    """The acquisition header that opens every acquisition on the data port.

    ``fields`` holds every ``Key: Value`` line (keys and values stripped, exact
    spelling otherwise); ``raw_text`` the text as received.

    Attributes
    ----------
    n_frames
        ``Frames in Acquisition (Number)``; 0 means endless (live view).
    frames_per_trigger
        ``Frames per Trigger (Number)`` (the scan width for line triggering).
    counter_depth
        ``Counter Depth (number)`` (1, 6, 12 or 24), or ``None`` when absent.
    """

    fields: dict[str, str] = field(hash=False)
    n_frames: int
    frames_per_trigger: int
    counter_depth: int | None
    raw_text: str = field(repr=False)

    @property
    def scan_shape(self) -> tuple[int, int] | None:
        """``(ScanY, ScanX)`` where the header has both, positive; else ``None``."""
        try:
            sy, sx = int(self.fields["ScanY"]), int(self.fields["ScanX"])
        except (KeyError, ValueError):
            return None
        return (sy, sx) if sy > 0 and sx > 0 else None

    @classmethod
    def parse(cls, text: str | bytes | bytearray | memoryview, where: str = "acquisition header") -> AcquisitionHeader:
        """Parse the header's text (``bytes`` are read as Latin-1).

        Tolerates a ``HDR,\\t`` first line, ``\\r\\n`` line ends, values holding
        colons (a line splits at its first colon), NUL or space padding, and ``End``
        followed by padding (or missing, the message length bounds the text). Raises
        :class:`~detflow.errors.DetectorProtocolError` naming ``where`` and the key that
        is missing or not a number.
        """
        if not isinstance(text, str):
            text = bytes(text).decode("latin-1")
        if not text.lstrip("\x00 \r\n").startswith("HDR"):
            raise DetectorProtocolError(
                f"{where}: not a Merlin acquisition header: expected it to start with 'HDR,'; "
                f"got {text[:24]!r}"
            )
        fields: dict[str, str] = {}
        for line in text.lstrip("\x00 \r\n").split("\n")[1:]:
            if line.strip(" \t\r\x00").startswith("End"):
                break
            key, sep, value = line.partition(":")
            if sep and key.strip():
                fields[key.strip()] = value.strip(" \t\r\x00")
        n_frames = _int_field(fields, KEY_FRAMES, where, required=True)
        fpt = _int_field(fields, KEY_FRAMES_PER_TRIGGER, where, required=True)
        depth = _int_field(fields, KEY_COUNTER_DEPTH, where, required=False)
        if depth is not None and depth not in (1, 6, 12, 24):
            raise DetectorProtocolError(
                f"{where}: acquisition header key {KEY_COUNTER_DEPTH!r} must be 1, 6, 12 or 24; got {depth}"
            )
        assert n_frames is not None and fpt is not None
        return cls(fields, n_frames, fpt, depth, text)


def connect(host: str, port: int, timeout: float, where: str) -> socket.socket:
    """A TCP connection to ``host:port`` with ``timeout`` on every call; detector errors naming ``where``."""
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as err:
        raise DetectorTimeoutError(f"{where}: no connection within {timeout} s") from err
    except OSError as err:
        raise DetectorDisconnectedError(f"{where}: cannot connect: {err}") from err


class PortClient:
    """A TCP client of one of Merlin's ports: its address, its socket, connect and close.

    Subclasses set :attr:`port_name` and may extend :meth:`_connected` (run after each
    connect) and :meth:`close`. A context manager: ``with`` connects and closes.
    """

    #: the port's name in messages ("control", "data")
    port_name: ClassVar[str] = ""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        if not timeout > 0:
            raise ConfigurationError(f"{type(self).__name__}: timeout must be > 0 seconds; got {timeout}")
        self.host = host
        self.port = int(port)
        self.timeout = float(timeout)
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        state = "connected" if self._sock is not None else "closed"
        return f"{type(self).__name__}({self.host!r}, {self.port}, timeout={self.timeout}) [{state}]"

    @property
    def where(self) -> str:
        return f"Merlin {self.port_name} port {self.host}:{self.port}"

    def connect(self) -> Self:
        """Connect (a no-op when connected); returns ``self``."""
        if self._sock is None:
            self._sock = connect(self.host, self.port, self.timeout, self.where)
            self._connected()
        return self

    def _connected(self) -> None:
        """Called after each new connection."""

    def close(self) -> None:
        """Close the connection; safe to call twice. ``connect()`` opens a new one."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()
