"""The DECTRIS ZeroMQ stream: series headers and image blobs, received and checked.

The detector PUSHes, :class:`DectrisStream` PULLs (``shared/reference/protocols.md``
2.2). A series is a ``dheader-1.0`` part and the detector configuration, four parts
per image (``dimage-1.0`` with the series and frame ids, ``dimage_d-1.0`` with the
shape, type and encoding, the blob, ``dconfig-1.0`` with times), then
``dseries_end-1.0``. The receiver counts *parts*, not messages, so it does not matter
how the sender groups them into multipart messages. State and policies:

**Parts.** Parts received but not consumed wait in a deque (a multipart message is
received whole). Only the first image's ``dimage_d-1.0`` is parsed; the next ones
are compared with it as bytes (a change of shape, type or encoding within a series is
an error). Each ``dimage-1.0`` is parsed for its ids. Blobs are not decoded here:
they are handed on as they are (:class:`~.codec.EncodedFramesReader` decodes them
in the workers).

**Ids.** The series id must be the one armed for (active mode) and then stay the
same; frame ids must count 0, 1, 2, ... A gap or jump is a
:class:`~detflow.errors.DetectorProtocolError` naming the expected and the received
ids; the images before it have been handed on, so their results are kept.

**Headers.** Waiting for a header skips whatever comes before the ``dheader-1.0``
(parts of an earlier series, junk; the count is logged). ``header_detail`` must be
``basic`` or ``all`` (``none`` carries no configuration: an error that says to set
the stream's ``header_detail``); the extra parts of ``all`` (flat field, pixel mask,
count rate table: a JSON part and its data part each) are skipped.

**The end.** After the last image the footer is read (a missing footer is a warning:
the data is complete). A ``dseries_end-1.0`` before the last image ends the series
early: the caller gets fewer images. Silence longer than ``timeout`` is a
:class:`~detflow.errors.DetectorTimeoutError` ("N of M images arrived"). ZeroMQ
reconnects by itself, so a detector that restarts needs nothing from the client.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detflow.errors import DetectorProtocolError, DetectorTimeoutError, import_optional
from detflow.sources import limits
from detflow.sources.live.dectris import cbor
from detflow.sources.live.dectris.codec import DECODERS, image_dtype
from detflow.sources.live.dectris.control import image_count

__all__ = ["DectrisStream", "SeriesHeader"]

log = logging.getLogger(__name__)

#: configuration keys the receiver needs
REQUIRED = ("ntrigger", "nimages", "trigger_mode", "x_pixels_in_detector", "y_pixels_in_detector",
            "bit_depth_image")
#: the parts ``header_detail: all`` adds after the configuration (each a JSON part and a data part)
_EXTRAS = (b"dflatfield-1.0", b"dpixelmask-1.0", b"dcountrate_table-1.0")
#: parts ZeroMQ may queue on the receiving side before the sender has to wait (a few
#: thousand images: a run's partitions are received while the previous ones are processed)
_RCVHWM = 20_000


def _zmq() -> Any:
    return import_optional("zmq", "the DECTRIS stream")


@dataclass(frozen=True)
class SeriesHeader:
    """A series the detector announced: its id, configuration and what follows from it."""

    series: int
    config: dict[str, Any] = field(repr=False)
    header_detail: str = "basic"
    #: ``json`` (``dheader-1.0`` and the detector configuration) or ``cbor`` (a ``start``
    #: message, whose settings ``config`` holds)
    format: str = "json"

    @property
    def sig_shape(self) -> tuple[int, int]:
        c = self.config
        if self.format == "cbor":
            return int(c["image_size_y"]), int(c["image_size_x"])
        return int(c["y_pixels_in_detector"]), int(c["x_pixels_in_detector"])

    @property
    def dtype(self) -> np.dtype:
        if self.format == "cbor":
            return image_dtype(str(self.config["image_dtype"]), "dectris start message")
        depth = int(self.config["bit_depth_image"])
        return image_dtype(f"uint{depth}", "dectris series header")

    @property
    def n_images(self) -> int:
        c = self.config
        if self.format == "cbor":
            return int(c["number_of_images"])
        return image_count(str(c["trigger_mode"]), int(c["nimages"]), int(c["ntrigger"]))


class DectrisStream:
    """A PULL connection to a DECTRIS detector's ZeroMQ stream.

    Parameters
    ----------
    host, port
        Where the detector (or ``detflow sim dectris``) binds its PUSH socket.
    timeout
        Seconds of silence before a :class:`~detflow.errors.DetectorTimeoutError`.

    Attributes
    ----------
    header : SeriesHeader or None
        The current series.
    encoding : str or None
        The current series' blob encoding (known from its first image).
    skipped_parts : int
        Parts skipped while waiting for headers, since connecting.

    Examples
    --------
    >>> import numpy as np
    >>> from detflow.sources.live.dectris.sim import DectrisSimulator
    >>> from detflow.sources.live.dectris.control import SimplonClient
    >>> frames = np.arange(6 * 16 * 16, dtype=np.uint16).reshape(6, 16, 16)
    >>> with DectrisSimulator(frames, api_port=0, data_port=0) as sim, \\
    ...         DectrisStream("127.0.0.1", sim.data_port) as stream:
    ...     series = SimplonClient("127.0.0.1", sim.api_port).arm()
    ...     header = stream.read_header(series=series)
    ...     blobs = []
    ...     counts = [stream.read_blobs(4, blobs), stream.read_blobs(4, blobs)]
    >>> header.n_images, header.sig_shape, counts, stream.encoding, stream.done
    (6, (16, 16), [4, 2], 'bs16-lz4<', True)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9999, *, timeout: float = 10.0) -> None:
        zmq = _zmq()
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, _RCVHWM)
        # a message larger than any frame (a corrupt or hostile peer) is never buffered: ZeroMQ
        # drops that connection, and the receive timeout then ends the series with an error
        self._sock.setsockopt(zmq.MAXMSGSIZE, limits.MAX_FRAME_BYTES)
        self._sock.connect(f"tcp://{host}:{self.port}")
        self._noblock, self._again = int(zmq.NOBLOCK), zmq.Again
        self._parts: deque[bytes] = deque()
        self.skipped_parts = 0
        self.header: SeriesHeader | None = None
        self._new_series(None)

    @property
    def where(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def _new_series(self, header: SeriesHeader | None) -> None:
        self.header = header
        self.encoding: str | None = None
        self._info: bytes | None = None
        self.next_frame = 0
        self.done = header is None

    # --- parts ------------------------------------------------------------------------------
    def _part(self, deadline: float | None, what: str | Callable[[], str]) -> bytes:
        """The next part; wait until ``deadline`` (``None``: ``timeout`` seconds from when
        waiting starts). ``what`` (or what it returns) names the part in the timeout error."""
        parts = self._parts
        if parts:
            return parts.popleft()
        try:  # one part at a time: the receiver counts parts, and this skips a poll per message
            return self._sock.recv(self._noblock)
        except self._again:
            pass
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            if self._sock.poll(int(left * 1000) + 1):
                return self._sock.recv(self._noblock)
            if time.monotonic() >= deadline:
                count = "" if self.header is None else f" ({self.next_frame} of {self.header.n_images} images arrived)"
                raise DetectorTimeoutError(f"{self.where}: nothing arrived within {self.timeout:g} s while waiting "
                                           f"for {what if isinstance(what, str) else what()}{count}",
                                           frames_received=self._received())

    def _received(self) -> int | None:
        return None if self.header is None else self.next_frame

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    # --- headers ----------------------------------------------------------------------------
    def read_header(self, timeout: float | None = None, *, series: int | None = None) -> SeriesHeader:
        """The next series' header (of series ``series``, if given), skipping what comes before it."""
        deadline = self._deadline(timeout)
        skipped = 0
        self._new_series(None)
        while True:
            part = self._part(deadline, "a series header (dheader-1.0, or a CBOR start message)")
            if cbor.is_cbor(part):
                start = cbor.load(part)
                if start is not None and start.get("type") == "start" and (series is None
                                                                            or start.get("series_id") == series):
                    return self._cbor_header(start, skipped)
                skipped += 1
                self.skipped_parts += 1
                continue
            msg = _json(part) if b"dheader-1.0" in part[:200] else None
            if msg is None or msg.get("htype") != "dheader-1.0" or (series is not None and msg.get("series") != series):
                skipped += 1
                self.skipped_parts += 1
                continue
            break
        if skipped:
            log.info("%s: skipped %d part(s) before the header of series %s", self.where, skipped, msg.get("series"))
        detail = msg.get("header_detail")
        if detail not in ("basic", "all"):
            raise DetectorProtocolError(
                f"{self.where}: series {msg.get('series')} was sent with header_detail {detail!r}, which carries no "
                "detector configuration; set the stream's header_detail to 'basic' (PUT stream/api/.../config/"
                "header_detail) before arming"
            )
        config = _json(self._part(deadline, "the detector configuration after dheader-1.0"))
        if not isinstance(config, dict):
            raise DetectorProtocolError(f"{self.where}: the part after the header of series {msg.get('series')} "
                                        "is not the detector configuration (JSON)")
        missing = [k for k in REQUIRED if k not in config]
        if missing:
            raise DetectorProtocolError(f"{self.where}: the configuration of series {msg.get('series')} lacks "
                                        f"{', '.join(missing)}")
        try:
            header = SeriesHeader(int(msg["series"]), config, detail)
            header.n_images, header.dtype  # noqa: B018 - checks the values
        except (KeyError, TypeError, ValueError) as err:
            raise DetectorProtocolError(f"{self.where}: the header of series {msg.get('series')} is not usable: "
                                        f"{err}") from None
        self._new_series(header)
        return header

    def _cbor_header(self, start: dict[str, Any], skipped: int) -> SeriesHeader:
        config = cbor.start_config(start, self.where)
        if skipped:
            log.info("%s: skipped %d part(s) before the start of series %s", self.where, skipped, config["series_id"])
        header = SeriesHeader(config["series_id"], config, "basic", format="cbor")
        self._new_series(header)
        return header

    # --- images ----------------------------------------------------------------------------
    def read_blobs(self, n: int, out: list[Any]) -> int:
        """Append the blobs of up to ``n`` more images to ``out``; how many were appended.

        Fewer only when the series ended (:attr:`done`): all its images arrived, or the
        detector ended it early.
        """
        header = self.header
        if header is None:
            raise DetectorProtocolError(f"{self.where}: no series header was read; call read_header() first")
        if header.format == "cbor":
            return self._read_cbor(n, out, header)
        total = header.n_images
        got = 0
        while got < n and not self.done:
            if self.next_frame >= total:
                self._read_footer()
                break
            deadline = None
            what = self._what_image
            head: bytes | None = self._part(deadline, what)
            assert head is not None
            if not head.startswith(b'{"htype":"dimage-1.0"'):
                head = self._odd_part(head, deadline, what)
                if head is None:
                    break
            ids = _ids(head)
            if ids.get("series") != header.series or ids.get("frame") != self.next_frame:
                raise DetectorProtocolError(
                    f"{self.where}: expected image {self.next_frame} of series {header.series}; got image "
                    f"{ids.get('frame')} of series {ids.get('series')} ({self.next_frame} of {total} images arrived)",
                    frames_received=self.next_frame)
            info = self._part(deadline, what)
            if info != self._info:
                self._check_info(info, header)
            out.append(self._part(deadline, what))
            self._part(deadline, what)  # dconfig-1.0: times, not needed
            self.next_frame += 1
            got += 1
        if not self.done and self.next_frame >= total and got < n:
            self._read_footer()
        return got

    def _read_cbor(self, n: int, out: list[Any], header: SeriesHeader) -> int:
        """:meth:`read_blobs` for the CBOR stream: one message per image, then the ``end`` message."""
        total, got = header.n_images, 0
        while got < n and not self.done:
            if self.next_frame >= total:
                self._read_footer()
                break
            part = self._part(None, self._what_image)
            msg = cbor.load(part) if cbor.is_cbor(part) else None
            kind = msg.get("type") if msg is not None else None
            if kind == "end":
                log.warning("%s: series %s ended after %d of %d images", self.where, msg.get("series_id"),  # type: ignore[union-attr]
                            self.next_frame, total)
                self.done = True
                break
            if kind != "image":
                raise DetectorProtocolError(
                    f"{self.where}: expected {self._what_image()} (a CBOR image message); got {_shown(part)} "
                    f"({self.next_frame} of {total} images arrived)", frames_received=self.next_frame)
            image = cbor.image_of(msg, self.where)
            if image.series != header.series or image.frame != self.next_frame:
                raise DetectorProtocolError(
                    f"{self.where}: expected image {self.next_frame} of series {header.series}; got image "
                    f"{image.frame} of series {image.series} ({self.next_frame} of {total} images arrived)",
                    frames_received=self.next_frame)
            if self.encoding != image.encoding or image.shape != header.sig_shape or image.dtype != header.dtype:
                self._check_cbor_image(image, header)
            out.append(image.blob)
            self.next_frame += 1
            got += 1
        if not self.done and self.next_frame >= total and got < n:
            self._read_footer()
        return got

    def _check_cbor_image(self, image: cbor.Image, header: SeriesHeader) -> None:
        frame = self.next_frame
        if image.shape != header.sig_shape or image.dtype != header.dtype:
            shown = "x".join(str(d) for d in reversed(image.shape))
            raise DetectorProtocolError(
                f"{self.where}: image {frame} of series {header.series} is {shown} {image.dtype.name}, but the "
                f"start message announced {header.sig_shape[1]}x{header.sig_shape[0]} {header.dtype.name}",
                frames_received=frame)
        if self.encoding is not None:
            raise DetectorProtocolError(f"{self.where}: image {frame} is encoded {image.encoding!r}, the images "
                                        f"before it {self.encoding!r}", frames_received=frame)
        self.encoding = image.encoding

    def _what_image(self) -> str:
        return f"image {self.next_frame} of series {self.header.series if self.header else '?'}"

    def _odd_part(self, part: bytes, deadline: float | None, what: Callable[[], str]) -> bytes | None:
        """A part where a ``dimage-1.0`` was due: the footer (series ended early), ``all``'s extras, or an error."""
        while True:
            parsed = _json(part) if part[:1] == b"{" else None
            msg: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
            htype = str(msg.get("htype", ""))
            if htype == "dseries_end-1.0":
                log.warning("%s: series %s ended after %d of %d images", self.where, msg.get("series"),
                            self.next_frame, self.header.n_images if self.header else 0)
                self.done = True
                return None
            if htype == "dimage-1.0":
                return part
            if htype.encode() in _EXTRAS and self.next_frame == 0:
                self._part(deadline, f"the data part of {htype}")
                part = self._part(deadline, what)
                continue
            raise DetectorProtocolError(
                f"{self.where}: expected {what()} (a dimage-1.0 part); got {_shown(part)} "
                f"({self.next_frame} of {self.header.n_images if self.header else '?'} images arrived)",
                frames_received=self.next_frame)

    def _check_info(self, info: bytes, header: SeriesHeader) -> None:
        msg = _json(info)
        frame = self.next_frame
        if not isinstance(msg, dict) or msg.get("htype") != "dimage_d-1.0":
            raise DetectorProtocolError(f"{self.where}: image {frame} of series {header.series}: expected its "
                                        f"dimage_d-1.0 part; got {_shown(info)}", frames_received=frame)
        try:
            shape = tuple(int(s) for s in reversed(msg["shape"]))
            dtype = image_dtype(str(msg["type"]), self.where)
            encoding = str(msg["encoding"])
        except (KeyError, TypeError, ValueError) as err:
            raise DetectorProtocolError(f"{self.where}: image {frame}: dimage_d-1.0 lacks {err}",
                                        frames_received=frame) from None
        if shape != header.sig_shape or dtype != header.dtype:
            raise DetectorProtocolError(
                f"{self.where}: image {frame} of series {header.series} is {shape[1]}x{shape[0]} {dtype.name}, but "
                f"the series header announced {header.sig_shape[1]}x{header.sig_shape[0]} {header.dtype.name}",
                frames_received=frame)
        if encoding not in DECODERS:
            raise DetectorProtocolError(f"{self.where}: image {frame} is encoded {encoding!r}; known encodings: "
                                        f"{', '.join(repr(e) for e in DECODERS)}", frames_received=frame)
        if self.encoding is not None and encoding != self.encoding:
            raise DetectorProtocolError(f"{self.where}: image {frame} is encoded {encoding!r}, the images before it "
                                        f"{self.encoding!r}", frames_received=frame)
        self.encoding = encoding
        self._info = info

    def _read_footer(self) -> None:
        self.done = True
        header = self.header
        try:
            part = self._part(None, f"the footer of series {header.series if header else '?'}")
        except DetectorTimeoutError:
            log.warning("%s: no dseries_end-1.0 after the last image (the images are complete)", self.where)
            return
        if header is not None and header.format == "cbor":
            end = cbor.load(part) if cbor.is_cbor(part) else None
            if end is None or end.get("type") != "end":
                log.warning("%s: expected the end message after the last image; got %s", self.where, _shown(part))
                self._parts.appendleft(part)
            return
        msg = _json(part) if part[:1] == b"{" else None
        if not isinstance(msg, dict) or msg.get("htype") != "dseries_end-1.0":
            log.warning("%s: expected the footer after the last image; got %s", self.where, _shown(part))
            self._parts.appendleft(part)  # perhaps the next series' header

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> DectrisStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SERIES = re.compile(rb'"series"\s*:\s*(\d+)')
_FRAME = re.compile(rb'"frame"\s*:\s*(\d+)')


def _ids(head: bytes) -> dict[str, Any]:
    """``series`` and ``frame`` of a ``dimage-1.0`` part (two regular expressions cost a
    third of a JSON parse, per image)."""
    series, frame = _SERIES.search(head), _FRAME.search(head)
    if series is None or frame is None:
        return _json(head) or {}
    return {"series": int(series.group(1)), "frame": int(frame.group(1))}


def _json(part: bytes) -> Any:
    try:
        return json.loads(part)
    except (ValueError, UnicodeDecodeError):
        return None


def _shown(part: bytes, limit: int = 80) -> str:
    text = repr(bytes(part[:limit]))
    return text + (f"... ({len(part)} bytes)" if len(part) > limit else "")
