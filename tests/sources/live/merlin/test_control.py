"""The control port: the client against the simulator, and against hand-scripted servers
for exact request bytes, both reply length conventions, short reads and silence."""

from __future__ import annotations

import socket
import time

import pytest

from detflow.errors import DetectorCommandError, DetectorDisconnectedError, DetectorTimeoutError
from detflow.sources.live.merlin.control import MerlinControl
from detflow.sources.live.merlin.sim import MerlinSimulator

from .conftest import RawServer, Recording


def test_get_set_cmd_round_trips(sim: MerlinSimulator, recording: Recording) -> None:
    with MerlinControl("127.0.0.1", sim.control_port, timeout=5) as ctl:
        assert (ctl.get("IMAGEX"), ctl.get("IMAGEY"), ctl.get("COUNTERDEPTH")) == ("64", "64", "12")
        assert ctl.get("NUMFRAMESTOACQUIRE") == str(len(recording.frames))
        assert ctl.get("imagex") == "64"  # names are case-insensitive, as Merlin's
        ctl.set("NUMFRAMESTOACQUIRE", 1024)
        assert ctl.get("NUMFRAMESTOACQUIRE") == "1024"
        ctl.set("COUNTERDEPTH", 6)
        assert ctl.get("COUNTERDEPTH") == "6"
        ctl.set("THRESHOLD0", "12.5")  # a parameter the simulator does not know is kept as well
        assert ctl.get("THRESHOLD0") == "12.5"
        ctl.cmd("STOPACQUISITION")
        ctl.cmd("SOFTTRIGGER")


@pytest.mark.parametrize("call,command,status", [
    (lambda c: c.set("COUNTERDEPTH", 7), "SET COUNTERDEPTH 7", 3),
    (lambda c: c.set("NUMFRAMESTOACQUIRE", -1), "SET NUMFRAMESTOACQUIRE -1", 3),
    (lambda c: c.set("IMAGEX", 512), "SET IMAGEX 512", 2),
    (lambda c: c.get("NOSUCHPARAMETER"), "GET NOSUCHPARAMETER", 2),
    (lambda c: c.cmd("SELFDESTRUCT"), "CMD SELFDESTRUCT", 2),
])
def test_nonzero_status_names_the_command(sim: MerlinSimulator, call, command: str, status: int) -> None:
    with MerlinControl("127.0.0.1", sim.control_port, timeout=5) as ctl:
        with pytest.raises(DetectorCommandError) as info:
            call(ctl)
        assert (info.value.command, info.value.status) == (command, status)
        assert command in str(info.value) and info.value.reason in str(info.value)
        assert ctl.get("IMAGEY") == "64"  # the connection is still usable


def test_start_while_running_is_busy(recording: Recording) -> None:
    with MerlinSimulator(recording.hdr, data_port=0, control_port=0, wait_trigger=True) as sim, \
            MerlinControl("127.0.0.1", sim.control_port) as ctl:
        assert ctl.get("DETECTORSTATUS") == "0"
        ctl.cmd("STARTACQUISITION")
        assert ctl.get("DETECTORSTATUS") == "1"
        with pytest.raises(DetectorCommandError, match=r"'CMD STARTACQUISITION': status 1 \(busy\)"):
            ctl.cmd("STARTACQUISITION")
        ctl.cmd("STOPACQUISITION")
        assert ctl.get("DETECTORSTATUS") == "0"
        ctl.cmd("STARTACQUISITION")


def _answering(replies: dict[bytes, list[bytes]]):
    """A script that records each request and answers it with the given chunks of bytes."""

    def script(conn: socket.socket, server: RawServer) -> None:
        conn.settimeout(5)
        for _ in range(len(replies)):
            prefix = b""
            while len(prefix) < 15:
                prefix += conn.recv(15 - len(prefix))
            body = b""
            while len(body) < int(prefix[4:14]) - 1:
                body += conn.recv(int(prefix[4:14]) - 1 - len(body))
            server.received += prefix + body
            for chunk in replies[body]:
                conn.sendall(chunk)
                time.sleep(0.01)  # separate TCP segments: the client must loop on short reads

    return script


def test_exact_request_bytes_and_both_reply_length_conventions() -> None:
    replies = {
        # the documented convention (length = len(payload) + 1), in pieces
        b"GET,IMAGEX,0": [b"MPX,00000", b"00017,GET,IMAGEX,", b"256,0"],
        # the sim quirk: length = len(payload); the status arrives in its own segment
        b"GET,COUNTERDEPTH,0": [b"MPX,0000000021,GET,COUNTERDEPTH,12,", b"0"],
        b"SET,NUMFRAMESTOACQUIRE,1024": [b"MPX,0000000024,SET,NUMFRAMESTOACQUIRE,0"],
        b"CMD,STARTACQUISITION,0": [b"MPX,0000000022,CMD,STARTACQUISITION,0"],
    }
    with RawServer(_answering(replies)) as server, MerlinControl("127.0.0.1", server.port, timeout=5) as ctl:
        assert ctl.get("IMAGEX") == "256"
        assert ctl.get("COUNTERDEPTH") == "12"
        ctl.set("NUMFRAMESTOACQUIRE", 1024)
        ctl.cmd("STARTACQUISITION")
    assert bytes(server.received) == (b"MPX,0000000013,GET,IMAGEX,0" b"MPX,0000000019,GET,COUNTERDEPTH,0"
                                      b"MPX,0000000028,SET,NUMFRAMESTOACQUIRE,1024"
                                      b"MPX,0000000023,CMD,STARTACQUISITION,0")


def test_a_server_that_never_answers_times_out() -> None:
    def silent(conn: socket.socket, server: RawServer) -> None:
        server.release.wait(120)  # silent far longer than the client's timeout

    with RawServer(silent) as server, MerlinControl("127.0.0.1", server.port, timeout=0.3) as ctl:
        t0 = time.monotonic()
        with pytest.raises(DetectorTimeoutError, match=rf"127.0.0.1:{server.port}: no reply to 'GET IMAGEX' "
                                                        r"within 0.3 s"):
            ctl.get("IMAGEX")
        assert time.monotonic() - t0 < 60  # the 0.3 s timeout, not the server's silence
        assert isinstance(DetectorTimeoutError("x"), TimeoutError)


def test_a_server_that_hangs_up_is_a_disconnect() -> None:
    def hang_up(conn: socket.socket, server: RawServer) -> None:
        conn.recv(100)

    with RawServer(hang_up) as server, MerlinControl("127.0.0.1", server.port, timeout=5) as ctl, \
            pytest.raises(DetectorDisconnectedError, match="closed while waiting for the reply to 'CMD SOFTTRIGGER'"):
        ctl.cmd("SOFTTRIGGER")


def test_nobody_listening() -> None:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DetectorDisconnectedError, match=f"127.0.0.1:{port}: cannot connect"):
        MerlinControl("127.0.0.1", port, timeout=1).connect()
