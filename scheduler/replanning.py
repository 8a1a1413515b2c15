"""Re-planning as the API and the daemon use it: read the store, call the pure planner
(``placement``), write only what changed.

This is the glue between ``store`` (what is known) and ``placement`` (the math): it turns
stored forecast points into step functions, holds slots for running jobs, and writes
placements back as conditional updates.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from scheduler import chunking, intensity, placement
from scheduler.config import REPLAY_BASIS, Config
from scheduler.errors import StateConflict
from scheduler.models import Job, JobState
from scheduler.records import CHECKPOINT, DEFAULT_MIN_CHUNK_S, ChunkPlan, PlacementReason
from scheduler.store import (
    InterruptibleRow,
    NewJob,
    PlanUpdate,
    Series,
    Store,
    UnstartedJobs,
)
from scheduler.timespec import from_epoch, iso_utc, to_epoch
from scheduler.units import GRAMS_PER_KWH

log = logging.getLogger("gridshift.planning")

# A running job past its estimated end still holds its slot for at least this long.
OVERRUN_HOLD = timedelta(minutes=5)
# How far back forecasts are read: a window may start now, a running job started earlier.
LOOKBACK = timedelta(days=1)
# A re-plan logs a line for each of the first this many jobs it moves, then a count.
MOVES_LOGGED = 20
# A submit of at most this many whole jobs is placed against the daemon's HeldProfile;
# more (an array) take the planner's check of every held slot at once.
PROFILE_JOBS = 16
# Stored times keep microseconds: a placement within one of the stored time is the same.
SAME_TIME_S = 1e-6
# A job not running whose declared work is all done still gets a chunk this long: it
# has not finished, so it must be resumed.
MIN_REMAINING_S = 60.0
# How far ahead the daemon's cached forecasts reach: more than any stored forecast does.
CACHED_AHEAD = timedelta(days=400)


@dataclass(frozen=True)
class RegionForecast:
    region: str
    forecast: intensity.Forecast
    series: Series


def load_forecast(
    store: Store, config: Config, region: str, start: datetime, end: datetime,
    issued_before: datetime | None = None,
) -> RegionForecast:
    """The newest forecast for ``region`` over [start, end) as a planner step function."""
    settings = config.region(region)
    series = store.series(settings.provider, settings.zone, start, end,
                          issued_before=issued_before)
    return RegionForecast(region, intensity.Forecast.of_series(series), series)


def load_forecasts(
    store: Store, config: Config, regions: Sequence[str], now: datetime, until: datetime
) -> dict[str, RegionForecast]:
    return {r: load_forecast(store, config, r, now - LOOKBACK, until) for r in regions}


class PlanCache:
    """What the daemon keeps between re-plans, so that a submit plans in memory whatever
    the queue's length: each region's stored forecast (until a newer point is stored) and
    the slots the queue's placements hold (set by each re-plan, added to by each submit).
    Without a daemon, a submit reads both from the store instead (``PlanCache`` None).
    Shared by the daemon's tick and its request threads.

    A re-plan reads the queue, then takes seconds to place it: the slots of jobs submitted
    meanwhile are not in what it sets, so they are kept from ``replan_reading`` on and
    added to it (a job stored just before the re-plan read the queue may then count twice
    until the next re-plan: a slot left free for a while, never one given twice)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._newest_point: int | None = None
        self._forecasts: dict[str, RegionForecast] = {}
        self._planned: placement.Holds | None = None  # None until the first re-plan
        self._profile: placement.HeldProfile | None = None  # made from _planned on demand
        self._added_during_replan: list[placement.Holds] | None = None

    def forecasts(self, store: Store, config: Config, regions: Sequence[str],
                  now: datetime) -> dict[str, RegionForecast]:
        newest = store.newest_point_id()
        with self._lock:
            if newest != self._newest_point:
                self._newest_point, self._forecasts = newest, {}
            known = dict(self._forecasts)
        # Everything stored from a day back: any deadline a job may have is covered.
        loaded = {r: load_forecast(store, config, r, now - LOOKBACK, now + CACHED_AHEAD)
                  for r in regions if r not in known}
        if loaded:
            with self._lock:
                if newest == self._newest_point:
                    self._forecasts.update(loaded)
        return {r: known.get(r) or loaded[r] for r in regions}

    def planned_holds(self) -> placement.Holds | None:
        with self._lock:
            return self._planned

    def planned_profile(self) -> placement.HeldProfile | None:
        """The planned slots as step functions (made once per re-plan, at the first
        submit after it); None before the first re-plan."""
        with self._lock:
            if self._planned is None:
                return None
            if self._profile is None:
                self._profile = placement.HeldProfile.of(self._planned)
            return self._profile

    def replan_reading(self) -> None:
        """A re-plan is about to read the queue: keep what submits add until it sets its
        own placements' slots."""
        with self._lock:
            self._added_during_replan = []

    def set_planned(self, holds: placement.Holds) -> None:
        """The slots a re-plan's placements hold, and those of the jobs submitted since
        it read the queue."""
        with self._lock:
            for added in self._added_during_replan or ():
                holds = holds + added
            self._planned, self._added_during_replan = holds, None
            self._profile = None

    def add_planned(self, holds: placement.Holds) -> None:
        with self._lock:
            if self._planned is not None:
                self._planned = self._planned + holds
            if self._profile is not None:
                self._profile = self._profile.plus(holds)
            if self._added_during_replan is not None:
                self._added_during_replan.append(holds)


def check_signals(config: Config, regions: Sequence[str]) -> str:
    """The one signal a job's regions share; BadInput when they mix average and marginal."""
    return config.shared_signal(regions)


def split_comparable(regions: Sequence[str], forecasts: Mapping[str, RegionForecast]
                     ) -> tuple[list[str], list[str]]:
    """(the regions to plan over, those left out), by ``comparable_regions``."""
    units = {r: f.series.units or GRAMS_PER_KWH for r, f in forecasts.items()
             if len(f.series)}
    kept = placement.comparable_regions(regions, units)
    return kept, [r for r in regions if r not in kept]


def _request(job: Job, regions: Sequence[str] | None = None) -> placement.JobRequest:
    return placement.JobRequest(
        job_id=job.id,
        duration_s=float(job.duration_s),
        not_before=to_epoch(job.not_before),
        deadline=to_epoch(job.deadline),
        regions=tuple(job.regions if regions is None else regions),
    )


def _busy(jobs: Sequence[Job], now: datetime) -> list[placement.Busy]:
    """The slots running jobs hold: to their estimated end (an interruptible job: to its
    chunk's end), and at least ``OVERRUN_HOLD`` from now."""
    held = []
    for job in jobs:
        region = job.run_region or job.planned_region
        if region is None or job.started_at is None:
            continue
        estimated = job.started_at + timedelta(seconds=job.duration_s)
        if job.interruptible is not None and job.chunk_end is not None:
            estimated = job.chunk_end
        end = max(estimated, now + OVERRUN_HOLD)
        held.append(placement.Busy(region, to_epoch(job.started_at), to_epoch(end)))
    return held


def _newest_vintages(placements: placement.Placements, durations: npt.NDArray[np.float64],
                     forecasts: Mapping[str, RegionForecast]) -> npt.NDArray[np.float64]:
    """Per placement row: the newest vintage (epoch seconds) among the forecast slots its
    window overlaps, NaN where none does. One range maximum per row, in numpy: a loop over
    every slot for every job was most of a large re-plan's time."""
    newest = np.full(len(placements), np.nan)
    for index, region in enumerate(placements.region_names):
        rows = np.flatnonzero(placements.region_index == index)
        series = forecasts[region].series
        if not rows.size or not len(series):
            continue
        forecast = forecasts[region].forecast  # sorted, non-overlapping slots
        begins = placements.starts[rows]
        first = np.searchsorted(forecast.ends, begins, side="right")  # ends after begin
        stop = np.searchsorted(forecast.starts, begins + durations[rows], side="left")
        vintages = np.append([to_epoch(v) for v in series.vintages], -np.inf)
        bounds = np.empty(2 * rows.size, dtype=np.int64)
        bounds[0::2], bounds[1::2] = first, stop
        # reduceat gives max(vintages[first:stop]) at the even positions where first < stop.
        maxima = np.maximum.reduceat(vintages, bounds)[0::2]
        overlaps = first < stop
        newest[rows[overlaps]] = maxima[overlaps]
    return newest


def _replayed(series: Series) -> bool:
    """Whether a region's data is replayed (the offline demo): a plan's note says so."""
    return series.basis == REPLAY_BASIS


def _same_time(stored: float | None, new: float) -> bool:
    return stored is not None and abs(stored - new) <= SAME_TIME_S


def replan(store: Store, config: Config, now: datetime, cache: PlanCache | None = None
           ) -> int:
    """Re-place every job that has not started and every interruptible job not finished;
    store the placements that changed, with an event for each job that moved. Returns how
    many jobs moved or were planned.

    Whole jobs are placed first (``placement.plan``), around running jobs; then
    interruptible jobs (``chunking.plan_chunks``) around those placements: they can use
    whatever gaps are left, where a whole job could not. A running interruptible job holds
    its slot to its chunk's end for the whole jobs and is re-planned with the others.
    Both sets' cleanest windows (capacity ignored) come from one search, which builds each
    region's windows of one duration once for both.
    """
    if cache is not None:
        cache.replan_reading()
    running = store.running_jobs()
    whole = _WholeQueue.read(store, config)
    chunked = _chunk_candidates(store.interruptible_for_planning(), config)
    wanted = whole.regions() | {r for _, usable in chunked for r in usable}
    nothing = placement.Holds.from_busy([])
    if not wanted:
        if cache is not None:
            cache.set_planned(nothing)
        return 0
    regions = [r for r in config.regions if r in wanted]
    deadlines = [row.deadline for row, _ in chunked]
    if len(whole.kept):
        deadlines.append(whole.latest_deadline())
    forecasts = (cache.forecasts(store, config, regions, now) if cache is not None else
                 load_forecasts(store, config, regions, now, from_epoch(max(deadlines))))
    epoch_now = to_epoch(now)
    comparable = whole.comparable(forecasts)
    whole_columns = whole.columns(comparable)
    chunk_jobs = _chunk_jobs(chunked, forecasts, epoch_now)
    windows = placement.cleanest_windows(
        whole_columns + chunking.single_blocks([job for job, _, _ in chunk_jobs], epoch_now),
        {r: f.forecast for r, f in forecasts.items()}, epoch_now)
    split = len(whole_columns)
    moved, whole_holds = _replan_whole(store, config, now, whole.queued, comparable,
                                       whole_columns, forecasts, windows.rows(0, split),
                                       running)
    running_whole = [job for job in running if job.interruptible is None]
    busy = placement.Holds.from_busy([b for b in _busy(running_whole, now)
                                    if b.region in config.regions]) + whole_holds
    chunk_moves, chunk_holds = _replan_chunked(
        store, config, now, chunk_jobs, forecasts, busy,
        windows.rows(split, split + len(chunk_jobs)))
    if cache is not None:
        cache.set_planned(whole_holds + chunk_holds)
    return moved + chunk_moves


@dataclass(frozen=True)
class _WholeQueue:
    """The whole jobs a re-plan places: the unstarted queue, read as columns, and which of
    its rows (``kept``) have a configured region to run in."""

    queued: UnstartedJobs
    kept: npt.NDArray[np.int64]
    configured: dict[tuple[str, ...], tuple[str, ...]]  # listed regions -> configured ones

    @classmethod
    def read(cls, store: Store, config: Config) -> _WholeQueue:
        queued = store.unstarted_for_planning()
        # A region removed from the config (and the daemon restarted) is no option any
        # more; a job left with none waits, and says so, instead of failing every re-plan.
        configured = {key: tuple(r for r in key if r in config.regions)
                      for key in set(queued.regions)}
        for job_id, key in zip(queued.ids, queued.regions, strict=True):
            if not configured[key]:
                log.warning("job %d: none of its regions (%s) is configured; it waits",
                            job_id, ", ".join(key))
        kept = np.flatnonzero(np.fromiter((bool(configured[key]) for key in queued.regions),
                                          np.bool_, len(queued)))
        return cls(queued, kept, configured)

    def regions(self) -> set[str]:
        return {r for usable in self.configured.values() for r in usable}

    def latest_deadline(self) -> float:
        return float(np.array(self.queued.deadlines, dtype=np.float64)[self.kept].max())

    def comparable(self, forecasts: Mapping[str, RegionForecast]
                   ) -> dict[tuple[str, ...], tuple[list[str], list[str]]]:
        """Per listed region list: (the regions to plan over, those left out). Few
        distinct lists in a large queue: each is split once."""
        return {key: split_comparable(usable, forecasts)
                for key, usable in self.configured.items() if usable}

    def columns(self, comparable: Mapping[tuple[str, ...], tuple[list[str], list[str]]]
                ) -> placement.JobColumns:
        """The kept jobs as the planner reads them, each with its regions to plan over."""
        queued, kept = self.queued, self.kept
        return placement.JobColumns(
            np.array(queued.ids, dtype=np.int64)[kept],
            np.array(queued.durations, dtype=np.float64)[kept],
            np.array(queued.not_before, dtype=np.float64)[kept],
            np.array(queued.deadlines, dtype=np.float64)[kept],
            [tuple(comparable[queued.regions[row]][0]) for row in kept.tolist()])


def _replan_whole(store: Store, config: Config, now: datetime, queued: UnstartedJobs,
                  comparable: Mapping[tuple[str, ...], tuple[list[str], list[str]]],
                  columns: placement.JobColumns, forecasts: Mapping[str, RegionForecast],
                  windows: placement.CleanestWindows, running: Sequence[Job]
                  ) -> tuple[int, placement.Holds]:
    """Re-place every whole job that has not started (``columns``, the kept rows of
    ``queued``, searched in ``windows``); return how many moved and the slots their
    placements hold.

    The queue is read, placed and compared with its stored plans as columns: a re-plan of
    100,000 jobs touches Python objects only for the jobs whose plan changed.
    """
    if not len(columns):
        return 0, placement.Holds.from_busy([])
    regions = [r for r in config.regions if r in windows.names]
    placements = placement.plan(
        columns, {r: f.forecast for r, f in forecasts.items()},
        {r: config.regions[r].slots for r in regions}, to_epoch(now),
        [b for b in _busy(running, now) if b.region in config.regions], windows)
    ids = np.array(queued.ids, dtype=np.int64)
    durations = np.array(queued.durations, dtype=np.float64)
    placed = np.searchsorted(ids, placements.job_ids)  # queued row of each placement
    vintages = _newest_vintages(placements, durations[placed], forecasts)
    holds = placement.Holds.from_placements(placements, durations[placed])
    left_out, replayed = _note_parts(queued, placed, placements, comparable, forecasts)
    changed = np.flatnonzero(~_unchanged(queued, placed, placements, vintages, left_out,
                                         replayed))
    updates = []
    moves: list[tuple[int, PlanUpdate]] = []
    # The changed rows' columns as Python values at once: a first plan writes every job.
    names = placements.region_names
    for job_row, job_id, region, start, mean, vintage, dropped, replay, reason in zip(
            placed[changed].tolist(), placements.job_ids[changed].tolist(),
            placements.region_index[changed].tolist(), placements.starts[changed].tolist(),
            placements.intensities[changed].tolist(), vintages[changed].tolist(),
            left_out[changed].tolist(), replayed[changed].tolist(),
            placements.reasons[changed].tolist(), strict=True):
        update = PlanUpdate(
            job_id=job_id, region=names[region], start=from_epoch(start),
            intensity=None if math.isnan(mean) else mean,
            vintage=None if math.isnan(vintage) else from_epoch(vintage), reason=reason,
            left_out=tuple(json.loads(dropped)) if dropped else (), replayed=replay)
        updates.append(update)
        if queued.planned_start[job_row] is not None and (
                queued.planned_region[job_row] != update.region
                or not _same_time(queued.planned_start[job_row], start)):
            moves.append((job_row, update))
        elif reason & PlacementReason.NO_COVERAGE:
            log.info("job %d: %s", job_id, update.note)
    _log_moves(queued, moves)
    return store.save_plans(updates, now), holds


def chunk_job(row: InterruptibleRow, regions: Sequence[str], now: float
              ) -> chunking.ChunkJob | None:
    """What ``plan_chunks`` places for a stored interruptible job (times in epoch
    seconds), or None for a running job whose declared work is done: it runs on, not
    paused again. Its chunk limit counts the pauses it has had; a paused checkpointed job
    pays the restart overhead on its next chunk too; a running job's first chunk goes on
    from its current run."""
    checkpoint = row.interruptible == CHECKPOINT
    overhead = float(row.restart_overhead_s or 0) if checkpoint else 0.0
    runs = row.run_count or 0
    remaining = row.duration_s - (row.work_done_s or 0.0)
    running_since = None
    if row.state == JobState.RUNNING.value:
        running_since = row.run_started if row.run_started is not None else row.started_at
        if running_since is None:
            return None
        relaunched = checkpoint and runs > 1  # this run began by loading its checkpoint
        remaining -= max(now - running_since - (overhead if relaunched else 0.0), 0.0)
        if remaining <= 0:
            return None
    max_chunks = None
    if row.max_pauses is not None:
        pauses = max(runs - 1, 0) if running_since is not None else runs
        # A running job's current chunk is one of its chunks, but no pause yet.
        max_chunks = max(row.max_pauses - pauses + 1, 1)
    return chunking.ChunkJob(
        job_id=row.id, work_s=max(remaining, MIN_REMAINING_S), not_before=row.not_before,
        deadline=row.deadline, regions=tuple(regions),
        min_chunk_s=float(row.min_chunk_s if row.min_chunk_s is not None
                          else DEFAULT_MIN_CHUNK_S),
        max_chunks=max_chunks, restart_overhead_s=overhead,
        first_is_relaunch=checkpoint and row.state == JobState.PAUSED.value,
        running_since=running_since)


def _chunk_candidates(rows: Sequence[InterruptibleRow], config: Config
                      ) -> list[tuple[InterruptibleRow, tuple[str, ...]]]:
    """The interruptible jobs a re-plan places, each with the configured regions it may
    use: queued and planned jobs any of theirs, a job that has run the region it ran in."""
    candidates = []
    for row in rows:
        listed = ((row.run_region,) if (row.run_count or 0) > 0 and row.run_region is not None
                  else row.regions)
        usable = tuple(r for r in listed if r in config.regions)
        if not usable:
            log.warning("job %d: none of its regions (%s) is configured; it waits", row.id,
                        ", ".join(listed))
            continue
        candidates.append((row, usable))
    return candidates


def _chunk_jobs(candidates: Sequence[tuple[InterruptibleRow, tuple[str, ...]]],
                forecasts: Mapping[str, RegionForecast], now: float
                ) -> list[tuple[chunking.ChunkJob, InterruptibleRow, list[str]]]:
    """(what ``plan_chunks`` places, the stored row, the regions left out) per candidate
    still to be placed (``chunk_job``)."""
    comparable = {usable: split_comparable(usable, forecasts)
                  for usable in {usable for _, usable in candidates}}
    jobs = []
    for row, usable in candidates:
        kept, dropped = comparable[usable]
        job = chunk_job(row, kept, now)
        if job is not None:
            jobs.append((job, row, dropped))
    return jobs


def _replan_chunked(store: Store, config: Config, now: datetime,
                    chunk_jobs: Sequence[tuple[chunking.ChunkJob, InterruptibleRow, list[str]]],
                    forecasts: Mapping[str, RegionForecast], busy: placement.Holds,
                    windows: placement.CleanestWindows) -> tuple[int, placement.Holds]:
    """Re-place every interruptible job as chunks around ``busy`` (their single blocks
    searched in ``windows``); store what changed. Returns how many jobs moved or were
    planned, and the slots their chunks hold.

    Queued and planned jobs are written as ``save_plans`` writes whole jobs (their first
    chunk), paused ones by a paused -> paused transition when their next chunk moves,
    running ones only by their chunks (and so chunk_end).
    """
    if not chunk_jobs:
        return 0, placement.Holds.from_busy([])
    jobs = [job for job, _, _ in chunk_jobs]
    by_id = {job.job_id: row for job, row, _ in chunk_jobs}
    left_out = {job.job_id: dropped for job, _, dropped in chunk_jobs}
    regions = [r for r in config.regions if r in windows.names]
    placements = chunking.plan_chunks(
        jobs, {r: f.forecast for r, f in forecasts.items()},
        {r: config.regions[r].slots for r in regions}, to_epoch(now), busy, windows)
    holds = placement.Holds.from_busy([placement.Busy(p.region, start, end) for p in placements
                                     for start, end in p.chunks])
    means = chunking.chunk_means({r: f.forecast for r, f in forecasts.items()}, placements)
    vintages = _chunk_vintages(placements, forecasts)
    plans, chunks = [], {}
    moved = 0
    for chosen, chunk_intensity, vintage in zip(placements, means, vintages, strict=True):
        row = by_id[chosen.job_id]
        update = PlanUpdate(
            job_id=row.id, region=chosen.region,
            start=from_epoch(chosen.chunks[0][0]), intensity=chosen.intensity,
            vintage=None if vintage is None else from_epoch(vintage),
            reason=int(chosen.reason), left_out=tuple(left_out[row.id]),
            replayed=_replayed(forecasts[chosen.region].series),
            chunk_count=len(chosen.chunks))
        if _same_chunks(row, chosen) and (
                row.state == JobState.RUNNING.value
                or (row.state != JobState.QUEUED.value
                    and row.planned_intensity == chosen.intensity
                    and (row.plan_reason, row.plan_left_out, row.plan_replayed,
                         row.plan_chunk_count, row.plan_note_cleared) == update.stored_note()
                    and ((row.planned_vintage is None and vintage is None)
                         or (vintage is not None and _same_time(row.planned_vintage,
                                                                vintage))))):
            continue
        chunks[row.id] = [ChunkPlan(chosen.region, from_epoch(start), from_epoch(end),
                                    intensity)
                          for (start, end), intensity in zip(chosen.chunks, chunk_intensity,
                                                             strict=True)]
        if row.state == JobState.RUNNING.value:
            continue
        if row.state == JobState.PAUSED.value:
            moved += _save_paused_plan(store, row, update, now)
        else:
            plans.append(update)
    moved += store.save_plans(plans, now)
    store.save_chunks(chunks)
    return moved, holds


def _same_chunks(row: InterruptibleRow, chosen: chunking.ChunkPlacement) -> bool:
    """Whether the stored chunks are the placement's (a running job's current chunk
    starts at every re-plan's now: only its end counts)."""
    if len(row.chunks) != len(chosen.chunks):
        return False
    for index, ((region, start, end), (new_start, new_end)) in enumerate(
            zip(row.chunks, chosen.chunks, strict=True)):
        same_start = (index == 0 and row.state == JobState.RUNNING.value) or _same_time(
            start, new_start)
        if region != chosen.region or not same_start or not _same_time(end, new_end):
            return False
    return True


def _save_paused_plan(store: Store, row: InterruptibleRow, update: PlanUpdate,
                      now: datetime) -> int:
    """Store a paused job's next chunk: a paused -> paused transition with its event when
    the chunk moved, else just the plan's figures. 1 if it moved, else 0; 0 too when the
    job was resumed meanwhile (its next re-plan sees it running)."""
    fields = {"planned_region": update.region, "planned_start": update.start,
              "planned_intensity": update.intensity, "planned_vintage": update.vintage,
              **update.note_columns()}
    moved = row.planned_region != update.region or not _same_time(
        row.planned_start, to_epoch(update.start))
    try:
        if moved:
            store.transition(row.id, [JobState.PAUSED], JobState.PAUSED, now,
                             f"planned: {update.describe()}", **fields)
        else:
            store.update_job_fields(row.id, **fields)
    except StateConflict:
        return 0
    return int(moved)


def _chunk_vintages(placements: Sequence[chunking.ChunkPlacement],
                    forecasts: Mapping[str, RegionForecast]) -> list[float | None]:
    """Per placement: the newest vintage among the forecast slots its chunks overlap."""
    names = tuple(sorted({p.region for p in placements}))
    column = {name: i for i, name in enumerate(names)}
    rows = [(row, column[p.region], start, end) for row, p in enumerate(placements)
            for start, end in p.chunks]
    by_chunk = placement.Placements(
        names, np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.float64), np.full(len(rows), np.nan),
        np.zeros(len(rows), dtype=np.int64))
    newest = _newest_vintages(by_chunk, np.array([r[3] - r[2] for r in rows]), forecasts)
    per_job: list[float | None] = [None] * len(placements)
    for (row, *_), vintage in zip(rows, newest.tolist(), strict=True):
        if not math.isnan(vintage):
            held = per_job[row]
            per_job[row] = vintage if held is None else max(held, vintage)
    return per_job


def _note_parts(queued: UnstartedJobs, placed: npt.NDArray[np.int64],
                placements: placement.Placements,
                comparable: Mapping[tuple[str, ...], tuple[list[str], list[str]]],
                forecasts: Mapping[str, RegionForecast]
                ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.bool_]]:
    """Per placement row, what its note holds besides the reason: the regions left out of
    the comparison (JSON text as ``PlanUpdate.stored_note`` writes it, None for none),
    and whether its region's data is replayed. Each once per region list, per region."""
    key_of: dict[tuple[str, ...], int] = {}
    region_lists = np.array([key_of.setdefault(key, len(key_of)) for key in queued.regions],
                            dtype=np.int64)[placed]
    keys = list(key_of)
    left_out: npt.NDArray[np.object_] = np.full(len(keys), None, dtype=object)
    for index in np.unique(region_lists).tolist():  # the placed jobs' lists only
        if dropped := comparable[keys[index]][1]:
            left_out[index] = json.dumps(list(dropped))
    replayed = np.array([_replayed(forecasts[name].series)
                         for name in placements.region_names], dtype=bool)
    return left_out[region_lists], replayed[placements.region_index]


def _unchanged(queued: UnstartedJobs, placed: npt.NDArray[np.int64],
               placements: placement.Placements, vintages: npt.NDArray[np.float64],
               left_out: npt.NDArray[np.object_], replayed: npt.NDArray[np.bool_]
               ) -> npt.NDArray[np.bool_]:
    """Per placement row: whether the job is planned exactly so already (its note's
    parts too; a job whose note is stored as words, from before migration 0010, is not)."""
    column = {name: i for i, name in enumerate(placements.region_names)}
    region = np.array([column.get(name, -1) if name is not None else -1
                       for name in queued.planned_region], dtype=np.int64)[placed]
    reason = np.array([-1 if value is None else value for value in queued.plan_reason],
                      dtype=np.int64)[placed]

    def floats(values: list[float | None]) -> npt.NDArray[np.float64]:
        return np.array(values, dtype=np.float64)[placed]  # None -> NaN

    def same(stored: npt.NDArray[np.float64], new: npt.NDArray[np.float64], tolerance: float
             ) -> npt.NDArray[np.bool_]:
        both_missing = np.isnan(stored) & np.isnan(new)
        with np.errstate(invalid="ignore"):
            return both_missing | (np.abs(stored - new) <= tolerance)

    unchanged: npt.NDArray[np.bool_] = (
        (np.array(queued.states, dtype=object)[placed] == JobState.PLANNED.value)
        & (region == placements.region_index) & (reason == placements.reasons)
        & same(floats(queued.planned_start), placements.starts, SAME_TIME_S)
        & same(floats(queued.planned_vintage), vintages, SAME_TIME_S)
        & same(floats(queued.planned_intensity), placements.intensities, 0.0)
        & (np.array(queued.plan_left_out, dtype=object)[placed] == left_out)
        & (np.array([-1 if value is None else int(value) for value in queued.plan_replayed],
                    dtype=np.int64)[placed] == replayed)
        & np.array(queued.plan_note_cleared, dtype=bool)[placed]
    )
    return unchanged


def _log_moves(queued: UnstartedJobs, moves: Sequence[tuple[int, PlanUpdate]]) -> None:
    """One line per job a re-plan moved (from where to where, and why), the first
    ``MOVES_LOGGED`` of them; a forecast change can move thousands at once."""
    for row, update in moves[:MOVES_LOGGED]:
        previous = queued.planned_start[row]
        log.info("job %d: re-planned from %s at %s to %s", update.job_id,
                 queued.planned_region[row],
                 iso_utc(from_epoch(previous)) if previous is not None else None,
                 update.describe())
    if len(moves) > MOVES_LOGGED:
        log.info("re-plan moved %d more jobs (see each job's events)",
                 len(moves) - MOVES_LOGGED)


def run_now_intensity(
    store: Store, config: Config, region: str, now: datetime, duration: timedelta,
    cache: PlanCache | None = None,
) -> float | None:
    """Mean forecast over [now, now + duration) in ``region``; None unless fully covered."""
    loaded = (cache.forecasts(store, config, [region], now)[region] if cache is not None
              else load_forecast(store, config, region, now - LOOKBACK, now + duration))
    mean, covered = intensity.window_mean(loaded.forecast, to_epoch(now),
                                          duration.total_seconds())
    return mean if covered else None


@dataclass(frozen=True)
class Preview:
    """A dry-run plan (`gridshift plan`): the cleanest window per region, best first."""

    now: datetime
    options: list[placement.WindowOption]
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
    options = placement.region_options(
        duration.total_seconds(), to_epoch(not_before), to_epoch(deadline), ranked,
        {r: forecasts[r].forecast for r in ranked}, to_epoch(now),
    )
    start = max(now, not_before)
    run_now, covered = intensity.window_mean(forecasts[ranked[0]].forecast, to_epoch(start),
                                           duration.total_seconds())
    bases = {r: f.series.basis or config.provider_for(r).basis for r, f in forecasts.items()}
    return Preview(now, options, ranked[0], run_now if covered else None, signal, bases,
                   left_out)


def place_new(store: Store, config: Config, specs: Sequence[NewJob], now: datetime,
              cache: PlanCache | None = None) -> list[PlanUpdate]:
    """Place jobs not yet stored around running jobs and the others' current plans (the
    daemon re-plans the whole queue on a later tick). ``PlanUpdate.job_id`` is the index
    of the spec in ``specs``, in order. With the daemon's ``cache``, the others' plans and
    the forecasts come from memory, and the new jobs' slots are added to it.

    Whole jobs are placed first, then interruptible ones as chunks around them (as a
    re-plan does); an interruptible job's update carries its chunks."""
    if not specs:
        return []
    regions = list(dict.fromkeys(r for spec in specs for r in spec.regions))
    running = placement.Holds.from_busy(_busy(store.running_jobs(), now))
    # A few whole jobs are placed against the daemon's step functions of what is held,
    # which a large queue's 100,000 held slots would otherwise cost a sort per submit.
    profile = (cache.planned_profile() if cache is not None and len(specs) <= PROFILE_JOBS
               and all(spec.interruptible is None for spec in specs) else None)
    held = placement.Holds.from_busy([])
    if profile is None:
        planned = cache.planned_holds() if cache is not None else None
        if planned is None:
            # Only (region, start, end) of the others: a full row per queued job made
            # every submit slower as the queue grew.
            planned = placement.Holds.from_busy([placement.Busy(*hold) for hold in
                                               store.planned_holds(regions, now)])
        held = running + planned.ending_after(to_epoch(now))
    forecasts = (cache.forecasts(store, config, regions, now) if cache is not None
                 else load_forecasts(store, config, regions, now,
                                     max(s.deadline for s in specs)))
    kept: list[list[str]] = []
    dropped: list[list[str]] = []
    for spec in specs:
        usable, left_out = split_comparable(spec.regions, forecasts)
        kept.append(usable)
        dropped.append(left_out)
    updates: list[PlanUpdate | None] = [None] * len(specs)
    whole = [index for index, spec in enumerate(specs) if spec.interruptible is None]
    requests = [
        placement.JobRequest(index, float(specs[index].duration_s),
                           to_epoch(specs[index].not_before), to_epoch(specs[index].deadline),
                           tuple(kept[index]))
        for index in whole
    ]
    placements = placement.plan(
        requests, {r: forecasts[r].forecast for r in regions},
        {r: config.regions[r].slots for r in regions}, to_epoch(now),
        held if profile is None else profile.plus(running),
    )
    durations = np.array([specs[index].duration_s for index in placements.job_ids.tolist()],
                         dtype=np.float64)
    vintages = _newest_vintages(placements, durations, forecasts).tolist()
    new_holds = placement.Holds.from_placements(placements, durations)
    for row, chosen in enumerate(placements):
        index = chosen.job_id
        updates[index] = PlanUpdate(
            job_id=index, region=chosen.region, start=from_epoch(chosen.start),
            intensity=chosen.intensity if chosen.covered else None,
            vintage=None if math.isnan(vintages[row]) else from_epoch(vintages[row]),
            reason=int(chosen.reason), left_out=tuple(dropped[index]),
            replayed=_replayed(forecasts[chosen.region].series),
        )
    chunked = [index for index, spec in enumerate(specs) if spec.interruptible is not None]
    if chunked:
        chunk_holds = _place_new_chunked(config, specs, chunked, kept, dropped, forecasts, now,
                                         held + new_holds, updates)
        new_holds = new_holds + chunk_holds
    if cache is not None:
        cache.add_planned(new_holds)
    return [update for update in updates if update is not None]


def _place_new_chunked(
    config: Config, specs: Sequence[NewJob], chunked: Sequence[int],
    kept: Sequence[Sequence[str]], dropped: Sequence[Sequence[str]],
    forecasts: Mapping[str, RegionForecast], now: datetime, held: placement.Holds,
    updates: list[PlanUpdate | None],
) -> placement.Holds:
    """Place the interruptible specs ``chunked`` (indices into ``specs``) as chunks around
    ``held``; fill their ``updates``; return the slots their chunks hold."""
    jobs = []
    for index in chunked:
        spec = specs[index]
        checkpoint = spec.interruptible == CHECKPOINT
        jobs.append(chunking.ChunkJob(
            job_id=index, work_s=float(spec.duration_s), not_before=to_epoch(spec.not_before),
            deadline=to_epoch(spec.deadline), regions=tuple(kept[index]),
            min_chunk_s=float(spec.min_chunk_s if spec.min_chunk_s is not None
                              else DEFAULT_MIN_CHUNK_S),
            max_chunks=None if spec.max_pauses is None else spec.max_pauses + 1,
            restart_overhead_s=float(spec.restart_overhead_s or 0) if checkpoint else 0.0))
    regions = list(dict.fromkeys(r for job in jobs for r in job.regions))
    steps = {r: forecasts[r].forecast for r in regions}
    placements = chunking.plan_chunks(jobs, steps, {r: config.regions[r].slots
                                                    for r in regions}, to_epoch(now), held)
    means = chunking.chunk_means(steps, placements)
    vintages = _chunk_vintages(placements, forecasts)
    for chosen, chunk_intensity, vintage in zip(placements, means, vintages, strict=True):
        index = chosen.job_id
        updates[index] = PlanUpdate(
            job_id=index, region=chosen.region,
            start=from_epoch(chosen.chunks[0][0]), intensity=chosen.intensity,
            vintage=None if vintage is None else from_epoch(vintage),
            reason=int(chosen.reason), left_out=tuple(dropped[index]),
            replayed=_replayed(forecasts[chosen.region].series),
            chunk_count=len(chosen.chunks),
            chunks=tuple(ChunkPlan(chosen.region, from_epoch(start), from_epoch(end),
                                   intensity)
                         for (start, end), intensity in zip(chosen.chunks, chunk_intensity,
                                                            strict=True)))
    return placement.Holds.from_busy([placement.Busy(p.region, start, end) for p in placements
                                    for start, end in p.chunks])
