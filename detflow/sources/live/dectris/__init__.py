"""DECTRIS detectors (ARINA, QUADRO, EIGER): the SIMPLON REST API, the ZeroMQ stream, a simulator.

* :mod:`.control`: :class:`SimplonClient`, the REST client; trigger modes and the
  settings of an active acquisition;
* :mod:`.data`: :class:`DectrisStream`, the ZeroMQ receiver (headers, ids, blobs);
* :mod:`.codec`: the blob encodings (bitshuffle-LZ4, LZ4, none), decoded in the workers;
* :mod:`.acquisition`, :mod:`.connection`: what ``LiveContext`` uses;
* :mod:`.recording`, :mod:`.sim`: :class:`DectrisSimulator` (``detflow sim dectris``),
  serving a ``.npy``, an HDF5 master file or a stream dump.

Format notes: ``shared/reference/protocols.md`` section 2.
"""

from detflow.sources.live.dectris.control import DectrisActiveController, SimplonClient
from detflow.sources.live.dectris.data import DectrisStream, SeriesHeader

__all__ = ["DectrisActiveController", "DectrisStream", "SeriesHeader", "SimplonClient"]
