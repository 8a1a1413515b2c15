"""The small process between the daemon and a job: it records how the job ended.

Run as ``python -m scheduler.jobwrapper STATUS_FILE [--max-log-bytes N] -- COMMAND
[ARG]...`` in the job's own process session, with stdout and stderr already pointing at
the job's log. It first writes its own pid and start time to ``STATUS_FILE.pid`` (so a
daemon killed between launching and recording the pid can still adopt the job), starts
the command (never through a shell), copies the command's output to the log until N
bytes, then writes one note and discards the rest (the disk never fills), and when the
command exits writes ``{"exit_code", "ended_at"}`` to STATUS_FILE atomically (processes
it left in the background run on, their output still copied), so a daemon that was down
(or restarted) when the job ended can still record the right outcome. ``exit_code`` is
the command's status, or minus the signal number that killed it; 127 when the command
could not be started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import TextIO

COULD_NOT_START = 127
# How long the job's last output may take to reach the log once its command has exited.
OUTPUT_DRAIN_S = 2.0


def _owner_only(path: str) -> TextIO:
    """Open ``path`` for writing as a new 0600 file (the job's umask is left alone)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(descriptor, "w", encoding="utf-8")


def write_status(path: str, exit_code: int) -> None:
    temporary = f"{path}.tmp"
    with _owner_only(temporary) as handle:
        json.dump({"exit_code": exit_code, "ended_at": time.time()}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


USAGE = "usage: python -m scheduler.jobwrapper STATUS_FILE [--max-log-bytes N] -- COMMAND...\n"
_CHUNK = 65536


def pid_path_for(status_path: str) -> str:
    return f"{status_path}.pid"


def write_pid_file(path: str) -> None:
    import psutil

    temporary = f"{path}.tmp"
    with _owner_only(temporary) as handle:
        json.dump({"pid": os.getpid(), "started_at": psutil.Process().create_time()}, handle)
    os.replace(temporary, path)


def copy_capped(source: int, target: int, max_bytes: int | None) -> int:
    """Copy ``source`` to ``target`` until EOF, writing at most ``max_bytes`` and then one
    note; whatever comes after is read and dropped so the job never blocks. A log that
    cannot be written (a full disk) is given up the same way: the job keeps running.
    Returns the number of bytes dropped."""
    written = dropped = 0
    limit = max_bytes
    while chunk := os.read(source, _CHUNK):
        room = len(chunk) if limit is None else max(limit - written, 0)
        if room:
            try:
                os.write(target, chunk[:room])
                written += min(room, len(chunk))
            except OSError:
                limit, room = written, 0  # nothing more reaches the log
        if len(chunk) > room:
            if not dropped:
                _write_quietly(target, f"\ngridshift: log capped at {limit} bytes "
                               f"(daemon.max_log_bytes); further output is discarded\n")
            dropped += len(chunk) - room
    return dropped


def _write_quietly(target: int, text: str) -> None:
    try:
        os.write(target, text.encode())
    except OSError:
        pass


def parse_args(argv: list[str]) -> tuple[str, int | None, list[str]] | None:
    """(status file, log cap, command), or None when the arguments are malformed."""
    if "--" not in argv:
        return None
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    if not command or not options:
        return None
    status_path, max_bytes = options[0], None
    if options[1:]:
        if len(options) != 3 or options[1] != "--max-log-bytes" or not options[2].isdigit():
            return None
        max_bytes = int(options[2])
    return status_path, max_bytes, command


def main(argv: list[str]) -> int:
    parsed = parse_args(argv)
    if parsed is None:
        sys.stderr.write(USAGE)
        return 2
    status_path, max_log_bytes, command = parsed
    write_pid_file(pid_path_for(status_path))
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        # Pass the signal to every process of the job, once: this wrapper's process group,
        # which the job and its children share (the daemon signals the wrapper alone, see
        # launcher.signal_job). Ignored here meanwhile, or it would come straight back.
        signal.signal(signum, signal.SIG_IGN)
        try:
            os.killpg(os.getpgrp(), signum)
        finally:
            signal.signal(signum, forward)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as error:
        sys.stderr.write(f"gridshift: cannot start {command[0]!r}: {error.strerror or error}\n")
        sys.stderr.flush()
        write_status(status_path, COULD_NOT_START)
        return COULD_NOT_START
    assert child.stdout is not None
    copier = threading.Thread(target=copy_capped, daemon=True, args=(
        child.stdout.fileno(), sys.stdout.fileno(), max_log_bytes))
    copier.start()
    exit_code = child.wait()
    # The job ends when its command exits, even if a process it left in the background
    # still holds the output open (for hours, maybe): its last lines get a moment to
    # reach the log, then the status is written, then the leftovers' output is copied
    # until they close it.
    copier.join(timeout=OUTPUT_DRAIN_S)
    write_status(status_path, exit_code)
    copier.join()
    return exit_code if exit_code >= 0 else 128 - exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
