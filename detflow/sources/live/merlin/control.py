"""Merlin control port client: ``GET``, ``SET`` and ``CMD`` over TCP (default port 6341).

Requests are the bytes Merlin's own clients send, framed as MPX messages
(:mod:`.protocol`)::

    MPX,0000000013,GET,IMAGEX,0                 (a dummy ",0" after the name)
    MPX,0000000028,SET,NUMFRAMESTOACQUIRE,1024
    MPX,0000000023,CMD,STARTACQUISITION,0

Replies: ``GET,NAME,value,status``, ``SET,NAME,status``, ``CMD,NAME,status``. Status 0
is OK; 1 busy, 2 unrecognised command or parameter, 3 parameter out of range raise
:class:`~detflow.errors.DetectorCommandError`.

Replies are read in full however the bytes arrive, and under both length
conventions seen in the wild: the documented one (the length counts the comma after
the digits, ``len(payload) + 1``) and ``len(payload)``, which some simulators send. The
reader reads ``n - 1`` bytes, and one more when what it read ends with the comma
before the status (a status is never empty). One request at a time, under a lock,
so hooks on other threads may share a client.
"""

from __future__ import annotations

import socket
import threading
import time

from detflow.errors import (
    DetectorCommandError,
    DetectorDisconnectedError,
    DetectorProtocolError,
    DetectorTimeoutError,
)
from detflow.sources.live.merlin.protocol import PREFIX_BYTES, PortClient, encode_message, parse_prefix, shown

__all__ = ["STATUS_REASONS", "MerlinControl"]

#: Merlin's non-zero status codes
STATUS_REASONS = {1: "busy", 2: "unrecognised command or parameter", 3: "parameter out of range"}


class MerlinControl(PortClient):
    """A connection to Merlin's control port.

    Parameters
    ----------
    host, port
        Where Merlin (or its simulator) listens.
    timeout
        Seconds a connect, a send, or a whole reply may take;
        :class:`~detflow.errors.DetectorTimeoutError` past that.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from detflow.sources.mib_write import write_mib
    >>> from detflow.sources.live.merlin.sim import MerlinSimulator
    >>> d = tempfile.mkdtemp()
    >>> _ = write_mib(os.path.join(d, "scan.hdr"), np.zeros((2, 2, 16, 16), np.uint16))
    >>> with MerlinSimulator(os.path.join(d, "scan.hdr"), data_port=0, control_port=0) as sim:
    ...     with MerlinControl("127.0.0.1", sim.control_port) as ctl:
    ...         ctl.set("NUMFRAMESTOACQUIRE", 4)
    ...         print(ctl.get("IMAGEX"), ctl.get("COUNTERDEPTH"))
    16 12
    """

    port_name = "control"

    def __init__(self, host: str = "127.0.0.1", port: int = 6341, timeout: float = 5.0) -> None:
        super().__init__(host, port, timeout)
        self._lock = threading.Lock()

    # --- commands ---------------------------------------------------------------------
    def get(self, name: str) -> str:
        """The value of parameter ``name`` (``"IMAGEX"``, ``"COUNTERDEPTH"``, ...) as text.

        An unknown parameter is status 2 (:class:`~detflow.errors.DetectorCommandError`)
        from Merlin and from detflow's simulator; LiberTEM-live's simulator answers
        ``"undef"`` with status 0 instead, which is returned as it is.
        """
        fields = self._request("GET", name, "0", f"GET {name}")
        if len(fields) < 4:
            raise DetectorProtocolError(
                f"{self.where}: reply to 'GET {name}' should be 'GET,{name},<value>,<status>'; "
                f"got {','.join(fields)!r}"
            )
        return ",".join(fields[2:-1])

    def set(self, name: str, value: object) -> None:
        """Set parameter ``name`` to ``value`` (sent as ``str(value)``)."""
        self._request("SET", name, str(value), f"SET {name} {value}")

    def cmd(self, name: str) -> None:
        """Run command ``name`` (``"STARTACQUISITION"``, ``"SOFTTRIGGER"``, ...)."""
        self._request("CMD", name, "0", f"CMD {name}")

    # --- the exchange -----------------------------------------------------------------
    def _request(self, kind: str, name: str, value: str, command: str) -> list[str]:
        if "," in name or "," in value:
            raise ValueError(f"{self.where}: {command!r}: names and values cannot contain ','")
        with self._lock:
            sock = self.connect()._sock
            assert sock is not None
            try:
                sock.settimeout(self.timeout)
                sock.sendall(encode_message(f"{kind},{name},{value}".encode("ascii")))
                payload = self._read_reply(sock, command)
            except TimeoutError as err:
                self.close()  # a late reply would be read as the answer to the next request
                raise DetectorTimeoutError(
                    f"{self.where}: no reply to {command!r} within {self.timeout} s"
                ) from err
            except DetectorDisconnectedError:
                self.close()
                raise
            except OSError as err:
                self.close()
                raise DetectorDisconnectedError(f"{self.where}: {command!r} failed: {err}") from err
        fields = payload.decode("latin-1").split(",")
        if len(fields) < 3 or fields[0].upper() != kind or fields[1].upper() != name.upper():
            raise DetectorProtocolError(
                f"{self.where}: reply to {command!r} should start with '{kind},{name},'; got {shown(payload, 80)!r}"
            )
        try:
            status = int(fields[-1])
        except ValueError:
            raise DetectorProtocolError(
                f"{self.where}: reply to {command!r} should end with a status number; got {shown(payload, 80)!r}"
            ) from None
        if status != 0:
            raise DetectorCommandError(command, status, STATUS_REASONS.get(status, "unknown status code"))
        return fields

    def _read_reply(self, sock: socket.socket, command: str) -> bytes:
        # one deadline for the whole reply: a peer trickling a byte at a time cannot
        # stretch it past the timeout, however short each wait between bytes is
        deadline = time.monotonic() + self.timeout
        prefix = self._recv_exactly(sock, PREFIX_BYTES, command, deadline)
        n = parse_prefix(prefix, f"{self.where}: reply to {command!r}", what="reply length")
        payload = self._recv_exactly(sock, n, command, deadline)
        if payload.endswith(b","):  # length = len(payload): the status byte is still to come
            payload += self._recv_exactly(sock, 1, command, deadline)
        return payload

    def _recv_exactly(self, sock: socket.socket, n: int, command: str, deadline: float) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            k = sock.recv_into(view[got:], n - got)
            if k == 0:
                raise DetectorDisconnectedError(
                    f"{self.where}: the connection closed while waiting for the reply to {command!r}"
                )
            got += k
        return bytes(buf)
