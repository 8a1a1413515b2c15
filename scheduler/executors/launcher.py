"""Start, watch, stop and re-adopt job processes.

Every job runs under ``python -I -m scheduler.executors.jobwrapper`` (see that module) in a new
process session (its own process group), never through a shell, with stdout and stderr in
one log file the daemon opens: ``LOG_DIR/<user>/job-N.log``, owned by the job's user,
0600, in a directory only the daemon can write. The wrapper's records (pid, "starting",
"started", exit status) live in ``LOG_DIR/.gridshift/``, which only the daemon can read.

A launch is two-phase: the daemon stores the wrapper's pid before it hands the wrapper
the job's spec, and the wrapper records ``.starting`` before it spawns the command and
``.started`` once it has. So a daemon restarted after a crash can tell a command that
provably never started (the job goes back to the queue) from one that may have.

A process is identified by pid plus start time, so a reused pid is never mistaken for it.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from scheduler.config import SECRET_ENV
from scheduler.executors.jobwrapper import (
    PID_SUFFIX,
    STARTED_SUFFIX,
    STARTING_SUFFIX,
    STATUS_SUFFIX,
    Spec,
)
from scheduler.timespec import from_epoch

if TYPE_CHECKING:
    from scheduler.models import Job

# Process start times from psutil are floats rounded by the kernel's clock ticks.
_START_TIME_TOLERANCE_S = 0.05
RECORDS_DIR = ".gridshift"  # a user name cannot start with a dot
# Variables that only tests give the daemon (the pause hook); never passed to a job.
TEST_ENV_PREFIX = "GRIDSHIFT_TEST_"
SECRET_NAMES = frozenset(SECRET_ENV.values())

# The wrapper runs the daemon's own copy of gridshift (found from this file, not from any
# search path a job or an installation could change), in an isolated interpreter.
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
WRAPPER_MAIN = (f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
                f"from scheduler.executors.jobwrapper import main; sys.exit(main(sys.argv[1:]))")


class LaunchRefused(Exception):
    """The job cannot be started (its user is unknown, its log directory unsafe...)."""


@dataclass(frozen=True)
class Launched:
    pid: int
    pid_started_at: float
    log_path: Path
    status_path: Path


@dataclass(frozen=True)
class Outcome:
    """How a job ended: from the wrapper's status file, or None fields when unknown.

    ``never_started``: the command provably never started (the job may run again);
    ``signalled``: a stop signal reached the job before its command exited."""

    exit_code: int | None
    ended_at: datetime | None
    lost: bool = False
    reason: str = ""
    signalled: bool = False
    never_started: bool = False


@dataclass(frozen=True)
class Identity:
    """Whom a job runs as when the daemon is root."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str


# Paths -------------------------------------------------------------------------------------

def records_dir(log_dir: Path) -> Path:
    return log_dir / RECORDS_DIR


def records_prefix(log_dir: Path, job_id: int) -> str:
    return str(records_dir(log_dir) / f"job-{job_id}")


def status_path_for(log_dir: Path, job_id: int) -> Path:
    return Path(records_prefix(log_dir, job_id) + STATUS_SUFFIX)


def user_dir_name(user: str, uid: int) -> str:
    """The per-user log directory's name: the user name, if it is a safe path part."""
    if not user or user.startswith(".") or "/" in user or "\0" in user:
        return f"uid-{uid}"
    return user


def log_path_for(log_dir: Path, job_id: int, user: str) -> Path:
    return log_dir / user / f"job-{job_id}.log"


# Who and with what --------------------------------------------------------------------------

def daemon_user() -> tuple[int, str]:
    uid = os.geteuid()
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid, f"uid-{uid}"


def home_of(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return None


def resolve_identity(owner_uid: int | None, owner_gid: int | None) -> Identity | None:
    """Whom to run a job as: None for the daemon's own user (its own jobs, jobs stored
    before owners were recorded, and every job of a daemon that is not root)."""
    euid = os.geteuid()
    if owner_uid is None or owner_uid == euid:
        return None
    if euid != 0:
        raise LaunchRefused(f"it belongs to uid {owner_uid} and this daemon, not running as "
                            f"root, runs only its own user's jobs")
    try:
        entry = pwd.getpwuid(owner_uid)
    except KeyError:
        raise LaunchRefused(f"its owner, uid {owner_uid}, is no longer a user here") from None
    gid = entry.pw_gid if owner_gid is None else owner_gid
    groups = tuple(os.getgrouplist(entry.pw_name, gid))
    return Identity(owner_uid, gid, groups, entry.pw_name, entry.pw_dir)


@dataclass(frozen=True)
class RunAs:
    """Whom a job runs as and where its log goes, for both executors."""

    identity: Identity | None  # None: the daemon's own user
    user_dir: str  # its log directory's name under LOG_DIR
    home: str | None  # its owner's home, given to a job whose environment has no HOME


def run_as(job: Job) -> RunAs:
    """Resolve the job's owner (raises ``LaunchRefused``, see ``resolve_identity``)."""
    identity = resolve_identity(job.owner_uid, job.owner_gid)
    if identity is not None:
        return RunAs(identity, user_dir_name(identity.name, identity.uid), identity.home)
    daemon_uid, daemon_name = daemon_user()
    return RunAs(None, user_dir_name(daemon_name, daemon_uid),
                 None if job.owner_uid is None else home_of(job.owner_uid))


def job_environment(job: Job, region: str, home: str | None, hidden_values: Collection[str]
                    ) -> dict[str, str]:
    """The job's whole environment: its captured environment (none stored: the daemon's),
    the owner's ``home`` if it has no HOME, its --env overrides, then gridshift's variables.
    Whatever the daemon holds as a credential (by name, or by value from its config:
    ``hidden_values``) is dropped from the base, in every mode."""
    base = dict(os.environ if job.environment is None else job.environment)
    hidden = {value for value in hidden_values if value}
    env = {name: value for name, value in base.items()
           if name not in SECRET_NAMES and not name.startswith(TEST_ENV_PREFIX)
           and value not in hidden}
    if home is not None and "HOME" not in env:
        env["HOME"] = home
    env.update(job.env)
    env["GRIDSHIFT_JOB_ID"] = str(job.id)
    env["GRIDSHIFT_REGION"] = region
    if job.array_id is not None and job.array_index is not None:
        env["GRIDSHIFT_ARRAY_JOB_ID"] = str(job.array_id)
        env["GRIDSHIFT_ARRAY_TASK_ID"] = str(job.array_index)
    return env


# Directories and files the daemon writes ------------------------------------------------------

def unsafe_directory(path: Path) -> str | None:
    """Why other users could plant files in ``path`` (a directory that exists), or None."""
    try:
        info = os.lstat(path)
    except OSError as error:
        return f"cannot inspect it: {error.strerror or error}"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    euid = os.geteuid()
    if info.st_uid not in (euid, 0):
        return f"it is owned by uid {info.st_uid}, not by this daemon's user"
    if info.st_mode & stat.S_IWOTH:
        return "every user can write to it"
    if info.st_mode & stat.S_IWGRP and not _private_group(info.st_gid):
        return "its group can write to it"
    return None


def _private_group(gid: int) -> bool:
    """The daemon user's own group with no other members (a user-private group)."""
    try:
        return gid == os.getegid() and not grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def ensure_private_directory(path: Path, mode: int) -> None:
    """Create ``path`` (mode ``mode``) or check the one there; LaunchRefused if unsafe."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as error:
        raise LaunchRefused(f"cannot create {path}: {error.strerror or error}") from None
    problem = unsafe_directory(path)
    if problem is not None:
        raise LaunchRefused(f"{path} is not safe: {problem}")


def _give_group(directory: Path, gid: int) -> None:
    """Let the job's user list their log directory (it stays the daemon's to write)."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.fstat(descriptor).st_gid != gid:
            os.fchown(descriptor, -1, gid)
    finally:
        os.close(descriptor)


def open_log(path: Path, identity: Identity | None) -> int:
    """Open the job's log for appending (never through a symlink), owned by its user."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise LaunchRefused(f"{path} is not a regular file")
        if identity is not None:
            os.fchown(descriptor, identity.uid, identity.gid)
        os.fchmod(descriptor, 0o600)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def clear_records(log_dir: Path, job_id: int) -> None:
    prefix = records_prefix(log_dir, job_id)
    for suffix in (PID_SUFFIX, STARTING_SUFFIX, STARTED_SUFFIX, STATUS_SUFFIX):
        for path in (prefix + suffix, prefix + suffix + ".tmp"):
            Path(path).unlink(missing_ok=True)


# Launching -------------------------------------------------------------------------------------

def prepare_log_dir(log_dir: Path, job_id: int, user_dir: str, identity: Identity | None
                    ) -> Path:
    """Create (or check) the log directories for a job; return its log file's path."""
    # Under root, users reach their own directory (not list the others), which only they
    # (by its group) may list; under a user, everything is that user's alone.
    as_root = os.geteuid() == 0
    ensure_private_directory(log_dir, 0o711 if as_root else 0o700)
    ensure_private_directory(records_dir(log_dir), 0o700)
    ensure_private_directory(log_dir / user_dir, 0o750 if as_root else 0o700)
    if identity is not None:
        _give_group(log_dir / user_dir, identity.gid)
    return log_path_for(log_dir, job_id, user_dir)


def spawn_wrapper(job_id: int, log_dir: Path, user_dir: str, identity: Identity | None
                  ) -> tuple[Launched, subprocess.Popen[bytes]]:
    """Phase one: start the job's wrapper, which waits for its spec (``send_spec``).

    Raise LaunchRefused or OSError when it cannot be started: then nothing ran."""
    log_path = prepare_log_dir(log_dir, job_id, user_dir, identity)
    clear_records(log_dir, job_id)
    descriptor = open_log(log_path, identity)
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-c", WRAPPER_MAIN], cwd="/",
            env={"PATH": os.defpath, "LC_ALL": "C.UTF-8"}, stdin=subprocess.PIPE,
            stdout=descriptor, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(descriptor)
    return Launched(process.pid, process_start_time(process.pid) or 0.0, log_path,
                    status_path_for(log_dir, job_id)), process




def wrapper_spec(log_dir: Path, job_id: int, argv: Sequence[str], env: Mapping[str, str],
                 cwd: str, identity: Identity | None, umask: int | None,
                 max_log_bytes: int | None, pause_at: str | None = None,
                 pause_dir: str | None = None, checkpoint_signal: int | None = None) -> Spec:
    return Spec(
        records=records_prefix(log_dir, job_id), argv=list(argv), env=dict(env), cwd=cwd,
        uid=None if identity is None else identity.uid,
        gid=None if identity is None else identity.gid,
        groups=None if identity is None else list(identity.groups),
        umask=umask, max_log_bytes=max_log_bytes, pause_at=pause_at, pause_dir=pause_dir,
        checkpoint_signal=checkpoint_signal)


def send_spec(process: subprocess.Popen[bytes], spec: Spec) -> None:
    """Phase two: hand the wrapper its job. A wrapper that died meanwhile ran nothing."""
    assert process.stdin is not None
    try:
        process.stdin.write(json.dumps(spec.as_json()).encode())
        process.stdin.close()
    except BrokenPipeError:
        pass


# Watching -------------------------------------------------------------------------------------

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


def _read_record(path: str) -> dict[str, object] | None:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(descriptor, "rb") as handle:
            record = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def read_status(status_path: Path) -> Outcome | None:
    """The wrapper's record of how the job ended, or None if it has not written one."""
    record = _read_record(str(status_path))
    try:
        assert record is not None
        return Outcome(int(record["exit_code"]),  # type: ignore[call-overload]
                       from_epoch(float(record["ended_at"])),  # type: ignore[arg-type]
                       signalled=bool(record.get("signalled", False)))
    except (AssertionError, ValueError, KeyError, TypeError):
        return None


def _read_pid(path: str) -> tuple[int, float] | None:
    record = _read_record(path)
    try:
        assert record is not None
        return int(record["pid"]), float(record["started_at"])  # type: ignore[call-overload, arg-type]
    except (AssertionError, ValueError, KeyError, TypeError):
        return None


def read_pid_file(log_dir: Path, job_id: int) -> tuple[int, float] | None:
    """The (pid, start time) the job's wrapper wrote when it started, if it did."""
    return _read_pid(records_prefix(log_dir, job_id) + PID_SUFFIX)


def command_started(log_dir: Path, job_id: int) -> bool:
    """Whether the wrapper got as far as spawning the command (it may have run)."""
    return (os.path.lexists(records_prefix(log_dir, job_id) + STARTING_SUFFIX)
            or os.path.lexists(_legacy_status_path(log_dir, job_id) + PID_SUFFIX))


def _legacy_status_path(log_dir: Path, job_id: int) -> str:
    """Where wrappers before the two-phase launch kept their records (a job launched by
    the previous version and still running across the upgrade)."""
    return str(log_dir / f"job-{job_id}.status")


def _read_any_status(log_dir: Path, job_id: int) -> Outcome | None:
    return (read_status(status_path_for(log_dir, job_id))
            or read_status(Path(_legacy_status_path(log_dir, job_id))))


LOST_REASON = ("the process is gone and no exit status was recorded "
               "(killed with the machine, or by SIGKILL)")
NEVER_STARTED = Outcome(None, None, never_started=True,
                        reason="the daemon stopped before its command started")


def check(log_dir: Path, job_id: int, pid: int | None, pid_started_at: float | None,
          wrapper_exit: int | None = None) -> Outcome | None:
    """None while the job runs (or its wrapper is still starting it); else how it ended.

    ``pid`` None means the daemon never handed the wrapper its spec: nothing ran.
    ``wrapper_exit`` is the wrapper's exit status when the caller reaped it itself."""
    prefix = records_prefix(log_dir, job_id)
    recorded = _read_any_status(log_dir, job_id)
    if recorded is not None:
        return recorded
    if pid is None and not command_started(log_dir, job_id):
        return NEVER_STARTED
    wrapper = (pid, pid_started_at) if pid is not None else _read_pid(prefix + PID_SUFFIX)
    if wrapper is not None and is_same_process(*wrapper):
        return None
    # The wrapper may have written its status between the two checks above.
    recorded = _read_any_status(log_dir, job_id)
    if recorded is not None:
        return recorded
    if not command_started(log_dir, job_id):
        return NEVER_STARTED
    killed = 0
    if wrapper is not None and wrapper[1] is not None:
        killed = kill_leftovers(wrapper[0], wrapper[1])
    if wrapper_exit is not None:
        # Its status could not be written (a full disk): the wrapper's exit status tells.
        return Outcome(wrapper_exit, None)
    started = _read_pid(prefix + STARTED_SUFFIX)
    reason = LOST_REASON if started is not None else (
        "its wrapper died while starting the command, which may have run in part")
    if killed:
        reason += f"; its wrapper was gone, so its {killed} remaining process(es) were killed"
    return Outcome(None, None, lost=True, reason=reason)


def kill_leftovers(wrapper_pid: int, wrapper_started_at: float) -> int:
    """SIGKILL what is left of a job whose wrapper died: the processes of its process
    group (which the wrapper led) started since the wrapper. Returns how many."""
    killed = 0
    for process in psutil.process_iter():
        try:
            if (os.getpgid(process.pid) == wrapper_pid
                    and process.create_time() >= wrapper_started_at - _START_TIME_TOLERANCE_S):
                process.kill()
                killed += 1
        except (OSError, psutil.Error):
            continue
    return killed


# Signals sent to the job's whole process group, the wrapper included: they cannot be
# caught, so the wrapper could not pass them on.
GROUP_SIGNALS = frozenset({signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT})


def signal_job(pid: int, pid_started_at: float | None, signum: signal.Signals) -> bool:
    """Send ``signum`` to every process of the job, once, if the pid is still its wrapper's.

    SIGKILL, SIGSTOP and SIGCONT go to the job's process group (which the wrapper leads)
    directly; any other signal goes to the wrapper, which passes it to the group itself
    (SIGTERM, SIGINT, SIGHUP and the job's checkpoint signal). Signalling the group too
    would give the job the signal twice, and a second SIGTERM cuts short the graceful
    shutdown many training jobs run on the first."""
    if not is_same_process(pid, pid_started_at):
        return False
    try:
        if signum in GROUP_SIGNALS:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True
