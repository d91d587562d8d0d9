"""The SIMPLON REST client against the simulator (and a server that never answers)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from detflow.errors import DetectorCommandError, DetectorDisconnectedError, DetectorTimeoutError
from detflow.sources.live.dectris.control import DectrisActiveController, SimplonClient, image_count
from detflow.sources.live.dectris.sim import DectrisSimulator

from .conftest import SilentHTTP


@pytest.fixture
def api(sim: DectrisSimulator) -> SimplonClient:
    return SimplonClient("127.0.0.1", sim.api_port, timeout=10)


def test_version_config_and_status(api: SimplonClient, frames: np.ndarray) -> None:
    assert api.version == "1.8.0"
    assert api.frame_settings() == ((24, 32), 16)
    assert api.get_config("trigger_mode") == "exte"
    assert api.configured_images() == len(frames)
    assert api.get_status("state") == "idle"
    assert api.get_stream_config("header_detail") == "basic"


def test_arm_disarm_and_the_state(api: SimplonClient) -> None:
    api.set_stream_config("mode", "disabled")  # armed, but nothing is sent
    try:
        first = api.arm()
        assert api.get_status("state") == "ready"
        with pytest.raises(DetectorCommandError, match="already armed"):
            api.arm()
        api.disarm()
        assert api.get_status("state") == "idle"
        assert api.arm() == first + 1
        api.abort()
    finally:
        api.set_stream_config("mode", "enabled")


def test_errors_name_the_request_and_the_answer(api: SimplonClient) -> None:
    with pytest.raises(DetectorCommandError, match=r"PUT /detector/api/1\.8\.0/config/nimages.*status 400.*"
                                                   r"nimages must be an integer >= 1; got -2") as info:
        api.set_config("nimages", -2)
    assert info.value.status == 400
    with pytest.raises(DetectorCommandError, match=r"GET /detector/api/1\.8\.0/config/no_such.*404"):
        api.get_config("no_such")
    with pytest.raises(DetectorCommandError, match="read-only"):
        api.set_config("x_pixels_in_detector", 64)
    with pytest.raises(DetectorCommandError, match="trigger is for internal triggering"):
        api.set_stream_config("mode", "disabled")
        try:
            api.arm()
            api.trigger()
        finally:
            api.disarm()
            api.set_stream_config("mode", "enabled")


def test_a_series_longer_than_the_recording_is_refused(api: SimplonClient, frames: np.ndarray) -> None:
    api.set_config("ntrigger", len(frames) + 1)
    try:
        with pytest.raises(DetectorCommandError, match=f"series of {len(frames) + 1} images.*more than the 48"):
            api.arm()
    finally:
        api.set_config("ntrigger", len(frames))


def test_a_request_that_hangs_is_bounded_by_its_timeout() -> None:
    with SilentHTTP() as server:
        api = SimplonClient("127.0.0.1", server.port, timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(DetectorTimeoutError, match=r"GET /detector/api/version/ got no answer within 0\.5 s"):
            api.version  # noqa: B018
        assert time.monotonic() - t0 < 10  # the 0.5 s timeout, not forever


def test_no_detector_at_all() -> None:
    with SilentHTTP() as server:
        port = server.port
    api = SimplonClient("127.0.0.1", port, timeout=5)  # nothing listens there any more
    with pytest.raises(DetectorDisconnectedError, match=r"GET /detector/api/version/ failed.*is the detector"):
        api.arm()


@pytest.mark.parametrize(("mode", "key"), [("exte", "ntrigger"), ("inte", "ntrigger"), ("exts", "nimages"),
                                           ("ints", "nimages")])
def test_the_controller_sets_the_count_each_mode_implies(api: SimplonClient, mode: str, key: str) -> None:
    try:
        DectrisActiveController(trigger_mode=mode, count_time=0.002).apply(api, 12)
        assert api.get_config("trigger_mode") == mode
        assert api.get_config(key) == 12
        assert api.configured_images() == 12 == image_count(mode, api.get_config("nimages"),
                                                            api.get_config("ntrigger"))
        assert api.get_config("count_time") == 0.002
    finally:
        DectrisActiveController(trigger_mode="exte").apply(api, 48)


def test_the_controller_checks_the_mode() -> None:
    with pytest.raises(ValueError, match="'trigger_mode' must be one of exte, inte, exts, ints; got 'auto'"):
        DectrisActiveController(trigger_mode="auto")
