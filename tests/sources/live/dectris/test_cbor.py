"""The CBOR stream ("stream v2"): messages built here with cbor2 and hdf5plugin's filters (not with
detflow's encoder), sent over real sockets; the simulator's CBOR read back with cbor2 directly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cbor2
import hdf5plugin
import numpy as np
import pytest

import detflow as df
from detflow.errors import DetectorProtocolError
from detflow.nodes import SumSigUDF, SumUDF
from detflow.sources.live.dectris.acquisition import TriggerHooks
from detflow.sources.live.dectris.control import SimplonClient
from detflow.sources.live.dectris.data import DectrisStream
from detflow.sources.live.dectris.sim import DectrisSimulator

from .conftest import ScriptedPush, random_frames
from .test_codec import filter_chunks, filter_decoded

TYPED_TAG = {np.dtype(np.uint8): 64, np.dtype(np.uint16): 69, np.dtype(np.uint32): 70}
FILTERS = {"bslz4": hdf5plugin.Bitshuffle(cname="lz4"), "lz4": hdf5plugin.LZ4(nbytes=512)}


def message(msg: dict) -> list[bytes]:
    return [cbor2.dumps(cbor2.CBORTag(55799, msg))]


def cbor_series(tmp_path: Path, frames: np.ndarray, compression: str, *, series: int = 7,
                ids: list[int] | None = None, end_after: int | None = None) -> list[list[bytes]]:
    """Start, image and end messages of one series, the images compressed by hdf5plugin's filters."""
    n, h, w = frames.shape
    dtype = frames.dtype
    if compression == "none":
        payloads: list[Any] = [f.astype(dtype.newbyteorder("<")).tobytes() for f in frames]
    else:
        modifier = dtype.itemsize if compression == "bslz4" else 0
        payloads = [cbor2.CBORTag(56500, [compression, modifier, chunk])
                    for chunk in filter_chunks(tmp_path, frames, FILTERS[compression])]
    msgs = [message({"type": "start", "series_id": series, "series_unique_id": "u", "number_of_images": n,
                     "image_size_x": w, "image_size_y": h, "image_dtype": dtype.name, "channels": ["threshold_1"],
                     "pixel_mask": {"threshold_1": cbor2.CBORTag(40, [[h, w], cbor2.CBORTag(70, bytes(4 * h * w))])},
                     "count_time": 0.001})]
    for k, payload in enumerate(payloads[:end_after]):
        image = cbor2.CBORTag(40, [[h, w], cbor2.CBORTag(TYPED_TAG[dtype], payload)])
        msgs.append(message({"type": "image", "series_id": series, "series_unique_id": "u",
                             "image_id": k if ids is None else ids[k], "start_time": [k, 1000],
                             "stop_time": [k + 1, 1000], "real_time": [1, 1000], "data": {"threshold_1": image}}))
    msgs.append(message({"type": "end", "series_id": series, "series_unique_id": "u"}))
    return msgs


@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32], ids=lambda d: np.dtype(d).name)
def test_a_cbor_series_through_the_live_context(tmp_path: Path, dtype: type, compression: str) -> None:
    frames = random_frames(30, 12, dtype, (37, 41))
    with ScriptedPush(cbor_series(tmp_path, frames, compression)) as push, \
            df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("dectris").open(api_port=1, data_port=push.port, timeout=10) as conn:
        push.send()
        pending = conn.wait_for_acquisition(timeout=10)
        assert pending is not None and pending.nimages == 12 and pending.detector_config["series_id"] == 7
        aq = ctx.make_acquisition(conn=conn, pending_aq=pending, nav_shape=(3, 4), frames_per_partition=5)
        assert (aq.shape.sig, aq.dtype) == ((37, 41), np.dtype(dtype))
        s, ss = ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
    np.testing.assert_array_equal(s["intensity"].data, frames.sum(axis=0, dtype=np.float64))
    np.testing.assert_array_equal(ss["intensity"].data, frames.sum(axis=(1, 2), dtype=np.float64).reshape(3, 4))


def _receive(msgs: list[list[bytes]], n: int = 100) -> tuple[DectrisStream, list[bytes]]:
    with ScriptedPush(msgs) as push, DectrisStream("127.0.0.1", push.port, timeout=5) as stream:
        push.send()
        stream.read_header()
        blobs: list[bytes] = []
        stream.read_blobs(n, blobs)
    return stream, blobs


def test_cbor_ids_that_jump_name_both_ids(tmp_path: Path) -> None:
    frames = random_frames(31, 4)
    with pytest.raises(DetectorProtocolError, match="expected image 2 of series 7; got image 3 of series 7"):
        _receive(cbor_series(tmp_path, frames, "bslz4", ids=[0, 1, 3, 4]))


def test_a_cbor_series_that_ends_early(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = random_frames(32, 6)
    with caplog.at_level(logging.WARNING):
        stream, blobs = _receive(cbor_series(tmp_path, frames, "bslz4", end_after=4))
    assert stream.done and len(blobs) == 4 and "ended after 4 of 6 images" in caplog.text


def test_garbage_before_the_start_is_skipped_and_between_images_is_an_error(tmp_path: Path) -> None:
    frames = random_frames(33, 3)
    msgs = cbor_series(tmp_path, frames, "bslz4")
    junk = [[b"\x00 junk"], message({"type": "image", "series_id": 3, "image_id": 0}), [b"\xbf\xff\xff"]]
    stream, blobs = _receive(junk + msgs)
    assert len(blobs) == 3 and stream.skipped_parts == 3
    with pytest.raises(DetectorProtocolError, match=r"expected image 1 of series 7 \(a CBOR image message\)"):
        _receive(msgs[:2] + [[b"\x00 junk"]] + msgs[2:])


def test_a_cbor_image_that_differs_from_its_start_message(tmp_path: Path) -> None:
    frames = random_frames(34, 3)
    msgs = cbor_series(tmp_path, frames, "bslz4")
    other = cbor_series(tmp_path, random_frames(35, 3, sig=(24, 33)), "bslz4")
    with pytest.raises(DetectorProtocolError, match="image 1 of series 7 is 33x24 uint16, but the start message "
                                                    "announced 32x24"):
        _receive(msgs[:2] + other[2:3])


def _tag_hook(*args: Any) -> Any:
    tag = next(a for a in args if isinstance(a, cbor2.CBORTag))
    return ("tag", tag.tag, tag.value)


def test_the_simulator_speaks_cbor_that_cbor2_reads(tmp_path: Path) -> None:
    """The simulator's CBOR messages, read with cbor2 and a tag hook of this test; the images
    decoded by the HDF5 bitshuffle filter."""
    import zmq

    frames = random_frames(36, 5)
    with DectrisSimulator(frames, api_port=0, data_port=0, stream_format="cbor") as sim:
        zctx = zmq.Context()
        sock = zctx.socket(zmq.PULL)
        sock.connect(f"tcp://127.0.0.1:{sim.data_port}")
        try:
            series = SimplonClient("127.0.0.1", sim.api_port).arm()
            msgs = []
            for _ in range(7):
                assert sock.poll(10_000), "the simulator sent less than start, 5 images, end"
                parts = sock.recv_multipart()
                assert len(parts) == 1, "one part per CBOR message"
                assert parts[0][:3] == b"\xd9\xd9\xf7", "self-described CBOR"
                msgs.append(cbor2.loads(parts[0], tag_hook=_tag_hook))
        finally:
            sock.close(linger=0)
            zctx.term()
    start, images, end = msgs[0], msgs[1:6], msgs[6]
    assert (start["type"], start["series_id"], start["number_of_images"]) == ("start", series, 5)
    assert (start["image_size_x"], start["image_size_y"], start["image_dtype"]) == (32, 24, "uint16")
    assert (end["type"], end["series_id"]) == ("end", series)
    blobs = []
    for k, img in enumerate(images):
        assert (img["type"], img["series_id"], img["image_id"]) == ("image", series, k)
        tag, number, (dims, typed) = img["data"]["threshold_1"]
        assert (number, list(dims)) == (40, [24, 32]) and typed[1] == 69
        _, _, (_, compressed, (algorithm, elem_size, blob)) = typed
        assert (compressed, algorithm, elem_size) == (56500, "bslz4", 2)
        blobs.append(blob)
    np.testing.assert_array_equal(filter_decoded(tmp_path, blobs, frames, FILTERS["bslz4"]), frames)


@pytest.mark.parametrize("mode", ["exte", "inte", "ints"])
def test_active_mode_on_a_cbor_simulator(mode: str) -> None:
    frames = random_frames(37, 12)
    with DectrisSimulator(frames, api_port=0, data_port=0, stream_format="cbor") as sim, \
            df.LiveContext.make_with("inline") as ctx, \
            ctx.make_connection("dectris").open(api_port=sim.api_port, data_port=sim.data_port) as conn:
        aq = ctx.make_acquisition(conn=conn, nav_shape=(3, 4), hooks=TriggerHooks(),
                                  controller=conn.get_active_controller(trigger_mode=mode))
        s, ss = ctx.run_udf(dataset=aq, udf=[SumUDF(), SumSigUDF()])
        assert conn.stream.header is not None and conn.stream.header.format == "cbor"
        assert conn.api.get_status("state") == "idle"
    np.testing.assert_array_equal(s["intensity"].data, frames.sum(axis=0, dtype=np.float64))
    np.testing.assert_array_equal(ss["intensity"].data, frames.sum(axis=(1, 2), dtype=np.float64).reshape(3, 4))
