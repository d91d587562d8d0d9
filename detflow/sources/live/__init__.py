"""Live detectors: connections, acquisitions, simulators.

``LiveContext().make_connection(kind)`` picks a detector by name (``"memory"``,
``"merlin"``, ``"dectris"``); :mod:`detflow.sources.live.base` holds the parts every detector
shares (hooks, pending acquisitions, the nav-shape rules, the receiving thread).
"""

from detflow.sources.live.base import (
    DetermineNavShapeEnv,
    Hooks,
    LiveAcquisition,
    LiveConnection,
    PendingAcquisition,
    ReadyForDataEnv,
)

__all__ = [
    "DetermineNavShapeEnv",
    "Hooks",
    "LiveAcquisition",
    "LiveConnection",
    "PendingAcquisition",
    "ReadyForDataEnv",
]
