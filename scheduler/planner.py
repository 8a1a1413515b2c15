"""Pure placement math: where and when each job runs. No I/O, never reads the clock.

Times are float seconds since the epoch (UTC); ``now`` is always passed in. A forecast is
a step function: each value is the average over its own interval, and a window covering
part of an interval weighs it by overlap. The mean over a window is a difference of
prefix integrals, so every candidate start of a job costs O(1) after O(T) set-up.

The mean over [s, s + d) is piecewise linear in s with breakpoints where s or s + d
crosses an interval boundary, so its minimum over [earliest, latest] lies at ``earliest``,
``latest``, a boundary b, or b - d: those are the only candidates evaluated
(``tests/test_planner.py`` checks this against brute force). With capacity the same holds
on each stretch of starts whose windows have room, whose ends are where a full stretch of
time ends (a start) or begins (an end).

Rules, in order:
1. A window not fully covered by forecast data is never chosen while a covered one exists.
2. Lowest mean intensity wins; ties go to the earliest start, then to the region the job
   lists first. Means are compared rounded to 1e-6 gCO2/kWh, so float noise cannot split
   a tie.
3. Capacity: a region runs at most ``slots`` jobs at once; running and already placed
   jobs hold a slot for their duration. Jobs are placed in order of least slack
   (deadline - duration - now, then job id); a job whose best window is full takes its
   best window that has room, by rules 1 and 2.
4. No covered window in any region: the job starts at its earliest feasible start in its
   first region (with capacity: its earliest start with room, then the first region).
   No window with room anywhere: it keeps its cleanest window and waits there for a slot
   (the dispatcher still launches it by its latest start); it holds that slot, so later
   jobs plan around it.
5. A job that cannot finish by its deadline starts as early as it may.

How it stays fast: per region and distinct duration, the candidate windows are computed
once (vectorised) and, when many jobs share the duration, indexed by a sparse table (range
minimum in O(1)), so each job's cleanest window in a region is one look-up; only jobs
whose cleanest window is full search further, over the stretches of time that still have
room, region by region, cleanest region first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# np.interp without its Python-level argument checks: most calls here are on a few points.
_interp: Callable[[FloatArray, FloatArray, FloatArray], FloatArray]
try:
    from numpy._core.multiarray import interp as _interp  # numpy 2
except ImportError:  # pragma: no cover - numpy 1.26
    _interp = np.interp

# Means are compared after rounding, so float noise from prefix sums cannot break ties.
_MEAN_DECIMALS = 6
_COVERAGE_TOLERANCE_S = 1e-6
_INF = math.inf
_KEY_SCALE = 10.0**_MEAN_DECIMALS  # keys are means in whole micro-gCO2/kWh


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
        if not (np.all(np.isfinite(self.values)) and np.all(np.isfinite(self.starts))
                and np.all(np.isfinite(self.ends))):
            raise ValueError("forecast times and values must be finite numbers")


@dataclass(frozen=True)
class JobRequest:
    """A job to place: it may start in [max(now, not_before), deadline - duration]."""

    job_id: int
    duration_s: float
    not_before: float
    deadline: float
    regions: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"job {self.job_id}: duration must be a positive number of seconds")
        if not (math.isfinite(self.not_before) and math.isfinite(self.deadline)):
            raise ValueError(f"job {self.job_id}: not_before and deadline must be finite")
        if not self.regions:
            raise ValueError(f"job {self.job_id}: no region to run in")


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
    intensity: float | None  # mean forecast over the window; None when not fully covered
    covered: bool
    note: str
    # No window with room existed: the job waits at ``start`` for a free slot.
    waits_for_slot: bool = False


@dataclass(frozen=True)
class WindowOption:
    region: str
    start: float
    end: float
    intensity: float | None
    covered: bool


class _PrefixIntegral:
    """Integral of a step function (and of its coverage) from its first start to t.

    Both integrals are continuous and linear between interval boundaries, so they are
    stored at the boundaries and interpolated (``np.interp``, one C call per array).
    """

    def __init__(self, forecast: Forecast) -> None:
        lengths = forecast.ends - forecast.starts
        value_before = np.concatenate(([0.0], np.cumsum(forecast.values * lengths)))
        cover_before = np.concatenate(([0.0], np.cumsum(lengths)))
        # return_index only to skip np.unique's plain path, whose first call imports numpy.ma
        # (about 15 ms of `gridshift submit`'s start-up).
        self.boundaries: FloatArray = np.unique(
            np.concatenate((forecast.starts, forecast.ends)), return_index=True)[0]
        # Where a boundary falls: the interval it starts, else the gap or end it closes.
        index = np.maximum(np.searchsorted(forecast.starts, self.boundaries, side="right") - 1, 0)
        if len(forecast.starts):
            partial = np.minimum(self.boundaries - forecast.starts[index], lengths[index])
            self.value_at = value_before[index] + forecast.values[index] * partial
            self.cover_at = cover_before[index] + partial
        self.empty = len(forecast.starts) == 0

    def at(self, times: FloatArray) -> tuple[FloatArray, FloatArray]:
        if self.empty:
            zeros = np.zeros(len(times), dtype=np.float64)
            return zeros, zeros
        return (_interp(times, self.boundaries, self.value_at),
                _interp(times, self.boundaries, self.cover_at))

    def window_keys(self, starts: FloatArray, duration: float) -> FloatArray:
        """Mean over [s, s + duration) in whole micro-gCO2/kWh where data covers all of
        it, else +inf: rounded, so float noise cannot split a tie."""
        if self.empty:
            return np.full(len(starts), _INF)
        ends = starts + duration
        boundaries = self.boundaries
        value = _interp(ends, boundaries, self.value_at)
        value -= _interp(starts, boundaries, self.value_at)
        cover = _interp(ends, boundaries, self.cover_at)
        cover -= _interp(starts, boundaries, self.cover_at)
        value *= _KEY_SCALE / duration
        keys: FloatArray = np.where(cover >= duration - _COVERAGE_TOLERANCE_S,
                                    np.rint(value), _INF)
        return keys


def window_mean(forecast: Forecast, start: float, duration: float) -> tuple[float | None, bool]:
    """Mean forecast over [start, start + duration) and whether data covers all of it.

    The mean is over the covered part (None when nothing is covered); callers that need a
    mean over the whole window use it only when ``covered`` is true.
    """
    value, cover = _PrefixIntegral(forecast).at(
        np.array([start, start + duration], dtype=np.float64))
    covered_s = float(cover[1] - cover[0])
    if covered_s <= 0:
        return None, False
    mean = round(float(value[1] - value[0]) / covered_s, _MEAN_DECIMALS)
    return mean, covered_s >= duration - _COVERAGE_TOLERANCE_S


# Below this many queries a sparse table costs more to build than scanning each range.
_TABLE_MIN_QUERIES = 16


class _Options:
    """Every candidate window of one duration in one region, ready for range minima.

    Candidates are the interval boundaries b and b - duration, sorted by start. Many
    queries "cleanest, then earliest, candidate with a start in [lo, hi]" are answered by
    a sparse table over the candidates' ranks by (key, start), O(1) each and vectorised;
    a few by scanning each range.
    """

    def __init__(self, integral: _PrefixIntegral, duration: float) -> None:
        self.integral = integral
        self.duration = duration
        boundaries = integral.boundaries
        self.starts: FloatArray = np.sort(
            np.concatenate((boundaries - duration, boundaries)), kind="stable")
        self.keys = integral.window_keys(self.starts, duration)
        self._table: tuple[IntArray, IntArray] | None = None

    def _sparse_table(self) -> tuple[IntArray, IntArray]:
        """(by_rank, table): table[k][i] is the lowest rank in [i, i + 2**k)."""
        if self._table is None:
            count = len(self.starts)
            by_rank: IntArray = np.argsort(self.keys, kind="stable")
            rank = np.empty(count, dtype=np.int64)
            rank[by_rank] = np.arange(count, dtype=np.int64)
            levels = max(count.bit_length(), 1)
            table = np.empty((levels, count), dtype=np.int64)
            if count:
                table[0] = rank
            for level in range(1, levels):
                width = 1 << (level - 1)
                below = table[level - 1]
                table[level, : count - width] = np.minimum(below[: count - width],
                                                           below[width:])
                table[level, count - width:] = below[count - width:]
            self._table = (by_rank, table)
        return self._table

    def best_in(self, lo: FloatArray, hi: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per range [lo, hi] of starts: the key and start of its cleanest window.

        The candidates are lo, hi and every boundary candidate between them; ties go to
        the earliest start. Keys are +inf where no candidate is fully covered.
        """
        count = len(lo)
        end_keys = self.integral.window_keys(np.concatenate((lo, hi)), self.duration)
        best_key = end_keys[:count]
        hi_key = end_keys[count:]
        best_start = lo.copy()
        first = self.starts.searchsorted(lo, side="left")
        stop = self.starts.searchsorted(hi, side="right")
        rows = (stop > first).nonzero()[0]
        if len(rows) >= _TABLE_MIN_QUERIES:
            if len(rows) < count:
                first, stop = first[rows], stop[rows]
            by_rank, table = self._sparse_table()
            level = np.frexp(stop - first)[1] - 1
            rank = np.minimum(table[level, first], table[level, stop - np.left_shift(1, level)])
            index = by_rank[rank]
            inner_key = self.keys[index]
            better = inner_key < best_key[rows]
            take = rows[better]
            best_key[take] = inner_key[better]
            best_start[take] = self.starts[index[better]]
        else:
            for row in rows.tolist():
                index = int(first[row]) + int(self.keys[first[row]:stop[row]].argmin())
                if self.keys[index] < best_key[row]:
                    best_key[row] = self.keys[index]
                    best_start[row] = self.starts[index]
        take_hi = hi_key < best_key
        best_key[take_hi] = hi_key[take_hi]
        best_start[take_hi] = hi[take_hi]
        return best_key, best_start

    def best_of_ranges(self, lo: FloatArray, hi: FloatArray) -> tuple[float, float]:
        """Key and start of the cleanest window over all ranges [lo, hi] (in time order),
        earliest on ties; +inf and lo[0] when no candidate is fully covered."""
        keys, starts = self.best_in(lo, hi)
        pick = int(keys.argmin())  # the first of equal keys: the earliest start
        return float(keys[pick]), float(starts[pick])


@dataclass
class _Region:
    integral: _PrefixIntegral
    options: dict[float, _Options] = field(default_factory=dict)

    def options_for(self, duration: float) -> _Options:
        cached = self.options.get(duration)
        if cached is None:
            cached = self.options[duration] = _Options(self.integral, duration)
        return cached


class _Occupancy:
    """Slots held over time in one region: a step function of how many jobs run.

    ``counts[i]`` jobs run over [points[i], points[i + 1]); the outer points are -inf and
    +inf, and points are added where a hold starts or ends, so room checks are exact.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.points: FloatArray = np.array([-_INF, _INF])
        self.counts: IntArray = np.zeros(1, dtype=np.int64)
        self._full: tuple[FloatArray, FloatArray] | None = None

    def has_room(self, start: float, end: float) -> bool:
        if self.slots < 1:
            return False
        first = int(self.points.searchsorted(start, side="right")) - 1
        stop = int(self.points.searchsorted(end, side="left"))
        return stop <= first or int(self.counts[first:stop].max()) < self.slots

    def hold_if_room(self, start: float, end: float) -> bool:
        """Hold [start, end) and return True if it has room; else change nothing."""
        first, stop = self.points.searchsorted((start, end)).tolist()
        known_start = self.points[first] == start
        segment = first if known_start else first - 1
        if self.slots < 1 or (stop > segment and self.counts[segment:stop].max() >= self.slots):
            return False
        if known_start and self.points[stop] == end:
            self.counts[first:stop] += 1
            self._full = None
        else:
            self.hold(start, end)
        return True

    def hold(self, start: float, end: float) -> None:
        if end <= start:
            return
        first, stop = self.points.searchsorted((start, end)).tolist()
        new_end, new_start = self.points[stop] != end, self.points[first] != start
        # Split a segment where the hold starts or ends inside it, keeping its count; the
        # later point first, so the earlier index stays right.
        for index, time, missing in ((stop, end, new_end), (first, start, new_start)):
            if missing:
                points, counts = self.points, self.counts
                self.points = np.concatenate((points[:index], (time,), points[index:]))
                self.counts = np.concatenate((counts[:index], counts[index - 1:index],
                                              counts[index:]))
        stop += new_start  # the end moved right if a start point went in before it
        self.counts[first:stop] += 1
        self._full = None

    def hold_all(self, starts: FloatArray, ends: FloatArray) -> None:
        """Hold every [starts[i], ends[i]) at once: one sort and one cumulative sum, where
        a hold at a time copies the arrays once per hold."""
        keep = ends > starts
        starts, ends = starts[keep], ends[keep]
        if len(starts) == 0:
            return
        points = np.unique(np.concatenate((self.points, starts, ends)))
        # Each new segment keeps the count of the old segment it lies in, plus the holds
        # that cover it: starts at or before its beginning minus ends at or before it.
        counts = self.counts[self.points.searchsorted(points[:-1], side="right") - 1]
        delta = np.zeros(len(points), dtype=np.int64)
        np.add.at(delta, points.searchsorted(starts), 1)
        np.add.at(delta, points.searchsorted(ends), -1)
        self.points = points
        self.counts = counts + np.cumsum(delta)[:-1]
        self._full = None

    def full_stretches(self) -> tuple[FloatArray, FloatArray]:
        """Sorted, disjoint [start, end) stretches where every slot is held."""
        if self._full is None:
            if self.slots < 1:
                self._full = (np.array([-_INF]), np.array([_INF]))
            else:
                # The outer segments hold nothing, so changes alternate: full from, to.
                full = self.counts >= self.slots
                change = (full[1:] != full[:-1]).nonzero()[0] + 1
                self._full = (self.points[change[0::2]], self.points[change[1::2]])
        return self._full

    def room_ranges(self, first: float, last: float, duration: float
                    ) -> tuple[FloatArray, FloatArray]:
        """Closed ranges [lo, hi] of starts in [first, last] whose windows have room.

        A start s has room when [s, s + duration) overlaps no full stretch [a, b): s >= b
        or s + duration <= a, so each gap between full stretches gives [b, a' - duration].
        Only stretches with b > first and a < last + duration matter, so no clipping.
        """
        full_start, full_end = self.full_stretches()
        lo_index = int(full_end.searchsorted(first, side="right"))
        hi_index = int(full_start.searchsorted(last + duration, side="left"))
        lo = np.concatenate(([first], full_end[lo_index:hi_index]))
        hi = np.concatenate((full_start[lo_index:hi_index] - duration, [last]))
        keep = lo <= hi
        return lo[keep], hi[keep]


def plan(
    jobs: Sequence[JobRequest],
    forecasts: Mapping[str, Forecast],
    slots: Mapping[str, int],
    now: float,
    busy: Sequence[Busy] = (),
) -> list[Placement]:
    """Place every job; return placements in the order jobs were placed (least slack first).

    ``forecasts`` and ``slots`` name every region a job may use; a region missing from
    ``forecasts`` has no data, one missing from ``slots`` has one slot. ``busy`` holds
    slots before any job is placed (it may exceed a region's slots).
    """
    if not jobs:
        return []
    names = sorted({r for job in jobs for r in job.regions})
    column = {name: i for i, name in enumerate(names)}
    regions = [_Region(_PrefixIntegral(forecasts.get(name, Forecast.empty()))) for name in names]
    occupancy = [_Occupancy(slots.get(name, 1)) for name in names]
    held_by_column: dict[int, tuple[list[float], list[float]]] = {}
    for held in busy:
        if held.region in column:
            starts_ends = held_by_column.setdefault(column[held.region], ([], []))
            starts_ends[0].append(held.start)
            starts_ends[1].append(held.end)
    for col, (held_starts, held_ends) in held_by_column.items():
        occupancy[col].hold_all(np.array(held_starts), np.array(held_ends))

    order = sorted(jobs, key=lambda j: (j.deadline - j.duration_s - now, j.job_id))
    duration = np.array([j.duration_s for j in order], dtype=np.float64)
    earliest = np.maximum(np.array([j.not_before for j in order], dtype=np.float64), now)
    latest = np.maximum(np.array([j.deadline for j in order], dtype=np.float64) - duration,
                        earliest)
    # position[j, r]: where job j lists region r (len(names) where it does not).
    unlisted = [len(names)] * len(names)
    positions: list[list[int]] = []
    listed_columns: list[list[int]] = []
    for job in order:
        mine = unlisted.copy()
        for rank, name in enumerate(job.regions):
            if mine[column[name]] == len(names):
                mine[column[name]] = rank
        positions.append(mine)
        listed_columns.append([column[name] for name in dict.fromkeys(job.regions)])
    position = np.array(positions, dtype=np.int64)
    allowed = position < len(names)

    keys, starts = _cleanest_windows(regions, duration, earliest, latest, allowed)
    best_columns = _rank_regions(keys, starts, position).tolist()
    any_covered = (keys.min(axis=1) < _INF).tolist()
    key_rows, start_rows = keys.tolist(), starts.tolist()
    durations, firsts, lasts = duration.tolist(), earliest.tolist(), latest.tolist()

    placements = []
    for row, job in enumerate(order):
        best = best_columns[row]
        start = start_rows[row][best]
        key = key_rows[row][best]
        length = durations[row]
        waits = moved = False
        if not occupancy[best].hold_if_room(start, start + length):
            bounds = sorted((key_rows[row][col], start_rows[row][col], positions[row][col],
                             col) for col in listed_columns[row])
            fitted = _cleanest_with_room(bounds, regions, occupancy, length, firsts[row],
                                         lasts[row])
            if fitted is None:
                waits = True
            else:
                best, start, key = fitted
                moved = True
            occupancy[best].hold(start, start + length)
        placements.append(_placement(job, names[best], start, key, moved, waits, firsts[row],
                                     any_covered[row]))
    return placements


def _cleanest_windows(
    regions: Sequence[_Region], duration: FloatArray, earliest: FloatArray,
    latest: FloatArray, allowed: npt.NDArray[np.bool_],
) -> tuple[FloatArray, FloatArray]:
    """Per job and region, capacity ignored: key and start of the cleanest window.

    Keys are +inf for regions a job may not use and where no window is fully covered;
    the start is then the job's earliest start.
    """
    count, width = allowed.shape
    keys = np.full((count, width), _INF)
    starts = np.repeat(earliest[:, None], width, axis=1)
    distinct, group_of = np.unique(duration, return_inverse=True)
    by_group = np.argsort(group_of, kind="stable")
    bounds = np.searchsorted(group_of[by_group], np.arange(len(distinct) + 1))
    for group, length in enumerate(distinct):
        rows = by_group[bounds[group]:bounds[group + 1]]
        for col, region in enumerate(regions):
            mine = rows[allowed[rows, col]]
            if len(mine) == 0:
                continue
            key, start = region.options_for(float(length)).best_in(earliest[mine], latest[mine])
            keys[mine, col] = key
            starts[mine, col] = start
    return keys, starts


def _rank_regions(keys: FloatArray, starts: FloatArray, position: IntArray) -> IntArray:
    """Per job: the column of the lowest key, then earliest start, then first-listed region."""
    lowest = keys.min(axis=1, keepdims=True)
    tied = keys == lowest
    earliest = np.where(tied, starts, _INF).min(axis=1, keepdims=True)
    tied &= starts == earliest
    best: IntArray = np.where(tied, position, np.iinfo(np.int64).max).argmin(axis=1)
    return best


def _cleanest_with_room(
    bounds: Sequence[tuple[float, float, int, int]],
    regions: Sequence[_Region], occupancy: Sequence[_Occupancy],
    duration: float, earliest: float, latest: float,
) -> tuple[int, float, float] | None:
    """(column, start, key) of the best window with a free slot; None if none has room.

    ``bounds`` holds (key, start, listed position, column) of the job's cleanest window
    in each of its regions with capacity ignored, sorted; the first is known to be full.
    Each bounds from below what its region offers with capacity, so the search stops at
    the first region whose bound cannot beat what was found.
    """
    found: tuple[float, float, int, int] | None = None
    for index, (bound_key, bound_start, rank, col) in enumerate(bounds):
        if found is not None and (bound_key, bound_start, rank) >= found[:3]:
            break
        if index > 0 and occupancy[col].has_room(bound_start, bound_start + duration):
            candidate = (bound_key, bound_start, rank, col)
        else:
            lo, hi = occupancy[col].room_ranges(earliest, latest, duration)
            if len(lo) == 0:
                continue
            # Nothing covered with room: the earliest start with room (lo[0]).
            key, start = regions[col].options_for(duration).best_of_ranges(lo, hi)
            candidate = (key, start, rank, col)
        if found is None or candidate < found:
            found = candidate
    if found is None:
        return None
    return found[3], found[1], found[0]


def _placement(
    job: JobRequest, region: str, start: float, key: float, moved: bool, waits: bool,
    earliest: float, any_covered: bool,
) -> Placement:
    """``any_covered``: some region has a fully covered feasible window (capacity ignored)."""
    covered = key != _INF
    notes = []
    if earliest > job.deadline - job.duration_s:
        notes.append("cannot finish by its deadline: starts as early as possible")
    if covered:
        notes.append("cleanest covered window with a free slot" if moved
                     else "cleanest covered window")
    elif any_covered:
        notes.append("every covered window is full: earliest window with a free slot")
    else:
        notes.append("no region has forecasts covering a feasible window: earliest feasible "
                     "start" + (" with a free slot" if moved else ""))
    if waits:
        notes.append("every feasible window is full: waits for a free slot")
    return Placement(job.job_id, region, start, key / _KEY_SCALE if covered else None, covered,
                     "; ".join(notes), waits)


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
        key=lambda o: (not o.covered, _INF if o.intensity is None else o.intensity,
                       o.start, order[o.region]),
    )


# Stored units of intensity in grams (every forecast but a percentile index).
GRAMS = "gco2_per_kwh"


def comparable_regions(regions: Sequence[str], units: Mapping[str, str]) -> list[str]:
    """The regions of a job whose forecasts can be ranked against each other.

    ``units`` holds each region's stored units, for regions with forecasts. gCO2/kWh
    compare across regions; a percentile index (WattTime's signal_index) ranks times
    within its own region only, and means nothing next to grams. So a job with a region
    in grams keeps its regions in grams; a job with only index regions keeps the first.
    Regions without forecasts yet are kept: the planner places nothing there.
    """
    known = {r: units[r] for r in regions if r in units}
    if len(known) < 2 or set(known.values()) == {GRAMS}:
        return list(regions)
    if GRAMS in known.values():
        return [r for r in regions if known.get(r, GRAMS) == GRAMS]
    first = next(iter(known))
    return [r for r in regions if r == first or r not in known]


def left_out_note(regions: Sequence[str]) -> str:
    """What a plan's note adds for regions ``comparable_regions`` left out."""
    if not regions:
        return ""
    return (f"; left out {', '.join(regions)}: a percentile index ranks times within its own "
            f"region only")
