"""Fetching forecasts into the store, and reading them back per region for display.

Used by the daemon's periodic refresh and by ``gridshift forecast --refresh``. A failed or
malformed fetch stores nothing and keeps the previous forecasts; the outcome of every
fetch is recorded for ``gridshift status``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler import render
from scheduler.config import Config
from scheduler.providers import Provider, ProviderError, build_provider
from scheduler.store import Series, Store
from scheduler.timespec import format_local, iso_utc

log = logging.getLogger("gridshift.forecasting")


@dataclass(frozen=True)
class RefreshResult:
    provider: str
    zone: str
    ok: bool
    points: int = 0
    stored: int = 0
    horizon_end: datetime | None = None
    vintage: datetime | None = None
    error: str = ""

    def describe(self) -> str:
        if not self.ok:
            return f"{self.provider} zone {self.zone}: FAILED: {self.error}"
        return (f"{self.provider} zone {self.zone}: {self.points} points ({self.stored} new), "
                f"horizon to {format_local(self.horizon_end)}, "
                f"vintage {format_local(self.vintage)}")


def zones_of(config: Config, regions: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Distinct (provider, zone) pairs of the given regions (default: all), in config order."""
    names = regions if regions is not None else list(config.regions)
    pairs: dict[tuple[str, str], None] = {}
    for name in names:
        settings = config.regions[name]
        pairs[(settings.provider, settings.zone)] = None
    return list(pairs)


def refresh_zone(store: Store, provider: Provider, zone: str, now: datetime) -> RefreshResult:
    """Fetch one zone's forecast and store it; a failure changes no forecast."""
    try:
        points = provider.fetch_forecast(zone, now)
    except ProviderError as error:
        log.warning("refresh %s zone %s failed: %s", provider.name, zone, error)
        store.record_refresh(provider.name, zone, "forecast", now, False, str(error))
        return RefreshResult(provider.name, zone, False, error=str(error))
    stored = store.add_points(provider.name, zone, points, now)
    horizon = max((p.end for p in points), default=None)
    vintage = max((p.vintage or now for p in points), default=None)
    result = RefreshResult(provider.name, zone, True, len(points), stored, horizon, vintage)
    log.info("refresh %s zone %s: %d points, %d new, horizon to %s", provider.name, zone,
             len(points), stored, iso_utc(horizon))
    store.record_refresh(provider.name, zone, "forecast", now, True,
                         f"{len(points)} points, {stored} new", len(points), horizon)
    return result


def refresh_all(
    config: Config, store: Store, now: datetime, regions: Sequence[str] | None = None,
    providers: Mapping[str, Provider] | None = None,
) -> list[RefreshResult]:
    built = dict(providers or {})
    results = []
    for provider_name, zone in zones_of(config, regions):
        if provider_name not in built:
            built[provider_name] = build_provider(config.providers[provider_name])
        results.append(refresh_zone(store, built[provider_name], zone, now))
    return results


@dataclass(frozen=True)
class RegionView:
    region: str
    provider: str
    zone: str
    signal: str
    series: Series

    def as_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "provider": self.provider,
            "zone": self.zone,
            "signal": self.series.signal or self.signal,
            "units": self.series.units or "gco2_per_kwh",
            "points": [
                {"start": iso_utc(s), "end": iso_utc(e), "intensity": v, "vintage": iso_utc(g),
                 "signal": self.series.signal or self.signal, "basis": self.series.basis,
                 "estimated": est}
                for s, e, v, g, est in zip(self.series.starts, self.series.ends,
                                           self.series.values, self.series.vintages,
                                           self.series.estimated, strict=True)
            ],
        }

    def print_table(self) -> None:
        units = "index" if self.series.units == "percentile" else "gCO2eq/kWh"
        title = (f"{self.region} ({self.provider} zone {self.zone}; "
                 f"{self.series.signal or self.signal} intensity, {units})")
        if not len(self.series):
            render.message(f"{title}: no forecast stored from now on; "
                           f"try gridshift forecast --refresh")
            return
        top = max(self.series.values) or 1.0
        render.table(title, ("start", "end", "value", "", "vintage"), [
            (format_local(s), format_local(e), render.intensity(v),
             "#" * max(1, round(20 * v / top)), format_local(g))
            for s, e, v, g in zip(self.series.starts, self.series.ends, self.series.values,
                                  self.series.vintages, strict=True)
        ])


def region_views(
    config: Config, store: Store, regions: Sequence[str], now: datetime
) -> list[RegionView]:
    """Newest vintage for each slot from ``now`` on (the slot containing now included)."""
    far = datetime.max.replace(tzinfo=now.tzinfo)
    views = []
    for name in regions:
        settings = config.regions[name]
        series = store.series(settings.provider, settings.zone, now, far)
        views.append(RegionView(name, settings.provider, settings.zone,
                                config.providers[settings.provider].signal, series))
    return views
