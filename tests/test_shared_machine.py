"""One daemon for a shared machine, end to end: real Unix users submit through the real
CLI (`runuser -u NAME -- gridshift ...`) to a real root daemon over its socket.

Each job runs as its submitter, with the environment, working directory and umask they
had; other users see the job but none of its environment's values, and may not cancel
it; a per-user daemon refuses everyone but its owner. CI runs as root, so these run
there; elsewhere they skip, saying why.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Workspace, create_csv_workspace, floor_hour, hourly
from tests.daemon_process import DaemonProcess, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="creating Unix users needs root (CI is root)"),
    pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("runuser") is None,
                       reason="useradd and runuser are needed to act as other users"),
]
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    home: Path
    work: Path  # a directory of theirs to submit from


def _create_user(prefix: str, base: Path) -> User:
    name = f"gs{prefix}{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    entry = pwd.getpwnam(name)
    work = base / name
    work.mkdir()
    os.chown(work, entry.pw_uid, entry.pw_gid)
    return User(name, entry.pw_uid, Path(entry.pw_dir), work)


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A directory every test user can read (pytest's own tmp_path is root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="gs-shared-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _python_for_others(user: str) -> tuple[list[str], dict[str, str]]:
    """How another user runs this checkout's gridshift: this interpreter if they may, else
    the system's Python of the same version with this environment's packages on its
    path (CI's interpreter lives under /root, which no other user can enter)."""
    probe = [sys.executable, "-c", "import scheduler"]
    if subprocess.run(["runuser", "-u", user, "--", *probe], capture_output=True,
                      cwd="/").returncode == 0:
        return [sys.executable], {}
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    packages = [p for p in sys.path if p.endswith("site-packages")]
    path = os.pathsep.join([str(REPO), *packages])
    return [str(system)], {"PYTHONPATH": path}


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def users(shared_root: Path) -> Iterator[dict[str, User]]:
    created = {role: _create_user(role[0], shared_root) for role in ("alice", "bob")}
    try:
        python, extra = _python_for_others(created["alice"].name)
        probe = subprocess.run(["runuser", "-u", created["alice"].name, "--", "env",
                                *(f"{k}={v}" for k, v in extra.items()), *python, "-c",
                                "import scheduler.cli"], capture_output=True, text=True,
                               cwd="/")
        if probe.returncode != 0:
            pytest.fail(f"another user cannot run this checkout's gridshift: {probe.stderr}")
        PYTHON[:] = [*(f"{k}={v}" for k, v in extra.items()), *python]
        yield created
    finally:
        for user in created.values():
            subprocess.run(["pkill", "-KILL", "-u", user.name], check=False)
            subprocess.run(["userdel", "--remove", user.name], check=False,
                           capture_output=True)


# `env` arguments and the interpreter with which test users run gridshift (see above).
PYTHON: list[str] = [sys.executable]


def _workspace(root: Path) -> Workspace:
    root.mkdir(exist_ok=True)
    first = floor_hour(datetime.now(UTC)) - 2 * HOUR
    workspace = create_csv_workspace(root, {"here": hourly(first, [200.0] * 40)}, slots=4)
    workspace.config_path.chmod(0o644)  # no secrets in it; every user reads the socket path
    # Every user must reach the socket (a root daemon's access is decided per request).
    workspace.config().daemon.socket_path().parent.chmod(0o755)
    return workspace


def as_user(user: User, workspace: Workspace, *args: str, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """`gridshift ARGS` run by ``user`` from their work directory, with ``env`` set only in
    their environment (runuser keeps the caller's other variables, like a login would not;
    HOME, USER and LOGNAME are the user's)."""
    variables = [f"{k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(
        ["runuser", "-u", user.name, "--", "env", *variables, *PYTHON, "-m",
         "scheduler", "--config", str(workspace.config_path), *args],
        capture_output=True, text=True, cwd=user.work, timeout=60,
        env={**workspace.env, "HOME": str(user.home)},
    )


def test_a_job_runs_as_its_submitter_with_their_environment(
        shared_root: Path, users: dict[str, User]) -> None:
    alice, bob = users["alice"], users["bob"]
    workspace = _workspace(shared_root / "ws")
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    secret = f"only-alice-{secrets.token_hex(4)}"
    script = ('umask > facts; id -u >> facts; echo "$HOME" >> facts; '
              'echo "$ALICE_ONLY" >> facts; pwd >> facts; echo "$GRIDSHIFT_JOB_ID" >> facts')
    submitted = as_user(alice, workspace, "submit", "--json", "--duration", "1m", "--within",
                        "1h", "--", "sh", "-c", script, env={"ALICE_ONLY": secret})
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["user"] == alice.name and job["uid"] == alice.uid

    facts = alice.work / "facts"
    wait_for(lambda: facts.exists() and len(facts.read_text().splitlines()) == 6,
             timeout=60, what="the job's output")
    umask, uid, home, variable, cwd, job_id = facts.read_text().splitlines()
    assert (uid, home, variable, cwd, job_id) == (
        str(alice.uid), str(alice.home), secret, str(alice.work), str(job["id"]))
    assert umask.endswith("22") or umask.endswith("02")  # alice's, not the daemon's 077
    assert facts.stat().st_uid == alice.uid

    def finished() -> dict[str, object] | None:
        shown = as_user(alice, workspace, "show", "--json", str(job["id"]))
        document: dict[str, object] = json.loads(shown.stdout)
        return document if document["state"] == "succeeded" else None

    document = wait_for(finished, timeout=60, what="the job to succeed")
    log = Path(str(document["log_path"]))
    assert log.parent.name == alice.name
    assert log.stat().st_uid == alice.uid and log.stat().st_mode & 0o777 == 0o600

    # Bob sees the job and its variables' names, never their values.
    seen_by_bob = as_user(bob, workspace, "show", "--json", str(job["id"]))
    assert seen_by_bob.returncode == 0, seen_by_bob.stderr
    assert secret not in seen_by_bob.stdout
    assert "ALICE_ONLY" in json.loads(seen_by_bob.stdout)["environment_names"]
    for command in (["list", "--all", "--json"], ["list", "--all"], ["show", str(job["id"])],
                    ["report", "--json"], ["status", "--json"]):
        result = as_user(bob, workspace, *command)
        assert secret not in result.stdout + result.stderr, command
    assert secret not in daemon.output()
    daemon.stop()


def test_another_user_may_not_cancel_a_job(shared_root: Path, users: dict[str, User]) -> None:
    alice, bob = users["alice"], users["bob"]
    workspace = _workspace(shared_root / "ws")
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    submitted = as_user(alice, workspace, "submit", "--json", "--duration", "1h",
                        "--not-before", "+2h", "--within", "6h", "--", "true")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]

    refused = as_user(bob, workspace, "cancel", str(job_id))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"gridshift: job {job_id} belongs to {alice.name}; only {alice.name} or root may "
        f"cancel it"]
    mine = as_user(bob, workspace, "list", "--mine", "--json")
    assert json.loads(mine.stdout) == []
    theirs = as_user(bob, workspace, "list", "--user", alice.name, "--json")
    assert [j["id"] for j in json.loads(theirs.stdout)] == [job_id]

    cancelled = as_user(alice, workspace, "cancel", str(job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id} cancelled" in cancelled.stdout
    daemon.stop()


def test_a_per_user_daemon_refuses_other_users(shared_root: Path,
                                               users: dict[str, User]) -> None:
    alice, bob = users["alice"], users["bob"]
    root = alice.work / "gridshift"
    root.mkdir()
    workspace = _workspace(root)
    subprocess.run(["chown", "-R", f"{alice.name}:", str(root),
                    str(workspace.config().daemon.socket_path().parent)], check=True)
    os.chown(workspace.config_path.parent, alice.uid, -1)
    daemon = subprocess.Popen(
        ["runuser", "-u", alice.name, "--", "env", *PYTHON, "-m", "scheduler", "--config",
         str(workspace.config_path), "daemon"],
        env=workspace.env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ok = wait_for(lambda: as_user(alice, workspace, "status").returncode == 0,
                      timeout=30, what="alice's daemon")
        assert ok
        refused = as_user(bob, workspace, "submit", "--duration", "1m", "--", "true")
        assert refused.returncode == 1
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert alice.name in refused.stderr
        with sqlite3.connect(workspace.db_path) as connection:
            assert connection.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    finally:
        daemon.terminate()
        daemon.wait(30)
