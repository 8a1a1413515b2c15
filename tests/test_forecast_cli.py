"""`gridshift forecast` with every provider kind against one local HTTP server, the
daemon's refresh and actuals, the signal check at submit, and secrets kept out of
everything gridshift writes.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from scheduler import forecasting
from scheduler.daemon import Daemon
from scheduler.providers.base import WebProvider
from tests.conftest import Workspace, create_workspace, floor_hour, hourly, write_csv
from tests.daemon_process import DaemonProcess, wait_for
from tests.provider_payloads import (
    casdk_forecast,
    em_forecast,
    em_past_range,
    em_values,
    fast_session,
    uk_actuals_moved,
    uk_forecast_values,
    uk_national,
    uk_regional,
    wt_forecast,
    wt_historical_moved,
    wt_lbs_values,
)

EM_TOKEN = "em-token-3c9f1a77d2"
WT_USER = "wt-user-5b21e0"
WT_PASSWORD = "wt-password-e84d19c3"
WT_TOKEN = "wt-session-token-71aa40"
SECRETS = (EM_TOKEN, WT_USER, WT_PASSWORD, WT_TOKEN)
UK_TIME = "%Y-%m-%dT%H:%MZ"


def _from_path(request: Request, index: int) -> datetime:
    """The ``{from}`` time in a UK API path."""
    return datetime.strptime(request.path.split("/")[index], UK_TIME).replace(tzinfo=UTC)


def _json(payload: Any) -> Response:
    return Response(json.dumps(payload), content_type="application/json")


class Services:
    """All four web services on one local server, answering relative to the real clock."""

    def __init__(self, httpserver: HTTPServer) -> None:
        server = httpserver
        server.expect_request(re.compile(r"^/intensity/[^/]+/fw48h$")).respond_with_handler(
            lambda r: _json(uk_national(_from_path(r, 2), uk_forecast_values())))
        server.expect_request(re.compile(r"^/intensity/[^/]+/[^/]+$")).respond_with_handler(
            lambda r: _json(uk_actuals_moved(_from_path(r, 2))))
        server.expect_request(re.compile(r"^/regional/intensity/[^/]+/fw48h/postcode/RG10$")
                              ).respond_with_handler(
            lambda r: _json(uk_regional(_from_path(r, 3), uk_forecast_values(), False, "RG10")))
        server.expect_request("/v3/carbon-intensity/forecast",
                              headers={"auth-token": EM_TOKEN}).respond_with_handler(
            lambda r: _json(em_forecast(self.hour(), em_values(), self.hour())))
        server.expect_request("/v3/carbon-intensity/past-range",
                              headers={"auth-token": EM_TOKEN}).respond_with_handler(
            lambda r: _json(em_past_range(self.hour() - timedelta(hours=24))))
        server.expect_request("/login", headers={
            "Authorization": "Basic " + base64.b64encode(
                f"{WT_USER}:{WT_PASSWORD}".encode()).decode(),
        }).respond_with_json({"token": WT_TOKEN})
        server.expect_request("/v3/forecast", headers={
            "Authorization": f"Bearer {WT_TOKEN}"}).respond_with_handler(
            lambda r: _json(wt_forecast(self.hour(), wt_lbs_values(), self.hour())))
        server.expect_request("/v3/historical").respond_with_handler(
            lambda r: _json(wt_historical_moved(self.hour() - timedelta(hours=1))))
        server.expect_request("/emissions/forecasts/current").respond_with_handler(
            lambda r: _json(casdk_forecast(self.hour(), wt_lbs_values(), self.hour())))
        server.expect_request("/emissions/bylocations").respond_with_json([])

    @staticmethod
    def hour() -> datetime:
        return floor_hour(datetime.now(UTC))


def _body(url: str, em_token: str | None = EM_TOKEN) -> str:
    token = f'token = "{em_token}"\n' if em_token else ""
    return (
        f'[providers.uk]\nkind = "carbonintensity_uk"\nbase_url = "{url}"\n\n'
        f'[providers.em]\nkind = "electricitymaps"\nbase_url = "{url}"\n{token}\n'
        f'[providers.wt]\nkind = "watttime"\nbase_url = "{url}"\n\n'
        f'[providers.gsf]\nkind = "carbon_aware_sdk"\nbase_url = "{url}"\n\n'
        '[regions.gb]\nprovider = "uk"\nzone = "national"\n\n'
        '[regions.south]\nprovider = "uk"\nzone = "postcode:RG10"\n\n'
        '[regions.de]\nprovider = "em"\nzone = "DE"\n\n'
        '[regions.caiso]\nprovider = "wt"\nzone = "CAISO_NORTH"\n\n'
        '[regions.eastus]\nprovider = "gsf"\nzone = "eastus"\n'
    )


def _workspace(root: Path, httpserver: HTTPServer, daemon: str | None = None) -> Workspace:
    settings = {"daemon": daemon} if daemon else {}
    workspace = create_workspace(root, _body(httpserver.url_for("/")), **settings)
    workspace.env["GRIDSHIFT_WATTTIME_USERNAME"] = WT_USER
    workspace.env["GRIDSHIFT_WATTTIME_PASSWORD"] = WT_PASSWORD
    return workspace


def test_refresh_reports_each_provider_and_zone(tmp_path: Path,
                                                httpserver: HTTPServer) -> None:
    Services(httpserver)
    ws = _workspace(tmp_path, httpserver)
    result = ws.cli("forecast", "--refresh")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    expected = {("uk", "national", len(uk_forecast_values())),
                ("uk", "postcode:RG10", len(uk_forecast_values())),
                ("em", "DE", len(em_values())), ("wt", "CAISO_NORTH", len(wt_lbs_values())),
                ("gsf", "eastus", len(wt_lbs_values()))}
    for provider, zone, count in expected:
        line = next(x for x in lines if x.startswith(f"{provider} zone {zone}:"))
        assert f"{count} points ({count} new), horizon to " in line and "vintage" in line
    assert len(lines) == len(expected)
    again = ws.cli("forecast", "--refresh", "--region", "de")
    assert again.stderr.startswith(f"em zone DE: {len(em_values())} points (0 new)")


def test_a_failing_provider_is_reported_and_the_others_still_store(
    tmp_path: Path, httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/v3/carbon-intensity/forecast").respond_with_json(
        {"message": "Invalid auth-token"}, status=401)
    Services(httpserver)
    ws = _workspace(tmp_path, httpserver)
    result = ws.cli("forecast", "--refresh", "--region", "de", "--region", "gb")
    assert result.returncode == 0
    assert (f"em zone DE: FAILED: HTTP 401 from "
            f"{httpserver.url_for('/v3/carbon-intensity/forecast')}: "
            "Invalid auth-token") in result.stderr.splitlines()
    reports = [x for x in result.stderr.splitlines() if x.startswith(("uk zone", "em zone"))]
    assert len(reports) == 2  # one line per provider and zone, no repeated log line
    assert "forecast refresh" not in result.stderr
    only_failing = ws.cli("forecast", "--refresh", "--region", "de")
    assert only_failing.returncode == 1
    assert "every provider failed; stored forecasts are unchanged" in only_failing.stderr


def test_forecast_json_labels_signal_units_basis_and_estimated(
    tmp_path: Path, httpserver: HTTPServer,
) -> None:
    Services(httpserver)
    ws = _workspace(tmp_path, httpserver)
    result = ws.cli("forecast", "--refresh", "--json")
    assert result.returncode == 0, result.stderr
    document = result.json()
    regions = {entry["region"]: entry for entry in document["regions"]}
    assert {r: (e["signal"], e["units"]) for r, e in regions.items()} == {
        "gb": ("average", "gco2_per_kwh"), "south": ("average", "gco2_per_kwh"),
        "de": ("average", "gco2_per_kwh"), "caiso": ("marginal", "gco2_per_kwh"),
        "eastus": ("marginal", "gco2_per_kwh"),
    }
    de_point = regions["de"]["points"][0]
    assert (de_point["signal"], de_point["basis"], de_point["estimated"]) == (
        "average", "lifecycle", False)
    caiso = regions["caiso"]["points"]
    assert {(p["signal"], p["basis"]) for p in caiso} == {("marginal", "direct")}
    served_from = floor_hour(datetime.fromisoformat(caiso[0]["start"]))  # the payload's start
    for point in caiso:
        index = (datetime.fromisoformat(point["start"]) - served_from) // timedelta(minutes=5)
        assert point["intensity"] == pytest.approx(wt_lbs_values()[index] * 0.453592)
    refreshed = {(r["provider"], r["zone"]): r for r in document["refresh"]}
    assert len(refreshed) == 5 and all(r["ok"] for r in refreshed.values())
    assert refreshed[("em", "DE")]["points"] == len(em_values())


def test_submit_refuses_regions_that_mix_signals_and_writes_nothing(
    tmp_path: Path, httpserver: HTTPServer,
) -> None:
    ws = _workspace(tmp_path, httpserver)
    mixed = ws.cli("submit", "--duration", "1h", "--region", "de", "--region", "caiso",
                   "--", "true")
    assert mixed.returncode == 2
    assert "mix average and marginal" in mixed.stderr and "de (average)" in mixed.stderr
    assert mixed.stdout == ""
    assert not ws.db_path.exists()
    default_regions = ws.cli("submit", "--duration", "1h", "--", "true")
    assert default_regions.returncode == 2 and not ws.db_path.exists()
    assert httpserver.log == []


def test_daemon_refresh_and_actuals_can_be_called_directly(
    tmp_path: Path, httpserver: HTTPServer,
) -> None:
    Services(httpserver)
    ws = _workspace(tmp_path, httpserver)
    config = ws.config()
    store = ws.store()
    daemon = Daemon(config, store)
    for provider in daemon.providers.values():
        assert isinstance(provider, WebProvider)
        provider.session = fast_session()
    now = datetime.now(UTC)
    daemon.refresh(now)
    refreshes = {(r.provider, r.zone, r.kind): r for r in store.refreshes()}
    assert {k for k, r in refreshes.items() if r.ok} == {
        ("uk", "national", "forecast"), ("uk", "postcode:RG10", "forecast"),
        ("em", "DE", "forecast"), ("wt", "CAISO_NORTH", "forecast"),
        ("gsf", "eastus", "forecast")}
    assert len(store.series("em", "DE", now, now + timedelta(hours=30))) > 0

    daemon.refresh_actuals(now)
    actuals = {(r.provider, r.zone): r for r in store.refreshes() if r.kind == "actual"}
    # Regional UK zones publish no actuals: nothing asked, nothing recorded.
    assert set(actuals) == {("uk", "national"), ("em", "DE"), ("wt", "CAISO_NORTH"),
                            ("gsf", "eastus")}
    assert all(r.ok for r in actuals.values())
    uk = store.series("uk", "national", now - timedelta(hours=48), now, kind="actual")
    assert len(uk) > 0 and uk.ends[-1] <= now
    assert len(store.series("em", "DE", now - timedelta(hours=48), now, kind="actual")) > 0
    store.close()


def test_actuals_are_asked_for_from_the_newest_stored_actual(tmp_path: Path,
                                                             httpserver: HTTPServer) -> None:
    Services(httpserver)
    ws = _workspace(tmp_path, httpserver)
    config = ws.config()
    store = ws.store()
    now = floor_hour(datetime.now(UTC))
    first = forecasting.refresh_actuals(config, store, now)
    uk_result = next(r for r in first if r.provider == "uk")
    assert uk_result.ok and uk_result.stored == 48
    asked = [r.path for r, _ in httpserver.log if re.match(r"^/intensity/[^/]+/[^/]+$", r.path)]
    assert asked[-1] == (f"/intensity/{(now - timedelta(hours=48)).strftime(UK_TIME)}/"
                         f"{now.strftime(UK_TIME)}")
    newest = uk_result.horizon_end
    assert newest is not None
    forecasting.refresh_actuals(config, store, now + timedelta(hours=1))
    asked = [r.path for r, _ in httpserver.log if re.match(r"^/intensity/[^/]+/[^/]+$", r.path)]
    assert asked[-1].startswith(f"/intensity/{newest.strftime(UK_TIME)}/")
    store.close()


def test_csv_actual_rows_are_stored_by_refresh_actuals(tmp_path: Path) -> None:
    now = floor_hour(datetime.now(UTC))
    path = write_csv(tmp_path / "a.csv", hourly(now - timedelta(hours=3), [210, 190, 180]),
                     kind="actual")
    ws = create_workspace(tmp_path, f'[providers.f]\nkind = "csv"\npath = "{path}"\n\n'
                                    '[regions.r]\nprovider = "f"\nzone = "r"\n')
    store = ws.store()
    results = forecasting.refresh_actuals(ws.config(), store, now)
    assert [(r.ok, r.stored, r.kind) for r in results] == [(True, 3, "actual")]
    series = store.series("f", "r", now - timedelta(hours=3), now, kind="actual")
    assert series.values == [210.0, 190.0, 180.0]
    store.close()


@pytest.mark.slow
def test_secrets_never_appear_in_anything_gridshift_writes(
    tmp_path: Path, httpserver: HTTPServer,
) -> None:
    Services(httpserver)
    ws = _workspace(tmp_path, httpserver, daemon='tick = "1s"\nactuals_every = "1s"')
    outputs: list[str] = []

    def run(*args: str) -> None:
        result = ws.cli(*args)
        outputs.extend([result.stdout, result.stderr])

    run("forecast", "--refresh")
    run("forecast", "--refresh", "--json")
    run("forecast", "--json")
    run("submit", "--duration", "1h", "--region", "de", "--", "true")
    run("list")
    run("list", "--json")
    run("show", "1")
    run("show", "1", "--json")
    run("status", "--json")
    run("report")
    run("report", "--json")
    daemon = DaemonProcess(ws)
    try:
        def actuals_recorded() -> bool:
            with sqlite3.connect(ws.db_path) as connection:
                rows = connection.execute(
                    "SELECT count(*) FROM provider_refreshes WHERE kind = 'actual'"
                ).fetchone()
            return bool(rows[0] >= 4)
        wait_for(actuals_recorded, timeout=60, what="the daemon's first actuals")
    finally:
        assert daemon.stop() == 0
    outputs.append(daemon.output())

    # The secrets were really used: the services saw them.
    seen = [str(request.headers) for request, _ in httpserver.log]
    assert any(EM_TOKEN in h for h in seen) and any(WT_TOKEN in h for h in seen)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "gridshift.toml"]
    assert any(p.name.startswith("gridshift.db") for p in written)
    everything = "\n".join(outputs).encode() + b"".join(p.read_bytes() for p in written)
    assert b"points" in everything  # the outputs were captured
    for secret in SECRETS:
        assert secret.encode() not in everything, secret
