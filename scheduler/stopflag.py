"""SIGTERM/SIGINT as a stop request from the daemon process's first moment.

Installed before the daemon's slow imports and start-up (so a SIGTERM then is a clean
stop with exit 0, not a kill), and read by ``Daemon.serve``. Imports nothing heavy.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested = False


def _request(_signum: int, _frame: FrameType | None) -> None:
    global _requested
    _requested = True


def install() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, _request)


def requested() -> bool:
    return _requested


def is_daemon_command(argv: list[str]) -> bool:
    """Whether ``gridshift [--config FILE] daemon`` is what ``argv`` (no program) runs."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word == "daemon"
    return False
