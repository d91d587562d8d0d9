"""Moved to :mod:`detflow.shm` (sources and executors both use it); kept as an alias."""

from detflow.shm import *  # noqa: F403
from detflow.shm import __all__  # noqa: F401
