"""``carbon_aware_sdk``: a self-hosted Green Software Foundation Carbon Aware WebAPI.

Zones are the WebAPI's location names (``eastus``, ``westeurope``... as its location
configuration defines them). Values are gCO2/kWh. Whether they are marginal or average
depends on the data source the WebAPI is configured with (WattTime: marginal, the
default here; Electricity Maps: average): set the provider's ``signal`` (and ``basis``)
to match.

- forecast: ``GET /emissions/forecasts/current?location=L`` -> an array of
  EmissionsForecastDTO ``{generatedAt, requestedAt, location, dataStartAt, dataEndAt,
  windowSize, optimalDataPoints, forecastData: [{location, timestamp, duration, value}]}``
  with ``duration`` in minutes; the vintage is ``generatedAt``.
- actuals: ``GET /emissions/bylocations?location=L&time=&toTime=`` -> an array of
  EmissionsData ``{location, time, rating, duration}`` with ``duration`` a .NET TimeSpan
  such as ``"01:00:00"``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.providers.base import (
    ProviderError,
    WebProvider,
    check_points,
    overlapping,
    parse_time,
    parse_value,
    payload_parser,
    step_of,
)
from scheduler.records import PointRecord

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?$")


def api_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def forecast_request(base_url: str, location: str) -> tuple[str, dict[str, str]]:
    return f"{base_url}/emissions/forecasts/current", {"location": location}


def actuals_request(base_url: str, location: str, start: datetime,
                    end: datetime) -> tuple[str, dict[str, str]]:
    return f"{base_url}/emissions/bylocations", {
        "location": location, "time": api_time(start), "toTime": api_time(end),
    }


def parse_timespan(text: Any, where: str) -> timedelta:
    """A .NET TimeSpan as System.Text.Json writes it: ``[d.]hh:mm:ss[.fffffff]``."""
    match = _TIMESPAN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ProviderError(where, f"bad duration {text!r}")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


@payload_parser
def parse_forecast(payload: Any, location: str, signal: str, basis: str | None,
                   where: str = "carbon_aware_sdk") -> list[PointRecord]:
    if not isinstance(payload, list) or not all(isinstance(f, dict) for f in payload):
        raise ProviderError(where, "unexpected response shape (not an array of forecasts)")
    if not payload:
        raise ProviderError(where, "no forecast in the response")
    matching = [f for f in payload if f.get("location") == location]
    if len(matching) != 1 and len(payload) != 1:
        raise ProviderError(where, f"expected one forecast for location {location!r}, "
                                   f"got {len(matching)}")
    forecast = matching[0] if len(matching) == 1 else payload[0]
    data = forecast.get("forecastData")
    if not isinstance(data, list):
        raise ProviderError(where, "unexpected response shape (no 'forecastData' list)")
    generated = forecast.get("generatedAt")
    vintage = parse_time(generated, where) if generated else None
    points = []
    for item in data:
        if not isinstance(item, dict):
            raise ProviderError(where, "unexpected response shape (a point is not an object)")
        start = parse_time(item.get("timestamp"), where)
        minutes = item.get("duration")
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0:
            raise ProviderError(where, f"bad duration {minutes!r} at {start.isoformat()}")
        points.append(PointRecord(
            start=start, end=start + timedelta(minutes=minutes),
            value=parse_value(item.get("value"), where, start), kind="forecast",
            signal=signal, basis=basis, vintage=vintage,
        ))
    return check_points(points, where, contiguous=True)


@payload_parser
def parse_actuals(payload: Any, signal: str, basis: str | None,
                  where: str = "carbon_aware_sdk") -> list[PointRecord]:
    """EmissionsData entries; one without a duration lasts until the next entry."""
    if not isinstance(payload, list) or not all(isinstance(e, dict) for e in payload):
        raise ProviderError(where, "unexpected response shape (not an array of emissions)")
    if not payload:
        return []
    entries = payload
    starts = [parse_time(e.get("time"), where) for e in entries]
    fallback = step_of(starts, where, None) if any(e.get("duration") is None
                                                   for e in entries) else None
    points = []
    for entry, start in zip(entries, starts, strict=True):
        duration = entry.get("duration")
        length = parse_timespan(duration, where) if duration is not None else fallback
        assert length is not None
        points.append(PointRecord(
            start=start, end=start + length,
            value=parse_value(entry.get("rating"), where, start), kind="actual",
            signal=signal, basis=basis,
        ))
    return check_points(points, where)


class CarbonAwareSdk(WebProvider):
    kind = "carbon_aware_sdk"

    def fetch_forecast(self, zone: str, now: datetime) -> list[PointRecord]:
        url, params = forecast_request(self.base_url, zone)
        payload = self.get_json(url, zone, params=params)
        return parse_forecast(payload, zone, self.signal, self.config.basis, self.where(zone))

    def fetch_actuals(self, zone: str, start: datetime, end: datetime) -> list[PointRecord]:
        url, params = actuals_request(self.base_url, zone, start, end)
        payload = self.get_json(url, zone, params=params)
        points = parse_actuals(payload, self.signal, self.config.basis, self.where(zone))
        return overlapping(points, start, end)
