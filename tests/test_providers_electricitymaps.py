"""electricitymaps (API v3) against a local HTTP server with the API's real shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pytest_httpserver import HTTPServer

from scheduler.providers.base import ProviderError
from scheduler.providers.electricitymaps import ElectricityMaps, parse_actuals
from tests.provider_payloads import (
    em_forecast,
    em_history,
    em_past_range,
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
