"""``electricitymaps``: the Electricity Maps API v3 (a paid token; header ``auth-token``).

Zones are Electricity Maps zone keys (``DE``, ``FR``, ``US-CAL-CISO``...). Values are
average (not marginal) intensity in gCO2eq/kWh on a lifecycle basis unless the provider's
``basis = "direct"`` asks for direct emissions (``emissionFactorType``).

- forecast: ``GET /v3/carbon-intensity/forecast?zone=Z`` ->
  ``{"zone", "forecast": [{"carbonIntensity", "datetime"}, ...], "updatedAt"}``; each
  point holds from its ``datetime`` to the next one (hourly); the vintage is ``updatedAt``.
- actuals: ``GET /v3/carbon-intensity/past-range?zone=Z&start=&end=`` ->
  ``{"zone", "data": [entry, ...]}`` (any window, so gridshift uses it for every window;
  the parser also reads ``/history``'s ``{"zone", "history": [entry, ...]}``), each
  entry ``{"carbonIntensity", "datetime", "updatedAt", "emissionFactorType",
  "isEstimated", ...}``; each entry's ``updatedAt`` is its vintage, ``isEstimated`` is kept.
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
    step_of,
)
from scheduler.records import PointRecord

HOUR = timedelta(hours=1)
BASES = ("lifecycle", "direct")


def _params(zone: str, basis: str | None) -> dict[str, str]:
    params = {"zone": zone}
    if basis is not None:
        params["emissionFactorType"] = basis
    return params


def forecast_request(base_url: str, zone: str, basis: str | None) -> tuple[str, dict[str, str]]:
    return f"{base_url}/v3/carbon-intensity/forecast", _params(zone, basis)


def actuals_request(base_url: str, zone: str, start: datetime, end: datetime,
                    basis: str | None) -> tuple[str, dict[str, str]]:
    """``past-range`` serves any window (``history`` only the last 24 h before the call)."""
    params = _params(zone, basis)
    params["start"] = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    params["end"] = end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{base_url}/v3/carbon-intensity/past-range", params


def _basis(value: Any, fallback: str | None, where: str) -> str | None:
    if value is None:
        return fallback
    if value not in BASES:
        raise ProviderError(where, f"unknown emissionFactorType {value!r}")
    return str(value)


def _list_under(payload: Any, key: str, where: str) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get(key), list):
        raise ProviderError(where, f"unexpected response shape (no '{key}' list)")
    items: list[Any] = payload[key]
    if not all(isinstance(item, dict) for item in items):
        raise ProviderError(where, f"unexpected response shape ('{key}' holds non-objects)")
    return items


def _with_ends(starts: list[datetime], where: str) -> list[tuple[datetime, datetime]]:
    """Each point lasts until the next one; the last lasts one step."""
    step = step_of(starts, where, HOUR)
    return [(start, start + step) for start in starts]


@payload_parser
def parse_forecast(payload: Any, basis: str | None, where: str = "electricitymaps"
                   ) -> list[PointRecord]:
    items = _list_under(payload, "forecast", where)
    assert isinstance(payload, dict)
    vintage = parse_time(payload["updatedAt"], where) if payload.get("updatedAt") else None
    point_basis = _basis(payload.get("emissionFactorType"), basis or "lifecycle", where)
    starts = [parse_time(item.get("datetime"), where) for item in items]
    points = [
        PointRecord(start=start, end=end,
                    value=parse_value(item.get("carbonIntensity"), where, start),
                    kind="forecast", signal="average", basis=point_basis,
                    estimated=bool(item.get("isEstimated", False)), vintage=vintage)
        for item, (start, end) in zip(items, _with_ends(starts, where), strict=True)
    ]
    return check_points(points, where, contiguous=True)


@payload_parser
def parse_actuals(payload: Any, basis: str | None, where: str = "electricitymaps"
                  ) -> list[PointRecord]:
    """Entries of ``history`` or ``past-range``; an entry without a value is skipped."""
    key = "history" if isinstance(payload, dict) and "history" in payload else "data"
    items = [item for item in _list_under(payload, key, where)
             if item.get("carbonIntensity") is not None]
    if not items:
        return []
    starts = [parse_time(item.get("datetime"), where) for item in items]
    points = []
    for item, (start, end) in zip(items, _with_ends(starts, where), strict=True):
        is_estimated = item.get("isEstimated", False)
        if not isinstance(is_estimated, bool):
            raise ProviderError(where, f"bad isEstimated {is_estimated!r}")
        updated = item.get("updatedAt")
        points.append(PointRecord(
            start=start, end=end, value=parse_value(item.get("carbonIntensity"), where, start),
            kind="actual", signal="average",
            basis=_basis(item.get("emissionFactorType"), basis or "lifecycle", where),
            estimated=is_estimated, vintage=parse_time(updated, where) if updated else None,
        ))
    return check_points(points, where)


class ElectricityMaps(WebProvider):
    kind = "electricitymaps"
    usual_horizon = timedelta(hours=24)

    def _headers(self, zone: str) -> dict[str, str]:
        if not self.config.token:
            raise ProviderError(self.where(zone), "no API token: set token in the config, or "
                                "GRIDSHIFT_ELECTRICITYMAPS_TOKEN")
        return {"auth-token": self.config.token}

    def fetch_forecast(self, zone: str, now: datetime) -> list[PointRecord]:
        url, params = forecast_request(self.base_url, zone, self.config.basis)
        payload = self.get_json(url, zone, params=params, headers=self._headers(zone))
        return parse_forecast(payload, self.config.basis, self.where(zone))

    def fetch_actuals(self, zone: str, start: datetime, end: datetime) -> list[PointRecord]:
        url, params = actuals_request(self.base_url, zone, start, end, self.config.basis)
        payload = self.get_json(url, zone, params=params, headers=self._headers(zone))
        return overlapping(parse_actuals(payload, self.config.basis, self.where(zone)),
                           start, end)
