"""Every web provider, every kind of bad response: nothing stored, earlier forecasts kept,
one log line naming provider, zone and problem, and the next refresh tries again.

Each provider's good payload is its real (or documented) shape; each bad case damages it
the way a broken service or network would.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from scheduler import forecasting
from scheduler.providers import build_provider
from scheduler.providers import carbon_aware_sdk as gsf
from scheduler.providers import carbonintensity_uk as uk
from scheduler.providers import electricitymaps as em
from scheduler.providers import watttime as wt
from scheduler.providers.base import (
    MAX_RETRY_AFTER_S,
    Provider,
    ProviderError,
    WebProvider,
    make_session,
)
from scheduler.store import Store
from tests.daemon_process import wait_for
from tests.provider_payloads import (
    casdk_forecast,
    em_forecast,
    em_values,
    fast_session,
    uk_forecast_values,
    uk_national,
    web_config,
    wt_forecast,
    wt_lbs_values,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=30)
# Short, so the timeout case is quick; only that case uses it. Every other request gets
# PATIENT_TIMEOUT, so a loaded CI machine answering slowly cannot turn a good or
# differently-bad answer into a timeout.
READ_TIMEOUT = timedelta(seconds=0.2)
PATIENT_TIMEOUT = timedelta(seconds=10)


@dataclass(frozen=True)
class Service:
    """One provider kind: where its forecast lives and how to reach its points."""

    kind: str
    zone: str
    path: str
    good: Callable[[datetime], Any]
    points: Callable[[Any], list[dict[str, Any]]]
    set_value: Callable[[dict[str, Any], Any], None]
    settings: dict[str, Any]


def _set(key: str) -> Callable[[dict[str, Any], Any], None]:
    def setter(point: dict[str, Any], value: Any) -> None:
        point[key] = value
    return setter


def _set_uk(point: dict[str, Any], value: Any) -> None:
    point["intensity"]["forecast"] = value


SERVICES = [
    Service("carbonintensity_uk", "national", "/intensity/2026-11-26T10:00Z/fw48h",
            lambda now: uk_national(now, uk_forecast_values()),
            lambda payload: payload["data"], _set_uk, {}),
    Service("electricitymaps", "DE", "/v3/carbon-intensity/forecast",
            lambda now: em_forecast(now, em_values(), now - timedelta(minutes=12)),
            lambda payload: payload["forecast"], _set("carbonIntensity"),
            {"token": "em-token-for-tests"}),
    Service("watttime", "CAISO_NORTH", "/v3/forecast",
            lambda now: wt_forecast(now, wt_lbs_values(), now - timedelta(minutes=3)),
            lambda payload: payload["data"], _set("value"),
            {"username": "wt-user", "password": "wt-password-for-tests"}),
    Service("carbon_aware_sdk", "eastus", "/emissions/forecasts/current",
            lambda now: casdk_forecast(now, wt_lbs_values(288), now),
            lambda payload: payload[0]["forecastData"], _set("value"), {}),
]


def _damage(how: str) -> Callable[[Service, Any], None]:
    def damage(service: Service, payload: Any) -> None:
        points = service.points(payload)
        if how == "empty":
            points.clear()
        elif how == "nan":
            service.set_value(points[3], float("nan"))
        elif how == "negative":
            service.set_value(points[3], -5)
        elif how == "duplicate":
            points.insert(1, copy.deepcopy(points[0]))
        elif how == "unsorted":
            points[1], points[2] = points[2], points[1]
        elif how == "gap":
            del points[5]
    return damage


@dataclass(frozen=True)
class Bad:
    """A bad answer: a damaged payload, or a raw status/body/header."""

    name: str
    problem: str
    damage: Callable[[Service, Any], None] | None = None
    status: int = 200
    body: str | None = None
    headers: dict[str, str] | None = None
    delay_s: float = 0.0


BAD = [
    Bad("http-401", "HTTP 401", status=401, body='{"error": "unauthorized"}'),
    Bad("http-403", "HTTP 403", status=403, body="<html>403 Forbidden</html>"),
    Bad("http-429-long-retry-after", "HTTP 429", status=429, body="slow down",
        headers={"Retry-After": "3600"}),
    Bad("http-500", "HTTP 500", status=500, body="oops"),
    Bad("timeout", "timed out", delay_s=0.6),
    Bad("truncated", "not valid JSON", body='{"data": [{"from": "2026-11-'),
    Bad("not-json", "not valid JSON", body="<html><body>maintenance</body></html>"),
    Bad("wrong-shape", "unexpected response shape", body='{"unexpected": {"shape": 1}}'),
    Bad("empty", "no data points", damage=_damage("empty")),
    Bad("nan", "bad value nan", damage=_damage("nan")),
    Bad("negative", "bad value -", damage=_damage("negative")),
    Bad("duplicate", "duplicate or unsorted timestamps", damage=_damage("duplicate")),
    Bad("unsorted", "duplicate or unsorted timestamps", damage=_damage("unsorted")),
    Bad("gap", "gap in the data", damage=_damage("gap")),
]


def _provider(service: Service, httpserver: HTTPServer,
              timeout: timedelta = PATIENT_TIMEOUT, **session: Any) -> Provider:
    config = web_config(service.kind, httpserver.url_for("/"), timeout=timeout,
                        **service.settings)
    provider = build_provider(config)
    assert isinstance(provider, WebProvider)
    provider.session = make_session(**session) if session else fast_session()
    return provider


def _serve_login(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/login").respond_with_json({"token": "wt-login-token"})


def _json_response(payload: Any) -> Response:
    # json.dumps writes NaN as the bare literal some services really send.
    return Response(json.dumps(payload), content_type="application/json")


def _serve_bad(httpserver: HTTPServer, service: Service, bad: Bad) -> None:
    def handler(_request: Request) -> Response:
        if bad.delay_s:
            time.sleep(bad.delay_s)
        if bad.damage is not None:
            payload = service.good(LATER)
            bad.damage(service, payload)
            return _json_response(payload)
        body = bad.body if bad.body is not None else json.dumps(service.good(LATER))
        return Response(body, status=bad.status, headers=bad.headers,
                        content_type="application/json")

    httpserver.expect_request(_path_at(service, LATER)).respond_with_handler(handler)


def _path_at(service: Service, now: datetime) -> str:
    if service.kind == "carbonintensity_uk":
        return f"/intensity/{now.strftime('%Y-%m-%dT%H:%MZ')}/fw48h"
    return service.path


def _still_serving(httpserver: HTTPServer, answered_before: int) -> bool:
    return len(httpserver.log) < answered_before + 2  # fast_session: one try, one retry


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'g.db'}")


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
@pytest.mark.parametrize("service", SERVICES, ids=[s.kind for s in SERVICES])
def test_bad_response_stores_nothing_and_keeps_earlier_forecast(
    httpserver: HTTPServer, store: Store, caplog: pytest.LogCaptureFixture,
    service: Service, bad: Bad,
) -> None:
    if service.kind == "watttime":
        _serve_login(httpserver)
    provider = _provider(service, httpserver)
    impatient = _provider(service, httpserver, READ_TIMEOUT) if bad.delay_s else provider
    httpserver.expect_oneshot_request(_path_at(service, NOW)).respond_with_response(
        _json_response(service.good(NOW)))
    first = forecasting.refresh_zone(store, provider, service.zone, NOW)
    assert first.ok, first.error
    horizon = NOW + timedelta(days=3)
    before = store.series(provider.name, service.zone, NOW, horizon)

    _serve_bad(httpserver, service, bad)
    answered_before = len(httpserver.log)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gridshift"):
        began = time.monotonic()
        result = forecasting.refresh_zone(store, impatient, service.zone, LATER)
        elapsed = time.monotonic() - began

    assert not result.ok
    assert bad.problem in result.error
    assert store.series(provider.name, service.zone, NOW, horizon) == before
    lines = [r.getMessage() for r in caplog.records if r.name == "gridshift.forecasting"]
    assert len(lines) == 1, lines
    assert provider.name in lines[0] and service.zone in lines[0] and bad.problem in lines[0]
    refresh = {(r.provider, r.zone, r.kind): r for r in store.refreshes()}
    recorded = refresh[(provider.name, service.zone, "forecast")]
    assert not recorded.ok and bad.problem in recorded.message
    assert elapsed < MAX_RETRY_AFTER_S  # even the long Retry-After is not waited for

    # The service recovers: the next refresh stores the new forecast. (The one-threaded
    # server first finishes the requests the client gave up on.)
    if bad.delay_s:
        wait_for(lambda: not _still_serving(httpserver, answered_before), timeout=10,
                 what="the server to finish the abandoned requests")
    httpserver.clear_all_handlers()
    if service.kind == "watttime":
        _serve_login(httpserver)
    httpserver.expect_oneshot_request(_path_at(service, LATER)).respond_with_response(
        _json_response(service.good(LATER)))
    again = forecasting.refresh_zone(store, provider, service.zone, LATER)
    assert again.ok and again.stored > 0


@pytest.mark.parametrize("service", SERVICES, ids=[s.kind for s in SERVICES])
def test_short_horizon_is_stored_and_reported(
    httpserver: HTTPServer, store: Store, service: Service
) -> None:
    if service.kind == "watttime":
        _serve_login(httpserver)
    payload = service.good(NOW)
    points = service.points(payload)
    del points[4:]
    httpserver.expect_oneshot_request(_path_at(service, NOW)).respond_with_response(
        _json_response(payload))
    provider = _provider(service, httpserver)
    result = forecasting.refresh_zone(store, provider, service.zone, NOW)
    assert result.ok and result.points == result.stored == 4
    stored = store.series(provider.name, service.zone, NOW, NOW + timedelta(days=3))
    assert len(stored) == 4
    if provider.usual_horizon is not None:
        assert "horizon only" in result.note and "horizon only" in result.describe()


def test_long_retry_after_does_not_hang_a_production_session(httpserver: HTTPServer) -> None:
    service = SERVICES[0]
    httpserver.expect_request(_path_at(service, NOW)).respond_with_data(
        "rate limited", status=429, headers={"Retry-After": "3600"})
    provider = _provider(service, httpserver, retries=3, backoff=0.5)
    began = time.monotonic()
    with pytest.raises(Exception, match=r"HTTP 429.*wait 3600 s"):
        provider.fetch_forecast(service.zone, NOW)
    assert time.monotonic() - began < 3
    assert len(httpserver.log) == 1  # no retry: the next scheduled refresh tries again


def test_short_retry_after_is_honoured_and_retried(httpserver: HTTPServer) -> None:
    service = SERVICES[0]
    path = _path_at(service, NOW)
    httpserver.expect_oneshot_request(path).respond_with_data(
        "rate limited", status=429, headers={"Retry-After": "1"})
    httpserver.expect_oneshot_request(path).respond_with_response(
        _json_response(service.good(NOW)))
    provider = _provider(service, httpserver, retries=3, backoff=0)
    began = time.monotonic()
    points = provider.fetch_forecast(service.zone, NOW)
    assert len(points) == len(uk_forecast_values())
    assert time.monotonic() - began >= 1.0
    assert len(httpserver.log) == 2


def test_unreachable_service_is_a_provider_error(store: Store) -> None:
    service = SERVICES[1]
    config = web_config(service.kind, "http://127.0.0.1:9", **service.settings)
    provider = build_provider(config)
    assert isinstance(provider, WebProvider)
    provider.session = make_session(retries=0)
    result = forecasting.refresh_zone(store, provider, service.zone, NOW)
    assert not result.ok and "cannot connect" in result.error


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.sampled_from(["2026-11-26T10:00Z", "2026-11-26T10:00:00+00:00", "01:00:00",
                       "lbs_co2_per_mwh", "percentile", "co2_moer", "lifecycle"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["data", "forecast", "history", "meta", "from", "to", "intensity",
                         "forecast", "actual", "carbonIntensity", "datetime", "updatedAt",
                         "point_time", "value", "units", "generated_at", "forecastData",
                         "timestamp", "duration", "rating", "time", "location",
                         "emissionFactorType", "isEstimated", "data_point_period_seconds"]),
        children, max_size=6),
    max_leaves=20,
)
# Values at the edge of what Python's floats and datetimes can hold.
EXTREMES = st.sampled_from([
    "9999-12-31T23:59:59+00:00", "0001-01-01T00:00Z", "99999.23:00:00", 10**400, -(10**400),
    10**15, 1e308, -1, 0, float("inf"), float("nan"), "", [], {},
])
PARSERS: list[Callable[[Any], object]] = [
    lambda p: uk.parse_forecast(p, "national"),
    lambda p: uk.parse_forecast(p, "12"),
    uk.parse_actuals,
    lambda p: em.parse_forecast(p, None),
    lambda p: em.parse_actuals(p, None),
    lambda p: wt.parse_series(p, "forecast"),
    lambda p: wt.parse_series(p, "actual"),
    lambda p: gsf.parse_forecast(p, "eastus", "marginal", None),
    lambda p: gsf.parse_actuals(p, "marginal", None),
]


@settings(max_examples=300, deadline=None)
@given(payload=JSON, which=st.integers(0, len(PARSERS) - 1))
def test_any_payload_parses_or_raises_provider_error(payload: Any, which: int) -> None:
    """Whatever a service sends, a parser returns checked points or a ProviderError."""
    try:
        points = PARSERS[which](payload)
    except ProviderError:
        return
    assert isinstance(points, list)


def _replace_somewhere(payload: Any, data: st.DataObject, replacement: Any) -> Any:
    """``payload`` with one randomly chosen node (drawn by ``data``) replaced."""
    leaf = not isinstance(payload, (dict, list)) or not payload
    if leaf or data.draw(st.integers(0, 5)) == 0:
        return replacement
    keys = list(payload) if isinstance(payload, dict) else list(range(len(payload)))
    key = data.draw(st.sampled_from(keys))
    changed = copy.copy(payload)
    changed[key] = _replace_somewhere(payload[key], data, replacement)
    return changed


SHORT_GOOD: list[tuple[Callable[[Any], object], Any]] = [
    (PARSERS[0], uk_national(NOW, uk_forecast_values()[:6])),
    (PARSERS[3], em_forecast(NOW, em_values()[:6], NOW)),
    (PARSERS[5], wt_forecast(NOW, wt_lbs_values(6), NOW)),
    (PARSERS[7], casdk_forecast(NOW, wt_lbs_values(6), NOW)),
]


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, len(SHORT_GOOD) - 1), replacement=st.one_of(EXTREMES, JSON),
       data=st.data())
def test_a_damaged_real_shape_parses_or_raises_provider_error(
    which: int, replacement: Any, data: st.DataObject
) -> None:
    parse, good = SHORT_GOOD[which]
    try:
        points = parse(_replace_somewhere(good, data, replacement))
    except ProviderError:
        return
    assert isinstance(points, list)
