"""What only PostgreSQL does: the daemon's advisory lock (refused, taken again, lost),
migrations taking turns, column lengths enforced, a read-only database, and a password in
the URL never printed. Everything SQLite also does runs on both backends in the store,
migration, report and daemon end-to-end tests."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scheduler.migrate import HEAD_REVISION
from scheduler.store import DAEMON_LOCK_KEY
from tests.conftest import Workspace, create_workspace, floor_hour, hourly, write_csv
from tests.daemon_process import DaemonProcess, reap_daemons, wait_for  # noqa: F401
from tests.postgres_server import PostgresServer

# One region whose forecast is a local file: no test here reaches the network.
REGION = ('[providers.file]\nkind = "csv"\npath = "intensity.csv"\n'
          '[regions.gb]\nprovider = "file"\nzone = "gb"\n')
# The test server trusts every local connection, so any password is accepted: the point
# is that gridshift never prints it.
PASSWORD = "not-for-the-logs"


@pytest.fixture
def pg_workspace(postgresql_server: PostgresServer, tmp_path: Path
                 ) -> Callable[..., Workspace]:
    """A workspace in ``tmp_path/<name>`` on a fresh database of the session's server,
    its URL carrying a password."""

    def build(name: str, tick: str = "1m") -> Workspace:
        url = postgresql_server.create_database().replace("postgres@", f"postgres:{PASSWORD}@")
        root = tmp_path / name
        root.mkdir()
        write_csv(root / "intensity.csv", hourly(floor_hour(datetime.now(UTC)), [200.0] * 48))
        # A tick of a minute by default: most of these tests need daemons alive, not working.
        return create_workspace(root, REGION, f'tick = "{tick}"\nkill_grace = "2s"', url)

    return build


def test_a_second_daemon_on_one_postgresql_database_is_refused_until_the_first_dies(
    pg_workspace: Callable[..., Workspace]
) -> None:
    workspace = pg_workspace("team")
    first = DaemonProcess(workspace)
    first.wait_started()

    second = DaemonProcess(workspace)
    assert second.process.wait(60) == 1
    refused = second.output()
    assert (f"another gridshift daemon (pid {first.pid} on {socket.gethostname()}) is "
            f"already running for postgresql+psycopg://postgres:***@/") in refused
    assert PASSWORD not in refused + first.output()

    # The lock is the database's, not the server's: another team's daemon starts.
    other_team = DaemonProcess(pg_workspace("other-team"))
    other_team.wait_started()
    assert other_team.stop() == 0

    # A crash leaves no stale lock: the server drops it with the dead daemon's connection.
    first.kill()
    third = DaemonProcess(workspace)
    third.wait_started()
    assert third.stop() == 0


def test_a_daemon_whose_lock_connection_ends_takes_the_lock_again_or_stops(
    pg_workspace: Callable[..., Workspace], postgresql_server: PostgresServer
) -> None:
    """A server restart (here: an administrator ending the session) drops the advisory lock
    with its connection. The daemon takes it again on a new connection; where another
    session took it first, the daemon stops with one line and exit 1."""
    import psycopg

    workspace = pg_workspace("restart", tick="1s")
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    database = urlsplit(workspace.database_url).path.strip("/")
    holder = f"gridshift daemon pid {daemon.pid} on {socket.gethostname()}"
    end_the_lock_session = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = %s")
    lock_holders = ("SELECT activity.application_name FROM pg_locks AS locks "
                    "JOIN pg_stat_activity AS activity USING (pid) "
                    "WHERE locks.locktype = 'advisory' AND locks.granted")
    with psycopg.connect(host=str(postgresql_server.root), user="postgres", dbname=database,
                         autocommit=True) as connection:
        connection.execute(end_the_lock_session, (holder,))
        wait_for(lambda: "taking the lock again" in daemon.output(), timeout=60,
                 what="the daemon to notice its lock connection ended")
        wait_for(lambda: connection.execute(lock_holders).fetchall() == [(holder,)],
                 timeout=60, what="the daemon to hold the lock again")
        assert daemon.process.poll() is None

        # This time another session waits for the lock and gets it first.
        connection.execute(end_the_lock_session, (holder,))
        connection.execute("SELECT pg_advisory_lock(%s)", (DAEMON_LOCK_KEY,))
        assert daemon.process.wait(60) == 1
    errors = [line for line in daemon.output().splitlines() if " ERROR " in line]
    assert errors and errors[-1].endswith("another daemon took the database lock; stopping")


def test_processes_starting_together_on_a_fresh_postgresql_database_all_succeed(
    pg_workspace: Callable[..., Workspace]
) -> None:
    """Migrations take turns under an advisory lock: the later ones find the work done
    (without it they fail on catalog rows the first is creating)."""
    workspace = pg_workspace("fresh")
    processes = [workspace.popen("db", "upgrade", stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE) for _ in range(4)]
    outcomes = [(p.wait(120), *(stream.read() if stream else "" for stream in
                                (p.stdout, p.stderr))) for p in processes]
    for process in processes:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    for code, stdout, stderr in outcomes:
        assert (code, stderr) == (0, "")
        assert stdout == (f"database {workspace.database_url.replace(PASSWORD, '***')} "
                          f"at revision {HEAD_REVISION}\n")


def test_commands_without_a_daemon_work_on_postgresql(
    pg_workspace: Callable[..., Workspace]
) -> None:
    """The CLI's in-process path: a PostgreSQL database has no file to look for."""
    workspace = pg_workspace("solo")
    status = workspace.cli("status", "--json")  # no daemon: unhealthy, exit 1, no error
    assert (status.returncode, status.stderr, status.json()["healthy"]) == (1, "", False)
    submitted = workspace.cli("submit", "--json", "--duration", "1h", "--within", "1d",
                              "--region", "gb", "--", "true")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.json()["id"]
    listed = workspace.cli("list", "--json")
    assert [job["id"] for job in listed.json()] == [job_id]
    cancelled = workspace.cli("cancel", str(job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    shown = workspace.cli("show", str(job_id), "--json").json()
    assert shown["state"] == "cancelled"
    assert [event["new_state"] for event in shown["events"]][-1] == "cancelled"


def test_an_unreachable_server_is_one_line_and_exit_1(tmp_path: Path) -> None:
    write_csv(tmp_path / "intensity.csv", hourly(floor_hour(datetime.now(UTC)), [200.0]))
    workspace = create_workspace(tmp_path, REGION, database_url=(
        f"postgresql+psycopg://postgres:{PASSWORD}@/gridshift?host={tmp_path}/nowhere"))
    result = workspace.cli("list")
    assert result.returncode == 1
    assert result.stderr.startswith("gridshift: database error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert PASSWORD not in result.stderr


def test_names_fit_the_column_postgresql_enforces(
    pg_workspace: Callable[..., Workspace]
) -> None:
    """SQLite ignores a column's length; PostgreSQL refuses a longer value. Submit keeps
    names within it: a long --name is bad input, a long command name is shortened."""
    workspace = pg_workspace("names")
    longest = workspace.cli("submit", "--json", "--duration", "1h", "--name", "n" * 200,
                            "--", "true")
    assert longest.returncode == 0, longest.stderr
    assert longest.json()["name"] == "n" * 200
    too_long = workspace.cli("submit", "--duration", "1h", "--name", "n" * 201, "--", "true")
    assert (too_long.returncode, too_long.stderr) == (
        2, "gridshift: --name must be at most 200 characters\n")
    command = workspace.root / ("c" * 250)
    command.write_text("#!/bin/sh\n", encoding="utf-8")
    derived = workspace.cli("submit", "--json", "--duration", "1h", "--", str(command))
    assert derived.returncode == 0, derived.stderr
    assert derived.json()["name"] == "c" * 200
    assert len(workspace.cli("list", "--json").json()) == 2


def test_a_read_only_postgresql_database_stops_the_daemon_with_one_line(
    pg_workspace: Callable[..., Workspace], postgresql_server: PostgresServer
) -> None:
    """A hot standby, or a database set read-only: no write can ever succeed."""
    workspace = pg_workspace("standby")
    assert workspace.cli("db", "upgrade").returncode == 0
    database = urlsplit(workspace.database_url).path.strip("/")
    with postgresql_server.admin() as connection:
        connection.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    daemon = DaemonProcess(workspace)
    code = daemon.process.wait(60)
    output = daemon.output()
    assert code == 1, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "read-only" in errors[0], output
    assert "Traceback" not in output and PASSWORD not in output
