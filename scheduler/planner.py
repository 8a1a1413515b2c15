"""Pure placement math: where and when each job runs. No I/O, never reads the clock.

Times are float seconds since the epoch (UTC); ``now`` is always passed in. A forecast is
a step function: each value is the average over its own interval, and a window covering
part of an interval weighs it by overlap. The mean over a window is a difference of
prefix integrals, so every candidate start of a job costs O(1) after O(T) set-up.

The mean over [s, s + d) is piecewise linear in s with breakpoints where s or s + d
crosses an interval boundary, so its minimum over [earliest, latest] lies at ``earliest``,
``latest``, a boundary b, or b - d: those are the only candidates evaluated
(``tests/test_planner.py`` checks this against brute force).

Rules, in order:
1. A window not fully covered by forecast data is never chosen while a covered one exists.
2. Lowest mean intensity wins; ties go to the earliest start, then to the region the job
   lists first.
3. Capacity: a region runs at most ``slots`` jobs at once; running and already placed
   jobs hold a slot for their duration. Jobs are placed in order of least slack; a job
   whose best window is full takes its best window that has room.
4. No covered window in any region: the job starts at its earliest feasible start in its
   first region. No window with room: it keeps its cleanest window and waits there for
   a slot (the dispatcher still launches it by its latest start).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Means are compared after rounding, so float noise from prefix sums cannot break ties.
_MEAN_DECIMALS = 6
_COVERAGE_TOLERANCE_S = 1e-6


@dataclass(frozen=True)
class Forecast:
    """One region's intensity as a step function: values[i] over [starts[i], ends[i])."""

    starts: FloatArray
    ends: FloatArray
    values: FloatArray

    @classmethod
    def from_lists(
        cls, starts: Sequence[float], ends: Sequence[float], values: Sequence[float]
    ) -> Forecast:
        return cls(np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64),
                   np.asarray(values, dtype=np.float64))

    @classmethod
    def empty(cls) -> Forecast:
        return cls.from_lists([], [], [])

    def __post_init__(self) -> None:
        if not (len(self.starts) == len(self.ends) == len(self.values)):
            raise ValueError("starts, ends and values must have the same length")
        if len(self.starts) and (
            np.any(self.ends <= self.starts) or np.any(self.starts[1:] < self.ends[:-1])
        ):
            raise ValueError("forecast intervals must be sorted, non-empty and not overlap")


@dataclass(frozen=True)
class JobRequest:
    """A job to place: it may start in [max(now, not_before), deadline - duration]."""

    job_id: int
    duration_s: float
    not_before: float
    deadline: float
    regions: tuple[str, ...]


@dataclass(frozen=True)
class Busy:
    """A slot already held in a region over [start, end) (a running or pinned job)."""

    region: str
    start: float
    end: float


@dataclass(frozen=True)
class Placement:
    job_id: int
    region: str
    start: float
    intensity: float | None  # mean forecast over the window; None when not covered
    covered: bool
    note: str


@dataclass(frozen=True)
class WindowOption:
    region: str
    start: float
    end: float
    intensity: float | None
    covered: bool


class _PrefixIntegral:
    """Integral of a step function (and of its coverage) from its first start to t."""

    def __init__(self, forecast: Forecast) -> None:
        self.starts = forecast.starts
        self.lengths = forecast.ends - forecast.starts
        self.values = forecast.values
        self.value_before = np.concatenate(([0.0], np.cumsum(self.values * self.lengths)))
        self.cover_before = np.concatenate(([0.0], np.cumsum(self.lengths)))

    def at(self, times: FloatArray) -> tuple[FloatArray, FloatArray]:
        if len(self.starts) == 0:
            zeros = np.zeros_like(times, dtype=np.float64)
            return zeros, zeros
        index = np.searchsorted(self.starts, times, side="right") - 1
        safe = np.maximum(index, 0)
        partial = np.clip(times - self.starts[safe], 0.0, self.lengths[safe])
        value = self.value_before[safe] + self.values[safe] * partial
        cover = self.cover_before[safe] + partial
        before_first = index < 0
        value[before_first] = 0.0
        cover[before_first] = 0.0
        return value, cover

    def window_means(self, starts: FloatArray, duration: float) -> tuple[FloatArray, FloatArray]:
        """Mean intensity over [s, s + duration) (NaN where nothing is covered), covered flag."""
        v0, c0 = self.at(starts)
        v1, c1 = self.at(starts + duration)
        covered_s = c1 - c0
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(covered_s > 0, (v1 - v0) / covered_s, np.nan)
        fully = (covered_s >= duration - _COVERAGE_TOLERANCE_S).astype(np.float64)
        rounded: FloatArray = np.round(means, _MEAN_DECIMALS).astype(np.float64)
        return rounded, fully


def window_mean(forecast: Forecast, start: float, duration: float) -> tuple[float | None, bool]:
    """Mean forecast over [start, start + duration) and whether data covers all of it."""
    means, covered = _PrefixIntegral(forecast).window_means(
        np.array([start], dtype=np.float64), duration
    )
    mean = float(means[0])
    return (None if np.isnan(mean) else mean), bool(covered[0])


def _candidate_starts(forecast: Forecast, duration: float) -> FloatArray:
    boundaries = np.unique(np.concatenate((forecast.starts, forecast.ends)))
    return np.unique(np.concatenate((boundaries, boundaries - duration)))


class _RangeMin:
    """Sparse table: index of the smallest key in keys[lo:hi], earliest index on ties."""

    def __init__(self, keys: FloatArray) -> None:
        self.keys = keys
        levels = [np.arange(len(keys), dtype=np.int64)]
        width = 1
        while width * 2 <= len(keys):
            previous = levels[-1]
            left, right = previous[: len(previous) - width], previous[width:]
            take_right = keys[right] < keys[left]
            levels.append(np.where(take_right, right, left))
            width *= 2
        self.levels = levels

    def query(self, lo: IntArray, hi: IntArray) -> IntArray:
        """Vectorised over many ranges; each range must be non-empty (lo < hi)."""
        span = hi - lo
        level = np.floor(np.log2(np.maximum(span, 1))).astype(np.int64)
        result = np.empty(len(lo), dtype=np.int64)
        for k in np.unique(level):
            rows = np.nonzero(level == k)[0]
            table = self.levels[int(k)]
            left = table[lo[rows]]
            right = table[hi[rows] - (1 << int(k))]
            result[rows] = np.where(self.keys[right] < self.keys[left], right, left)
        return result


@dataclass
class _Options:
    """Every candidate window of one duration in one region, with what ranks it."""

    starts: FloatArray
    keys: FloatArray  # mean where covered, +inf where not
    means: FloatArray
    range_min: _RangeMin


@dataclass
class _RegionState:
    forecast: Forecast
    integral: _PrefixIntegral
    slots: int
    options: dict[float, _Options] = field(default_factory=dict)
    busy: list[tuple[float, float]] = field(default_factory=list)

    def options_for(self, duration: float) -> _Options:
        cached = self.options.get(duration)
        if cached is None:
            starts = _candidate_starts(self.forecast, duration)
            means, covered = self.integral.window_means(starts, duration)
            keys = np.where(covered > 0, means, np.inf)
            cached = _Options(starts, keys, means, _RangeMin(keys))
            self.options[duration] = cached
        return cached


class _Occupancy:
    """Slots held over time in one region, on a grid of every time that matters there."""

    def __init__(self, grid: FloatArray, slots: int) -> None:
        self.grid = grid
        self.count = np.zeros(max(len(grid) - 1, 0), dtype=np.int64)
        self.slots = slots
        self._full_prefix: IntArray | None = None

    def cells(self, start: float, end: float) -> tuple[int, int]:
        return (int(np.searchsorted(self.grid, start, side="right") - 1),
                int(np.searchsorted(self.grid, end, side="left")))

    def has_room(self, start: float, end: float) -> bool:
        a, b = self.cells(start, end)
        return b <= a or int(self.count[max(a, 0):b].max(initial=0)) < self.slots

    def rooms(self, starts: FloatArray, duration: float) -> npt.NDArray[np.bool_]:
        if self._full_prefix is None:
            full = (self.count >= self.slots).astype(np.int64)
            self._full_prefix = np.concatenate(([0], np.cumsum(full)))
        a = np.maximum(np.searchsorted(self.grid, starts, side="right") - 1, 0)
        b = np.searchsorted(self.grid, starts + duration, side="left")
        b = np.maximum(b, a)
        prefix = self._full_prefix
        result: npt.NDArray[np.bool_] = (prefix[b] - prefix[a]) == 0
        return result

    def hold(self, start: float, end: float) -> None:
        a, b = self.cells(start, end)
        if b > max(a, 0):
            self.count[max(a, 0):b] += 1
            self._full_prefix = None


def plan(
    jobs: Sequence[JobRequest],
    forecasts: Mapping[str, Forecast],
    slots: Mapping[str, int],
    now: float,
    busy: Sequence[Busy] = (),
) -> list[Placement]:
    """Place every job; return placements in the order jobs were placed (least slack first).

    ``forecasts`` and ``slots`` name every region a job may use.
    """
    regions = {
        name: _RegionState(forecasts.get(name, Forecast.empty()),
                           _PrefixIntegral(forecasts.get(name, Forecast.empty())),
                           slots.get(name, 1))
        for name in {r for job in jobs for r in job.regions} | {b.region for b in busy}
    }
    earliest = {j.job_id: max(now, j.not_before) for j in jobs}
    latest = {j.job_id: max(j.deadline - j.duration_s, earliest[j.job_id]) for j in jobs}
    order = sorted(jobs, key=lambda j: (latest[j.job_id] - now, j.job_id))

    best = _best_unconstrained(order, regions, earliest, latest)
    occupancy = _build_occupancy(order, regions, busy, earliest, latest)

    placements = []
    for job in order:
        choice = best[job.job_id]
        region_name, start, key = choice
        room = occupancy[region_name].has_room(start, start + job.duration_s)
        if not room:
            fitted = _best_with_room(job, regions, occupancy, earliest[job.job_id],
                                     latest[job.job_id])
            if fitted is not None:
                region_name, start, key = fitted
                room = True
        occupancy[region_name].hold(start, start + job.duration_s)
        placements.append(_placement(job, region_name, start, key, room, regions,
                                     earliest[job.job_id], latest[job.job_id]))
    return placements


def _best_unconstrained(
    jobs: Sequence[JobRequest],
    regions: Mapping[str, _RegionState],
    earliest: Mapping[int, float],
    latest: Mapping[int, float],
) -> dict[int, tuple[str, float, float]]:
    """For each job: (region, start, key) of its cleanest covered window, ignoring capacity."""
    best: dict[int, tuple[str, float, float]] = {}
    by_duration: dict[float, list[JobRequest]] = {}
    for job in jobs:
        by_duration.setdefault(job.duration_s, []).append(job)
    for duration, group in by_duration.items():
        first = np.array([earliest[j.job_id] for j in group])
        last = np.array([latest[j.job_id] for j in group])
        # Column per region the group may use; rows of jobs that may not use it stay inf.
        names = sorted({r for j in group for r in j.regions})
        keys = np.full((len(group), len(names)), np.inf)
        starts = np.tile(first[:, None], (1, len(names)))
        for column, name in enumerate(names):
            state = regions[name]
            options = state.options_for(duration)
            rows = np.array([name in j.regions for j in group])
            k, s = _best_in_ranges(options, state.integral, duration, first, last)
            keys[rows, column] = k[rows]
            starts[rows, column] = s[rows]
        for row, job in enumerate(group):
            ranked = sorted(
                (keys[row, names.index(r)], starts[row, names.index(r)], position, r)
                for position, r in enumerate(job.regions)
            )
            key, start, _, region = ranked[0]
            if not np.isfinite(key):  # no covered window anywhere: earliest start, first region
                region, start = job.regions[0], earliest[job.job_id]
            best[job.job_id] = (region, float(start), float(key))
    return best


def _best_in_ranges(
    options: _Options, integral: _PrefixIntegral, duration: float,
    first: FloatArray, last: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Best key and start per job among boundary candidates in [first, last], first and last."""
    first_means, first_cov = integral.window_means(first, duration)
    last_means, last_cov = integral.window_means(last, duration)
    key_first = np.where(first_cov > 0, first_means, np.inf)
    key_last = np.where(last_cov > 0, last_means, np.inf)
    best_key, best_start = key_first.copy(), first.copy()
    lo = np.searchsorted(options.starts, first, side="left")
    hi = np.searchsorted(options.starts, last, side="right")
    nonempty = hi > lo
    if np.any(nonempty) and len(options.starts):
        index = options.range_min.query(lo[nonempty], hi[nonempty])
        inner_key = options.keys[index]
        inner_start = options.starts[index]
        better = inner_key < best_key[nonempty]
        rows = np.nonzero(nonempty)[0][better]
        best_key[rows] = inner_key[better]
        best_start[rows] = inner_start[better]
    take_last = key_last < best_key
    best_key[take_last] = key_last[take_last]
    best_start[take_last] = last[take_last]
    return best_key, best_start


def _build_occupancy(
    jobs: Sequence[JobRequest],
    regions: Mapping[str, _RegionState],
    busy: Sequence[Busy],
    earliest: Mapping[int, float],
    latest: Mapping[int, float],
) -> dict[str, _Occupancy]:
    occupancy = {}
    for name, state in regions.items():
        points = [np.array([b.start for b in busy if b.region == name] +
                           [b.end for b in busy if b.region == name], dtype=np.float64)]
        mine = [j for j in jobs if name in j.regions]
        for duration in {j.duration_s for j in mine}:
            starts = state.options_for(duration).starts
            points += [starts, starts + duration]
        edges = np.array([earliest[j.job_id] for j in mine] + [latest[j.job_id] for j in mine],
                         dtype=np.float64)
        ends = np.array([earliest[j.job_id] + j.duration_s for j in mine] +
                        [latest[j.job_id] + j.duration_s for j in mine], dtype=np.float64)
        grid = np.unique(np.concatenate([*points, edges, ends]))
        occupancy[name] = _Occupancy(grid, state.slots)
        for b in busy:
            if b.region == name:
                occupancy[name].hold(b.start, b.end)
    return occupancy


def _best_with_room(
    job: JobRequest,
    regions: Mapping[str, _RegionState],
    occupancy: Mapping[str, _Occupancy],
    first: float,
    last: float,
) -> tuple[str, float, float] | None:
    """The cleanest window with a free slot, by the same ranking; None if none has room."""
    ranked: list[tuple[float, float, int, str]] = []
    for position, name in enumerate(job.regions):
        state = regions[name]
        options = state.options_for(job.duration_s)
        inside = (options.starts >= first) & (options.starts <= last)
        starts = np.concatenate(([first], options.starts[inside], [last]))
        means, covered = state.integral.window_means(starts, job.duration_s)
        keys = np.where(covered > 0, means, np.inf)
        room = occupancy[name].rooms(starts, job.duration_s)
        if not np.any(room):
            continue
        # Covered windows with room beat uncovered ones with room; then the earliest start.
        keys = np.where(room, keys, np.nan)
        finite = room & np.isfinite(keys)
        if np.any(finite):
            index = int(np.nanargmin(np.where(finite, keys, np.nan)))
            ranked.append((float(keys[index]), float(starts[index]), position, name))
        else:
            index = int(np.argmax(room))
            ranked.append((np.inf, float(starts[index]), position, name))
    if not ranked:
        return None
    key, start, _, name = min(ranked)
    return name, start, key


def _placement(
    job: JobRequest, region: str, start: float, key: float, room: bool,
    regions: Mapping[str, _RegionState], first: float, last: float,
) -> Placement:
    mean, covered = window_mean(regions[region].forecast, start, job.duration_s)
    notes = []
    if first > job.deadline - job.duration_s:
        notes.append("cannot finish by its deadline: starts as early as possible")
    if not covered:
        notes.append("no region has forecasts covering a feasible window: "
                     "earliest feasible start")
    if not room:
        notes.append("every feasible window is full: waits for a free slot")
    if not notes:
        notes.append("cleanest covered window")
    return Placement(job.job_id, region, start, mean if covered or mean is not None else None,
                     covered, "; ".join(notes))


def region_options(
    duration_s: float,
    not_before: float,
    deadline: float,
    regions: Sequence[str],
    forecasts: Mapping[str, Forecast],
    now: float,
) -> list[WindowOption]:
    """The cleanest window in each region (capacity ignored), best first: for `plan`."""
    options = []
    for name in regions:
        single = JobRequest(0, duration_s, not_before, deadline, (name,))
        placed = plan([single], forecasts, {name: 1_000_000}, now)[0]
        options.append(WindowOption(name, placed.start, placed.start + duration_s,
                                    placed.intensity, placed.covered))
    order = {name: i for i, name in enumerate(regions)}
    return sorted(
        options,
        key=lambda o: (not o.covered, np.inf if o.intensity is None else o.intensity,
                       o.start, order[o.region]),
    )
