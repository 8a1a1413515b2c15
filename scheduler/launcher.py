"""Start, watch, stop and re-adopt job processes.

Every job runs as ``jobwrapper STATUS -- LAUNCHER... ARGV...`` in a new process session
(its own process group), never through a shell, with stdout and stderr in one log file.
A job is identified by pid plus process start time, so a reused pid is never mistaken
for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil

from scheduler.jobwrapper import pid_path_for
from scheduler.timespec import from_epoch

# Process start times from psutil are floats rounded by the kernel's clock ticks.
_START_TIME_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class Launched:
    pid: int
    pid_started_at: float
    log_path: Path
    status_path: Path


@dataclass(frozen=True)
class Outcome:
    """How a job ended: from the wrapper's status file, or None fields when unknown."""

    exit_code: int | None
    ended_at: datetime | None
    lost: bool = False
    reason: str = ""


def log_path_for(log_dir: Path, job_id: int) -> Path:
    return log_dir / f"job-{job_id}.log"


def status_path_for(log_dir: Path, job_id: int) -> Path:
    return log_dir / f"job-{job_id}.status"


def launch(
    job_id: int,
    argv: Sequence[str],
    cwd: str,
    env_overrides: Mapping[str, str],
    region: str,
    launcher_prefix: Sequence[str],
    log_dir: Path,
    max_log_bytes: int | None = None,
) -> tuple[Launched, subprocess.Popen[bytes]]:
    """Start the job; raise OSError when even the wrapper cannot be started.

    The wrapper copies at most ``max_log_bytes`` of the job's output to its log.
    """
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = log_path_for(log_dir, job_id)
    status_path = status_path_for(log_dir, job_id)
    status_path.unlink(missing_ok=True)
    Path(pid_path_for(str(status_path))).unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(env_overrides)
    env["GRIDSHIFT_JOB_ID"] = str(job_id)
    env["GRIDSHIFT_REGION"] = region
    cap = [] if max_log_bytes is None else ["--max-log-bytes", str(max_log_bytes)]
    command = [sys.executable, "-m", "scheduler.jobwrapper", str(status_path), *cap, "--",
               *launcher_prefix, *argv]
    descriptor = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=descriptor,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    finally:
        os.close(descriptor)
    return Launched(process.pid, process_start_time(process.pid) or 0.0, log_path,
                    status_path), process


def process_start_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def is_same_process(pid: int, started_at: float | None) -> bool:
    """True while ``pid`` is alive and is the process that started at ``started_at``."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = float(process.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return started_at is None or abs(created - started_at) <= _START_TIME_TOLERANCE_S


def read_status(status_path: Path) -> Outcome | None:
    """The wrapper's record of how the job ended, or None if it has not written one."""
    try:
        record = json.loads(status_path.read_text(encoding="utf-8"))
        return Outcome(int(record["exit_code"]), from_epoch(float(record["ended_at"])))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_pid_file(status_path: Path) -> tuple[int, float] | None:
    """The (pid, start time) the job's wrapper wrote when it started, if it did."""
    try:
        record = json.loads(Path(pid_path_for(str(status_path))).read_text(encoding="utf-8"))
        return int(record["pid"]), float(record["started_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check(pid: int | None, pid_started_at: float | None, status_path: Path) -> Outcome | None:
    """None while the job still runs; else how it ended (``lost`` when nobody recorded it)."""
    recorded = read_status(status_path)
    if recorded is not None:
        return recorded
    if pid is not None and is_same_process(pid, pid_started_at):
        return None
    # The wrapper may have written its status between the two checks above.
    recorded = read_status(status_path)
    if recorded is not None:
        return recorded
    reason = ("the process is gone and no exit status was recorded "
              "(killed with the machine, or by SIGKILL)")
    if pid is None:
        reason = "the daemon stopped while launching it; no process was found"
    return Outcome(None, None, lost=True, reason=reason)


def signal_job(pid: int, pid_started_at: float | None, signum: signal.Signals) -> bool:
    """Send ``signum`` to every process of the job, once, if the pid is still its wrapper's.

    SIGKILL goes to the job's process group (which the wrapper leads) directly; any other
    signal goes to the wrapper, which passes it to the group itself. Signalling the group
    too would give the job the signal twice, and a second SIGTERM cuts short the graceful
    shutdown many training jobs run on the first."""
    if not is_same_process(pid, pid_started_at):
        return False
    try:
        if signum == signal.SIGKILL:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True
