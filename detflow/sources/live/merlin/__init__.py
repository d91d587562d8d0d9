"""Quantum Detectors Merlin: the live protocol, its client pieces and a simulator.

* :mod:`.protocol`: MPX message framing and the acquisition header;
* :mod:`.control`: :class:`MerlinControl`, the control port client (``GET``/``SET``/``CMD``);
* :mod:`.data`: :class:`MerlinDataStream`, the data port client (headers, frames decoded in bulk);
* :mod:`.sim`: :class:`MerlinSimulator`, which replays a MIB acquisition over the same
  protocol (``detflow sim merlin``);
* :mod:`.connection`: the connection and acquisition that ``LiveContext`` uses.

Format notes: ``shared/reference/protocols.md`` section 1.
"""

from detflow.sources.live.merlin.control import MerlinControl
from detflow.sources.live.merlin.data import MerlinDataStream
from detflow.sources.live.merlin.protocol import AcquisitionHeader, encode_message
from detflow.sources.live.merlin.sim import MerlinSimulator

__all__ = ["AcquisitionHeader", "MerlinControl", "MerlinDataStream", "MerlinSimulator", "encode_message"]
