"""MPX framing and the acquisition header, against the bytes in the format notes."""

from __future__ import annotations

import pytest

from detflow.errors import DetectorProtocolError
from detflow.sources.live.merlin.protocol import AcquisitionHeader, encode_message, parse_prefix
from detflow.sources.mib_write import hdr_text


@pytest.mark.parametrize("payload,expected", [
    (b"GET,IMAGEX,0", b"MPX,0000000013,GET,IMAGEX,0"),
    (b"SET,NUMFRAMESTOACQUIRE,1024", b"MPX,0000000028,SET,NUMFRAMESTOACQUIRE,1024"),
    (b"CMD,STARTACQUISITION,0", b"MPX,0000000023,CMD,STARTACQUISITION,0"),
])
def test_encode_message_matches_the_real_client(payload: bytes, expected: bytes) -> None:
    assert encode_message(payload) == expected
    assert parse_prefix(expected[:15], "test") == len(payload)


@pytest.mark.parametrize("prefix", [b"MPX,000000001x,", b"XPM,0000000013,", b"MPX,0000000013;", b"MPX,0000000000,"])
def test_bad_prefix_is_a_protocol_error(prefix: bytes) -> None:
    with pytest.raises(DetectorProtocolError, match="test:"):
        parse_prefix(prefix, "test")


def test_header_from_the_writer() -> None:
    text = hdr_text(n_frames=1024, counter_depth=12, frames_per_trigger=32, scan=(32, 32))
    assert text.endswith("End\t")  # no newline after End: LiberTEM-live's simulator needs that
    h = AcquisitionHeader.parse(text.encode("latin-1"), "test")
    assert (h.n_frames, h.frames_per_trigger, h.counter_depth, h.scan_shape) == (1024, 32, 12, (32, 32))
    assert h.fields["Dead Time File"] == "Dummy (C:\\\x00\\)"  # split at the first colon only
    assert h.fields["Assembly Size (NX1, 2X2)"] == "1x1"
    assert h.raw_text == text


def test_header_tolerates_crlf_padding_and_no_scan() -> None:
    text = ("HDR,\t\r\nTime and Date Stamp (day, mnth, yr, hr, min, s):\t18/05/2020 16:51:48\r\n"
            "Frames in Acquisition (Number):\t0\r\nFrames per Trigger (Number):\t 256 \r\n"
            "Counter Depth (number):\t6\r\nEnd\t      ")
    h = AcquisitionHeader.parse(text, "test")
    assert (h.n_frames, h.frames_per_trigger, h.counter_depth, h.scan_shape) == (0, 256, 6, None)
    assert h.fields["Time and Date Stamp (day, mnth, yr, hr, min, s)"] == "18/05/2020 16:51:48"


def test_header_stops_at_end() -> None:
    text = hdr_text(n_frames=4, counter_depth=1) + "\nFrames in Acquisition (Number):\t99\n"
    assert AcquisitionHeader.parse(text, "test").n_frames == 4


@pytest.mark.parametrize("text,match", [
    ("HDR,\t\nFrames per Trigger (Number):\t4\nEnd\t", r"lacks the required key 'Frames in Acquisition \(Number\)'"),
    ("HDR,\t\nFrames in Acquisition (Number):\t4\nEnd\t", r"lacks the required key 'Frames per Trigger"),
    ("HDR,\t\nFrames in Acquisition (Number):\tmany\nFrames per Trigger (Number):\t4\nEnd\t",
     r"'Frames in Acquisition \(Number\)' must be an integer; got 'many'"),
    ("HDR,\t\nFrames in Acquisition (Number):\t4\nFrames per Trigger (Number):\t4\n"
     "Counter Depth (number):\t7\nEnd\t", r"must be 1, 6, 12 or 24; got 7"),
    ("MQ1,000001,00384,01", r"expected it to start with 'HDR,'"),
])
def test_bad_header_names_what_is_wrong(text: str, match: str) -> None:
    with pytest.raises(DetectorProtocolError, match=r"^here: .*" + match):
        AcquisitionHeader.parse(text, "here")
