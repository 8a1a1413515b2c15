"""The jobs a simulation replays: a jobs CSV or a seeded built-in workload.

Jobs CSV: ``id,submit_time,duration,deadline,regions,power_w[,interruptible,min_chunk]``.
``duration`` is a DUR (``90s``, ``2h``, ``1h30m``) or plain seconds; times are ISO-8601
(naive = UTC); ``regions`` are separated by ``;`` (the first is where ``now`` runs it);
``deadline`` is the finish-by time. ``interruptible`` is ``suspend`` or ``checkpoint`` (the
simulator treats both alike: no restart overhead) or blank for a whole job; ``min_chunk``
(a DUR or seconds, blank = 30 minutes) is its shortest chunk.

Built-in workloads (all times UTC):
- ``ml-workday``: the ML training scenario of "Let's Wait Awhile" (Wiesner et al.,
  Middleware 2021). Jobs of 4 h to 90 h in 30-minute steps, submitted at a uniformly random
  minute of workday hours (09:00 to 17:00, Monday to Friday). If the earliest possible finish
  falls outside workday hours, the deadline is 09:00 of the next workday after it;
  otherwise the deadline is the earliest possible finish (no slack).
- ``nightly``: one 30-minute job a day, usually at 01:00, that may move up to W hours either
  way: submitted at 01:00 - W, deadline 01:30 + W; ``now`` runs it at 01:00.

Generated jobs are kept only where the actuals cover [submit, deadline] in every region the
job may use (data gaps and the ends of the data are skipped), so emissions are always
measured, never guessed. ``WorkloadOptions.interruptible`` makes every generated job
interruptible, with ``min_chunk_s`` as its shortest chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scheduler.errors import BadInput
from scheduler.records import DEFAULT_MIN_CHUNK_S, INTERRUPTIBLE_MODES
from scheduler.simulate.series import Series, epoch_seconds, numbers

if TYPE_CHECKING:
    import pandas as pd

WORKLOADS = ("ml-workday", "nightly")
WORKDAY_START_H = 9
WORKDAY_END_H = 17
HOUR = 3600.0


@dataclass(frozen=True)
class SimJob:
    """A job in a simulation. It may start in [submit, deadline - duration_s]."""

    job_id: int
    submit: float
    duration_s: float
    deadline: float
    regions: tuple[str, ...]
    power_w: float
    usual_start: float | None = None  # when the ``now`` policy runs it; None: at submission
    interruptible: bool = False  # may pause between chunks of at least min_chunk_s
    min_chunk_s: float = DEFAULT_MIN_CHUNK_S

    def as_whole(self) -> SimJob:
        """The same job run as one block."""
        return replace(self, interruptible=False)

    @property
    def baseline_start(self) -> float:
        return self.submit if self.usual_start is None else self.usual_start

    @property
    def latest_start(self) -> float:
        return self.deadline - self.duration_s

    @property
    def group(self) -> str:
        """The result row it counts in: its region, or "all" when it may move between them."""
        return self.regions[0] if len(self.regions) == 1 else "all"


@dataclass(frozen=True)
class WorkloadOptions:
    count: int = 3387
    seed: int = 1
    min_duration_s: float = 4 * HOUR
    max_duration_s: float = 90 * HOUR
    step_s: float = 0.5 * HOUR
    window_s: float = 3 * HOUR  # nightly: how far the job may move either way
    power_w: float = 300.0
    interruptible: bool = False
    min_chunk_s: float = DEFAULT_MIN_CHUNK_S


def read_jobs(path: Path) -> list[SimJob]:
    """Jobs from a CSV file; BadInput names the file, row and problem."""
    from scheduler.simulate.series import read_table

    frame = read_table(path)
    needed = ["id", "submit_time", "duration", "deadline", "regions", "power_w"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise BadInput(f"{path}: missing column(s) {', '.join(missing)}; "
                       f"expected {','.join(needed)}")
    if frame.empty:
        raise BadInput(f"{path}: no jobs")
    what = str(path)
    submits = epoch_seconds(frame["submit_time"], what)
    deadlines = epoch_seconds(frame["deadline"], what)
    powers = numbers(frame["power_w"], what)
    modes = _optional_column(frame, "interruptible")
    min_chunks = _optional_column(frame, "min_chunk")
    jobs = []
    seen: set[int] = set()
    for row, (raw_id, raw_duration, raw_regions) in enumerate(
        zip(frame["id"], frame["duration"], frame["regions"], strict=True)
    ):
        where = f"{path} row {row + 2}"
        try:
            job_id = int(raw_id)
        except (TypeError, ValueError):
            raise BadInput(f"{where}: id {raw_id!r} is not a whole number") from None
        if job_id in seen:
            raise BadInput(f"{where}: id {job_id} appears twice")
        seen.add(job_id)
        duration = _seconds(str(raw_duration).strip(), where, "duration")
        regions = tuple(r.strip() for r in str(raw_regions).split(";") if r.strip())
        if not regions or str(raw_regions) == "nan":
            raise BadInput(f"{where}: no regions")
        if not powers[row] > 0:
            raise BadInput(f"{where}: power_w must be above zero")
        if deadlines[row] <= submits[row]:
            raise BadInput(f"{where}: deadline is not after submit_time")
        mode = modes[row].lower()
        if mode and mode not in INTERRUPTIBLE_MODES:
            raise BadInput(f"{where}: interruptible {modes[row]!r} is not "
                           f"{' or '.join(INTERRUPTIBLE_MODES)} (or blank for a whole job)")
        min_chunk = float(DEFAULT_MIN_CHUNK_S)
        if min_chunks[row]:
            if not mode:
                raise BadInput(f"{where}: min_chunk is given but the job is not interruptible")
            min_chunk = _seconds(min_chunks[row], where, "min_chunk")
        jobs.append(SimJob(job_id, float(submits[row]), duration, float(deadlines[row]),
                           tuple(dict.fromkeys(regions)), float(powers[row]),
                           interruptible=bool(mode), min_chunk_s=min_chunk))
    return jobs


def _optional_column(frame: pd.DataFrame, name: str) -> list[str]:
    """A column's cells as stripped text; blank where the cell or the column is missing."""
    if name not in frame.columns:
        return [""] * len(frame)
    return ["" if cell is None or (isinstance(cell, float) and np.isnan(cell))
            else str(cell).strip() for cell in frame[name]]


def _seconds(text: str, where: str, column: str) -> float:
    """A DUR or plain seconds, above zero."""
    from scheduler.timespec import parse_duration

    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text).total_seconds()
        except BadInput as error:
            raise BadInput(f"{where}: {column}: {error}") from None
    if not seconds > 0:
        raise BadInput(f"{where}: {column} must be above zero")
    return seconds


def check_jobs(jobs: Sequence[SimJob], actuals: Mapping[str, Series]) -> None:
    """BadInput unless every job's regions have actuals covering all it could run in."""
    for job in jobs:
        for region in job.regions:
            if region not in actuals:
                raise BadInput(f"job {job.job_id}: unknown region {region!r} "
                               f"(actuals have: {', '.join(sorted(actuals))})")
    for region, series in actuals.items():
        mine = [j for j in jobs if region in j.regions]
        if not mine:
            continue
        starts = np.array([j.submit for j in mine])
        ends = np.array([max(j.deadline, j.submit + j.duration_s) for j in mine])
        covered = series.covers(starts, ends)
        if not np.all(covered):
            job = mine[int(np.argmin(covered))]
            from scheduler.simulate.series import iso

            raise BadInput(f"job {job.job_id}: actuals for {region} do not cover "
                           f"{iso(job.submit)} to {iso(float(ends[int(np.argmin(covered))]))}")


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _is_workday(moment: datetime) -> bool:
    return moment.weekday() < 5


def _in_workday_hours(moment: datetime) -> bool:
    """09:00 <= time <= 17:00 on Monday to Friday (a finish at 17:00 sharp is inside)."""
    if not _is_workday(moment):
        return False
    start = moment.replace(hour=WORKDAY_START_H, minute=0, second=0, microsecond=0)
    end = moment.replace(hour=WORKDAY_END_H, minute=0, second=0, microsecond=0)
    return start <= moment <= end


def _next_workday_start(moment: datetime) -> datetime:
    """09:00 of the first workday at or after ``moment`` whose 09:00 is later than it."""
    candidate = moment.replace(hour=WORKDAY_START_H, minute=0, second=0, microsecond=0)
    if candidate <= moment:
        candidate += timedelta(days=1)
    while not _is_workday(candidate):
        candidate += timedelta(days=1)
    return candidate


def ml_workday_deadline(submit: float, duration_s: float) -> float:
    """The Let's Wait Awhile ML deadline: no slack inside workday hours, else next 09:00."""
    finish = _from_epoch(submit + duration_s)
    if _in_workday_hours(finish):
        return submit + duration_s
    return _next_workday_start(finish).timestamp()


def _workday_minutes(first: float, last: float) -> np.ndarray:
    """Every whole minute (epoch seconds) in workday hours within [first, last)."""
    day = _from_epoch(first).replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = []
    per_day = np.arange(WORKDAY_START_H * 60, WORKDAY_END_H * 60) * 60.0
    while day.timestamp() < last:
        if _is_workday(day):
            minutes.append(day.timestamp() + per_day)
        day += timedelta(days=1)
    if not minutes:
        return np.array([], dtype=np.float64)
    every = np.concatenate(minutes)
    return every[(every >= first) & (every < last)]


def generate(name: str, regions: Sequence[str], actuals: Mapping[str, Series], scope: str,
             options: WorkloadOptions, first_id: int = 1) -> list[SimJob]:
    """The seeded workload ``name`` for ``regions``; scope "region": ``count`` jobs confined
    to each region (time shifting only; the same submissions and durations in each region
    whose actuals span the same time); "all": ``count`` jobs that may use every region."""
    if name not in WORKLOADS:
        raise BadInput(f"unknown workload {name!r} (workloads: {', '.join(WORKLOADS)})")
    if name == "ml-workday":
        return _ml_workday(regions, actuals, scope, options, first_id)
    return _nightly(regions, actuals, scope, options, first_id)


def _coverage(actuals: Mapping[str, Series], regions: Sequence[str]) -> tuple[float, float]:
    return (max(actuals[r].first for r in regions), min(actuals[r].last for r in regions))


def _ml_workday(regions: Sequence[str], actuals: Mapping[str, Series], scope: str,
                options: WorkloadOptions, first_id: int) -> list[SimJob]:
    if options.min_duration_s > options.max_duration_s or options.step_s <= 0:
        raise BadInput("durations: --min-duration must not exceed --max-duration")
    durations = np.arange(options.min_duration_s, options.max_duration_s + 1e-6, options.step_s)
    jobs: list[SimJob] = []
    next_id = first_id
    for region_set in _passes(regions, scope):
        # Every pass restarts the seed: regions whose data span the same days get the same jobs.
        generator = np.random.default_rng(options.seed)
        first, last = _coverage(actuals, region_set if scope == "region" else regions)
        minutes = _workday_minutes(first, last)
        if not len(minutes):
            raise BadInput(f"the actuals ({', '.join(region_set)}) hold no workday hours")
        made = 0
        attempts = 0
        while made < options.count:
            batch = max(options.count - made, 64)
            submits = minutes[generator.integers(0, len(minutes), batch)]
            lengths = durations[generator.integers(0, len(durations), batch)]
            homes = (generator.integers(0, len(regions), batch) if scope == "all"
                     else np.zeros(batch, dtype=np.int64))
            deadlines = np.array([ml_workday_deadline(s, d)
                                  for s, d in zip(submits, lengths, strict=True)])
            usable = np.ones(batch, dtype=bool)
            for region in (region_set if scope == "region" else regions):
                usable &= actuals[region].covers(submits, deadlines)
            for index in np.nonzero(usable)[0][: options.count - made]:
                job_regions = (region_set if scope == "region" else
                               _home_first(regions, int(homes[index])))
                jobs.append(SimJob(next_id, float(submits[index]), float(lengths[index]),
                                   float(deadlines[index]), job_regions, options.power_w,
                                   interruptible=options.interruptible,
                                   min_chunk_s=options.min_chunk_s))
                next_id += 1
                made += 1
            attempts += batch
            if attempts > 50 * options.count + 10_000 and made < options.count:
                raise BadInput(f"the actuals are too short or gappy for {options.count} "
                               f"ml-workday jobs of up to {options.max_duration_s / HOUR:g} h")
    jobs.sort(key=lambda j: (j.submit, j.job_id))
    return jobs


def _passes(regions: Sequence[str], scope: str) -> list[tuple[str, ...]]:
    """One entry per generation pass: each region alone, or one pass for all regions."""
    return [(r,) for r in regions] if scope == "region" else [tuple(regions)]


def _home_first(regions: Sequence[str], home: int) -> tuple[str, ...]:
    return (regions[home], *(r for i, r in enumerate(regions) if i != home))


def _nightly(regions: Sequence[str], actuals: Mapping[str, Series], scope: str,
             options: WorkloadOptions, first_id: int) -> list[SimJob]:
    """One job a day per pass; ``count`` caps the days (the default runs every day)."""
    run_s = 1800.0
    generator = np.random.default_rng(options.seed)
    jobs: list[SimJob] = []
    next_id = first_id
    for region_set in _passes(regions, scope):
        use = region_set if scope == "region" else tuple(regions)
        first, last = _coverage(actuals, use)
        day = _from_epoch(first).replace(hour=1, minute=0, second=0, microsecond=0)
        usual_times = []
        while day.timestamp() < last:
            usual_times.append(day.timestamp())
            day += timedelta(days=1)
        usual = np.array(usual_times)
        submits = usual - options.window_s
        deadlines = usual + run_s + options.window_s
        usable = np.ones(len(usual), dtype=bool)
        for region in use:
            usable &= actuals[region].covers(submits, deadlines)
        for index in np.nonzero(usable)[0][: options.count]:
            job_regions = (use if scope == "region" else
                           _home_first(regions, int(generator.integers(0, len(regions)))))
            jobs.append(SimJob(next_id, float(submits[index]), run_s, float(deadlines[index]),
                               job_regions, options.power_w, usual_start=float(usual[index]),
                               interruptible=options.interruptible,
                               min_chunk_s=options.min_chunk_s))
            next_id += 1
    if not jobs:
        raise BadInput("the actuals cover no full nightly window")
    jobs.sort(key=lambda j: (j.submit, j.job_id))
    return jobs
