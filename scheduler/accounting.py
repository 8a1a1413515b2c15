"""Scheduled versus actual emissions: backfill the grid's actual intensity for finished jobs,
and compute each job's emissions from its row.

For every finished job that ran, the backfill looks up mean intensities from the stored
points (``kind = "actual"``) over three windows:

- the real run [started_at, ended_at) in its run region -> ``actual_intensity``;
- the counterfactual [submitted_at, + real duration) in its first region
  -> ``run_now_actual_intensity``;
- the planned window [planned_start, + declared duration) in its planned region
  -> ``planned_window_actual_intensity`` (for the forecast error).

An interruptible job that ran in several runs (``job_runs``) is looked up per run instead:
each run's window [started_at, ended_at) in its region gives that run's actual intensity
(stored on its row), and the job's ``actual_intensity`` is their mean weighted by each
run's energy (by its length where a run's energy is unknown), so the job's figures cover
every run. Its run-now window is the same work run uninterrupted from submission: as long
as the work its runs did (``work_done_s``; the runs' total length where unknown). It has
no single planned window, so no forecast error; and it is ``done`` once every run has
actuals.

Where actuals do not cover a window yet, the run and run-now windows get an estimate from
the newest forecast issued before each slot ended, flagged ``intensity_estimated``, and
the job stays ``pending``: later passes replace the estimate once actuals exist. After
``daemon.actuals_give_up`` from its end a job is settled as it stands, and at once where
its providers publish no actuals at all.

The emissions figures themselves (actual, run-now, saved, the forecast error) are
written by the store with the review, from one SQL definition (``models.review_figures``),
so a backfilled intensity changes every view at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from scheduler.config import Config, RegionConfig
from scheduler.units import GRAMS_PER_KWH

if TYPE_CHECKING:  # providers pull in requests, store SQLAlchemy; the CLI imports this module
    from scheduler.providers import Provider
    from scheduler.store import Series, Store

log = logging.getLogger("gridshift.accounting")

# actuals_state values. None (never looked at) and PENDING count as awaiting actuals.
PENDING = "pending"  # some window lacks actuals; estimates may be shown meanwhile
DONE = "done"  # every window has actual intensity
ESTIMATED = "estimated"  # gave up waiting; the run or run-now intensity is an estimate
GAVE_UP = "gave_up"  # gave up waiting and not even an estimate exists
NO_INTERVAL = "no_interval"  # the job has no run interval (lost, or never really started)
AWAITING = (None, PENDING)

GRAMS_UNITS = (None, GRAMS_PER_KWH)


# Software Carbon Intensity (SCI, ISO/IEC 21031:2024) per job ---------------------------------
#
# SCI = (E x I + M) per R, R = one job. E x I is the job's actual emissions (measured or
# declared energy x actual intensity: location-based, never market-based); M its share of
# the hardware's embodied emissions:
#   M = embodied_gco2 x (run time / lifetime) x (the job's slots / the region's slots).
# A term that is unknown makes the SCI unknown (None): never a guessed zero.

JOB_SLOTS = 1  # the slots one job holds (every job holds one today)


def embodied_from(run_seconds: float | None, settings: RegionConfig | None) -> float | None:
    """M for a job that ran ``run_seconds`` in a region with ``settings`` (None where the
    run time or the region's embodied_gco2 and lifetime are unknown)."""
    if (run_seconds is None or settings is None or settings.embodied_gco2 is None
            or settings.lifetime is None):
        return None
    return (settings.embodied_gco2 * (run_seconds / settings.lifetime.total_seconds())
            * (JOB_SLOTS / settings.slots))


def sci_from(actual_g: float | None, embodied_g: float | None) -> float | None:
    """E x I + M, None unless both are known."""
    return None if actual_g is None or embodied_g is None else actual_g + embodied_g


# The jobs columns ``held_column`` reads.
HELD_READS = ("interruptible", "work_done_s", "restart_overhead_s", "run_count")


def held_column(interruptible: Sequence[str | None], work_done_s: Sequence[float | None],
                restart_overhead_s: Sequence[int | None], run_count: Sequence[int | None]
                ) -> list[float | None] | None:
    """For each of many jobs, how long an interruptible job's runs held its region's
    hardware: the work they did, and a restart overhead per relaunch in checkpoint mode
    (never the pauses). None for a job run as one block, whose run interval says it; None
    for the whole column where no job is interruptible."""
    if all(mode is None for mode in interruptible):
        return None
    held: list[float | None] = []
    for mode, work, overhead, runs in zip(interruptible, work_done_s, restart_overhead_s,
                                          run_count, strict=True):
        if mode is None or work is None:
            held.append(None)
            continue
        relaunches = max((runs or 0) - 1, 0) if mode == "checkpoint" else 0
        held.append(work + relaunches * (overhead or 0))
    return held


def embodied_column(config: Config, run_region: Sequence[str | None],
                    started_at: Sequence[str | None], ended_at: Sequence[str | None],
                    held_s: Sequence[float | None] | None = None) -> list[float | None]:
    """M for each of many jobs (run times as ISO-8601 text; an interruptible job's time
    held from ``held_s``, see ``held_column``), from their regions' settings in
    ``config``."""
    if all(settings.embodied_gco2 is None for settings in config.regions.values()):
        return [None] * len(run_region)
    parse = datetime.fromisoformat
    held = held_s or [None] * len(run_region)
    embodied: list[float | None] = []
    for region, started, ended, seconds in zip(run_region, started_at, ended_at, held,
                                               strict=True):
        settings = config.regions.get(region or "")
        if settings is None or settings.embodied_gco2 is None or started is None or ended is None:
            embodied.append(None)  # unknown either way: skip parsing the times
            continue
        if seconds is None:
            seconds = (parse(ended) - parse(started)).total_seconds()
        embodied.append(embodied_from(seconds, settings))
    return embodied


# Backfill -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """A mean intensity over a window, and whether it is an estimate from forecasts."""

    value: float
    estimated: bool


def backfill_actuals(store: Store, config: Config, now: datetime,
                     providers: Mapping[str, Provider] | None = None,
                     reviewed: Callable[[Any, Mapping[str, Any]], None] | None = None) -> int:
    """Fill actual intensities for finished jobs awaiting them; return how many changed.

    With ``providers``, a job whose regions' providers publish no actuals at all is settled
    at once with its estimate instead of waiting for ``actuals_give_up``. ``reviewed`` is
    called with each job (as it was) and the review fields just stored for it, with the
    emissions figures the store wrote from them (``Store.save_review``).
    """

    def publishes_actuals(region: str) -> bool:
        settings = config.regions.get(region)
        provider = (providers or {}).get(settings.provider) if settings else None
        return provider is None or settings is None or provider.publishes_actuals(settings.zone)

    changed = 0
    for job in store.jobs_needing_actuals():
        runs = (run_intensities(store, config, store.job_runs(job.id))
                if job.interruptible is not None else [])
        for run, lookup in runs:
            value = None if lookup is None else lookup.value
            if run.actual_intensity != value:
                store.record_run_actual(job.id, run.run, value)
        fields = review_fields(store, config, job, now, publishes_actuals, runs)
        if any(getattr(job, name) != value for name, value in fields.items()
               if name != "actuals_checked_at"):
            changed += 1
            log.info("job %d: %s", job.id, review_summary(fields))
        figures = store.save_review(job.id, fields)
        if reviewed is not None:
            reviewed(job, {**fields, **figures})
    return changed


def review_summary(fields: Mapping[str, Any]) -> str:
    """What one review found, in words for the daemon's log: a pending review says what it
    waits for and whether the figure it has meanwhile is an estimate."""
    state, value = fields["actuals_state"], fields.get("actual_intensity")
    if state == NO_INTERVAL:
        return "no run interval, so no emissions review"
    if value is None and state == PENDING:
        return "awaiting actuals; no estimate yet"
    if state == GAVE_UP or value is None:
        return "stopped waiting for actuals; its emissions stay unknown"
    shown = f"{value:.0f} g/kWh"
    if state == DONE:
        return f"actual intensity {shown} over its run; review complete"
    if state == PENDING and fields.get("intensity_estimated"):
        return f"awaiting actuals; estimated {shown} from forecasts meanwhile"
    if state == PENDING:
        return f"actual intensity {shown} over its run; awaiting actuals for the other windows"
    return f"stopped waiting for actuals; settled on {shown}, partly from forecasts"


# A run of an interruptible job with the mean intensity over its window (None: unknown).
RunIntensity = tuple[Any, "Lookup | None"]


def run_intensities(store: Store, config: Config, runs: Sequence[Any]) -> list[RunIntensity]:
    """Each run that ended (``JobRun`` rows) with the mean actual intensity over its window
    in its region, or the estimate from forecasts where actuals do not cover it yet."""
    return [(run, _lookup(store, config, run.region, run.started_at, run.ended_at))
            for run in runs if run.ended_at is not None and run.ended_at > run.started_at]


def review_fields(store: Store, config: Config, job: Any, now: datetime,
                  publishes_actuals: Callable[[str], bool] = lambda region: True,
                  runs: Sequence[RunIntensity] = ()) -> dict[str, Any]:
    """The emissions-review columns for one finished job, as of ``now``; an interruptible
    job's from its ``runs`` (``run_intensities``) where it has any."""
    if job.started_at is None or job.ended_at is None or job.ended_at <= job.started_at:
        return {"actuals_state": NO_INTERVAL, "actuals_checked_at": now}
    run_region = job.run_region or job.planned_region or job.regions[0]
    planned_window = None
    if runs:
        actual = _mean_over_runs(runs)
        run_length = (timedelta(seconds=job.work_done_s) if job.work_done_s
                      else sum((run.ended_at - run.started_at for run, _ in runs), timedelta()))
    else:
        actual = _lookup(store, config, run_region, job.started_at, job.ended_at)
        run_length = job.ended_at - job.started_at
        if job.planned_start is not None and job.planned_intensity is not None:
            planned_window = _lookup(
                store, config, job.planned_region or run_region, job.planned_start,
                job.planned_start + timedelta(seconds=job.duration_s), estimate=False)
    run_now = _lookup(store, config, job.regions[0], job.submitted_at,
                      job.submitted_at + run_length)
    complete = (actual is not None and not actual.estimated
                and run_now is not None and not run_now.estimated
                and (planned_window is not None or job.planned_intensity is None
                     or bool(runs)))
    waits = publishes_actuals(run_region) or publishes_actuals(job.regions[0])
    if complete:
        state = DONE
    elif waits and now - job.ended_at < config.daemon.actuals_give_up:
        state = PENDING
    else:
        state = ESTIMATED if actual is not None and run_now is not None else GAVE_UP
    known = [x for x in (actual, run_now) if x is not None]
    return {
        "actual_intensity": actual.value if actual else None,
        "run_now_actual_intensity": run_now.value if run_now else None,
        "planned_window_actual_intensity": planned_window.value if planned_window else None,
        "intensity_estimated": any(x.estimated for x in known) if known else None,
        "actuals_state": state,
        "actuals_checked_at": now,
    }


def _mean_over_runs(runs: Sequence[RunIntensity]) -> Lookup | None:
    """The mean of the runs' intensities weighted by their energy (by their length where
    a run's energy is unknown); None unless every run's is known."""
    lookups = [lookup for _, lookup in runs]
    if any(lookup is None for lookup in lookups):
        return None
    known = [lookup for lookup in lookups if lookup is not None]
    energies = [run.energy_kwh for run, _ in runs]
    weights: list[float] = (
        energies if None not in energies and sum(energies) > 0
        else [(run.ended_at - run.started_at).total_seconds() for run, _ in runs])
    mean = sum(w * lookup.value for w, lookup in zip(weights, known, strict=True)) / sum(weights)
    return Lookup(mean, estimated=any(lookup.estimated for lookup in known))


def _lookup(store: Store, config: Config, region: str, start: datetime, end: datetime,
            estimate: bool = True) -> Lookup | None:
    """Mean actual intensity over [start, end); else (``estimate``) the forecast estimate."""
    settings = config.regions.get(region)
    if settings is None or end <= start:
        return None
    actual = interval_mean(store.series(settings.provider, settings.zone, start, end,
                                        kind="actual"), start, end)
    if actual is not None:
        return Lookup(actual, estimated=False)
    if not estimate:
        return None
    guess = interval_mean(store.forecast_known_at_slot_end(settings.provider, settings.zone,
                                                           start, end), start, end)
    return None if guess is None else Lookup(guess, estimated=True)


def interval_mean(series: Series, start: datetime, end: datetime) -> float | None:
    """Time-weighted mean of a step function over [start, end); None unless fully covered
    (or when its values are not gCO2eq/kWh, such as a percentile index)."""
    from scheduler import intensity
    from scheduler.timespec import to_epoch

    if not len(series) or series.units not in GRAMS_UNITS:
        return None
    forecast = intensity.Forecast.of_series(series)
    mean, covered = intensity.window_mean(forecast, to_epoch(start),
                                          (end - start).total_seconds())
    return mean if covered else None
