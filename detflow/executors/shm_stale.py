"""Shared-memory segments left behind by drivers that died, found and removed.

Every segment detflow creates is named ``detflow_<driver pid>_<random>`` (see
:mod:`detflow.shm`). The resource tracker of the driver unlinks them when
the driver dies, unless it died too: a SIGKILL of the whole process group takes the
tracker with it, and the segments stay in ``/dev/shm`` until reboot. A segment whose
owner pid no longer runs is *stale*; :func:`remove_stale_segments` unlinks those (the
pipelined executor does when it starts, ``detflow doctor --clean`` on request).
A segment whose owner runs, or may (another user's process), is never touched.

>>> [s.name for s in stale_segments("/nonexistent")]
[]
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from detflow.shm import PREFIX

__all__ = ["SHM_DIR", "StaleSegment", "remove_stale_segments", "stale_segments"]

log = logging.getLogger(__name__)

#: where POSIX shared memory shows up as files (Linux)
SHM_DIR = "/dev/shm"


@dataclass(frozen=True)
class StaleSegment:
    """A segment whose owner process is gone."""

    name: str
    pid: int
    size: int


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as someone else
        return True
    return True


def stale_segments(shm_dir: str = SHM_DIR) -> list[StaleSegment]:
    """detflow's segments in ``shm_dir`` whose owner pid no longer runs."""
    try:
        names = sorted(os.listdir(shm_dir))
    except OSError:
        return []
    out = []
    for name in names:
        if not name.startswith(PREFIX):
            continue
        pid_text = name[len(PREFIX):].partition("_")[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        try:
            size = os.stat(os.path.join(shm_dir, name)).st_size
        except OSError:
            continue
        out.append(StaleSegment(name, int(pid_text), size))
    return out


def remove_stale_segments(shm_dir: str = SHM_DIR) -> list[StaleSegment]:
    """Unlink the segments of dead owners; returns those removed."""
    removed = []
    for seg in stale_segments(shm_dir):
        try:
            os.unlink(os.path.join(shm_dir, seg.name))
        except OSError as err:
            log.warning("could not remove stale shared-memory segment %s: %s", seg.name, err)
            continue
        removed.append(seg)
    if removed:
        log.info("removed %d shared-memory segment(s) left by dead detflow processes (%d bytes)",
                 len(removed), sum(s.size for s in removed))
    return removed
