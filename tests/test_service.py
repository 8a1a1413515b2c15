"""The systemd unit, `service install`, sd_notify from the real daemon, and security."""

from __future__ import annotations

import configparser
import os
import shutil
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from scheduler.daemon import Daemon
from scheduler.service import reference_unit, watchdog_interval
from tests.conftest import Workspace, floor_hour, hourly
from tests.daemon_process import (
    DaemonProcess,
    reap_daemons,  # noqa: F401 (autouse: kills leftovers)
    submitted_id,
    wait_finished,
    wait_for,
)

REPO = Path(__file__).resolve().parent.parent


def unit_directives(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return {section: dict(parser[section]) for section in parser.sections()}


def flat_forecast() -> dict[str, list[tuple[datetime, datetime, float]]]:
    return {"a": hourly(floor_hour(datetime.now(UTC)) - timedelta(hours=1), [200.0] * 30)}


# The unit -------------------------------------------------------------------------------


def test_shipped_unit_is_a_notify_service_that_spares_running_jobs() -> None:
    text = (REPO / "config" / "gridshift.service").read_text(encoding="utf-8")
    assert text == reference_unit()  # the shipped file is what `service install` renders
    service = unit_directives(text)["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "process"
    assert "control-group" in text  # the comment says why not the default
    # Root, so that each job runs as its submitter; the socket lives in /run/gridshift.
    assert "User" not in service
    assert service["RuntimeDirectory"] == "gridshift"
    assert service["ExecStart"].endswith(" daemon")


def test_a_service_user_other_than_root_runs_the_unit_as_that_account() -> None:
    from scheduler.service import render_unit, this_installation

    service = unit_directives(render_unit(this_installation(None, False, "gridshift")))
    assert service["Service"]["User"] == "gridshift"
    assert service["Service"]["RuntimeDirectory"] == "gridshift"


def test_service_install_print_renders_this_installation_and_writes_nothing(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(flat_forecast())
    result = ws.cli("service", "install", "--print")
    assert result.returncode == 0, result.stderr
    service = unit_directives(result.stdout)["Service"]
    assert f"--config {ws.config_path}" in service["ExecStart"]
    executable = service["ExecStart"].split()[0]
    assert os.access(executable, os.X_OK)
    assert not (ws.root / "xdg-config" / "systemd").exists()
    if shutil.which("systemd-analyze"):
        unit = ws.root / "gridshift.service"
        unit.write_text(result.stdout, encoding="utf-8")
        verified = subprocess.run(["systemd-analyze", "verify", str(unit)],
                                  capture_output=True, text=True, timeout=60)
        assert verified.returncode == 0, verified.stderr


def test_service_install_user_writes_the_unit_and_names_the_next_commands(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(flat_forecast())
    result = ws.cli("service", "install", "--user")
    assert result.returncode == 0, result.stderr
    unit = ws.root / "xdg-config" / "systemd" / "user" / "gridshift.service"
    service = unit_directives(unit.read_text(encoding="utf-8"))["Service"]
    assert "User" not in service  # a user unit runs as its owner
    assert service["KillMode"] == "process"
    assert str(unit) in result.stdout
    assert "systemctl --user enable --now gridshift.service" in result.stdout


def test_service_install_refuses_a_broken_config(make_workspace: Callable[..., Workspace]
                                                 ) -> None:
    ws = make_workspace('[regions.x]\nprovider = "nowhere"\n')
    result = ws.cli("service", "install", "--user")
    assert result.returncode == 2
    assert "regions.x.provider" in result.stderr
    assert not (ws.root / "xdg-config" / "systemd").exists()


# sd_notify -------------------------------------------------------------------------------


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    """An abstract-namespace datagram socket standing in for systemd's."""
    name = f"gridshift-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.2)
    try:
        yield "@" + name, sock
    finally:
        sock.close()


def received(sock: socket.socket, into: list[str]) -> list[str]:
    """Drain what is waiting on ``sock`` into ``into``; return ``into``."""
    while True:
        try:
            into.append(sock.recv(4096).decode("utf-8"))
        except TimeoutError:
            return into


@pytest.mark.slow
def test_daemon_notifies_ready_status_watchdog_and_stopping(
    csv_workspace: Callable[..., Workspace], notify_socket: tuple[str, socket.socket],
) -> None:
    address, sock = notify_socket
    ws = csv_workspace(flat_forecast())
    ws.cli("submit", "--duration", "1h", "--not-before", "+2h", "--", "true")
    daemon = DaemonProcess(ws, {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
    messages: list[str] = []
    wait_for(lambda: received(sock, messages).count("WATCHDOG=1") >= 3, timeout=30,
             what="three watchdog pings")
    assert messages[0].startswith("READY=1")
    assert "STATUS=0 running, 0 paused, 1 planned, 0 queued" in messages
    assert daemon.stop() == 0
    received(sock, messages)
    assert messages[-1] == "STOPPING=1"


@pytest.mark.slow
def test_no_watchdog_pings_when_the_watchdog_belongs_to_another_process(
    csv_workspace: Callable[..., Workspace], notify_socket: tuple[str, socket.socket],
) -> None:
    address, sock = notify_socket
    ws = csv_workspace(flat_forecast())
    daemon = DaemonProcess(ws, {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000",
                                "WATCHDOG_PID": "1"})
    daemon.wait_started()
    time.sleep(1.0)  # the watchdog would have pinged about five times by now
    assert daemon.stop() == 0
    messages = received(sock, [])
    assert messages[0].startswith("READY=1") and messages[-1] == "STOPPING=1"
    assert "WATCHDOG=1" not in messages


def test_watchdog_interval_follows_systemd_environment() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "120000000"}) == timedelta(seconds=60)
    assert watchdog_interval({"WATCHDOG_USEC": "120000000",
                              "WATCHDOG_PID": str(os.getpid())}) == timedelta(seconds=60)
    assert watchdog_interval({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_a_hung_loop_stops_the_watchdog_pings(
    csv_workspace: Callable[..., Workspace], notify_socket: tuple[str, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    ws = csv_workspace(flat_forecast())
    store = ws.store()
    daemon = Daemon(ws.config(), store)
    daemon.watchdog(timedelta(seconds=1))  # no tick has completed yet: no ping
    assert received(sock, []) == []
    daemon.tick(datetime.now(UTC))
    daemon.watchdog(timedelta(seconds=1))
    assert "WATCHDOG=1" in received(sock, [])
    daemon._last_tick_done = time.monotonic() - 10  # the loop has been stuck for 10 s
    daemon.watchdog(timedelta(seconds=1))
    assert "WATCHDOG=1" not in received(sock, [])
    store.close()


# Security --------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_database_and_job_files_are_owner_only_and_no_shell_runs(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(flat_forecast())
    ws.log_dir.rmdir()  # let the daemon create it
    marker = ws.root / "pwned"
    job_id = submitted_id(ws.cli("submit", "--duration", "1m", "--", "echo",
                                 f"$HOME; touch {marker}", "`id`").stdout)
    daemon = DaemonProcess(ws)
    [ended] = wait_finished(ws, [job_id], 30)
    assert daemon.stop() == 0
    assert ended.exit_code == 0
    log = Path(ended.log_path or "")
    assert log.read_text(encoding="utf-8") == f"$HOME; touch {marker} `id`\n"
    assert not marker.exists()
    assert mode(ws.db_path) == 0o600
    for sidecar in ws.root.glob("gridshift.db-*"):
        assert mode(sidecar) & 0o077 == 0, sidecar
    # Users reach their own log directory only (others' names are not listed under root).
    assert mode(ws.log_dir) == (0o711 if os.geteuid() == 0 else 0o700)
    for produced in ws.log_dir.rglob("*"):
        if produced.is_dir():
            assert mode(produced) & 0o027 == 0, produced
        else:
            assert mode(produced) == 0o600, produced


def test_world_readable_config_with_a_token_is_refused(
    make_workspace: Callable[..., Workspace],
) -> None:
    token = "tok-" + uuid.uuid4().hex
    ws = make_workspace(f'[providers.em]\nkind = "electricitymaps"\ntoken = "{token}"\n\n'
                        f'[regions.fr]\nprovider = "em"\nzone = "FR"\n')
    ws.config_path.chmod(0o644)
    result = ws.cli("list")
    assert result.returncode == 2
    assert f"chmod 600 {ws.config_path}" in result.stderr
    assert token not in result.stderr + result.stdout
    assert not ws.db_path.exists()
    ws.config_path.chmod(0o600)
    assert ws.cli("list").returncode == 0


@pytest.mark.slow
def test_tokens_never_reach_logs_or_status(
    make_workspace: Callable[..., Workspace], httpserver: HTTPServer,
) -> None:
    token = "tok-" + uuid.uuid4().hex
    httpserver.expect_request("/v3/carbon-intensity/forecast").respond_with_data(
        "upstream error", status=500)
    ws = make_workspace(
        f'[providers.em]\nkind = "electricitymaps"\ntoken = "{token}"\n'
        f'base_url = "{httpserver.url_for("").rstrip("/")}"\ntimeout = "2s"\n\n'
        f'[regions.fr]\nprovider = "em"\nzone = "FR"\n')
    daemon = DaemonProcess(ws)
    status = wait_for(lambda: (r := ws.cli("status", "--json")).stdout and r.json()["refreshes"]
                      and r, timeout=60, what="the failed refresh to be recorded")
    assert daemon.stop() == 0
    assert [r["ok"] for r in status.json()["refreshes"]] == [False]
    assert any(token in str(dict(request.headers)) for request, _ in httpserver.log)
    assert token not in status.stdout
    assert token not in daemon.output()
    assert token not in ws.cli("status").stdout


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the line is for a daemon run as root")
def test_daemon_run_as_root_says_once_that_jobs_run_as_their_submitters(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(flat_forecast())
    daemon = DaemonProcess(ws)
    daemon.wait_started()
    assert daemon.stop() == 0
    lines = [line for line in daemon.output().splitlines() if "running as root" in line]
    assert len(lines) == 1 and "each job runs as the user who submitted it" in lines[0]
