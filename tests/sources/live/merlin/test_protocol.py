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


# An acquisition header laid out as a Merlin Quad writes it to its ``.hdr`` (every key a real
# one has, CRLF lines, tab after the colon, space padding after ``End``), not by detflow's writer.
QUAD_HDR = (
    "HDR,\t\r\n"
    "Time and Date Stamp (day, mnth, yr, hr, min, s):\t26/02/2021 09:54:33\r\n"
    "Chip ID:\tW530_J6,W530_L6,W530_K5,W530_B5\r\n"
    "Chip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX):\tMedipix 3RX\r\n"
    "Assembly Size (NX1, 2X2):\t   2x2\r\n"
    "Chip Mode  (SPM, CSM, CM, CSCM):\tSPM\r\n"
    "Counter Depth (number):\t12\r\n"
    "Gain:\tSLGM\r\n"
    "Active Counters:\tAlternating\r\n"
    "Thresholds (keV):\t1.000000E+1,5.000000E+2,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,"
    "0.000000E+0,0.000000E+0\r\n"
    "DACs:\t033,511,000,000,000,000,000,000,100,255,100,125,100,100,065,100,069,030,128,004,255,"
    "147,128,191,184,511,511; 030,511,000,000,000,000,000,000,100,255,100,125,100,100,066,100,"
    "074,030,128,004,255,147,128,191,184,511,511\r\n"
    "bpc File:\tc:\\MERLIN_Quad_Config\\W530_J6\\W530_J6_SPM.bpc,,,\r\n"
    "DAC File:\tc:\\MERLIN_Quad_Config\\W530_J6\\W530_J6_SPM.dacs,,,\r\n"
    "Gap Fill Mode:\tNone\r\n"
    "Flat Field File:\tNone\r\n"
    "Dead Time File:\tDummy (C:\\\x00\\)\r\n"
    "Acquisition Type (Normal, Th_scan, Config):\tNormal\r\n"
    "Frames in Acquisition (Number):\t65536\r\n"
    "Frames per Trigger (Number):\t256\r\n"
    "Trigger Start (Positive, Negative, Internal):\tRising Edge\r\n"
    "Trigger Stop (Positive, Negative, Internal):\tRising Edge\r\n"
    "Sensor Bias (V):\t120 V\r\n"
    "Sensor Polarity (Positive, Negative):\tPositive\r\n"
    "Temperature (C):\tBoard Temp 38.907883 Deg C\r\n"
    "Humidity (%):\tBoard Humidity -0.026184 \r\n"
    "Medipix Clock (MHz):\t120MHz\r\n"
    "Readout System:\tMerlin Quad\r\n"
    "Software Version:\t0.75.4.84\r\n"
    "End\t" + " " * 200
)


def test_header_as_a_merlin_quad_writes_it() -> None:
    h = AcquisitionHeader.parse(QUAD_HDR.encode("latin-1"), "test")
    assert (h.n_frames, h.frames_per_trigger, h.counter_depth, h.scan_shape) == (65536, 256, 12, None)
    assert h.fields["Assembly Size (NX1, 2X2)"] == "2x2"
    assert h.fields["Chip ID"] == "W530_J6,W530_L6,W530_K5,W530_B5"
    assert h.fields["Dead Time File"] == "Dummy (C:\\\x00\\)"
    assert h.fields["Humidity (%)"] == "Board Humidity -0.026184"
    assert h.fields["Software Version"] == "0.75.4.84" and "End" not in h.fields


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
