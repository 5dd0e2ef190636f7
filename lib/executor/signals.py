"""SIGTERM / SIGINT: the first asks for a graceful stop (drain), the second stops now."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)


def install(on_stop: Callable[[bool], None]) -> None:
    """Call on_stop(force=False) on the first SIGTERM/SIGINT, on_stop(force=True) on the next one.
    Must run in the main thread (Python delivers signals there)."""
    count = {"n": 0}

    def handler(signum: int, frame: object) -> None:
        count["n"] += 1
        name = signal.Signals(signum).name
        force = count["n"] > 1
        log.warning(
            "%s received: %s", name, "stopping now" if force else "draining running jobs, then stopping"
        )
        on_stop(force)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
