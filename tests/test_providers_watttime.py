"""watttime (API v3): login and token renewal, unit conversion, the percentile index."""

from __future__ import annotations

import base64
import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from scheduler import forecasting
from scheduler.config import parse_config
from scheduler.providers.base import ProviderError
from scheduler.providers.watttime import WattTime
from scheduler.store import Store
from tests.provider_payloads import (
    FIXTURES,
    fast_session,
    load_json,
    web_config,
    wt_forecast,
    wt_historical_moved,
    wt_lbs_values,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
USER, PASSWORD = "wt-user", "wt-pass-9c1e"
FIVE_MINUTES = timedelta(minutes=5)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def _provider(httpserver: HTTPServer, clock: Clock | None = None,
              **settings: object) -> WattTime:
    settings.setdefault("username", USER)
    settings.setdefault("password", PASSWORD)
    config = web_config("watttime", httpserver.url_for("/"), name="wt", **settings)
    return WattTime(config, session=fast_session(), monotonic=clock or Clock())


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TokenServer:
    """Hands out token-1, token-2, ... at /login; /v3/forecast accepts only the newest."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.logins = 0
        self.valid: str | None = None
        httpserver.expect_request("/login", headers={
            "Authorization": _basic(USER, PASSWORD)}).respond_with_handler(self.login)
        httpserver.expect_request("/v3/forecast").respond_with_handler(self.forecast)

    def login(self, _request: Request) -> Response:
        self.logins += 1
        self.valid = f"token-{self.logins}"
        return Response(f'{{"token": "{self.valid}"}}', content_type="application/json")

    def forecast(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.valid}":
            return Response('{"error": "token expired"}', status=401,
                            content_type="application/json")
        return Response(json.dumps(wt_forecast(NOW, wt_lbs_values(12), NOW)),
                        content_type="application/json")

    def expire_server_side(self) -> None:
        self.valid = "revoked"


def test_logs_in_once_and_reuses_the_token(httpserver: HTTPServer) -> None:
    tokens = TokenServer(httpserver)
    provider = _provider(httpserver)
    provider.fetch_forecast("CAISO_NORTH", NOW)
    provider.fetch_forecast("CAISO_NORTH", NOW)
    assert tokens.logins == 1


def test_token_is_renewed_before_its_30_minutes_are_up(httpserver: HTTPServer) -> None:
    tokens = TokenServer(httpserver)
    clock = Clock()
    provider = _provider(httpserver, clock)
    provider.fetch_forecast("CAISO_NORTH", NOW)
    clock.seconds += 20 * 60
    provider.fetch_forecast("CAISO_NORTH", NOW)
    assert tokens.logins == 1
    clock.seconds += 6 * 60  # 26 minutes old: renewed before it can expire mid-request
    provider.fetch_forecast("CAISO_NORTH", NOW)
    assert tokens.logins == 2


def test_a_401_renews_the_token_once_and_retries(httpserver: HTTPServer) -> None:
    tokens = TokenServer(httpserver)
    provider = _provider(httpserver)
    provider.fetch_forecast("CAISO_NORTH", NOW)
    tokens.expire_server_side()
    points = provider.fetch_forecast("CAISO_NORTH", NOW)
    assert len(points) == 12 and tokens.logins == 2


def test_a_rejected_login_is_reported_without_the_password(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/login").respond_with_data("", status=401)
    with pytest.raises(ProviderError) as raised:
        _provider(httpserver).fetch_forecast("CAISO_NORTH", NOW)
    assert f"HTTP 401 from {httpserver.url_for('/login')}" in str(raised.value)
    assert PASSWORD not in str(raised.value) and USER not in str(raised.value)


def test_missing_credentials_name_the_environment_variables(httpserver: HTTPServer) -> None:
    with pytest.raises(ProviderError, match="GRIDSHIFT_WATTTIME_PASSWORD"):
        _provider(httpserver, password=None).fetch_forecast("CAISO_NORTH", NOW)
    assert httpserver.log == []


def test_forecast_is_converted_from_lbs_per_mwh_and_labelled_marginal(
    httpserver: HTTPServer,
) -> None:
    lbs = wt_lbs_values()
    generated = NOW - timedelta(minutes=3)
    httpserver.expect_request("/login").respond_with_json({"token": "t"})
    httpserver.expect_oneshot_request(
        "/v3/forecast", query_string={"region": "CAISO_NORTH", "signal_type": "co2_moer"},
        headers={"Authorization": "Bearer t"},
    ).respond_with_json(wt_forecast(NOW, lbs, generated))
    points = _provider(httpserver).fetch_forecast("CAISO_NORTH", NOW)
    httpserver.check_assertions()
    assert [p.value for p in points] == pytest.approx([v * 0.453592 for v in lbs])
    assert points[0].start == NOW and points[-1].end == NOW + len(lbs) * FIVE_MINUTES
    assert {(p.units, p.signal, p.basis, p.vintage) for p in points} == {
        ("gco2_per_kwh", "marginal", "direct", generated)}


def test_percentile_index_is_stored_as_an_index_not_emissions(httpserver: HTTPServer) -> None:
    real = load_json("watttime/realtime_emissions_response.json")  # units "percentile"
    httpserver.expect_request("/login").respond_with_json({"token": "t"})
    httpserver.expect_oneshot_request("/v3/forecast").respond_with_json(real)
    points = _provider(httpserver).fetch_forecast("PSCO", NOW)
    assert [(p.value, p.units) for p in points] == [(real["data"][0]["value"], "percentile")]


def test_historical_actuals_keep_imputed_as_estimated(httpserver: HTTPServer) -> None:
    start = NOW - timedelta(hours=1)
    payload = wt_historical_moved(start)
    httpserver.expect_request("/login").respond_with_json({"token": "t"})
    httpserver.expect_oneshot_request(
        "/v3/historical", query_string={"region": "CAISO_NORTH", "signal_type": "co2_moer",
                                        "start": start.isoformat(), "end": NOW.isoformat()},
    ).respond_with_json(payload)
    points = _provider(httpserver).fetch_actuals("CAISO_NORTH", start, NOW)
    httpserver.check_assertions()
    assert [p.value for p in points] == pytest.approx(
        [d["value"] * 0.453592 for d in payload["data"]])
    assert all(p.kind == "actual" and p.estimated for p in points)
    assert points[0].vintage == datetime.fromisoformat(payload["data"][0]["last_updated"])


def test_a_region_outside_the_plan_reports_watttime_reason(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/login").respond_with_json({"token": "t"})
    httpserver.expect_request("/v3/forecast").respond_with_json(
        load_json("watttime/invalid_scope_response.json"), status=403)
    with pytest.raises(ProviderError, match=r"HTTP 403.*Invalid scope"):
        _provider(httpserver).fetch_forecast("PJM_DC", NOW)


def test_the_proxy_html_403_is_reported_plainly(httpserver: HTTPServer) -> None:
    html = (FIXTURES / "watttime" / "403_forbidden_response.html").read_text()
    httpserver.expect_request("/login").respond_with_data(html, status=403,
                                                          content_type="text/html")
    with pytest.raises(ProviderError, match=r"HTTP 403 from http://localhost:[0-9]+/login$"):
        _provider(httpserver).fetch_forecast("CAISO_NORTH", NOW)


def test_unknown_units_are_refused(httpserver: HTTPServer) -> None:
    payload = wt_forecast(NOW, wt_lbs_values(12), NOW, units="kg_co2_per_mwh")
    httpserver.expect_request("/login").respond_with_json({"token": "t"})
    httpserver.expect_oneshot_request("/v3/forecast").respond_with_json(payload)
    with pytest.raises(ProviderError, match="unsupported units"):
        _provider(httpserver).fetch_forecast("CAISO_NORTH", NOW)


def test_a_percentile_region_is_labelled_an_index_in_forecast_output(
    httpserver: HTTPServer, tmp_path: Path,
) -> None:
    real = load_json("watttime/realtime_emissions_response.json")
    point_time = datetime.fromisoformat(real["data"][0]["point_time"])
    httpserver.expect_request("/login").respond_with_json({"token": "t"})
    httpserver.expect_oneshot_request("/v3/forecast").respond_with_json(real)
    raw = tomllib.loads(
        f'[database]\nurl = "sqlite:///{tmp_path / "g.db"}"\n'
        f'[providers.wt]\nkind = "watttime"\nbase_url = "{httpserver.url_for("/")}"\n'
        f'username = "{USER}"\npassword = "{PASSWORD}"\n'
        '[regions.psco]\nprovider = "wt"\nzone = "PSCO"\n')
    config = parse_config(raw, str(tmp_path / "gridshift.toml"), {})
    store = Store.open(config.database_url)
    assert forecasting.refresh_all(config, store, point_time)[0].ok
    view = forecasting.region_views(config, store, ["psco"], point_time)[0]
    document = view.as_json()
    assert (document["signal"], document["units"]) == ("marginal", "percentile")
    assert document["points"][0]["intensity"] == real["data"][0]["value"]


def test_an_error_body_echoing_credentials_is_scrubbed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/login").respond_with_json({"token": "session-token-42"})
    httpserver.expect_request("/v3/forecast").respond_with_json(
        {"message": f"user {USER} with token session-token-42 is over quota"}, status=403)
    with pytest.raises(ProviderError) as raised:
        _provider(httpserver).fetch_forecast("CAISO_NORTH", NOW)
    assert str(raised.value).endswith("/v3/forecast: user *** with token *** "
                                      "is over quota")
