"""``carbonintensity_uk``: Great Britain's Carbon Intensity API (NESO; no key needed).

Zones: ``national``, a region id ``1``..``17``, or ``postcode:OUTCODE`` (e.g.
``postcode:RG10``). Slots are 30 minutes; values are average intensity in gCO2/kWh. The
API publishes no issue time, so each fetch's vintage is the fetch time.

- national forecast: ``GET /intensity/{from}/fw48h`` -> ``{"data": [slot, ...]}``
- regional forecast: ``GET /regional/intensity/{from}/fw48h/regionid/{id}`` (or
  ``.../postcode/{outcode}``) -> ``{"data": REGION}`` where REGION holds its own
  ``"data": [slot, ...]``; the docs show ``data`` as a one-element list of REGION and the
  live API returns the bare object: both are accepted.
- national actuals: ``GET /intensity/{from}/{to}`` (each slot has ``actual``, null until
  measured). Regional zones publish no actuals: the emissions review uses the newest
  forecast issued before the slot ended, labelled estimated.
"""

from __future__ import annotations

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
)
from scheduler.records import PointRecord

SLOT = timedelta(minutes=30)


def api_time(value: datetime) -> str:
    """The API's time format, e.g. ``2026-11-26T10:30Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def slot_floor(value: datetime) -> datetime:
    value = value.astimezone(UTC)
    return value.replace(minute=value.minute - value.minute % 30, second=0, microsecond=0)


def forecast_url(base_url: str, zone: str, now: datetime) -> str:
    start = api_time(slot_floor(now))
    if zone == "national":
        return f"{base_url}/intensity/{start}/fw48h"
    if zone.startswith("postcode:"):
        outcode = zone.removeprefix("postcode:")
        return f"{base_url}/regional/intensity/{start}/fw48h/postcode/{outcode}"
    return f"{base_url}/regional/intensity/{start}/fw48h/regionid/{zone}"


def actuals_url(base_url: str, start: datetime, end: datetime) -> str:
    return f"{base_url}/intensity/{api_time(slot_floor(start))}/{api_time(end)}"


def _slots(payload: Any, zone: str, where: str) -> list[Any]:
    """The list of slot objects, whichever nesting the endpoint used."""
    if not isinstance(payload, dict) or "data" not in payload:
        raise ProviderError(where, "unexpected response shape (no 'data')")
    data = payload["data"]
    if zone == "national":
        if not isinstance(data, list):
            raise ProviderError(where, "unexpected response shape ('data' is not a list)")
        return data
    region = data[0] if isinstance(data, list) and len(data) == 1 else data
    if not isinstance(region, dict) or not isinstance(region.get("data"), list):
        raise ProviderError(where, "unexpected regional response shape "
                                   "('data' holds no region with its own 'data' list)")
    slots: list[Any] = region["data"]
    return slots


def _interval(slot: Any, where: str) -> tuple[datetime, datetime, Any]:
    if not isinstance(slot, dict) or not isinstance(slot.get("intensity"), dict):
        raise ProviderError(where, "slot without from/to/intensity")
    if "from" not in slot or "to" not in slot:
        raise ProviderError(where, "slot without from/to/intensity")
    return parse_time(slot["from"], where), parse_time(slot["to"], where), slot["intensity"]


@payload_parser
def parse_forecast(payload: Any, zone: str, where: str = "carbonintensity_uk") -> list[PointRecord]:
    """Forecast slots of any zone's response; the whole response is refused if one is bad."""
    points = []
    for slot in _slots(payload, zone, where):
        start, end, intensity = _interval(slot, where)
        if "forecast" not in intensity:
            raise ProviderError(where, f"slot {start.isoformat()} has no intensity.forecast")
        value = parse_value(intensity["forecast"], where, start)
        points.append(PointRecord(start=start, end=end, value=value, kind="forecast",
                                  signal="average"))
    return check_points(points, where, contiguous=True)


@payload_parser
def parse_actuals(payload: Any, where: str = "carbonintensity_uk") -> list[PointRecord]:
    """National slots with a published ``actual``; slots still without one are skipped."""
    points = []
    for slot in _slots(payload, "national", where):
        start, end, intensity = _interval(slot, where)
        value = intensity.get("actual")
        if value is None:
            continue
        points.append(PointRecord(start=start, end=end, value=parse_value(value, where, start),
                                  kind="actual", signal="average"))
    return check_points(points, where) if points else []


class CarbonIntensityUK(WebProvider):
    kind = "carbonintensity_uk"
    usual_horizon = timedelta(hours=48)

    def fetch_forecast(self, zone: str, now: datetime) -> list[PointRecord]:
        payload = self.get_json(forecast_url(self.base_url, zone, now), zone)
        return parse_forecast(payload, zone, self.where(zone))

    def publishes_actuals(self, zone: str) -> bool:
        return zone == "national"

    def fetch_actuals(self, zone: str, start: datetime, end: datetime) -> list[PointRecord]:
        if not self.publishes_actuals(zone):
            return []
        payload = self.get_json(actuals_url(self.base_url, start, end), zone)
        return overlapping(parse_actuals(payload, self.where(zone)), start, end)
