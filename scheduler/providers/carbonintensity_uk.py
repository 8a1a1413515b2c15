"""``carbonintensity_uk``: Great Britain's Carbon Intensity API (NESO; no key needed).

Zones: ``national``, a region id ``1``..``17``, or ``postcode:OUTCODE``. Slots are 30
minutes; values are average intensity in gCO2/kWh. The API publishes no issue time, so
each fetch's vintage is the fetch time.

- national forecast: ``GET /intensity/{from}/fw48h`` -> ``{"data": [slot, ...]}``
- regional forecast: ``GET /regional/intensity/{from}/fw48h/regionid/{id}`` (or
  ``.../postcode/{outcode}``) -> ``{"data": REGION}`` where REGION holds its own
  ``"data": [slot, ...]``; the docs show ``data`` as a one-element list of REGION and the
  live API returns the bare object: both are accepted.
- national actuals: ``GET /intensity/{from}/{to}`` (each slot has ``actual``); regional
  zones publish no actuals (the emissions review falls back to estimated forecasts).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.providers.base import ProviderError, WebProvider, check_points
from scheduler.store import PointRecord

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
        raise ProviderError(f"{where}: unexpected response shape (no 'data')")
    data = payload["data"]
    if zone == "national":
        if not isinstance(data, list):
            raise ProviderError(f"{where}: unexpected response shape ('data' is not a list)")
        return data
    region = data[0] if isinstance(data, list) and len(data) == 1 else data
    if not isinstance(region, dict) or not isinstance(region.get("data"), list):
        raise ProviderError(f"{where}: unexpected regional response shape")
    slots: list[Any] = region["data"]
    return slots


def _parse_time(text: Any, where: str) -> datetime:
    if not isinstance(text, str):
        raise ProviderError(f"{where}: bad time {text!r}")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ProviderError(f"{where}: bad time {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_forecast(payload: Any, zone: str, where: str = "carbonintensity_uk") -> list[PointRecord]:
    points = []
    for slot in _slots(payload, zone, where):
        try:
            value = slot["intensity"]["forecast"]
            start, end = slot["from"], slot["to"]
        except (KeyError, TypeError):
            raise ProviderError(f"{where}: slot without from/to/intensity.forecast") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProviderError(f"{where}: bad forecast value {value!r}")
        points.append(PointRecord(start=_parse_time(start, where), end=_parse_time(end, where),
                                  value=float(value), kind="forecast", signal="average"))
    return check_points(points, where)


def parse_actuals(payload: Any, where: str = "carbonintensity_uk") -> list[PointRecord]:
    """National slots with a published ``actual``; slots still without one are skipped."""
    points = []
    for slot in _slots(payload, "national", where):
        try:
            value = slot["intensity"].get("actual")
            start, end = slot["from"], slot["to"]
        except (KeyError, TypeError, AttributeError):
            raise ProviderError(f"{where}: slot without from/to/intensity") from None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProviderError(f"{where}: bad actual value {value!r}")
        points.append(PointRecord(start=_parse_time(start, where), end=_parse_time(end, where),
                                  value=float(value), kind="actual", signal="average"))
    return check_points(points, where) if points else []


class CarbonIntensityUK(WebProvider):
    kind = "carbonintensity_uk"

    def fetch_forecast(self, zone: str, now: datetime) -> list[PointRecord]:
        assert self.config.base_url is not None
        payload = self.get_json(forecast_url(self.config.base_url, zone, now), zone)
        return parse_forecast(payload, zone, f"{self.name} ({self.kind}) zone {zone}")

    def fetch_actuals(self, zone: str, start: datetime, end: datetime) -> list[PointRecord]:
        if zone != "national":
            return []
        assert self.config.base_url is not None
        payload = self.get_json(actuals_url(self.config.base_url, start, end), zone)
        points = parse_actuals(payload, f"{self.name} ({self.kind}) zone {zone}")
        return [p for p in points if p.start < end and p.end > start]
