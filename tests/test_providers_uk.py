"""carbonintensity_uk against a local HTTP server serving the API's real response shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from scheduler import forecasting
from scheduler.providers.carbonintensity_uk import CarbonIntensityUK, forecast_url
from scheduler.store import Store
from tests.provider_payloads import (
    fast_session,
    load_json,
    uk_actuals_moved,
    uk_forecast_values,
    uk_national,
    uk_regional,
    web_config,
)

NOW = datetime(2023, 3, 14, 12, 10, tzinfo=UTC)
SLOT_START = datetime(2023, 3, 14, 12, 0, tzinfo=UTC)
SLOT = timedelta(minutes=30)


@pytest.fixture
def provider(httpserver: HTTPServer) -> CarbonIntensityUK:
    config = web_config("carbonintensity_uk", httpserver.url_for("/"), name="uk")
    return CarbonIntensityUK(config, session=fast_session())


def test_national_forecast_is_the_served_fw48h_series(
    httpserver: HTTPServer, provider: CarbonIntensityUK
) -> None:
    values = uk_forecast_values()
    httpserver.expect_oneshot_request("/intensity/2023-03-14T12:00Z/fw48h").respond_with_json(
        uk_national(SLOT_START, values))
    points = provider.fetch_forecast("national", NOW)
    assert [p.value for p in points] == values
    assert points[0].start == SLOT_START
    assert all(p.end - p.start == SLOT for p in points)
    assert points[-1].end == SLOT_START + len(values) * SLOT
    assert {(p.kind, p.signal, p.units, p.vintage) for p in points} == {
        ("forecast", "average", "gco2_per_kwh", None)}


@pytest.mark.parametrize("wrapped_in_list", [True, False], ids=["docs-list", "live-object"])
def test_regional_forecast_accepts_both_nestings(
    httpserver: HTTPServer, provider: CarbonIntensityUK, wrapped_in_list: bool
) -> None:
    values = uk_forecast_values()[:48]
    httpserver.expect_oneshot_request(
        "/regional/intensity/2023-03-14T12:00Z/fw48h/regionid/12"
    ).respond_with_json(uk_regional(SLOT_START, values, wrapped_in_list))
    points = provider.fetch_forecast("12", NOW)
    assert [p.value for p in points] == values
    assert [p.start for p in points] == [SLOT_START + i * SLOT for i in range(48)]


def test_postcode_zone_asks_for_the_outcode_and_reads_its_object(
    httpserver: HTTPServer, provider: CarbonIntensityUK
) -> None:
    values = uk_forecast_values()
    httpserver.expect_oneshot_request(
        "/regional/intensity/2023-03-14T12:00Z/fw48h/postcode/RG10"
    ).respond_with_json(uk_regional(SLOT_START, values, wrapped_in_list=False, postcode="RG10"))
    points = provider.fetch_forecast("postcode:RG10", NOW)
    assert [p.value for p in points] == values
    httpserver.check_assertions()


def test_forecast_url_floors_now_to_the_half_hour() -> None:
    late = datetime(2026, 11, 26, 10, 59, 59, tzinfo=UTC)
    assert forecast_url("http://x", "national", late) == "http://x/intensity/2026-11-26T10:30Z/fw48h"
    assert forecast_url("http://x", "3", late).endswith("/fw48h/regionid/3")


def test_national_actuals_come_from_the_range_endpoint(
    httpserver: HTTPServer, provider: CarbonIntensityUK
) -> None:
    start = datetime(2023, 3, 13, 12, 0, tzinfo=UTC)
    end = start + timedelta(hours=24)
    real = load_json("carbonintensity_uk/national_pt24h_example.json")
    httpserver.expect_oneshot_request(
        "/intensity/2023-03-13T12:00Z/2023-03-14T12:00Z").respond_with_json(real)
    points = provider.fetch_actuals("national", start, end)
    assert [p.value for p in points] == [s["intensity"]["actual"] for s in real["data"]]
    assert {p.kind for p in points} == {"actual"}
    assert points[0].start == start and points[-1].end == end


def test_slots_without_a_published_actual_are_skipped(
    httpserver: HTTPServer, provider: CarbonIntensityUK
) -> None:
    start = datetime(2023, 3, 13, 12, 0, tzinfo=UTC)
    payload = uk_actuals_moved(start)
    for slot in payload["data"][-3:]:
        slot["intensity"]["actual"] = None  # the latest slots are not measured yet
    httpserver.expect_oneshot_request(
        "/intensity/2023-03-13T12:00Z/2023-03-14T12:00Z").respond_with_json(payload)
    points = provider.fetch_actuals("national", start, start + timedelta(hours=24))
    assert len(points) == len(payload["data"]) - 3
    assert points[-1].end == start + (len(payload["data"]) - 3) * SLOT


@pytest.mark.parametrize("zone", ["12", "postcode:RG10"])
def test_regional_zones_have_no_actuals_and_ask_nothing(
    httpserver: HTTPServer, provider: CarbonIntensityUK, zone: str
) -> None:
    assert not provider.publishes_actuals(zone)
    assert provider.fetch_actuals(zone, NOW - timedelta(hours=24), NOW) == []
    assert httpserver.log == []


def test_refresh_stores_the_forecast_with_fetch_time_as_vintage(
    httpserver: HTTPServer, provider: CarbonIntensityUK, tmp_path: Path
) -> None:
    values = uk_forecast_values()
    httpserver.expect_oneshot_request("/intensity/2023-03-14T12:00Z/fw48h").respond_with_json(
        uk_national(SLOT_START, values))
    store = Store.open(f"sqlite:///{tmp_path / 'g.db'}")
    result = forecasting.refresh_zone(store, provider, "national", NOW)
    assert result.ok and result.points == result.stored == len(values)
    assert result.vintage == NOW and result.note == ""
    series = store.series("uk", "national", SLOT_START, SLOT_START + 48 * SLOT * 2)
    assert series.values == values
    assert set(series.vintages) == {NOW}
    assert series.signal == "average" and series.units == "gco2_per_kwh"
