"""The real `gridshift` command talking to a real daemon over its socket: the thin client
loads no ORM or numerics, and the answers are the ones the in-process path gives."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Workspace, floor_hour, hourly
from tests.daemon_process import DaemonProcess, wait_for

HOUR = timedelta(hours=1)
HEAVY = ("sqlalchemy", "numpy", "pandas", "rich", "alembic", "apscheduler", "requests")
# What only the other commands' parser loads (typer parses through pydantic): not submit.
PARSER = ("typer", "click", "pydantic")


@pytest.fixture
def workspace(csv_workspace: Callable[..., Workspace]) -> Workspace:
    first = floor_hour(datetime.now(UTC)) - 2 * HOUR
    return csv_workspace({"a": hourly(first, [300.0] * 5 + [40.0] * 2 + [300.0] * 40)},
                         slots=2)


@pytest.fixture
def daemon(workspace: Workspace) -> Iterator[DaemonProcess]:
    process = DaemonProcess(workspace)
    process.wait_started()
    wait_for(workspace.config().daemon.socket_path().exists, what="the daemon's socket")
    yield process
    assert process.stop() == 0


def cli_modules(workspace: Workspace, *args: str) -> tuple[int, str, list[str]]:
    """Run the CLI in a Python that reports, at exit, which heavy modules it loaded."""
    script = (
        "import atexit, json, sys\n"
        "def report():\n"
        f"    heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY + PARSER!r}))\n"
        "    sys.stderr.write('MODULES ' + json.dumps(heavy) + '\\n')\n"
        "atexit.register(report)\n"
        "from scheduler.__main__ import main\n"
        "sys.argv = ['gridshift', *sys.argv[1:]]\n"
        "main()\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, "--config", str(workspace.config_path), *args],
        capture_output=True, text=True, env=workspace.env, cwd=workspace.root, timeout=60)
    modules_line = next(line for line in completed.stderr.splitlines()
                        if line.startswith("MODULES "))
    return completed.returncode, completed.stdout, json.loads(modules_line.split(" ", 1)[1])


def test_submit_list_and_show_through_the_daemon_load_no_orm_or_numerics(
        workspace: Workspace, daemon: DaemonProcess) -> None:
    code, stdout, heavy = cli_modules(workspace, "submit", "--json", "--duration", "1h",
                                      "--", "true")
    assert (code, heavy) == (0, [])  # not even a command-line parser beyond argparse
    job = json.loads(stdout)
    assert job["state"] == "planned" and job["planned_intensity"] == 40.0
    for command in (["list"], ["show", str(job["id"])], ["status"]):
        code, stdout, heavy = cli_modules(workspace, *command)
        assert (code, [m for m in heavy if m not in PARSER]) == (0, []), command
        assert str(job["id"]) in stdout or command == ["status"]


def test_the_daemon_and_the_in_process_path_answer_alike(workspace: Workspace) -> None:
    """The same requests with and without a daemon: the same documents (ids and times
    aside), since both run the same router and use cases."""

    def documents() -> list[dict[str, object]]:
        submitted = workspace.cli("submit", "--json", "--duration", "1h", "--name", "x[/]",
                                  "--array", "0-2", "--", "true")
        assert submitted.returncode == 0, submitted.stderr
        array = json.loads(submitted.stdout)
        shown = workspace.cli("show", "--json", str(array["jobs"][-1]))
        listed = workspace.cli("list", "--json")
        cancelled = workspace.cli("cancel", "--array", str(array["array_id"]))
        assert cancelled.returncode == 0, cancelled.stderr
        masked = []
        for document in [json.loads(shown.stdout), *json.loads(listed.stdout)]:
            masked.append({k: v for k, v in document.items()
                           if k not in {"id", "array_id", "submitted_at", "not_before",
                                        "deadline", "events", "planned_vintage",
                                        "planned_start", "planned_end"}})
        return masked

    assert workspace.cli("forecast", "--refresh").returncode == 0  # as a daemon would
    without_daemon = documents()
    process = DaemonProcess(workspace)
    process.wait_started()
    wait_for(workspace.config().daemon.socket_path().exists, what="the daemon's socket")
    with_daemon = documents()
    assert process.stop() == 0
    assert len(with_daemon) == len(without_daemon)
    for ours, theirs in zip(with_daemon, without_daemon, strict=True):
        assert {k: (ours[k], theirs.get(k)) for k in ours if ours[k] != theirs.get(k)} == {}
    assert [d["array_index"] for d in with_daemon] == [2, 2, 1, 0]


def test_the_daemon_logs_a_cancel_of_a_planned_job(workspace: Workspace,
                                                   daemon: DaemonProcess) -> None:
    submitted = workspace.cli("submit", "--json", "--duration", "1h", "--", "true")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    assert workspace.cli("cancel", str(job_id)).returncode == 0
    line = f"job {job_id}: cancelled by {getpass.getuser()} before it started"
    wait_for(lambda: line in daemon.output(), what="the cancel in the daemon's log")
