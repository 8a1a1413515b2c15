"""Launching with the real daemon: who a job runs as, with what environment, and what the
daemon refuses to do with files others could plant (issues 10, 16)."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from scheduler.executors import launcher
from scheduler.models import Job, JobState
from scheduler.records import NewJob
from tests.conftest import Workspace, floor_hour, hourly
from tests.daemon_process import (
    DaemonProcess,
    job,
    reap_daemons,  # noqa: F401 (autouse: kills leftovers)
    submitted_id,
    wait_finished,
    wait_for,
    wait_state,
    workspace_command,
)

pytestmark = pytest.mark.slow
ENDED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.LOST)


def flat_forecast() -> dict[str, list[tuple[datetime, datetime, float]]]:
    return {"a": hourly(floor_hour(datetime.now(UTC)) - timedelta(hours=2), [200.0] * 60)}


def add_due_job(ws: Workspace, argv: list[str], cwd: Path | str,
                env: dict[str, str] | None = None, **owner: Any) -> int:
    """A job stored as the submit path stores it (owner, environment, umask...) and planned
    to start now, so the next daemon tick launches it."""
    store = ws.store()
    now = datetime.now(UTC)
    try:
        created = store.add_job(NewJob(
            name="test", argv=argv, cwd=str(cwd), env=env or {}, duration_s=60,
            not_before=now, deadline=now + timedelta(hours=2), regions=["a"],
            power_watts=100.0, **owner), now)
        store.transition(created.id, (JobState.QUEUED,), JobState.PLANNED, now, "test setup",
                         planned_region="a", planned_start=now)
        return created.id
    finally:
        store.close()


def log_of(ended: Job) -> str:
    return Path(ended.log_path or "").read_text(encoding="utf-8", errors="replace")


# Identity and environment ---

@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path


@pytest.fixture
def alice() -> Iterator[tuple[User, int]]:
    """A real user (unique to this branch's test runs) in an extra group of its own."""
    if os.geteuid() != 0:
        pytest.skip("creating users needs root (CI runs as root)")
    suffix = secrets.token_hex(3)
    name, group = f"gsexec{suffix}a", f"gsexec{suffix}g"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-m", "-G", group, "-s", "/bin/sh", name], check=True)
    try:
        entry = pwd.getpwnam(name)
        extra_gid = int(subprocess.run(["getent", "group", group], capture_output=True,
                                       text=True, check=True).stdout.split(":")[2])
        yield User(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)), extra_gid
    finally:
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
        subprocess.run(["groupdel", group], check=False)


def test_a_root_daemon_runs_a_job_as_its_owner_with_the_owners_environment(
    csv_workspace: Callable[..., Workspace], alice: tuple[User, int],
) -> None:
    user, extra_gid = alice
    ws = csv_workspace(flat_forecast())
    project = user.home / "project"
    subprocess.run(["runuser", "-u", user.name, "--", "mkdir", "-m", "700", str(project)],
                   check=True)
    captured = {"PATH": "/usr/bin:/bin", "ONLY_IN_ALICES_SHELL": "tea", "PWD": str(project),
                "USER": user.name}
    job_id = add_due_job(
        ws, ["sh", "-c", 'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME '
             'var=$ONLY_IN_ALICES_SHELL pwd=$PWD cwd=$(pwd) umask=$(umask) '
             'extra=$EXTRA job=$GRIDSHIFT_JOB_ID"; touch made-by-job'],
        project, owner_uid=user.uid, owner_gid=user.gid, owner_name=user.name,
        environment=captured, umask=0o027, env={"EXTRA": "from --env"})
    daemon = DaemonProcess(ws)
    [ended] = wait_finished(ws, [job_id], 60)
    assert daemon.stop() == 0
    assert ended.state == JobState.SUCCEEDED, (ended.end_reason, log_of(ended))
    output = log_of(ended)
    assert f"uid={user.uid} gid={user.gid} " in output
    assert str(extra_gid) in output.split("groups=")[1].split()  # supplementary groups
    assert f"home={user.home} var=tea pwd={project} cwd={project} umask=0027" in output
    assert f"extra=from --env job={job_id}" in output
    made = (project / "made-by-job").stat()
    assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (user.uid, 0o640)
    log_path = Path(ended.log_path or "")
    assert log_path == ws.log_dir / user.name / f"job-{job_id}.log"
    log_stat = log_path.stat()
    assert (log_stat.st_uid, stat.S_IMODE(log_stat.st_mode)) == (user.uid, 0o600)
    # The directory holding it is the daemon's: the user cannot plant links there.
    assert log_path.parent.stat().st_uid == 0
    denied = subprocess.run(["runuser", "-u", user.name, "--", "touch",
                             str(log_path.parent / "planted")], capture_output=True)
    assert denied.returncode != 0
    # The wrapper's records are out of the user's reach.
    records = subprocess.run(["runuser", "-u", user.name, "--", "ls",
                              str(launcher.records_dir(ws.log_dir))], capture_output=True)
    assert records.returncode != 0


def test_a_job_that_cannot_enter_its_cwd_as_its_owner_fails_without_running(
    csv_workspace: Callable[..., Workspace], alice: tuple[User, int],
) -> None:
    """The cwd is entered with the owner's rights, not the root wrapper's."""
    user, _ = alice
    ws = csv_workspace(flat_forecast())
    root_only = ws.root / "root-only"
    root_only.mkdir(mode=0o700)
    marker = ws.root / "ran"
    job_id = add_due_job(ws, ["sh", "-c", f"touch {marker}"], root_only, owner_uid=user.uid,
                         owner_gid=user.gid, owner_name=user.name, environment={})
    daemon = DaemonProcess(ws)
    [ended] = wait_finished(ws, [job_id], 60)
    assert daemon.stop() == 0
    assert (ended.state, ended.exit_code) == (JobState.FAILED, 127)
    assert "cannot enter its working directory" in log_of(ended)
    assert not marker.exists()


def test_no_credential_of_the_daemon_reaches_a_job(
    make_workspace: Callable[..., Workspace], tmp_path: Path,
) -> None:
    token, password = "tok-" + secrets.token_hex(8), "pw-" + secrets.token_hex(8)
    csv = tmp_path / "a.csv"
    csv.write_text("start,end,gco2_per_kwh\n" + "".join(
        f"{s.isoformat()},{e.isoformat()},{v}\n" for s, e, v in flat_forecast()["a"]))
    ws = make_workspace(
        f'[providers.a]\nkind = "csv"\npath = "{csv}"\n\n'
        f'[providers.em]\nkind = "electricitymaps"\nbase_url = "http://127.0.0.1:9"\n'
        f'token = "{token}"\n\n[regions.a]\nprovider = "a"\nzone = "a"\nslots = 4\n')
    dump_env = ["sh", "-c", "env"]
    # The daemon's own environment (jobs stored before environments were captured), and
    # a captured one from a submitter whose shell held the daemon's credentials.
    daemons_env = add_due_job(ws, dump_env, tmp_path)
    captured = add_due_job(ws, dump_env, tmp_path, environment={
        "PATH": "/usr/bin:/bin", "GRIDSHIFT_WATTTIME_PASSWORD": password,
        "COPIED_TOKEN": token, "KEPT": "yes"})
    daemon = DaemonProcess(ws, extra_env={"GRIDSHIFT_WATTTIME_PASSWORD": password,
                                          "GRIDSHIFT_ELECTRICITYMAPS_TOKEN": token})
    ended = wait_finished(ws, [daemons_env, captured], 60)
    assert daemon.stop() == 0
    for dumped in ended:
        assert dumped.state == JobState.SUCCEEDED
        output = log_of(dumped)
        assert f"GRIDSHIFT_JOB_ID={dumped.id}" in output
        assert password not in output and token not in output
        assert "GRIDSHIFT_WATTTIME_PASSWORD" not in output
        assert "GRIDSHIFT_TEST_" not in output
    assert "KEPT=yes" in log_of(ended[1])


# Wrapper isolation (issue 16.1) ---

def test_the_wrapper_is_isolated_from_the_jobs_cwd_and_python_variables(
    csv_workspace: Callable[..., Workspace], tmp_path: Path,
) -> None:
    ws = csv_workspace(flat_forecast(), slots=4)
    marker = tmp_path / "imported-from-the-job"
    module_dir = tmp_path / "with-module"
    module_dir.mkdir()
    (module_dir / "scheduler.py").write_text("raise SystemExit(1)\n")
    package_dir = tmp_path / "with-package"
    (package_dir / "scheduler").mkdir(parents=True)
    (package_dir / "scheduler" / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
    fake = tmp_path / "fake-path"
    (fake / "scheduler").mkdir(parents=True)
    (fake / "scheduler" / "__init__.py").write_text("")
    (fake / "scheduler" / "jobwrapper.py").write_text(
        f"open({str(marker)!r}, 'w')\nraise SystemExit(0)\n")
    command = ["sh", "-c", "echo the real command; exit 3"]
    ids = [add_due_job(ws, command, module_dir), add_due_job(ws, command, package_dir),
           add_due_job(ws, command, tmp_path, env={"PYTHONPATH": str(fake)}),
           add_due_job(ws, command, tmp_path, env={"PYTHONHOME": "/x"})]
    daemon = DaemonProcess(ws)
    ended = wait_finished(ws, ids, 60)
    assert daemon.stop() == 0
    for finished in ended:
        assert (finished.state, finished.exit_code) == (JobState.FAILED, 3), finished.end_reason
        assert "the real command" in log_of(finished)
    assert not marker.exists()


# Files others could plant (issue 16.5, 16.12) ---

def test_planted_symlinks_are_never_written_through(
    csv_workspace: Callable[..., Workspace], tmp_path: Path,
) -> None:
    ws = csv_workspace(flat_forecast(), slots=2)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted_log = add_due_job(ws, ["echo", "into the log"], tmp_path)
    planted_status = add_due_job(ws, ["sh", "-c", "exit 4"], tmp_path)
    user_dir = ws.log_dir / launcher.daemon_user()[1]
    user_dir.mkdir(mode=0o700)
    (user_dir / f"job-{planted_log}.log").symlink_to(victim)
    launcher.records_dir(ws.log_dir).mkdir(mode=0o700)
    status = launcher.status_path_for(ws.log_dir, planted_status)
    Path(f"{status}.tmp").symlink_to(victim)
    daemon = DaemonProcess(ws)
    first, second = wait_finished(ws, [planted_log, planted_status], 60)
    assert daemon.stop() == 0
    assert first.state == JobState.FAILED and first.exit_code is None
    assert "could not start" in (first.end_reason or "")
    assert (second.state, second.exit_code) == (JobState.FAILED, 4)
    assert victim.read_text() == "precious\n"
    lock = Path(f"{ws.db_path}.daemon.lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


@pytest.mark.parametrize("shared", ["log directory", "database directory"])
def test_a_directory_others_can_write_is_refused_at_start(
    csv_workspace: Callable[..., Workspace], shared: str,
) -> None:
    ws = csv_workspace(flat_forecast())
    job_id = add_due_job(ws, ["true"], ws.root)
    directory = ws.log_dir if shared == "log directory" else ws.root
    directory.chmod(0o777)
    try:
        started = subprocess.run([*workspace_command(ws), "daemon"], env=ws.env, cwd=ws.root,
                                 capture_output=True, text=True, timeout=60)
    finally:
        directory.chmod(0o700)
    assert started.returncode == 1
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{shared} {directory}" in lines[0], started.stderr
    assert job(ws, job_id).state == JobState.PLANNED


# A job ends when its command does (issue 16.2) ---

@pytest.mark.parametrize("ending", ["exit 3", "kill -9 $$"])
def test_a_job_ends_when_its_command_exits_though_a_leftover_holds_its_output(
    csv_workspace: Callable[..., Workspace], tmp_path: Path, ending: str,
) -> None:
    ws = csv_workspace(flat_forecast())
    release = tmp_path / "release"
    job_id = add_due_job(ws, ["sh", "-c", f"(while [ ! -e {release} ]; do sleep 0.1; done; "
                                          f"echo leftover done) & echo $! > leftover.pid; "
                                          f"echo main done; {ending}"], tmp_path)
    daemon = DaemonProcess(ws)
    try:
        ended = wait_state(ws, job_id, ENDED, timeout=60)
        leftover = int((tmp_path / "leftover.pid").read_text())
        assert psutil.pid_exists(leftover)  # still running, still holding the output
        expected = 3 if ending == "exit 3" else -signal.SIGKILL
        assert (ended.state, ended.exit_code) == (JobState.FAILED, expected)
        release.touch()
        wait_for(lambda: "leftover done" in log_of(ended), what="the leftover's output")
        assert "main done" in log_of(ended)
    finally:
        release.touch()
    assert daemon.stop() == 0


# Signals and cancels (issue 16.12) ---

def _handles_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def test_sigterm_as_soon_as_the_daemon_can_take_it_is_a_clean_stop(
    csv_workspace: Callable[..., Workspace], tmp_path: Path,
) -> None:
    """SIGTERM during start-up (imports, migrations, reconcile) exits 0, launching nothing."""
    ws = csv_workspace(flat_forecast())
    marker = tmp_path / "ran"
    job_id = add_due_job(ws, ["touch", str(marker)], tmp_path)
    daemon = DaemonProcess(ws)
    wait_for(lambda: _handles_sigterm(daemon.pid), interval=0.001,
             what="the daemon to handle SIGTERM")
    assert daemon.stop() == 0, daemon.output()
    assert job(ws, job_id).state == JobState.PLANNED
    assert not marker.exists()


def test_a_cancel_that_reaches_a_job_after_it_exited_keeps_its_real_outcome(
    csv_workspace: Callable[..., Workspace], tmp_path: Path,
) -> None:
    """The command has exited 0 when the cancel's SIGTERM reaches its wrapper: the job
    succeeded (not 'cancelled; exit status 0'). A job the cancel did end is cancelled."""
    ws = csv_workspace(flat_forecast(), slots=2, daemon='tick = "1s"\nkill_grace = "60s"')
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    quick = add_due_job(ws, ["true"], tmp_path)
    daemon = DaemonProcess(ws, extra_env={"GRIDSHIFT_TEST_PAUSE_AT": "after-start-record",
                                          "GRIDSHIFT_TEST_PAUSE_DIR": str(pauses)})
    wait_for((pauses / f"after-start-record-job-{quick}.reached").exists,
             what="the wrapper to record the start")
    started = json.loads(Path(launcher.records_prefix(ws.log_dir, quick) + ".started")
                         .read_text())
    wait_for(lambda: psutil.Process(started["pid"]).status() == psutil.STATUS_ZOMBIE,
             what="the command to exit")
    cancel = ws.cli("cancel", str(quick))
    assert cancel.returncode == 0, cancel.stderr
    (pauses / f"after-start-record-job-{quick}.release").touch()
    ended = wait_state(ws, quick, ENDED)
    assert (ended.state, ended.exit_code) == (JobState.SUCCEEDED, 0), ended.end_reason
    slow = submitted_id(ws.cli("submit", "--duration", "1m", "--", "sleep", "60").stdout)
    wait_for((pauses / f"after-start-record-job-{slow}.reached").exists,
             what="the second job's start")
    (pauses / f"after-start-record-job-{slow}.release").touch()
    wait_for(lambda: job(ws, slow).pid, what="the second job's pid")
    assert ws.cli("cancel", str(slow)).returncode == 0
    cancelled = wait_state(ws, slow, ENDED)
    assert (cancelled.state, cancelled.exit_code) == (JobState.CANCELLED, -signal.SIGTERM)
    assert daemon.stop() == 0


def test_a_job_a_cancel_ends_while_the_tick_holds_its_old_row_ends_cancelled(
    csv_workspace: Callable[..., Workspace], tmp_path: Path,
) -> None:
    """The tick read the running job before the cancel stored its request; the cancel's
    SIGTERM then ended it before the tick reaped it: it is cancelled, not failed."""
    ws = csv_workspace(flat_forecast(), daemon='tick = "1s"\nkill_grace = "60s"')
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    job_id = add_due_job(ws, ["sleep", "60"], tmp_path)
    daemon = DaemonProcess(ws, extra_env={"GRIDSHIFT_TEST_PAUSE_AT": "before-reap",
                                          "GRIDSHIFT_TEST_PAUSE_DIR": str(pauses)})
    wait_for((pauses / f"before-reap-job-{job_id}.reached").exists,
             what="a tick to reach the running job")
    status = launcher.status_path_for(ws.log_dir, job_id)
    assert not status.exists()
    cancel = ws.cli("cancel", str(job_id))
    assert cancel.returncode == 0, cancel.stderr
    wait_for(status.exists, what="the wrapper to record the command's end")
    (pauses / f"before-reap-job-{job_id}.release").touch()
    ended = wait_state(ws, job_id, ENDED)
    assert (ended.state, ended.exit_code) == (JobState.CANCELLED, -signal.SIGTERM), (
        ended.end_reason)
    assert daemon.stop() == 0


def test_the_wrapper_refuses_arguments_and_runs_nothing_without_a_whole_spec(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    spec = json.dumps({"records": str(tmp_path / "job-1"), "argv": ["touch", str(marker)],
                       "cwd": str(tmp_path), "env": {}})
    for args, stdin, expected in (([], spec[:-5], 125), (["extra"], spec, 2)):
        wrapper = subprocess.run(
            [sys.executable, "-I", "-m", "scheduler.executors.jobwrapper", *args],
            input=stdin, text=True, capture_output=True, timeout=60)
        assert wrapper.returncode == expected
    assert not marker.exists() and not list(tmp_path.glob("job-1.*"))


# A lost exit status (issue 16.10) ---

def test_an_exit_status_survives_an_end_that_could_not_be_committed(
    csv_workspace: Callable[..., Workspace], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full disk: the wrapper could not write the status and the daemon's first attempt
    to record the end fails. The next tick records the real exit status, not `lost`."""
    from sqlalchemy.exc import OperationalError

    from scheduler.daemon import Daemon

    ws = csv_workspace(flat_forecast())
    job_id = add_due_job(ws, ["sh", "-c", "exit 7"], tmp_path)
    store = ws.store()
    daemon = Daemon(ws.config(), store)
    daemon.refresh(datetime.now(UTC))
    status = launcher.status_path_for(ws.log_dir, job_id)
    try:
        daemon.tick(datetime.now(UTC))
        wait_for(status.exists, what="the command to end")
        status.unlink()  # as if the disk had been full when the wrapper wrote it
        wrapper = store.get_job(job_id).pid
        assert wrapper is not None
        wait_for(lambda: not launcher.is_same_process(wrapper, None), what="the wrapper to end")
        real_transition = store.transition

        def disk_full(*args: Any, **kwargs: Any) -> None:
            monkeypatch.setattr(store, "transition", real_transition)
            raise OperationalError("UPDATE jobs", {}, Exception("database or disk is full"))

        monkeypatch.setattr(store, "transition", disk_full)
        with pytest.raises(OperationalError):
            daemon.tick(datetime.now(UTC))
        assert store.get_job(job_id).state == JobState.RUNNING
        daemon.tick(datetime.now(UTC))
        ended = store.get_job(job_id)
        assert (ended.state, ended.exit_code) == (JobState.FAILED, 7), ended.end_reason
    finally:
        store.close()
