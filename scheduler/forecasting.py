"""Fetching forecasts into the store, and reading them back per region for display.

Used by the daemon's periodic refresh and by ``gridshift forecast --refresh``. A failed or
malformed fetch stores nothing and keeps the previous forecasts; the outcome of every
fetch is recorded for ``gridshift status``. ``refresh_actuals`` does the same for the
actual (historical) intensity of the recent past, for the emissions review.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler import render
from scheduler.config import Config
from scheduler.providers import Provider, ProviderError, build_provider
from scheduler.records import PointRecord, Series
from scheduler.store import Store
from scheduler.timespec import iso_utc
from scheduler.units import GRAMS_PER_KWH

log = logging.getLogger("gridshift.forecasting")


# How far back the daemon asks for actuals when none are stored yet; afterwards it asks
# from the end of the newest stored actual (never further back than this).
ACTUALS_LOOKBACK = timedelta(hours=48)


@dataclass(frozen=True)
class RefreshResult:
    """The outcome of one fetch for one (provider, zone): what ``forecast --refresh`` and
    the daemon's log report. ``error`` and ``note`` never hold a credential."""

    provider: str
    zone: str
    ok: bool
    points: int = 0
    stored: int = 0
    horizon_end: datetime | None = None
    vintage: datetime | None = None
    error: str = ""
    kind: str = "forecast"
    note: str = ""  # e.g. a horizon shorter than the provider's usual one

    def describe(self) -> str:
        return render.refresh_line(self.as_json())

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider, "zone": self.zone, "kind": self.kind, "ok": self.ok,
            "points": self.points, "stored": self.stored,
            "horizon_end": iso_utc(self.horizon_end), "vintage": iso_utc(self.vintage),
            "error": self.error or None, "note": self.note or None,
        }


def zones_of(config: Config, regions: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Distinct (provider, zone) pairs of the given regions (default: all), in config order."""
    names = regions if regions is not None else list(config.regions)
    pairs: dict[tuple[str, str], None] = {}
    for name in names:
        settings = config.regions[name]
        pairs[(settings.provider, settings.zone)] = None
    return list(pairs)


def _short_horizon_note(provider: Provider, points: Sequence[PointRecord],
                        now: datetime) -> str:
    usual = provider.usual_horizon
    if usual is None or not points:
        return ""
    covered = max(p.end for p in points) - now
    # Half the usual horizon still counts as usual: providers trim it by a slot or two.
    if covered >= usual / 2:
        return ""
    hours = max(covered.total_seconds(), 0) / 3600
    return (f"horizon only {hours:.1f} h ahead (usually {usual.total_seconds() / 3600:.0f} h); "
            f"stored and used")


def _bounded(provider: Provider, zone: str, points: list[PointRecord]) -> list[PointRecord]:
    """``points`` unless there are more than one refresh may store (ProviderError)."""
    cap = provider.config.max_points
    if len(points) > cap:
        raise ProviderError(provider.where(zone), f"{len(points)} points in one fetch, more "
                            f"than daemon.max_points_per_refresh ({cap}); nothing stored")
    return points


def usable_window(provider: Provider, points: Sequence[PointRecord],
                  now: datetime) -> list[PointRecord]:
    """The forecast points anything can still use: not ended before the lookback (older
    ones would only be pruned) and not starting beyond the horizon the planner looks at."""
    earliest = now - provider.config.forecast_lookback
    latest = now + provider.config.forecast_horizon
    return [p for p in points if p.end > earliest and p.start <= latest]


def refresh_zone(store: Store, provider: Provider, zone: str, now: datetime) -> RefreshResult:
    """Fetch one zone's forecast and store it; a failure changes no forecast.

    Logs exactly one line naming provider, zone and outcome, and records the outcome
    with ``store.record_refresh`` (kind "forecast").
    """
    try:
        fetched = _bounded(provider, zone, provider.fetch_forecast(zone, now))
    except ProviderError as error:
        log.warning("forecast refresh %s zone %s failed: %s; stored forecasts unchanged",
                    provider.name, zone, error.problem)
        store.record_refresh(provider.name, zone, "forecast", now, False, error.problem)
        return RefreshResult(provider.name, zone, False, error=error.problem)
    points = usable_window(provider, fetched, now)
    stored = store.add_points(provider.name, zone, points, now)
    horizon = max((p.end for p in points), default=None)
    vintage = max((p.vintage or now for p in points), default=None)
    notes = [_short_horizon_note(provider, points, now)]
    if len(points) < len(fetched):
        notes.append(f"{len(fetched) - len(points)} points outside the usable window "
                     f"not stored")
    note = "; ".join(n for n in notes if n)
    result = RefreshResult(provider.name, zone, True, len(points), stored, horizon, vintage,
                           note=note)
    log.log(logging.WARNING if note else logging.INFO,
            "forecast refresh %s zone %s: %d points, %d new, horizon to %s%s", provider.name,
            zone, len(points), stored, iso_utc(horizon), f"; {note}" if note else "")
    store.record_refresh(provider.name, zone, "forecast", now, True,
                         f"{len(points)} points, {stored} new" + (f"; {note}" if note else ""),
                         len(points), horizon)
    return result


def refresh_all(
    config: Config, store: Store, now: datetime, regions: Sequence[str] | None = None,
    providers: Mapping[str, Provider] | None = None,
) -> list[RefreshResult]:
    """Refresh the forecast of every (provider, zone) of ``regions`` (default: all)."""
    pairs = zones_of(config, regions)
    built = _providers(config, providers, pairs)
    return [refresh_zone(store, built[name], zone, now) for name, zone in pairs]


def _providers(config: Config, given: Mapping[str, Provider] | None,
               pairs: Sequence[tuple[str, str]]) -> dict[str, Provider]:
    """The given providers, plus one built for each other provider ``pairs`` name."""
    built = dict(given or {})
    for name, _zone in pairs:
        if name not in built:
            built[name] = build_provider(config.providers[name])
    return built


def actuals_window(store: Store, provider: str, zone: str,
                   now: datetime) -> tuple[datetime, datetime]:
    """[start, now): from the end of the newest stored actual, at most ACTUALS_LOOKBACK
    back; or from the oldest stored actual still marked estimated in that time, since
    providers revise those (Electricity Maps' isEstimated turns false) and jobs wait for
    the measured values."""
    earliest = now - ACTUALS_LOOKBACK
    stored = store.series(provider, zone, earliest, now, kind="actual")
    estimated = [start for start, flag in zip(stored.starts, stored.estimated, strict=True)
                 if flag]
    if estimated:
        return max(earliest, min(estimated)), now
    return max([earliest, *stored.ends]), now


def refresh_actuals_zone(store: Store, provider: Provider, zone: str,
                         now: datetime) -> RefreshResult:
    """Fetch one zone's recent actuals and store them (kind "actual"); never raises for a
    provider failure: it is logged once, recorded, and the next run tries again."""
    if not provider.publishes_actuals(zone):
        return RefreshResult(provider.name, zone, True, kind="actual",
                             note="the provider publishes no actuals for this zone")
    start, end = actuals_window(store, provider.name, zone, now)
    if start >= end:
        return RefreshResult(provider.name, zone, True, kind="actual", note="up to date")
    try:
        points = _bounded(provider, zone, provider.fetch_actuals(zone, start, end))
    except ProviderError as error:
        log.warning("actuals refresh %s zone %s failed: %s", provider.name, zone,
                    error.problem)
        store.record_refresh(provider.name, zone, "actual", now, False, error.problem)
        return RefreshResult(provider.name, zone, False, error=error.problem, kind="actual")
    stored = store.add_points(provider.name, zone, points, now)
    newest = max((p.end for p in points), default=None)
    vintage = max((p.vintage or now for p in points), default=None)
    log.info("actuals refresh %s zone %s: %d points, %d new, up to %s", provider.name, zone,
             len(points), stored, iso_utc(newest))
    store.record_refresh(provider.name, zone, "actual", now, True,
                         f"{len(points)} points, {stored} new", len(points), newest)
    return RefreshResult(provider.name, zone, True, len(points), stored, newest, vintage,
                         kind="actual", note="" if points else "no new actuals published yet")


def refresh_actuals(
    config: Config, store: Store, now: datetime,
    providers: Mapping[str, Provider] | None = None,
) -> list[RefreshResult]:
    """Fetch actuals for every configured (provider, zone) over its recent past window."""
    pairs = zones_of(config)
    built = _providers(config, providers, pairs)
    return [refresh_actuals_zone(store, built[name], zone, now) for name, zone in pairs]


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
            "units": self.series.units or GRAMS_PER_KWH,
            "points": [
                {"start": iso_utc(s), "end": iso_utc(e), "intensity": v, "vintage": iso_utc(g),
                 "signal": self.series.signal or self.signal, "basis": self.series.basis,
                 "estimated": est}
                for s, e, v, g, est in zip(self.series.starts, self.series.ends,
                                           self.series.values, self.series.vintages,
                                           self.series.estimated, strict=True)
            ],
        }


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
