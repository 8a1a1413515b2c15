"""carbon_aware_sdk (the GSF Carbon Aware WebAPI) against a local server with its shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pytest_httpserver import HTTPServer

from scheduler.providers.base import ProviderError
from scheduler.providers.carbon_aware_sdk import CarbonAwareSdk, parse_timespan
from tests.provider_payloads import (
    casdk_emissions,
    casdk_forecast,
    fast_session,
    web_config,
    wt_moer_g_per_kwh,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _provider(httpserver: HTTPServer, **settings: object) -> CarbonAwareSdk:
    config = web_config("carbon_aware_sdk", httpserver.url_for("/"), name="gsf", **settings)
    return CarbonAwareSdk(config, session=fast_session())


def test_forecast_reads_forecast_data_with_generated_at_as_vintage(
    httpserver: HTTPServer,
) -> None:
    values = wt_moer_g_per_kwh()
    generated = NOW - timedelta(minutes=4)
    httpserver.expect_oneshot_request(
        "/emissions/forecasts/current", query_string={"location": "eastus"},
    ).respond_with_json(casdk_forecast(NOW, values, generated))
    points = _provider(httpserver).fetch_forecast("eastus", NOW)
    httpserver.check_assertions()
    assert [p.value for p in points] == values
    assert points[0].start == NOW and points[-1].end == NOW + len(values) * timedelta(minutes=5)
    assert {(p.signal, p.units, p.vintage) for p in points} == {
        ("marginal", "gco2_per_kwh", generated)}


def test_configured_signal_and_basis_label_the_points(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/emissions/forecasts/current").respond_with_json(
        casdk_forecast(NOW, [300.0, 310.0, 305.0], NOW, minutes=60))
    points = _provider(httpserver, signal="average", basis="lifecycle").fetch_forecast(
        "eastus", NOW)
    assert {(p.signal, p.basis) for p in points} == {("average", "lifecycle")}
    assert all(p.end - p.start == HOUR for p in points)


def test_actuals_come_from_bylocations_with_timespan_durations(httpserver: HTTPServer) -> None:
    start = NOW - 6 * HOUR
    values = wt_moer_g_per_kwh()[:6]
    httpserver.expect_oneshot_request(
        "/emissions/bylocations",
        query_string={"location": "eastus", "time": "2026-11-26T04:00:00Z",
                      "toTime": "2026-11-26T10:00:00Z"},
    ).respond_with_json(casdk_emissions(start, values))
    points = _provider(httpserver).fetch_actuals("eastus", start, NOW)
    httpserver.check_assertions()
    assert [p.value for p in points] == values
    assert [(p.start, p.end) for p in points] == [
        (start + i * HOUR, start + (i + 1) * HOUR) for i in range(6)]
    assert {p.kind for p in points} == {"actual"}


def test_actuals_without_duration_last_until_the_next_entry(httpserver: HTTPServer) -> None:
    start = NOW - 3 * HOUR
    entries = casdk_emissions(start, [100.0, 120.0, 110.0])
    for entry in entries:
        del entry["duration"]
    httpserver.expect_oneshot_request("/emissions/bylocations").respond_with_json(entries)
    points = _provider(httpserver).fetch_actuals("eastus", start, NOW)
    assert [p.end - p.start for p in points] == [HOUR] * 3


@pytest.mark.parametrize(("text", "expected"), [
    ("00:05:00", timedelta(minutes=5)),
    ("01:00:00", HOUR),
    ("1.02:30:00", timedelta(days=1, hours=2, minutes=30)),
    ("00:00:30.5000000", timedelta(seconds=30)),
])
def test_dotnet_timespans(text: str, expected: timedelta) -> None:
    assert parse_timespan(text, "test") == expected


def test_a_forecast_for_another_location_is_refused(httpserver: HTTPServer) -> None:
    payload = casdk_forecast(NOW, [1.0, 2.0], NOW, location="westus")
    payload += casdk_forecast(NOW, [3.0, 4.0], NOW, location="northeurope")
    httpserver.expect_oneshot_request("/emissions/forecasts/current").respond_with_json(payload)
    with pytest.raises(ProviderError, match="expected one forecast for location 'eastus'"):
        _provider(httpserver).fetch_forecast("eastus", NOW)
