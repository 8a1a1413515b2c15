"""``watttime``: the WattTime API v3 (a user name and password; a login token per session).

Zones are WattTime region abbreviations (``CAISO_NORTH``, ``PJM_DC``...). The signal is
``co2_moer``, the marginal operating emissions rate: marginal, direct (operating) basis.

- login: ``GET /login`` with HTTP basic auth -> ``{"token": "..."}``, valid 30 minutes.
  The token lives in memory only; it is renewed before it expires and once on a 401.
- forecast: ``GET /v3/forecast?region=R&signal_type=co2_moer`` ->
  ``{"data": [{"point_time", "value"}, ...], "meta": {"generated_at", "units",
  "data_point_period_seconds", ...}}``; the vintage is ``meta.generated_at``.
- actuals: ``GET /v3/historical?region=R&start=&end=&signal_type=co2_moer`` -> the same
  shape; ``imputed_data_used`` marks a point estimated.

Units: ``lbs_co2_per_mwh`` is converted to gCO2/kWh (1 lb/MWh = 0.453592 g/kWh);
``percentile`` (a 0-100 relative index, for regions a plan only allows as an index) is
stored as it is with units ``percentile`` and is never used as emissions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from scheduler.config import ProviderConfig
from scheduler.providers.base import (
    HttpStatusError,
    ProviderError,
    WebProvider,
    check_points,
    overlapping,
    parse_time,
    parse_value,
    payload_parser,
)
from scheduler.records import PointRecord
from scheduler.units import GRAMS_PER_KWH, PERCENTILE

LBS_PER_MWH_TO_G_PER_KWH = 0.453592
SIGNAL_TYPE = "co2_moer"
TOKEN_LIFETIME_S = 30 * 60
# Renew this long before the 30 minutes are up, so a token never expires mid-request.
TOKEN_MARGIN_S = 5 * 60
DEFAULT_PERIOD = timedelta(minutes=5)


def login_url(base_url: str) -> str:
    return f"{base_url}/login"


def forecast_request(base_url: str, region: str) -> tuple[str, dict[str, str]]:
    return f"{base_url}/v3/forecast", {"region": region, "signal_type": SIGNAL_TYPE}


def actuals_request(base_url: str, region: str, start: datetime,
                    end: datetime) -> tuple[str, dict[str, str]]:
    return f"{base_url}/v3/historical", {
        "region": region,
        "start": start.astimezone(UTC).isoformat(),
        "end": end.astimezone(UTC).isoformat(),
        "signal_type": SIGNAL_TYPE,
    }


def parse_token(payload: Any, where: str) -> str:
    token = payload.get("token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise ProviderError(where, "login answered without a token")
    return token


def convert(value: float, units: str, where: str) -> tuple[float, str]:
    """A value in the units gridshift stores: gCO2/kWh, or the percentile index as is."""
    if units == "lbs_co2_per_mwh":
        return value * LBS_PER_MWH_TO_G_PER_KWH, GRAMS_PER_KWH
    if units == PERCENTILE:
        return value, PERCENTILE
    raise ProviderError(where, f"unsupported units {units!r}")


@payload_parser
def parse_series(payload: Any, kind: str, where: str = "watttime") -> list[PointRecord]:
    """``/v3/forecast`` or ``/v3/historical``: points of ``meta.data_point_period_seconds``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list) \
            or not isinstance(payload.get("meta"), dict):
        raise ProviderError(where, "unexpected response shape (no 'data' list and 'meta')")
    meta = payload["meta"]
    units = meta.get("units")
    if not isinstance(units, str):
        raise ProviderError(where, "response has no meta.units")
    signal_type = meta.get("signal_type", SIGNAL_TYPE)
    if signal_type != SIGNAL_TYPE:
        raise ProviderError(where, f"unexpected signal_type {signal_type!r}")
    period_s = meta.get("data_point_period_seconds", DEFAULT_PERIOD.total_seconds())
    if isinstance(period_s, bool) or not isinstance(period_s, (int, float)) or period_s <= 0:
        raise ProviderError(where, f"bad data_point_period_seconds {period_s!r}")
    period = timedelta(seconds=period_s)
    generated = meta.get("generated_at")
    vintage = parse_time(generated, where) if generated else None
    points = []
    for item in payload["data"]:
        if not isinstance(item, dict):
            raise ProviderError(where, "unexpected response shape ('data' holds non-objects)")
        start = parse_time(item.get("point_time"), where)
        value, stored_units = convert(parse_value(item.get("value"), where, start), units, where)
        updated = item.get("last_updated")
        points.append(PointRecord(
            start=start, end=start + period, value=value, kind=kind, units=stored_units,
            signal="marginal", basis="direct", estimated=bool(item.get("imputed_data_used")),
            vintage=vintage or (parse_time(updated, where) if updated else None),
        ))
    return check_points(points, where, contiguous=kind == "forecast")


class WattTime(WebProvider):
    kind = "watttime"
    usual_horizon = timedelta(hours=24)

    def __init__(self, config: ProviderConfig, session: requests.Session | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config, session)
        self._monotonic = monotonic
        self._token: str | None = None
        self._token_at = 0.0

    def secrets(self) -> list[str]:
        return [*super().secrets(), *([self._token] if self._token else [])]

    def _login(self, zone: str) -> str:
        if not (self.config.username and self.config.password):
            raise ProviderError(self.where(zone), "no user name or password: set username and "
                                "password in the config, or GRIDSHIFT_WATTTIME_USERNAME and "
                                "GRIDSHIFT_WATTTIME_PASSWORD")
        payload = self.get_json(login_url(self.base_url), zone,
                                auth=(self.config.username, self.config.password))
        self._token = parse_token(payload, self.where(zone))
        self._token_at = self._monotonic()
        return self._token

    def _valid_token(self, zone: str) -> str:
        age = self._monotonic() - self._token_at
        if self._token is None or age >= TOKEN_LIFETIME_S - TOKEN_MARGIN_S:
            return self._login(zone)
        return self._token

    def _get_authorised(self, url: str, zone: str, params: dict[str, str]) -> Any:
        """One call with a valid token; a 401 renews the token and tries once more."""
        for attempt in range(2):
            token = self._valid_token(zone)
            try:
                return self.get_json(url, zone, params=params,
                                     headers={"Authorization": f"Bearer {token}"})
            except HttpStatusError as error:
                if error.status != 401 or attempt == 1:
                    raise
                self._token = None  # expired or revoked early: log in again
        raise AssertionError("unreachable")

    def fetch_forecast(self, zone: str, now: datetime) -> list[PointRecord]:
        url, params = forecast_request(self.base_url, zone)
        payload = self._get_authorised(url, zone, params)
        return parse_series(payload, "forecast", self.where(zone))

    def fetch_actuals(self, zone: str, start: datetime, end: datetime) -> list[PointRecord]:
        url, params = actuals_request(self.base_url, zone, start, end)
        payload = self._get_authorised(url, zone, params)
        if isinstance(payload, dict) and payload.get("data") == []:
            return []
        return overlapping(parse_series(payload, "actual", self.where(zone)), start, end)
