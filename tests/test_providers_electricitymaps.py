"""electricitymaps (API v3) against a local HTTP server with the API's real shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from scheduler.forecasting import refresh_actuals_zone
from scheduler.providers.base import ProviderError
from scheduler.providers.electricitymaps import ElectricityMaps, parse_actuals
from scheduler.store import Store
from tests.provider_payloads import (
    em_forecast,
    em_history,
    em_past_range,
    em_time,
    em_values,
    fast_session,
    web_config,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
TOKEN = "em-secret-token-7f3a"


def _provider(httpserver: HTTPServer, **settings: object) -> ElectricityMaps:
    settings.setdefault("token", TOKEN)
    config = web_config("electricitymaps", httpserver.url_for("/"), name="em", **settings)
    return ElectricityMaps(config, session=fast_session())


def test_forecast_sends_the_token_header_and_keeps_vintage_and_basis(
    httpserver: HTTPServer,
) -> None:
    values = em_values()
    updated = NOW - timedelta(minutes=17)
    httpserver.expect_oneshot_request(
        "/v3/carbon-intensity/forecast", query_string={"zone": "DE"},
        headers={"auth-token": TOKEN},
    ).respond_with_json(em_forecast(NOW, values, updated))
    points = _provider(httpserver).fetch_forecast("DE", NOW)
    httpserver.check_assertions()
    assert [p.value for p in points] == values
    assert [p.start for p in points] == [NOW + i * HOUR for i in range(len(values))]
    assert all(p.end - p.start == HOUR for p in points)
    assert {(p.signal, p.basis, p.units, p.vintage, p.estimated) for p in points} == {
        ("average", "lifecycle", "gco2_per_kwh", updated, False)}


def test_direct_basis_is_requested_and_labelled(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request(
        "/v3/carbon-intensity/forecast",
        query_string={"zone": "FR", "emissionFactorType": "direct"},
    ).respond_with_json(em_forecast(NOW, em_values(), NOW, zone="FR"))
    points = _provider(httpserver, basis="direct").fetch_forecast("FR", NOW)
    httpserver.check_assertions()
    assert {p.basis for p in points} == {"direct"}


def test_actuals_come_from_past_range_with_estimated_flags(httpserver: HTTPServer) -> None:
    start = NOW - 24 * HOUR
    payload = em_past_range(start)
    httpserver.expect_oneshot_request(
        "/v3/carbon-intensity/past-range",
        query_string={"zone": "DE", "start": "2026-11-25T10:00:00Z",
                      "end": "2026-11-26T10:00:00Z"},
        headers={"auth-token": TOKEN},
    ).respond_with_json(payload)
    points = _provider(httpserver).fetch_actuals("DE", start, NOW)
    httpserver.check_assertions()
    entries = payload["data"]
    assert [p.value for p in points] == [e["carbonIntensity"] for e in entries]
    assert [p.estimated for p in points] == [e["isEstimated"] for e in entries]
    assert any(p.estimated for p in points) and not all(p.estimated for p in points)
    assert {(p.kind, p.signal, p.basis) for p in points} == {("actual", "average", "lifecycle")}
    assert points[0].vintage == datetime.fromisoformat(entries[0]["updatedAt"])


def test_the_real_history_response_parses() -> None:
    history = em_history()
    points = parse_actuals(history, None)
    assert len(points) == len(history["history"])
    assert points[0].start == datetime(2024, 3, 5, 20, tzinfo=UTC)
    assert points[-1].end == datetime(2024, 3, 6, 20, tzinfo=UTC)


def test_missing_token_fails_with_a_message_naming_the_setting(httpserver: HTTPServer) -> None:
    provider = _provider(httpserver, token=None)
    with pytest.raises(ProviderError, match="GRIDSHIFT_ELECTRICITYMAPS_TOKEN"):
        provider.fetch_forecast("DE", NOW)
    assert httpserver.log == []


def test_an_unknown_emission_factor_type_is_refused(httpserver: HTTPServer) -> None:
    payload = em_forecast(NOW, em_values(), NOW)
    payload["emissionFactorType"] = "mystery"
    httpserver.expect_oneshot_request("/v3/carbon-intensity/forecast").respond_with_json(payload)
    with pytest.raises(ProviderError, match="emissionFactorType"):
        _provider(httpserver).fetch_forecast("DE", NOW)


def test_estimated_actuals_are_fetched_again_until_measured(httpserver: HTTPServer,
                                                            tmp_path: Path) -> None:
    """Electricity Maps marks its latest hours isEstimated and revises them later. The
    next actuals refresh goes back to the oldest estimated hour, so the measured values
    replace the estimates (jobs wait for them) instead of being skipped for ever."""

    def past_range(first: datetime, values: list[int], estimated: list[bool],
                   updated: datetime) -> dict[str, Any]:
        entries = em_past_range(first)["data"][:len(values)]
        for entry, value, flag in zip(entries, values, estimated, strict=True):
            entry.update(carbonIntensity=value, isEstimated=flag, updatedAt=em_time(updated),
                         estimationMethod="TIME_SLICER_AVERAGE" if flag else None)
        return {"zone": "DE", "data": entries}

    def expect(start: datetime, end: datetime, payload: dict[str, Any]) -> None:
        httpserver.expect_oneshot_request(
            "/v3/carbon-intensity/past-range",
            query_string={"zone": "DE", "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                          "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")},
        ).respond_with_json(payload)

    store = Store.open(f"sqlite:///{tmp_path / 'gridshift.db'}")
    provider = _provider(httpserver)
    expect(NOW - 48 * HOUR, NOW, past_range(NOW - 4 * HOUR, [100, 110, 120, 130],
                                            [False, False, True, True], NOW))
    assert refresh_actuals_zone(store, provider, "DE", NOW).ok
    later = NOW + HOUR
    expect(NOW - 2 * HOUR, later, past_range(NOW - 2 * HOUR, [125, 135, 140],
                                             [False, False, True], later))
    assert refresh_actuals_zone(store, provider, "DE", later).ok
    httpserver.check_assertions()

    series = store.series("em", "DE", NOW - 4 * HOUR, later, kind="actual")
    store.close()
    assert series.starts == [NOW + i * HOUR for i in range(-4, 1)]
    assert (series.values, series.estimated) == ([100, 110, 125, 135, 140],
                                                 [False, False, False, False, True])
