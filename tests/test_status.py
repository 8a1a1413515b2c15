"""`gridshift status [--json]` as a health check, against the real daemon and CLI."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from tests.conftest import Workspace, floor_hour, hourly
from tests.daemon_process import (
    DaemonProcess,
    reap_daemons,  # noqa: F401 (autouse: kills leftovers)
    submitted_id,
    wait_finished,
    wait_for,
)


def forecast() -> dict[str, list[tuple[datetime, datetime, float]]]:
    start = floor_hour(datetime.now(UTC)) - timedelta(hours=1)
    return {"north": hourly(start, [120.0] * 30), "south": hourly(start, [300.0] * 30)}


def test_status_without_a_database_fails_and_creates_nothing(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(forecast())
    result = ws.cli("status")
    assert result.returncode == 1
    assert "no database" in result.stderr
    assert not ws.db_path.exists()


@pytest.mark.slow
def test_status_reports_a_running_daemon_refreshes_queue_and_next_launches(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(forecast())
    done = submitted_id(ws.cli("submit", "--duration", "1m", "--", "true").stdout)
    later = [submitted_id(ws.cli("submit", "--duration", "1h", "--not-before", f"+{h}h",
                                 "--", "true").stdout) for h in (3, 2)]
    daemon = DaemonProcess(ws)
    wait_finished(ws, [done], 30)
    result = wait_for(lambda: (r := ws.cli("status", "--json")).returncode == 0 and r,
                      timeout=30, what="a healthy status")
    document = result.json()
    assert document["healthy"] is True
    assert document["daemon"]["running"] is True
    assert document["daemon"]["pid"] == daemon.pid
    assert 0 <= document["daemon"]["heartbeat_age_s"] < 10
    assert document["queue"]["succeeded"] == 1
    assert document["queue"]["planned"] == 2
    assert document["queue"]["lost"] == 0
    zones = {(r["provider"], r["zone"]): r for r in document["refreshes"]}
    assert set(zones) == {("north", "north"), ("south", "south")}
    assert all(r["ok"] and r["points"] == 30 for r in zones.values())
    upcoming = document["next_launches"]
    assert {launch["id"] for launch in upcoming} == set(later)
    starts = [datetime.fromisoformat(launch["planned_start"]) for launch in upcoming]
    assert starts == sorted(starts) and starts[0] > datetime.now(UTC)
    text = ws.cli("status")
    assert text.returncode == 0
    assert f"pid {daemon.pid}" in text.stdout and "planned 2" in text.stdout
    assert daemon.stop() == 0
    stopped = ws.cli("status", "--json")
    assert stopped.returncode == 1
    assert stopped.json()["daemon"]["running"] is False
    assert "stopped at" in stopped.json()["daemon"]["problem"]


@pytest.mark.slow
def test_status_fails_when_the_daemon_was_killed(csv_workspace: Callable[..., Workspace]
                                                 ) -> None:
    ws = csv_workspace(forecast())
    daemon = DaemonProcess(ws)
    daemon.wait_started()
    daemon.kill()
    result = ws.cli("status")
    assert result.returncode == 1
    assert f"pid {daemon.pid} is gone" in result.stdout


def test_status_fails_on_a_stale_heartbeat_of_a_live_process(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """A hung daemon: its process is alive but it stopped beating."""
    ws = csv_workspace(forecast())
    hung = subprocess.Popen(["sleep", "60"])
    try:
        now = datetime.now(UTC)
        store = ws.store()
        started = datetime.fromtimestamp(psutil.Process(hung.pid).create_time(), UTC)
        store.beat(hung.pid, socket.gethostname(), started, now - timedelta(minutes=2))
        store.close()
        result = ws.cli("status", "--json")
        assert result.returncode == 1
        daemon = result.json()["daemon"]
        assert daemon["running"] is True and daemon["healthy"] is False
        assert "stale" in daemon["problem"]
        assert daemon["heartbeat_age_s"] >= 120
        # The same heartbeat, fresh: healthy.
        store = ws.store()
        store.beat(hung.pid, socket.gethostname(), started, datetime.now(UTC))
        store.close()
        assert ws.cli("status").returncode == 0
    finally:
        hung.kill()
        hung.wait()
