"""Moved to :mod:`detflow.shm` (sources and executors both use it) and
:mod:`detflow.executors.staging` (``stage``); kept as an alias."""

from detflow.executors.staging import stage  # noqa: F401
from detflow.shm import *  # noqa: F403
