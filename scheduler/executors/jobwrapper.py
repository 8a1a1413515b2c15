"""The small process between the daemon and a job: it starts the command and records it.

Run by the daemon as ``python -I -m scheduler.executors.jobwrapper`` (an isolated interpreter: no
PYTHON* variables, neither the job's cwd nor the user's site directory on sys.path) in its
own process session, as the daemon's user, with cwd ``/``, stdout and stderr on the job's
log (opened by the daemon), and the job's spec as one JSON document on stdin (see
``Spec``). The job's identity, environment, cwd and umask apply to the command's own exec
only, never to this interpreter.

Records, each written to ``RECORDS.<suffix>`` (a directory only the daemon can write),
created with O_EXCL and O_NOFOLLOW, fsynced, then renamed into place, in this order:

- ``.pid``: this wrapper's pid and start time (so a daemon killed before storing the pid
  can still find it);
- ``.starting``: just before the command is spawned. No ``.starting`` means the command
  provably never started (the daemon may launch the job again);
- ``.started``: the command's pid and start time, once it has been exec'd;
- ``.status``: ``{"exit_code", "ended_at", "signalled"}`` when the command exits (not when
  the leftovers it put in the background do; their output is still copied to the log).
  ``exit_code`` is the command's status, or minus the signal number that killed it; 127
  when the command could not be started (and provably did not start). ``signalled`` says
  whether a stop signal was passed to the job before its command exited.

The output is copied to the log until N bytes, then one note is written and the rest
discarded (the disk never fills). The command gets SIGKILL if this wrapper dies.

An interruptible job in suspend mode is stopped (SIGSTOP) and continued (SIGCONT) as its
whole process group, this wrapper included: it has nothing to do while its command is
stopped, and stopping the group reaches every child the command started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

COULD_NOT_START = 127
# The wrapper's own exit code when it stopped before starting the command (a spec that
# never arrived, a record that could not be written): nothing ran.
NOT_STARTED = 125
# How long the job's last output may take to reach the log once its command has exited.
OUTPUT_DRAIN_S = 2.0
# How often a test pause (``Spec.pause_at``) looks for its release file.
PAUSE_POLL_S = 0.02

PID_SUFFIX = ".pid"
STARTING_SUFFIX = ".starting"
STARTED_SUFFIX = ".started"
STATUS_SUFFIX = ".status"

USAGE = "usage: python -I -m scheduler.executors.jobwrapper < SPEC.json\n"
_CHUNK = 65536
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Spec:
    """What the daemon hands the wrapper on stdin."""

    records: str  # path prefix of the records, e.g. LOG_DIR/.gridshift/job-12
    argv: list[str]  # launcher prefix + the job's argv
    env: dict[str, str]  # the job's whole environment
    cwd: str
    uid: int | None = None  # None: run as the wrapper's own user
    gid: int | None = None
    groups: list[int] | None = None
    umask: int | None = None
    max_log_bytes: int | None = None
    # Tests only: block at this point until ``pause_dir/<point>-<job>.release`` exists.
    pause_at: str | None = None
    pause_dir: str | None = None
    # An interruptible job's checkpoint signal (a number): passed to the job like SIGTERM.
    checkpoint_signal: int | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, document: Any) -> Spec:
        if not isinstance(document, dict):
            raise ValueError("the spec must be a JSON object")
        spec = cls(**document)
        if not spec.argv or not all(isinstance(a, str) for a in spec.argv):
            raise ValueError("argv must be a non-empty list of strings")
        if not isinstance(spec.env, dict) or not isinstance(spec.records, str):
            raise ValueError("env must be an object and records a path")
        return spec


def write_record(path: str, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically and durably; never through a symlink."""
    temporary = f"{path}.tmp"
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def process_started_at(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).create_time())


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


def pause(spec: Spec, point: str) -> None:
    """A test hook: block at ``point`` until the test releases it (see Spec.pause_at)."""
    if spec.pause_at != point or not spec.pause_dir:
        return
    name = f"{point}-{os.path.basename(spec.records)}"
    with open(os.path.join(spec.pause_dir, f"{name}.reached"), "w", encoding="utf-8"):
        pass
    while not os.path.exists(os.path.join(spec.pause_dir, f"{name}.release")):
        time.sleep(PAUSE_POLL_S)


def _child_setup(wrapper_pid: int, cwd: str) -> Callable[[], None]:
    """Runs in the command's process after its uid/gids are set, before exec: die with the
    wrapper, and enter the cwd as the job's own user (not with the wrapper's rights)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != wrapper_pid:  # the wrapper died before the line above
            os._exit(NOT_STARTED)
        os.chdir(cwd)

    return setup


def _read_spec() -> Spec | None:
    try:
        return Spec.from_json(json.loads(sys.stdin.buffer.read()))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


def main(argv: list[str]) -> int:
    if argv:
        sys.stderr.write(USAGE)
        return 2
    spec = _read_spec()
    if spec is None:  # the daemon died before it sent the whole spec: run nothing
        return NOT_STARTED
    try:
        write_record(spec.records + PID_SUFFIX,
                     {"pid": os.getpid(), "started_at": process_started_at(os.getpid())})
    except OSError as error:
        sys.stderr.write(f"gridshift: cannot record the job's launch: {error}\n")
        return NOT_STARTED
    signalled = 0
    command_pid: int | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        # Pass the signal to every process of the job, once: this wrapper's process group,
        # which the job and its children share (the daemon signals the wrapper alone, see
        # launcher.signal_job). Ignored here meanwhile, or it would come straight back.
        # A command that had already exited was not ended by it (a cancel racing its end).
        nonlocal signalled
        if not signalled and not (command_pid is not None and _has_exited(command_pid)):
            signalled = signum
        signal.signal(signum, signal.SIG_IGN)
        try:
            os.killpg(os.getpgrp(), signum)
        finally:
            signal.signal(signum, forward)

    forwarded = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    if spec.checkpoint_signal is not None:
        forwarded.add(signal.Signals(spec.checkpoint_signal))
    for signum in forwarded:
        signal.signal(signum, forward)
    if signalled:  # cancelled before its command started: it never will
        _write_status(spec, -signalled, True)
        return 128 + signalled
    try:
        write_record(spec.records + STARTING_SUFFIX, {"wrapper_pid": os.getpid()})
    except OSError as error:
        sys.stderr.write(f"gridshift: cannot record the job's launch: {error}\n")
        return NOT_STARTED
    try:
        child = subprocess.Popen(
            spec.argv, env=spec.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, user=spec.uid, group=spec.gid,
            extra_groups=spec.groups, umask=-1 if spec.umask is None else spec.umask,
            preexec_fn=_child_setup(os.getpid(), spec.cwd),
        )
    except (OSError, subprocess.SubprocessError) as error:
        # Popen raises only when the exec did not happen: the command provably never ran.
        detail = getattr(error, "strerror", None) or error
        if isinstance(error, subprocess.SubprocessError):
            detail = f"cannot enter its working directory {spec.cwd}"
        sys.stderr.write(f"gridshift: cannot start {spec.argv[0]!r}: {detail}\n")
        sys.stderr.flush()
        _write_status(spec, COULD_NOT_START, bool(signalled))
        return COULD_NOT_START
    command_pid = child.pid
    pause(spec, "after-spawn")
    try:
        write_record(spec.records + STARTED_SUFFIX,
                     {"pid": child.pid, "started_at": process_started_at(child.pid)})
    except Exception as error:  # the command runs regardless; the daemon sees .starting
        _write_quietly(sys.stdout.fileno(), f"gridshift: cannot record the start: {error}\n")
    pause(spec, "after-start-record")
    assert child.stdout is not None
    copier = threading.Thread(target=copy_capped, daemon=True, args=(
        child.stdout.fileno(), sys.stdout.fileno(), spec.max_log_bytes))
    copier.start()
    exit_code = child.wait()
    signalled_before_exit = bool(signalled)
    # The job ends when its command exits, even if a process it left in the background
    # still holds the output open (for hours, maybe): its last lines get a moment to
    # reach the log, then the status is written, then the leftovers' output is copied
    # until they close it.
    copier.join(timeout=OUTPUT_DRAIN_S)
    _write_status(spec, exit_code, signalled_before_exit)
    copier.join()
    return exit_code if exit_code >= 0 else 128 - exit_code


def _has_exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited (a zombie not yet waited for, or gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _write_status(spec: Spec, exit_code: int, signalled: bool) -> None:
    try:
        write_record(spec.records + STATUS_SUFFIX, {
            "exit_code": exit_code, "ended_at": time.time(), "signalled": signalled})
    except OSError as error:  # a full disk: the daemon falls back on our exit code
        _write_quietly(sys.stdout.fileno(), f"gridshift: cannot record the exit status: "
                       f"{error}\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
