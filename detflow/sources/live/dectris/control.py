"""The SIMPLON REST API of a DECTRIS detector: configuration, commands, stream settings.

Every request is one HTTP call with a timeout (``urllib``; nothing is kept open
between calls). URLs read ``/{module}/api/{version}/{kind}/{name}``, where the
version is asked for once (``GET /detector/api/version/``) on first use; PUT bodies
are ``{"value": ...}`` as JSON. Format notes: ``shared/reference/protocols.md`` 2.3.

Failures name the request and what the detector answered:

* an HTTP error status is a :class:`~detflow.errors.DetectorCommandError` with the
  request (``PUT /detector/api/1.8.0/config/nimages``), the status and the body;
* no answer within ``timeout`` seconds is a :class:`~detflow.errors.DetectorTimeoutError`;
* no connection at all is a :class:`~detflow.errors.DetectorDisconnectedError`;
* an answer that is not JSON is a :class:`~detflow.errors.DetectorProtocolError`.

The trigger modes and the number of images each implies (:func:`image_count`), and
the settings an active acquisition applies before arming
(:class:`DectrisActiveController`), live here too.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from detflow.errors import (
    ConfigurationError,
    DetectorCommandError,
    DetectorDisconnectedError,
    DetectorProtocolError,
    DetectorTimeoutError,
)
from detflow.sources.limits import MAX_REST_BYTES, check_size

__all__ = ["TRIGGER_MODES", "DectrisActiveController", "SimplonClient", "image_count"]

#: external / internal trigger, one image per trigger (``exte``, ``inte``) or a series
#: of ``nimages`` per trigger (``exts``, ``ints``)
TRIGGER_MODES = ("exte", "inte", "exts", "ints")
#: the API version to use when the detector does not say
DEFAULT_VERSION = "1.8.0"


def image_count(trigger_mode: str, nimages: int, ntrigger: int) -> int:
    """Images of one series: ``ntrigger`` for ``exte``/``inte``, ``nimages * ntrigger`` otherwise.

    >>> image_count("exte", 1, 256), image_count("ints", 256, 1), image_count("exts", 16, 4)
    (256, 256, 64)
    """
    if trigger_mode not in TRIGGER_MODES:
        raise DetectorProtocolError(
            f"trigger_mode {trigger_mode!r} is not one of {', '.join(TRIGGER_MODES)}"
        )
    return int(ntrigger) if trigger_mode in ("exte", "inte") else int(nimages) * int(ntrigger)


class SimplonClient:
    """A client of a detector's SIMPLON REST API (or of ``detflow sim dectris``).

    Parameters
    ----------
    host, port
        Where the API is served.
    timeout
        Seconds each request may take, connecting included.

    Examples
    --------
    >>> import numpy as np
    >>> from detflow.sources.live.dectris.sim import DectrisSimulator
    >>> with DectrisSimulator(np.zeros((4, 16, 16), np.uint16), api_port=0, data_port=0) as sim:
    ...     api = SimplonClient("127.0.0.1", sim.api_port)
    ...     api.version, api.get_config("x_pixels_in_detector"), api.get_config("ntrigger")
    ('1.8.0', 16, 4)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 80, *, timeout: float = 10.0) -> None:
        if not timeout > 0:
            raise ConfigurationError(f"simplon client: parameter 'timeout' must be > 0 seconds; got {timeout}")
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self._version: str | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def version(self) -> str:
        """The API version the detector speaks (asked once)."""
        if self._version is None:
            try:
                answer = self.request("GET", "/detector/api/version/")
            except DetectorCommandError as err:
                if err.status != 404:
                    raise
                answer = {"value": DEFAULT_VERSION}
            self._version = str(answer.get("value", DEFAULT_VERSION)) if isinstance(answer, dict) else DEFAULT_VERSION
        return self._version

    # --- the calls ----------------------------------------------------------------------
    def get_config(self, name: str, module: str = "detector") -> Any:
        """The value of configuration parameter ``name``."""
        return _value(self.request("GET", f"/{module}/api/{self.version}/config/{name}"))

    def set_config(self, name: str, value: Any, module: str = "detector") -> Any:
        """Set ``name`` to ``value``; the detector's answer (the parameters it changed)."""
        return self.request("PUT", f"/{module}/api/{self.version}/config/{name}", {"value": value})

    def get_status(self, name: str, module: str = "detector") -> Any:
        """The value of status parameter ``name`` (``"state"``: ``idle``, ``ready``, ...)."""
        return _value(self.request("GET", f"/{module}/api/{self.version}/status/{name}"))

    def command(self, name: str, value: Any = None) -> Any:
        """Run detector command ``name`` (``arm``, ``trigger``, ``disarm``, ``abort``, ...)."""
        body = None if value is None else {"value": value}
        return self.request("PUT", f"/detector/api/{self.version}/command/{name}", body)

    def arm(self) -> int:
        """Arm the detector; the series id of the acquisition it will send."""
        answer = self.command("arm")
        try:
            return int(answer["sequence id"])
        except (TypeError, KeyError, ValueError):
            raise DetectorProtocolError(
                f"simplon at {self.where}: PUT command/arm answered {answer!r}, without a 'sequence id'"
            ) from None

    def trigger(self, count_time: float | None = None) -> None:
        """Software trigger (``inte``/``ints``); ``count_time`` is the exposure for ``inte``."""
        self.command("trigger", count_time)

    def disarm(self) -> None:
        self.command("disarm")

    def abort(self) -> None:
        self.command("abort")

    def get_stream_config(self, name: str) -> Any:
        return self.get_config(name, module="stream")

    def set_stream_config(self, name: str, value: Any) -> Any:
        return self.set_config(name, value, module="stream")

    def frame_settings(self) -> tuple[tuple[int, int], int]:
        """``((height, width), bit_depth_image)`` as configured now."""
        width, height, depth = (int(self.get_config(n)) for n in
                                ("x_pixels_in_detector", "y_pixels_in_detector", "bit_depth_image"))
        return (height, width), depth

    def configured_images(self) -> int:
        """The number of images the next series will hold, by the current trigger settings."""
        mode = str(self.get_config("trigger_mode"))
        return image_count(mode, int(self.get_config("nimages")), int(self.get_config("ntrigger")))

    # --- transport ------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One request; the decoded JSON answer (``None`` for an empty one)."""
        what = f"{method} {path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.host}:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                announced = resp.headers.get("Content-Length")
                if announced is not None and announced.strip().isdigit():
                    check_size(int(announced), MAX_REST_BYTES, field=f"reply length (Content-Length) to {what}",
                               where=f"simplon at {self.where}", error=DetectorProtocolError)
                raw = resp.read(MAX_REST_BYTES + 1)  # a reply without a length is bounded too
                check_size(len(raw), MAX_REST_BYTES, field=f"reply to {what}, at least",
                           where=f"simplon at {self.where}", error=DetectorProtocolError)
        except urllib.error.HTTPError as err:
            text = _shown(err.read())
            raise DetectorCommandError(what, err.code, text or err.reason) from None
        except TimeoutError as err:
            raise DetectorTimeoutError(
                f"simplon at {self.where}: {what} got no answer within {self.timeout:g} s (parameter 'timeout')"
            ) from err
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise DetectorTimeoutError(
                    f"simplon at {self.where}: {what} got no answer within {self.timeout:g} s (parameter 'timeout')"
                ) from err
            raise DetectorDisconnectedError(
                f"simplon at {self.where}: {what} failed: {err.reason}; is the detector (or detflow sim dectris) "
                "running there?"
            ) from err
        except (ConnectionError, OSError) as err:  # a connection dropped mid-answer
            raise DetectorDisconnectedError(f"simplon at {self.where}: {what} failed: {err}") from err
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise DetectorProtocolError(
                f"simplon at {self.where}: {what} answered {_shown(raw)!r}, which is not JSON"
            ) from None

    def __repr__(self) -> str:
        return f"<SimplonClient {self.where}>"


def _value(answer: Any) -> Any:
    return answer.get("value") if isinstance(answer, dict) else answer


def _shown(raw: bytes, limit: int = 300) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class DectrisActiveController:
    """Settings an active acquisition applies before it arms (``conn.get_active_controller``).

    ``None`` leaves a setting as it is. With a ``trigger_mode``, the image count is set
    from the scan: ``ntrigger = N`` for ``exte``/``inte``, ``nimages = N`` (one trigger)
    for ``exts``/``ints``.
    """

    trigger_mode: str | None = None
    count_time: float | None = None
    frame_time: float | None = None
    compression: str | None = None

    def __post_init__(self) -> None:
        if self.trigger_mode is not None and self.trigger_mode not in TRIGGER_MODES:
            raise ConfigurationError(
                f"dectris controller: parameter 'trigger_mode' must be one of {', '.join(TRIGGER_MODES)}; "
                f"got {self.trigger_mode!r}"
            )

    def apply(self, api: SimplonClient, n_frames: int) -> None:
        """Configure the detector for a series of ``n_frames`` images."""
        if self.trigger_mode is not None:
            api.set_config("ntrigger", 1)
            api.set_config("nimages", 1)
            api.set_config("trigger_mode", self.trigger_mode)
            api.set_config("ntrigger" if self.trigger_mode in ("exte", "inte") else "nimages", int(n_frames))
        for name in ("count_time", "frame_time", "compression"):
            value = getattr(self, name)
            if value is not None:
                api.set_config(name, value)
