"""Serving a simulator from the command line until Ctrl-C or SIGTERM (``detflow sim ...``)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

__all__ = ["serve_until_stopped"]


def serve_until_stopped(sim: Any, name: str, describe: Callable[[], list[str]], echo: Callable[[str], None],
                        watch: Callable[[Any], Any] | None = None) -> None:
    """Start ``sim``, print ``describe()`` (read once it listens: ports are known then), and
    serve until Ctrl-C or SIGTERM; ``watch(sim)`` makes a progress display polled as it
    serves (``poll()`` and ``close()``)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with sim:
            for line in describe():
                echo(line)
            echo("press Ctrl-C to stop")
            shown = watch(sim) if watch is not None else None
            try:
                while True:
                    time.sleep(0.2)
                    if shown is not None:
                        shown.poll()
            finally:
                if shown is not None:
                    shown.poll()  # what was sent since the last look
                    shown.close()
    except KeyboardInterrupt:
        echo(f"{name} simulator: stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
