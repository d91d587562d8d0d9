"""ASI Timepix3 (CheeTah TPX3): the sparse CSR event stream, and a simulator.

* :mod:`.protocol`: the five 32-byte headers and the dtype codes;
* :mod:`.data`: :class:`CsrStream`, the receiver (headers, chunks, frames per partition);
* :mod:`.connection`: :class:`AsiTpx3Connection` and its (passive) acquisitions;
* :mod:`.sim`: :class:`AsiTpx3Simulator` (``detflow sim asi-tpx3``), replaying a CSR
  ``.npz`` or a dense ``.npy``.

Frames stay sparse in the partitions (see :mod:`detflow.sources.csr`).
"""

from detflow.sources.live.asi_tpx3.data import CsrStream

__all__ = ["CsrStream"]
