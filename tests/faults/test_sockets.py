"""Faults a network peer can cause, each against a real socket on 127.0.0.1.

Two families, one table each, so a new fault is one more row:

* **sizes**: a peer announces a length (or a frame size) that no detector sends; the
  client refuses it, naming the field and the value, before buffering anything.
* **trickles**: a peer sends a byte at a time, never silent long enough for one
  ``recv`` to time out; the timeout bounds the whole message or frame, so the client
  gives up after about ``timeout`` s while the peer still has bytes to send.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detflow.errors import DetectorProtocolError, DetectorTimeoutError
from detflow.sources.live.merlin.connection import MerlinConnection
from detflow.sources.live.merlin.control import MerlinControl
from detflow.sources.live.merlin.data import MerlinDataStream
from detflow.sources.live.merlin.protocol import encode_message
from detflow.sources.live.merlin.sim import MerlinSimulator
from detflow.sources.mib_write import frame_header, write_mib

from .helpers import Peer, frame_message, header_message, trickle

FRAME = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16)


# --- sizes announced by the peer ----------------------------------------------------------
def _hold(conn: socket.socket, peer: Peer, data: bytes) -> None:
    conn.sendall(data)
    peer.stop.wait(30)


def _huge_header(conn: socket.socket, peer: Peer) -> None:
    _hold(conn, peer, b"MPX,9999999999,HDR,\t\nFrames in Acquisition (Number):\t4\n" + b"x" * 4096)


def _huge_frame(conn: socket.socket, peer: Peer) -> None:
    # a frame header that is self-consistent, for 9999 x 9999 pixels of 32 bits: 400 MB
    head = frame_header(1, sig_shape=(9999, 9999), counter_depth=24)
    _hold(conn, peer, header_message(4, depth=24) + b"MPX,%010d," % (len(head) + 9999 * 9999 * 4 + 1) + head)


def _huge_reply(conn: socket.socket, peer: Peer) -> None:
    peer.recv_message(conn)
    _hold(conn, peer, b"MPX,2000000000,GET,IMAGEX," + b"1" * 1024)


def _read_header_and_frames(port: int) -> None:
    with MerlinDataStream("127.0.0.1", port, timeout=5) as stream:
        stream.read_acquisition_header()
        stream.read_frames(np.zeros((4, 16, 16), np.uint32))


def _get_imagex(port: int) -> None:
    with MerlinControl("127.0.0.1", port, timeout=5) as ctl:
        ctl.get("IMAGEX")


SIZES: dict[str, tuple[Callable[[socket.socket, Peer], None], Callable[[int], None], str]] = {
    "acquisition header length": (_huge_header, _read_header_and_frames,
                                  r"acquisition header length 9999999998 bytes is above the limit of 1 MiB"),
    "frame message length": (_huge_frame, lambda port: _read_header_and_frames(port),
                             r"frame message length 399920\d+ bytes is above the limit of 256 MiB"),
    "control reply length": (_huge_reply, _get_imagex,
                             r"reply length 1999999999 bytes is above the limit of 64 KiB"),
}


@pytest.mark.parametrize("case", sorted(SIZES))
def test_a_size_from_the_peer_is_checked_before_anything_is_buffered(case: str) -> None:
    script, client, message = SIZES[case]
    with Peer(script) as peer:
        with pytest.raises(DetectorProtocolError, match=message):
            client(peer.port)
        assert not peer.finished.is_set()  # refused at once, not after waiting for the bytes


def test_a_detector_reporting_a_frame_too_large_to_hold_is_refused() -> None:
    """IMAGEX = IMAGEY = 65535 at 24 bits would be 16 GiB a frame."""
    settings = {"IMAGEX": "65535", "IMAGEY": "65535", "COUNTERDEPTH": "24"}

    def control(conn: socket.socket, peer: Peer) -> None:
        while not peer.stop.is_set():
            name = peer.recv_message(conn).decode().split(",")[1]
            conn.sendall(encode_message(f"GET,{name},{settings.get(name, '0')},0".encode()))

    message = r"frame size \(IMAGEX 65535 x IMAGEY 65535 at COUNTERDEPTH 24\) 17179344900 bytes is above the limit"
    with Peer(control) as api, Peer(lambda conn, peer: peer.stop.wait(30)) as data, \
            MerlinConnection(api_port=api.port, data_port=data.port, timeout=5) as conn, \
            pytest.raises(DetectorProtocolError, match=message):
        conn.detector_settings()


def test_the_simulator_refuses_a_huge_control_request(tmp_path: Path) -> None:
    write_mib(tmp_path / "scan.hdr", np.zeros((2, 2, 16, 16), np.uint16))
    with MerlinSimulator(tmp_path / "scan.hdr", data_port=0, control_port=0) as sim:
        with socket.create_connection(("127.0.0.1", sim.control_port), timeout=30) as sock:
            sock.sendall(b"MPX,9999999999,GET,IMAGEX,0")
            with contextlib.suppress(ConnectionResetError):  # closed (unread bytes: a reset), not waiting for 10 GB
                assert sock.recv(1) == b""
        with MerlinControl("127.0.0.1", sim.control_port, timeout=5) as ctl:
            assert ctl.get("IMAGEX") == "16"  # and goes on serving others


# --- trickles -------------------------------------------------------------------------------
INTERVAL = 0.02  # between bytes: far below the client's timeout
TIMEOUT = 0.5


def _trickle_second_frame(conn: socket.socket, peer: Peer) -> None:
    conn.sendall(header_message(2) + frame_message(FRAME, 1))
    trickle(conn, frame_message(FRAME, 2), INTERVAL, peer.stop)


def _trickle_first_frame(conn: socket.socket, peer: Peer) -> None:
    conn.sendall(header_message(2))
    trickle(conn, frame_message(FRAME, 1), INTERVAL, peer.stop)


def _trickle_header(conn: socket.socket, peer: Peer) -> None:
    trickle(conn, header_message(2), INTERVAL, peer.stop)


def _trickle_reply(conn: socket.socket, peer: Peer) -> None:
    peer.recv_message(conn)
    trickle(conn, encode_message(b"GET,IMAGEX," + b"0" * 200 + b"16,0"), INTERVAL, peer.stop)


def _frames(port: int) -> None:
    with MerlinDataStream("127.0.0.1", port, timeout=TIMEOUT) as stream:
        stream.read_acquisition_header(timeout=30)
        stream.read_frames(np.zeros((2, 16, 16), np.uint16))


def _header(port: int) -> None:
    with MerlinDataStream("127.0.0.1", port, timeout=TIMEOUT) as stream:
        stream.read_acquisition_header()


def _reply(port: int) -> None:
    with MerlinControl("127.0.0.1", port, timeout=TIMEOUT) as ctl:
        ctl.get("IMAGEX")


TRICKLES: dict[str, tuple[Callable[[socket.socket, Peer], None], Callable[[int], None], str]] = {
    "a frame": (_trickle_second_frame, _frames, r"no complete frame within 0.5 s \(1 of 2 frames arrived\)"),
    "the first frame": (_trickle_first_frame, _frames, r"first frame's header did not arrive in full within 0.5 s"),
    "the acquisition header": (_trickle_header, _header, r"no acquisition header within 0.5 s"),
    "a control reply": (_trickle_reply, _reply, r"no reply to 'GET IMAGEX' within 0.5 s"),
}


@pytest.mark.parametrize("case", sorted(TRICKLES))
def test_a_trickling_peer_runs_into_the_timeout(case: str) -> None:
    script, client, message = TRICKLES[case]
    with Peer(script) as peer:
        with pytest.raises(DetectorTimeoutError, match=message):
            client(peer.port)
        # the client gave up while the peer still had bytes to send (about 1000 of them, 20 s' worth)
        assert not peer.finished.is_set()


# --- the dashboard server --------------------------------------------------------------------
def _dashboard_graph() -> Any:
    import detflow as df

    g = df.Graph("d")
    g.source("memory", data=np.ones((4, 4, 8, 8), np.uint16))
    g.partition()
    g.udf("sum", id="s")
    return g


def test_serving_beyond_loopback_needs_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from detflow.dashboard.server import serve
    from detflow.errors import ConfigurationError

    monkeypatch.delenv("DETFLOW_SERVE_PASSWORD", raising=False)
    with pytest.raises(ConfigurationError, match=r"address '0\.0\.0\.0' is reachable from other machines.*password"):
        serve(_dashboard_graph(), address="0.0.0.0", port=0, threaded=True, show=False, autostart=False)


def test_a_password_protected_dashboard_asks_for_it() -> None:
    import http.client

    from detflow.dashboard.server import serve

    with serve(_dashboard_graph(), port=0, threaded=True, show=False, autostart=False, password="s3cret",
               executor="inline") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/")
        page = conn.getresponse()
        page.read()
        assert page.status == 302 and "login" in (page.getheader("Location") or "")  # not the dashboard
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", "/login", body="username=u&password=wrong", headers=form)
        bad = conn.getresponse()
        bad.read()
        assert bad.getheader("Set-Cookie") is None and "error" in (bad.getheader("Location") or "")
        conn.request("POST", "/login", body="username=u&password=s3cret", headers=form)
        good = conn.getresponse()
        good.read()
        assert good.getheader("Set-Cookie") is not None and good.getheader("Location") == "/"
        conn.close()


# --- sizes announced by a DECTRIS detector (REST and ZeroMQ) -------------------------------
def _huge_rest_reply(conn: socket.socket, peer: Peer) -> None:
    conn.recv(65536)  # the request
    _hold(conn, peer, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2000000000\r\n\r\n"
          + b"1" * 1024)


def test_a_dectris_rest_reply_length_is_checked_before_it_is_read() -> None:
    from detflow.sources.live.dectris.control import SimplonClient

    with Peer(_huge_rest_reply) as peer:
        with pytest.raises(DetectorProtocolError, match=r"reply length \(Content-Length\) to GET /detector/api/\S+ "
                                                        r"2000000000 bytes is above the limit of 64 MiB"):
            SimplonClient("127.0.0.1", peer.port, timeout=30).get_config("nimages")
        assert not peer.finished.is_set()  # refused at once, not after waiting for the bytes


def test_the_dectris_simulator_refuses_a_huge_rest_request() -> None:
    from detflow.sources.live.dectris.control import SimplonClient
    from detflow.sources.live.dectris.sim import API_VERSION, DectrisSimulator

    with DectrisSimulator(np.zeros((2, 16, 16), np.uint16), api_port=0, data_port=0) as sim:
        before = SimplonClient("127.0.0.1", sim.api_port, timeout=30).get_config("nimages")
        with socket.create_connection(("127.0.0.1", sim.api_port), timeout=30) as sock:
            sock.sendall(f"PUT /detector/api/{API_VERSION}/config/nimages HTTP/1.1\r\nHost: x\r\n"
                         "Content-Type: application/json\r\nContent-Length: 9999999999\r\n\r\n{".encode())
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(4096):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.0 413") or answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"9999999999 bytes is above the limit" in answer
        assert SimplonClient("127.0.0.1", sim.api_port, timeout=30).get_config("nimages") == before  # still serving


def test_a_zeromq_message_larger_than_any_frame_is_never_buffered(monkeypatch: pytest.MonkeyPatch) -> None:
    zmq = pytest.importorskip("zmq", reason="the DECTRIS stream needs pyzmq (the live extra)")
    from detflow.sources import limits
    from detflow.sources.live.dectris.data import DectrisStream

    monkeypatch.setattr(limits, "MAX_FRAME_BYTES", 1 << 12)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    try:
        with DectrisStream("127.0.0.1", port, timeout=1.0) as stream:
            push.send(b"x" * (1 << 13), copy=True)  # twice the limit: ZeroMQ drops the peer, keeps nothing
            with pytest.raises(DetectorTimeoutError):
                stream.read_header()
            assert stream.skipped_parts == 0  # never received, so never held in memory
    finally:
        push.close()
        ctx.term()
