"""Forecast services failing in every way, against a local HTTP server: the daemon keeps
running, launches every job by its latest start, and `status` says what is failing."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from scheduler.models import JobState
from tests.conftest import Workspace, floor_hour
from tests.daemon_process import (
    DaemonProcess,
    carbon_intensity_payload,
    reap_daemons,  # noqa: F401 (autouse: kills leftovers)
    submitted_id,
    wait_finished,
    wait_for,
)

pytestmark = pytest.mark.slow

FORECAST_PATH = re.compile(r"^/(?P<mode>\w+)/intensity/.*")


def closed_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def json_response(document: Any) -> Response:
    return Response(json.dumps(document), content_type="application/json")


def region_tables(providers: dict[str, str], timeout: str = "1s") -> str:
    tables = []
    for name, base_url in providers.items():
        tables.append(f'[providers.{name}]\nkind = "carbonintensity_uk"\n'
                      f'base_url = "{base_url}"\ntimeout = "{timeout}"\n')
        tables.append(f'[regions.{name}]\nprovider = "{name}"\nzone = "national"\n')
    return "\n".join(tables)


def submit_tight(ws: Workspace, region: str, starts_in_s: int) -> int:
    """A job that must start within 10 s of its earliest start to meet its deadline."""
    return submitted_id(ws.cli("submit", "--region", region, "--duration", "20s",
                               "--not-before", f"+{starts_in_s}s", "--within",
                               f"{starts_in_s + 30}s", "--", "true").stdout)


def assert_started_by_latest_start(ws: Workspace, job_ids: list[int]) -> None:
    for ended in wait_finished(ws, job_ids, 60):
        latest_start = ended.deadline - timedelta(seconds=ended.duration_s)
        assert ended.state == JobState.SUCCEEDED
        assert ended.started_at is not None and ended.started_at <= latest_start, ended.id


def test_daemon_survives_every_failure_and_status_names_them(
    make_workspace: Callable[..., Workspace], httpserver: HTTPServer,
) -> None:
    def failing(request: Request) -> Response:
        match = FORECAST_PATH.match(request.path)
        mode = match.group("mode") if match else ""
        if mode == "slow":
            time.sleep(1.5)  # past the provider's 1 s read timeout
            return json_response(carbon_intensity_payload(floor_hour(datetime.now(UTC)), 4))
        if mode == "ratelimited":
            return Response("slow down", status=429, headers={"Retry-After": "3600"})
        if mode == "broken":
            return Response("internal error", status=500)
        return Response("<html>maintenance</html>", status=200, content_type="text/html")

    httpserver.expect_request(FORECAST_PATH).respond_with_handler(failing)
    providers = {"refused": f"http://127.0.0.1:{closed_port()}"}
    for mode in ("slow", "ratelimited", "broken", "garbage"):
        providers[mode] = httpserver.url_for(f"/{mode}").rstrip("/")
    ws = make_workspace(region_tables(providers), daemon='tick = "1s"\nrefresh_every = "1s"')
    daemon = DaemonProcess(ws)
    # Jobs in every failing region come due while the refreshes fail.
    job_ids = [submit_tight(ws, region, 3 + n) for n, region in enumerate(providers)]

    def all_recorded() -> dict[str, Any] | None:
        result = ws.cli("status", "--json")
        document: dict[str, Any] = result.json()
        named = {r["provider"]: r for r in document["refreshes"]}
        return document if set(named) == set(providers) else None

    document = wait_for(all_recorded, timeout=90, interval=0.5,
                        what="a refresh outcome for every provider")
    assert_started_by_latest_start(ws, job_ids)
    assert daemon.process.poll() is None, daemon.output()
    status = ws.cli("status")
    assert status.returncode == 0  # the daemon is healthy; its providers are not
    assert daemon.stop() == 0

    refreshes = {r["provider"]: r for r in document["refreshes"]}
    assert not any(r["ok"] for r in refreshes.values())
    assert "cannot connect" in refreshes["refused"]["message"]
    assert "timed out" in refreshes["slow"]["message"]
    assert "429" in refreshes["ratelimited"]["message"]
    assert "500" in refreshes["broken"]["message"]
    assert "JSON" in refreshes["garbage"]["message"]
    assert status.stdout.count("FAILING") == len(providers)


def test_a_shrinking_horizon_never_stalls_the_queue(
    make_workspace: Callable[..., Workspace], httpserver: HTTPServer,
) -> None:
    horizons = [96, 4, 0]  # slots per answer: 48 h, then 2 h, then nothing at all
    served: list[int] = []

    def shrinking(_request: Request) -> Response:
        slots = horizons[min(len(served), len(horizons) - 1)]
        served.append(slots)
        start = floor_hour(datetime.now(UTC))
        return json_response(carbon_intensity_payload(start, slots))

    httpserver.expect_request(FORECAST_PATH).respond_with_handler(shrinking)
    ws = make_workspace(region_tables({"uk": httpserver.url_for("/shrinking").rstrip("/")}),
                        daemon='tick = "1s"\nrefresh_every = "1s"')
    daemon = DaemonProcess(ws)

    def horizon_seen() -> list[Any]:
        refreshes = ws.cli("status", "--json").json()["refreshes"]
        return refreshes if refreshes and not refreshes[0]["ok"] else []

    job_ids = [submit_tight(ws, "uk", 2), submit_tight(ws, "uk", 6)]
    [failed] = wait_for(horizon_seen, timeout=60, interval=0.3,
                        what="the refresh to fail once the horizon is empty")
    assert "no data points" in failed["message"]
    assert failed["last_success_at"] is not None  # the shrunken but valid answer was used
    assert served[:3] == [96, 4, 0]
    assert_started_by_latest_start(ws, job_ids)
    assert daemon.stop() == 0


def _csv_region(ws_root: Any) -> str:
    start = floor_hour(datetime.now(UTC))
    rows = "\n".join(f"{(start + timedelta(hours=h)).isoformat()},"
                     f"{(start + timedelta(hours=h + 1)).isoformat()},200" for h in range(6))
    (ws_root / "f.csv").write_text(f"start,end,gco2_per_kwh\n{rows}\n", encoding="utf-8")
    return '[providers.f]\nkind = "csv"\npath = "f.csv"\n[regions.r]\nprovider = "f"\nzone = "z"\n'


def test_a_read_only_database_stops_the_daemon_with_one_line(
    make_workspace: Callable[..., Workspace], tmp_path: Any,
) -> None:
    import subprocess

    ws = make_workspace(_csv_region(tmp_path))
    assert ws.cli("db", "upgrade").returncode == 0
    # Root writes through file modes: the immutable attribute makes the file read-only.
    if subprocess.run(["chattr", "+i", str(ws.db_path)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        daemon = DaemonProcess(ws)
        code = daemon.process.wait(60)
    finally:
        subprocess.run(["chattr", "-i", str(ws.db_path)], check=True)
    output = daemon.output()
    assert code == 1, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "read-only" in errors[0], output
    assert "Traceback" not in output


def test_database_errors_are_logged_as_one_line_each(
    make_workspace: Callable[..., Workspace], tmp_path: Any,
) -> None:
    import sqlite3

    ws = make_workspace(_csv_region(tmp_path), daemon='tick = "1s"\nrefresh_every = "1s"')
    assert ws.cli("db", "upgrade").returncode == 0
    with sqlite3.connect(ws.db_path) as connection:
        connection.execute("DROP TABLE forecast_points")
    daemon = DaemonProcess(ws)
    wait_for(lambda: daemon.output().count("refresh failed; will try again") >= 2,
             timeout=60, what="two failed refreshes")
    assert daemon.process.poll() is None  # it keeps trying
    daemon.stop()
    output = daemon.output()
    assert "refresh failed; will try again: OperationalError: no such table: " \
           "forecast_points" in output
    assert "Traceback" not in output
    assert all(line[:2] == "20" for line in output.splitlines()), output


def test_a_refresh_longer_than_its_interval_is_not_logged_every_tick(
    make_workspace: Callable[..., Workspace], httpserver: HTTPServer,
) -> None:
    served: list[float] = []

    def slow(_request: Request) -> Response:
        served.append(time.monotonic())
        time.sleep(2.5)  # within the 5 s timeout, longer than refresh_every
        return json_response(carbon_intensity_payload(floor_hour(datetime.now(UTC)), 4))

    httpserver.expect_request(FORECAST_PATH).respond_with_handler(slow)
    ws = make_workspace(region_tables({"slow": httpserver.url_for("/slow").rstrip("/")},
                                      timeout="5s"),
                        daemon='tick = "1s"\nrefresh_every = "1s"')
    daemon = DaemonProcess(ws)
    wait_for(lambda: len(served) >= 3, timeout=60, what="three slow refreshes")
    assert daemon.stop() == 0
    output = daemon.output()
    assert "forecast refresh slow zone national" in output
    assert "maximum number of running instances" not in output
