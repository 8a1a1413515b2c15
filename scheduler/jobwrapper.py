"""The small process between the daemon and a job: it records how the job ended.

Run as ``python -m scheduler.jobwrapper STATUS_FILE -- COMMAND [ARG]...`` in the job's own
process session, with stdout and stderr already pointing at the job's log. It starts the
command (never through a shell), waits, and writes ``{"exit_code", "ended_at"}`` to
STATUS_FILE atomically, so a daemon that was down (or restarted) when the job ended can
still record the right outcome. ``exit_code`` is the command's status, or minus the
signal number that killed it; 127 when the command could not be started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import FrameType

COULD_NOT_START = 127


def write_status(path: str, exit_code: int) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"exit_code": exit_code, "ended_at": time.time()}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m scheduler.jobwrapper STATUS_FILE -- COMMAND...\n")
        return 2
    status_path, command = argv[0], argv[2:]
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        # The daemon signals the whole process group; this covers a signal sent to us alone.
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        child = subprocess.Popen(command)
    except OSError as error:
        sys.stderr.write(f"gridshift: cannot start {command[0]!r}: {error.strerror or error}\n")
        sys.stderr.flush()
        write_status(status_path, COULD_NOT_START)
        return COULD_NOT_START
    exit_code = child.wait()
    write_status(status_path, exit_code)
    return exit_code if exit_code >= 0 else 128 - exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
