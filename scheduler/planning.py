"""Planning as the CLI and the daemon use it: read the store, call the pure planner, save.

This is the glue between ``store`` (what is known) and ``planner`` (the math): it turns
stored forecast points into step functions, holds slots for running jobs, and writes
placements back as conditional updates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler import planner
from scheduler.config import REPLAY_BASIS, Config
from scheduler.models import Job
from scheduler.store import NewJob, PlanUpdate, Series, Store
from scheduler.timespec import from_epoch, to_epoch

log = logging.getLogger("gridshift.planning")

# A running job past its estimated end still holds its slot for at least this long.
OVERRUN_HOLD = timedelta(minutes=5)
# How far back forecasts are read: a window may start now, a running job started earlier.
LOOKBACK = timedelta(days=1)


@dataclass(frozen=True)
class RegionForecast:
    region: str
    forecast: planner.Forecast
    series: Series


def load_forecast(
    store: Store, config: Config, region: str, start: datetime, end: datetime,
    issued_before: datetime | None = None,
) -> RegionForecast:
    """The newest forecast for ``region`` over [start, end) as a planner step function."""
    settings = config.region(region)
    series = store.series(settings.provider, settings.zone, start, end,
                          issued_before=issued_before)
    forecast = planner.Forecast.from_lists(
        [to_epoch(s) for s in series.starts], [to_epoch(e) for e in series.ends], series.values
    )
    return RegionForecast(region, forecast, series)


def load_forecasts(
    store: Store, config: Config, regions: Sequence[str], now: datetime, until: datetime
) -> dict[str, RegionForecast]:
    return {r: load_forecast(store, config, r, now - LOOKBACK, until) for r in regions}


def check_signals(config: Config, regions: Sequence[str]) -> str:
    """The one signal a job's regions share; BadInput when they mix average and marginal."""
    return config.shared_signal(regions)


def split_comparable(regions: Sequence[str], forecasts: Mapping[str, RegionForecast]
                     ) -> tuple[list[str], list[str]]:
    """(the regions to plan over, those left out), by ``comparable_regions``."""
    units = {r: f.series.units or planner.GRAMS for r, f in forecasts.items()
             if len(f.series)}
    kept = planner.comparable_regions(regions, units)
    return kept, [r for r in regions if r not in kept]


def _request(job: Job, regions: Sequence[str] | None = None) -> planner.JobRequest:
    return planner.JobRequest(
        job_id=job.id,
        duration_s=float(job.duration_s),
        not_before=to_epoch(job.not_before),
        deadline=to_epoch(job.deadline),
        regions=tuple(job.regions if regions is None else regions),
    )


def _busy(jobs: Sequence[Job], now: datetime) -> list[planner.Busy]:
    held = []
    for job in jobs:
        region = job.run_region or job.planned_region
        if region is None or job.started_at is None:
            continue
        end = max(job.started_at + timedelta(seconds=job.duration_s), now + OVERRUN_HOLD)
        held.append(planner.Busy(region, to_epoch(job.started_at), to_epoch(end)))
    return held


def _newest_vintage(series: Series, start: datetime, end: datetime) -> datetime | None:
    used = [v for s, e, v in zip(series.starts, series.ends, series.vintages, strict=True)
            if s < end and e > start]
    return max(used) if used else None


def _replayed_note(series: Series) -> str:
    """What a plan's note adds when its region's data is replayed (the offline demo)."""
    return "; intensity replayed from bundled data" if series.basis == REPLAY_BASIS else ""


def replan(store: Store, config: Config, now: datetime,
           jobs: Sequence[Job] | None = None) -> list[PlanUpdate]:
    """Re-place every job that has not started and store the plans; return them."""
    pending = list(store.unstarted_jobs() if jobs is None else jobs)
    if not pending:
        return []
    # A region removed from the config (and the daemon restarted) is no option any more;
    # a job left with none waits, and says so, instead of failing every re-plan.
    usable = {job.id: [r for r in job.regions if r in config.regions] for job in pending}
    for job in pending:
        if not usable[job.id]:
            log.warning("job %d: none of its regions (%s) is configured; it waits",
                        job.id, ", ".join(job.regions))
    pending = [job for job in pending if usable[job.id]]
    if not pending:
        return []
    regions = [r for r in config.regions if any(r in usable[job.id] for job in pending)]
    until = max(job.deadline for job in pending)
    forecasts = load_forecasts(store, config, regions, now, until)
    dropped: dict[int, list[str]] = {}
    for job in pending:
        usable[job.id], dropped[job.id] = split_comparable(usable[job.id], forecasts)
    placements = planner.plan(
        [_request(job, usable[job.id]) for job in pending],
        {r: f.forecast for r, f in forecasts.items()},
        {r: config.regions[r].slots for r in regions},
        to_epoch(now),
        [b for b in _busy(store.running_jobs(), now) if b.region in config.regions],
    )
    durations = {job.id: job.duration_s for job in pending}
    updates = []
    for placement in placements:
        start = from_epoch(placement.start)
        duration = durations[placement.job_id]
        series = forecasts[placement.region].series
        updates.append(PlanUpdate(
            job_id=placement.job_id,
            region=placement.region,
            start=start,
            intensity=placement.intensity if placement.covered else None,
            vintage=_newest_vintage(series, start, start + timedelta(seconds=duration)),
            note=planner.describe(placement.reason)
            + planner.left_out_note(dropped[placement.job_id]) + _replayed_note(series),
        ))
    store.save_plans(updates, now)
    for row in placements.has(planner.PlacementReason.NO_COVERAGE).nonzero()[0].tolist():
        log.info("job %d: %s", updates[row].job_id, updates[row].note)
    return updates


def run_now_intensity(
    store: Store, config: Config, region: str, now: datetime, duration: timedelta
) -> float | None:
    """Mean forecast over [now, now + duration) in ``region``; None unless fully covered."""
    loaded = load_forecast(store, config, region, now - LOOKBACK, now + duration)
    mean, covered = planner.window_mean(loaded.forecast, to_epoch(now), duration.total_seconds())
    return mean if covered else None


@dataclass(frozen=True)
class Preview:
    """A dry-run plan (`gridshift plan`): the cleanest window per region, best first."""

    now: datetime
    options: list[planner.WindowOption]
    run_now_region: str
    run_now_intensity: float | None
    signal: str
    # Per region: "lifecycle" or "direct" where the provider says, else None.
    bases: dict[str, str | None] = field(default_factory=dict)
    # Regions not ranked with the others: their percentile index cannot be compared.
    left_out: list[str] = field(default_factory=list)

    @property
    def saving_pct(self) -> float | None:
        best = self.options[0].intensity if self.options else None
        if best is None or not self.run_now_intensity:
            return None
        return 100.0 * (self.run_now_intensity - best) / self.run_now_intensity


def preview(
    store: Store, config: Config, duration: timedelta, not_before: datetime,
    deadline: datetime, regions: Sequence[str], now: datetime,
) -> Preview:
    signal = check_signals(config, regions)
    forecasts = load_forecasts(store, config, regions, now, deadline)
    ranked, left_out = split_comparable(regions, forecasts)
    options = planner.region_options(
        duration.total_seconds(), to_epoch(not_before), to_epoch(deadline), ranked,
        {r: forecasts[r].forecast for r in ranked}, to_epoch(now),
    )
    start = max(now, not_before)
    run_now, covered = planner.window_mean(forecasts[ranked[0]].forecast, to_epoch(start),
                                           duration.total_seconds())
    bases = {r: f.series.basis or config.provider_for(r).basis for r, f in forecasts.items()}
    return Preview(now, options, ranked[0], run_now if covered else None, signal, bases,
                   left_out)


def place_new(store: Store, config: Config, specs: Sequence[NewJob], now: datetime
              ) -> list[PlanUpdate]:
    """Place jobs not yet stored around running jobs and the others' current plans (the
    daemon re-plans the whole queue on its next tick). ``PlanUpdate.job_id`` is the index
    of the spec in ``specs``, in order."""
    if not specs:
        return []
    regions = list(dict.fromkeys(r for spec in specs for r in spec.regions))
    # Only (region, start, duration) of the others: a full row per queued job made every
    # submit slower as the queue grew.
    held = _busy(store.running_jobs(), now) + [
        planner.Busy(region, start, end) for region, start, end in store.planned_holds(regions, now)
    ]
    forecasts = load_forecasts(store, config, regions, now, max(s.deadline for s in specs))
    kept: list[list[str]] = []
    dropped: list[list[str]] = []
    for spec in specs:
        usable, left_out = split_comparable(spec.regions, forecasts)
        kept.append(usable)
        dropped.append(left_out)
    requests = [
        planner.JobRequest(index, float(spec.duration_s), to_epoch(spec.not_before),
                           to_epoch(spec.deadline), tuple(kept[index]))
        for index, spec in enumerate(specs)
    ]
    placements = planner.plan(
        requests, {r: forecasts[r].forecast for r in regions},
        {r: config.regions[r].slots for r in regions}, to_epoch(now),
        [b for b in held if b.region in forecasts],
    )
    updates: list[PlanUpdate | None] = [None] * len(specs)
    for placement in placements:
        index = placement.job_id
        start = from_epoch(placement.start)
        updates[index] = PlanUpdate(
            job_id=index, region=placement.region, start=start,
            intensity=placement.intensity if placement.covered else None,
            vintage=_newest_vintage(forecasts[placement.region].series, start,
                                    start + timedelta(seconds=specs[index].duration_s)),
            note=planner.describe(placement.reason) + planner.left_out_note(dropped[index])
            + _replayed_note(forecasts[placement.region].series),
        )
    return [update for update in updates if update is not None]
