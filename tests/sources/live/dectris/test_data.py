"""The ZeroMQ receiver against scripted senders: ids, garbage, headers, early ends, silence."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

from detflow.errors import DetectorProtocolError, DetectorTimeoutError
from detflow.sources.live.dectris.codec import decode
from detflow.sources.live.dectris.data import DectrisStream

from .conftest import ScriptedPush, random_frames, series_parts

FRAMES = random_frames(8, 10)


def receive(messages: list[list[bytes]], n: int = 100, timeout: float = 5.0) -> tuple[DectrisStream, list[bytes]]:
    with ScriptedPush(messages) as push:
        stream = DectrisStream("127.0.0.1", push.port, timeout=timeout)
        try:
            push.send()
            stream.read_header()
            blobs: list[bytes] = []
            stream.read_blobs(n, blobs)
        finally:
            stream.close()
    return stream, blobs


def decoded(blobs: list[bytes], encoding: str = "bs16-lz4<") -> np.ndarray:
    return np.stack([decode(b, encoding, np.uint16, FRAMES[0].size).reshape(FRAMES.shape[1:]) for b in blobs])


def test_a_whole_series() -> None:
    stream, blobs = receive(series_parts(FRAMES))
    assert stream.done and stream.encoding == "bs16-lz4<" and stream.next_frame == 10
    np.testing.assert_array_equal(decoded(blobs), FRAMES)


def test_parts_grouped_any_way_are_the_same_stream() -> None:
    one_per_part = [[p] for msg in series_parts(FRAMES) for p in msg]
    _, blobs = receive(one_per_part)
    np.testing.assert_array_equal(decoded(blobs), FRAMES)


def test_garbage_and_old_series_before_the_header_are_skipped() -> None:
    old = series_parts(FRAMES[:3], series=6)[1:]  # the tail of an earlier series, without its header
    msgs = [[b"\x00junk"], [b'{"htype":"nonsense"}'], *old, *series_parts(FRAMES, series=7)]
    with ScriptedPush(msgs) as push, DectrisStream("127.0.0.1", push.port, timeout=5) as stream:
        push.send()
        header = stream.read_header(series=7)
        blobs: list[bytes] = []
        assert stream.read_blobs(100, blobs) == 10
    assert header.series == 7 and stream.skipped_parts == 2 + 3 * 4 + 1
    np.testing.assert_array_equal(decoded(blobs), FRAMES)


def test_a_frame_id_that_jumps_names_both_ids() -> None:
    ids = [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]
    with pytest.raises(DetectorProtocolError, match=r"expected image 5 of series 1; got image 7 of series 1 "
                                                    r"\(5 of 10 images arrived\)") as info:
        receive(series_parts(FRAMES, frame_ids=ids))
    assert info.value.frames_received == 5


def test_a_series_id_that_changes_mid_series() -> None:
    msgs = series_parts(FRAMES, series=3)
    msgs[4][0] = json.dumps({"htype": "dimage-1.0", "series": 4, "frame": 3, "hash": ""}).encode()
    with pytest.raises(DetectorProtocolError, match="expected image 3 of series 3; got image 3 of series 4"):
        receive(msgs)


def test_garbage_between_images() -> None:
    msgs = series_parts(FRAMES)
    msgs.insert(4, [b"\x13\x37 garbage"])
    with pytest.raises(DetectorProtocolError, match=r"expected image 3 of series 1 \(a dimage-1.0 part\); "
                                                    r"got b'\\x137 garbage'"):
        receive(msgs)


def test_header_detail_none_says_what_to_set() -> None:
    msgs = [[json.dumps({"htype": "dheader-1.0", "header_detail": "none", "series": 1}).encode()]]
    with ScriptedPush(msgs) as push, DectrisStream("127.0.0.1", push.port, timeout=5) as stream:
        push.send()
        with pytest.raises(DetectorProtocolError, match="header_detail 'none'.*set the stream's header_detail"):
            stream.read_header()


def test_header_detail_all_extras_are_skipped() -> None:
    msgs = series_parts(FRAMES)
    msgs[0][0] = json.dumps({"htype": "dheader-1.0", "header_detail": "all", "series": 1}).encode()
    extras = [[b'{"htype":"dflatfield-1.0","shape":[32,24],"type":"float32"}', bytes(24 * 32 * 4)],
              [b'{"htype":"dpixelmask-1.0","shape":[32,24],"type":"uint32"}', bytes(24 * 32 * 4)]]
    _, blobs = receive([msgs[0], *extras, *msgs[1:]])
    np.testing.assert_array_equal(decoded(blobs), FRAMES)


def test_a_config_without_what_is_needed() -> None:
    msgs = series_parts(FRAMES)
    msgs[0][1] = json.dumps({"nimages": 1}).encode()
    with pytest.raises(DetectorProtocolError, match="lacks ntrigger, trigger_mode, x_pixels_in_detector"):
        receive(msgs)


def test_images_that_do_not_match_the_header() -> None:
    msgs = series_parts(FRAMES, config={"x_pixels_in_detector": 16})
    with pytest.raises(DetectorProtocolError, match="image 0 of series 1 is 32x24 uint16, but the series header "
                                                    "announced 16x24 uint16"):
        receive(msgs)


def test_a_series_ended_early_gives_fewer_images(caplog: pytest.LogCaptureFixture) -> None:
    msgs = series_parts(FRAMES)
    del msgs[7:11]  # images 6..9 never come; the footer does
    with caplog.at_level(logging.WARNING, "detflow.sources.live.dectris.data"):
        stream, blobs = receive(msgs)
    assert len(blobs) == 6 and stream.done
    assert "ended after 6 of 10 images" in caplog.text
    np.testing.assert_array_equal(decoded(blobs), FRAMES[:6])


def test_a_silent_detector_times_out_with_the_count() -> None:
    msgs = series_parts(FRAMES)[:5]  # header and 4 images, then nothing
    t0 = time.monotonic()
    with pytest.raises(DetectorTimeoutError, match=r"nothing arrived within 0\.3 s while waiting for image 4 of "
                                                   r"series 1") as info:
        receive(msgs, timeout=0.3)
    assert time.monotonic() - t0 < 10
    assert info.value.frames_received == 4


def test_a_missing_footer_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "detflow.sources.live.dectris.data"):
        stream, blobs = receive(series_parts(FRAMES)[:-1], timeout=0.3)
    assert len(blobs) == 10 and stream.done
    assert "no dseries_end-1.0 after the last image" in caplog.text
