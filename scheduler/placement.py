"""Pure placement math: where and when each job runs. No I/O, never reads the clock.

Times are float seconds since the epoch (UTC); ``now`` is always passed in. A forecast is
a step function: each value is the average over its own interval, and a window covering
part of an interval weighs it by overlap. The mean over a window is a difference of
prefix integrals, so every candidate start of a job costs O(1) after O(T) set-up.

The mean over [s, s + d) is piecewise linear in s with breakpoints where s or s + d
crosses an interval boundary, so its minimum over [earliest, latest] lies at ``earliest``,
``latest``, a boundary b, or b - d: those are the only candidates evaluated
(``tests/test_placement.py`` checks this against brute force). With capacity the same holds
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
minimum in O(1)), so each job's cleanest window in a region is one look-up. Then one sweep
over all those windows finds the longest run of jobs, in placement order, whose cleanest
windows fit together: they are accepted at once (with no region over its slots that is
what the greedy would do, see ``_prefix_that_fits``). Only from the first job that does
not fit does the greedy go job by job; a job whose cleanest window is full searches the
stretches of time that still have room, region by region, cleanest region first.
Placements come back as columns (``Placements``), and their reasons as flags
(``PlacementReason``), turned into words by ``records.describe`` only where they are shown.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from scheduler.intensity import (
    COVERAGE_TOLERANCE_S,
    KEY_SCALE,
    FloatArray,
    Forecast,
    IntArray,
    PrefixIntegral,
)
from scheduler.records import PlacementReason
from scheduler.units import GRAMS_PER_KWH

_max = np.maximum.reduce  # without ndarray.max's Python wrapper: called once per job
_INF = math.inf
# Holds added to a HeldProfile one at a time up to this many (each copies its region's
# step function); more at once in one sort.
_HOLDS_ONE_BY_ONE = 8


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
class JobColumns:
    """Jobs to place as columns (row i is one job), what ``plan`` reads. A re-plan of a
    large queue builds them from the store's columns, not one ``JobRequest`` per job."""

    job_ids: IntArray
    durations: FloatArray
    not_before: FloatArray
    deadlines: FloatArray
    regions: Sequence[tuple[str, ...]]

    def __post_init__(self) -> None:
        count = len(self.job_ids)
        if not (len(self.durations) == len(self.not_before) == len(self.deadlines)
                == len(self.regions) == count):
            raise ValueError("every job column must have one value per job")
        checks = (
            (~(np.isfinite(self.durations) & (self.durations > 0)),
             "duration must be a positive number of seconds"),
            (~(np.isfinite(self.not_before) & np.isfinite(self.deadlines)),
             "not_before and deadline must be finite"),
            (np.fromiter(map(len, self.regions), np.int64, count) == 0, "no region to run in"),
        )
        for bad, problem in checks:
            if bad.any():
                raise ValueError(f"job {int(self.job_ids[np.argmax(bad)])}: {problem}")

    @classmethod
    def from_requests(cls, jobs: Sequence[JobRequest]) -> JobColumns:
        count = len(jobs)
        return cls(np.fromiter(map(attrgetter("job_id"), jobs), np.int64, count),
                   np.fromiter(map(attrgetter("duration_s"), jobs), np.float64, count),
                   np.fromiter(map(attrgetter("not_before"), jobs), np.float64, count),
                   np.fromiter(map(attrgetter("deadline"), jobs), np.float64, count),
                   [job.regions for job in jobs])

    def __len__(self) -> int:
        return len(self.job_ids)

    def take(self, rows: IntArray) -> JobColumns:
        picked = rows.tolist()
        return JobColumns(self.job_ids[rows], self.durations[rows], self.not_before[rows],
                          self.deadlines[rows], [self.regions[row] for row in picked])

    def __add__(self, other: JobColumns) -> JobColumns:
        return JobColumns(np.concatenate((self.job_ids, other.job_ids)),
                          np.concatenate((self.durations, other.durations)),
                          np.concatenate((self.not_before, other.not_before)),
                          np.concatenate((self.deadlines, other.deadlines)),
                          [*self.regions, *other.regions])


@dataclass(frozen=True)
class CleanestWindows:
    """Per job (rows, in the order of the ``JobColumns`` searched) and region (columns,
    ``names``), capacity ignored: the key and start of the job's cleanest window. Keys are
    +inf where the job may not run or no window is covered (the start is then the job's
    earliest); ``position[j, r]`` is where job j lists region r, len(names) where not."""

    names: list[str]
    position: IntArray
    keys: FloatArray
    starts: FloatArray

    def rows(self, first: int, stop: int) -> CleanestWindows:
        return CleanestWindows(self.names, self.position[first:stop], self.keys[first:stop],
                               self.starts[first:stop])


def cleanest_windows(jobs: JobColumns, forecasts: Mapping[str, Forecast], now: float
                     ) -> CleanestWindows:
    """Every job's cleanest window in each of its regions, capacity ignored: the search
    ``plan`` starts with. One search over several sets of jobs (a re-plan's whole jobs and
    its interruptible ones' single blocks) builds each region's table of windows of one
    duration once for all of them."""
    names, position = _listed_positions(jobs.regions)
    earliest = np.maximum(jobs.not_before, now)
    latest = np.maximum(jobs.deadlines - jobs.durations, earliest)
    regions = [_Region(PrefixIntegral(forecasts.get(name, Forecast.empty()))) for name in names]
    keys, starts = _cleanest_windows(regions, jobs.durations, earliest, latest,
                                     position < len(names))
    return CleanestWindows(names, position, keys, starts)


@dataclass(frozen=True)
class Busy:
    """A slot already held in a region over [start, end) (a running or pinned job)."""

    region: str
    start: float
    end: float


@dataclass(frozen=True)
class Holds:
    """Slots already held, as columns: row i holds a slot of ``region_names[region[i]]``
    over [starts[i], ends[i]). What a submit plans around: 100,000 held slots as arrays
    cost a submit about as little as none."""

    region_names: tuple[str, ...]
    region: IntArray
    starts: FloatArray
    ends: FloatArray

    @classmethod
    def from_busy(cls, busy: Sequence[Busy]) -> Holds:
        names = tuple(sorted({b.region for b in busy}))
        column = {name: i for i, name in enumerate(names)}
        return cls(names, np.array([column[b.region] for b in busy], dtype=np.int64),
                   np.array([b.start for b in busy], dtype=np.float64),
                   np.array([b.end for b in busy], dtype=np.float64))

    @classmethod
    def from_placements(cls, placements: Placements, durations: FloatArray) -> Holds:
        """The slots ``placements`` hold; ``durations`` per placement row."""
        return cls(placements.region_names, placements.region_index, placements.starts,
                   placements.starts + durations)

    def __len__(self) -> int:
        return len(self.starts)

    def __add__(self, other: Holds) -> Holds:
        names = tuple(sorted(set(self.region_names) | set(other.region_names)))
        column = {name: i for i, name in enumerate(names)}
        renumber = [np.array([column[n] for n in part.region_names], dtype=np.int64)
                    for part in (self, other)]
        return Holds(
            names,
            np.concatenate([r[part.region] for r, part in zip(renumber, (self, other),
                                                              strict=True)]),
            np.concatenate((self.starts, other.starts)), np.concatenate((self.ends, other.ends)))

    def ending_after(self, moment: float) -> Holds:
        keep = self.ends > moment
        return Holds(self.region_names, self.region[keep], self.starts[keep], self.ends[keep])

    def columns(self, column: Mapping[str, int]) -> tuple[IntArray, FloatArray, FloatArray]:
        """(region column, start, end) of the non-empty holds in the regions of ``column``."""
        mapped = np.array([column.get(name, -1) for name in self.region_names], dtype=np.int64)
        region = mapped[self.region] if len(self.region) else self.region
        keep = (region >= 0) & (self.ends > self.starts)
        return region[keep], self.starts[keep], self.ends[keep]


class HeldProfile:
    """The slots held in each region as step functions (what ``_Occupancy`` keeps), for a
    submit of a few jobs: ``plan`` checks their windows against these instead of sorting
    every held slot (100,000 of them in a large queue). Never changed once made: ``plus``
    makes a new one, so one may be read while another is made from it."""

    def __init__(self, regions: Mapping[str, _Occupancy] | None = None) -> None:
        self._regions: dict[str, _Occupancy] = dict(regions or {})

    @classmethod
    def of(cls, holds: Holds) -> HeldProfile:
        return cls().plus(holds)

    def plus(self, holds: Holds) -> HeldProfile:
        """This profile with ``holds`` held too."""
        regions = dict(self._regions)
        for index, name in enumerate(holds.region_names):
            mine = holds.region == index
            if not mine.any():
                continue
            occupancy = self.occupancy(name, 0)  # a copy: this profile stays as it is
            starts, ends = holds.starts[mine], holds.ends[mine]
            if len(starts) > _HOLDS_ONE_BY_ONE:
                occupancy.hold_all(starts, ends)
            else:
                for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
                    occupancy.hold(start, end)
            regions[name] = occupancy
        return HeldProfile(regions)

    def occupancy(self, name: str, slots: int) -> _Occupancy:
        """A copy of the region's step function, with ``slots``."""
        copy = _Occupancy(slots)
        held = self._regions.get(name)
        if held is not None:
            copy.points, copy.counts = held.points.copy(), held.counts.copy()
        return copy


@dataclass(frozen=True)
class Placement:
    job_id: int
    region: str
    start: float
    intensity: float | None  # mean forecast over the window; None when not fully covered
    reason: PlacementReason

    @property
    def covered(self) -> bool:
        return PlacementReason.COVERED_WINDOW in self.reason

    @property
    def waits_for_slot(self) -> bool:
        """No window with room existed: the job waits at ``start`` for a free slot."""
        return PlacementReason.WAITING_FOR_SLOT in self.reason


@dataclass(frozen=True)
class Placements:
    """Every placement as columns (row i is one job), in the order jobs were placed.

    Columns, not one object per job: a re-plan of a large queue reads them directly.
    Iterating or indexing gives ``Placement`` objects for callers that want a few.
    """

    region_names: tuple[str, ...]
    job_ids: IntArray
    region_index: IntArray  # into region_names
    starts: FloatArray
    intensities: FloatArray  # NaN where the window is not fully covered
    reasons: IntArray  # PlacementReason bits

    @classmethod
    def empty(cls) -> Placements:
        none = np.zeros(0, dtype=np.int64)
        return cls((), none, none, np.zeros(0), np.zeros(0), none)

    def __len__(self) -> int:
        return len(self.job_ids)

    def __getitem__(self, row: int) -> Placement:
        intensity = float(self.intensities[row])
        return Placement(int(self.job_ids[row]), self.region_names[self.region_index[row]],
                         float(self.starts[row]), None if math.isnan(intensity) else intensity,
                         PlacementReason(int(self.reasons[row])))

    def __iter__(self) -> Iterator[Placement]:
        for job_id, region, start, intensity, reason in zip(
                self.job_ids.tolist(), self.region_index.tolist(), self.starts.tolist(),
                self.intensities.tolist(), self.reasons.tolist(), strict=True):
            yield Placement(job_id, self.region_names[region], start,
                            None if math.isnan(intensity) else intensity,
                            PlacementReason(reason))

    def has(self, reason: PlacementReason) -> npt.NDArray[np.bool_]:
        """Per row: whether its reason includes ``reason``."""
        has: npt.NDArray[np.bool_] = (self.reasons & int(reason)) != 0
        return has


@dataclass(frozen=True)
class WindowOption:
    region: str
    start: float
    end: float
    intensity: float | None
    covered: bool


# Keys beyond this many micro-units are ranked by sorting (float64 integers stay exact).
_EXACT_KEY = 2.0**52
# Up to this many ranges of starts, one job's search goes range by range in plain floats.
_FEW_RANGES = 4
# Below this many queries a sparse table costs more to build than scanning each range.
_TABLE_MIN_QUERIES = 16


class _Options:
    """Every candidate window of one duration in one region, ready for range minima.

    Candidates are the interval boundaries b and b - duration, sorted by start. Many
    queries "cleanest, then earliest, candidate with a start in [lo, hi]" are answered by
    a sparse table over the candidates' ranks by (key, start), O(1) each and vectorised;
    a few by scanning each range.
    """

    def __init__(self, integral: PrefixIntegral, duration: float) -> None:
        self.integral = integral
        self.duration = duration
        boundaries = integral.boundaries
        shift = _boundary_shift(boundaries, duration)
        if shift:
            # Every b + duration is the boundary ``shift`` places on: the candidates are the
            # boundaries and the first ``shift`` of b - duration, and a window from one
            # boundary to another needs no interpolation (it would return those values).
            early = boundaries[:shift] - duration
            self.starts: FloatArray = np.concatenate((early, boundaries))
            inner = integral.value_at[shift:] - integral.value_at[:-shift]
            inner *= KEY_SCALE / duration
            cover = integral.cover_at[shift:] - integral.cover_at[:-shift]
            self.keys = np.concatenate((
                integral.window_keys(early, duration),
                np.where(cover >= duration - COVERAGE_TOLERANCE_S, np.rint(inner), _INF),
                integral.window_keys(boundaries[-shift:], duration)))
        else:
            # Where steps are regular, most b - duration are boundaries too: keep each once.
            self.starts = np.unique(np.concatenate((boundaries - duration, boundaries)),
                                    return_index=True)[0]
            self.keys = integral.window_keys(self.starts, duration)
        self._table: tuple[int, IntArray] | None = None

    def _sparse_table(self, levels: int) -> tuple[int, IntArray]:
        """(index_bits, table): table[k][i] is the lowest code in [i, i + 2**k), for k
        below at least ``levels`` (ranges up to 2**levels long).

        A code orders candidates by (key, start) and keeps the candidate's index in its
        low ``index_bits`` bits. Keys are whole micro-units, so while they span less than
        the high bits hold, the key itself is the high part; else its rank is.
        """
        if self._table is None or len(self._table[1]) < levels:
            count = len(self.starts)
            index_bits = max(count.bit_length(), 1)
            finite = self.keys[self.keys < _INF]
            low = float(finite.min()) if len(finite) else 0.0
            high = float(finite.max()) if len(finite) else 0.0
            if -_EXACT_KEY < low and high < _EXACT_KEY and high - low < 2.0 ** (61 - index_bits):
                order = np.where(self.keys < _INF, self.keys - low, high - low + 1.0)
                rank = order.astype(np.int64)
            else:
                rank = np.empty(count, dtype=np.int64)
                rank[np.argsort(self.keys, kind="stable")] = np.arange(count, dtype=np.int64)
            levels = min(levels, index_bits)
            table = np.empty((levels, count), dtype=np.int64)
            np.bitwise_or(np.left_shift(rank, index_bits), np.arange(count, dtype=np.int64),
                          out=table[0])
            for level in range(1, levels):
                width = 1 << (level - 1)
                below = table[level - 1]
                np.minimum(below[: count - width], below[width:],
                           out=table[level, : count - width])
                table[level, count - width:] = below[count - width:]
            self._table = (index_bits, table)
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
            level = np.frexp(stop - first)[1] - 1
            index_bits, table = self._sparse_table(int(level.max()) + 1)
            code = np.minimum(table[level, first], table[level, stop - np.left_shift(1, level)])
            index = code & ((1 << index_bits) - 1)
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

    def best_of_ranges(self, lo_list: list[float], hi_list: list[float]
                       ) -> tuple[float, float]:
        """Key and start of the cleanest window over all ranges [lo, hi] (disjoint, in
        time order), earliest on ties; +inf and lo[0] when no candidate is fully covered.

        What ``best_in`` gives for each range, then the first range's best among the
        lowest, with a fixed number of array operations however many ranges there are.
        """
        count = len(lo_list)
        if count <= _FEW_RANGES:
            return self._best_of_few_ranges(lo_list, hi_list)
        lo, hi = np.array(lo_list), np.array(hi_list)
        end_keys = self.integral.window_keys(np.concatenate((lo, hi)), self.duration)
        lo_key, hi_key = end_keys[:count], end_keys[count:]
        first = self.starts.searchsorted(lo, side="left")
        stop = self.starts.searchsorted(hi, side="right")
        inner = np.empty(count)
        inner.fill(_INF)
        nonempty = stop > first
        if nonempty.any():
            # Minima over [first, stop) of each range: reduceat over alternate bounds.
            bounds = np.empty(2 * int(nonempty.sum()), dtype=np.int64)
            bounds[0::2], bounds[1::2] = first[nonempty], stop[nonempty]
            if bounds[-1] == len(self.keys):
                bounds = bounds[:-1]
            inner[nonempty] = np.minimum.reduceat(self.keys, bounds)[0::2]
        best = np.minimum(np.minimum(lo_key, inner), hi_key)
        row = int(best.argmin())
        key = float(best[row])
        if key == _INF or lo_key[row] == key:
            return key, float(lo[row])
        if inner[row] == key:
            where = int(first[row])
            where += int((self.keys[where:stop[row]] == key).argmax())
            return key, float(self.starts[where])
        return key, float(hi[row])


    def _best_of_few_ranges(self, lo: list[float], hi: list[float]) -> tuple[float, float]:
        """``best_of_ranges`` range by range in plain floats: for one job's few ranges,
        fewer array calls than the vectorised form."""
        best_key, best_start = _INF, lo[0]
        window_key, duration = self.integral.window_key, self.duration
        for first, last in zip(lo, hi, strict=True):
            key = window_key(first, duration)
            if key < best_key:
                best_key, best_start = key, first
            begin, stop = self.starts.searchsorted((first, last), side="left").tolist()
            while stop < len(self.starts) and self.starts[stop] == last:
                stop += 1  # starts equal to ``last`` are inside the closed range
            if stop > begin:
                where = begin + int(self.keys[begin:stop].argmin())
                if self.keys[where] < best_key:
                    best_key, best_start = float(self.keys[where]), float(self.starts[where])
            key = window_key(last, duration)
            if key < best_key:
                best_key, best_start = key, last
        return best_key, best_start


def _boundary_shift(boundaries: FloatArray, duration: float) -> int:
    """k > 0 where b[i] + duration == b[i + k] and b[i + k] - duration == b[i] exactly
    for every i (steps of a fixed length and a duration a multiple of it), else 0."""
    if len(boundaries) < 2:
        return 0
    shift = int(boundaries.searchsorted(boundaries[0] + duration))
    if shift == 0 or shift >= len(boundaries):
        return 0
    if (np.array_equal(boundaries[shift:], boundaries[:-shift] + duration)
            and np.array_equal(boundaries[shift:] - duration, boundaries[:-shift])):
        return shift
    return 0


@dataclass
class _Region:
    integral: PrefixIntegral
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
        most = int(_max(self.counts[segment:stop])) if stop > segment else 0
        if self.slots < 1 or most >= self.slots:
            return False
        if known_start and self.points[stop] == end:
            self.counts[first:stop] += 1
            if most + 1 >= self.slots:
                self._full = None
        else:
            self.hold(start, end)
        return True

    def hold(self, start: float, end: float) -> None:
        if end <= start:
            return
        first, stop = self.points.searchsorted((start, end)).tolist()
        new_start, new_end = bool(self.points[first] != start), bool(self.points[stop] != end)
        if new_start or new_end:
            # Split a segment where the hold starts or ends inside it, keeping its count:
            # one copy of each array for both points.
            points, counts = self.points, self.counts
            point_parts, count_parts = [points[:first]], [counts[:first]]
            if new_start:
                point_parts.append(np.array((start,)))
                count_parts.append(counts[first - 1:first])
            point_parts.append(points[first:stop])
            count_parts.append(counts[first:stop])
            if new_end:
                point_parts.append(np.array((end,)))
                count_parts.append(counts[stop - 1:stop])
            point_parts.append(points[stop:])
            count_parts.append(counts[stop:])
            self.points, self.counts = np.concatenate(point_parts), np.concatenate(count_parts)
        stop += new_start  # the end moved right if a start point went in before it
        held = self.counts[first:stop]
        held += 1
        # Splitting a segment changes no full stretch; only a segment that fills up does.
        if _max(held) >= self.slots:
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
                    ) -> tuple[list[float], list[float]]:
        """Closed ranges [lo, hi] of starts in [first, last] whose windows have room.

        A start s has room when [s, s + duration) overlaps no full stretch [a, b): s >= b
        or s + duration <= a, so each gap between full stretches gives [b, a' - duration].
        Only stretches with b > first and a < last + duration matter, so no clipping.
        """
        full_start, full_end = self.full_stretches()
        lo_index = int(full_end.searchsorted(first, side="right"))
        hi_index = int(full_start.searchsorted(last + duration, side="left"))
        if hi_index == lo_index:
            return ([first], [last]) if first <= last else ([], [])
        lo = np.concatenate(((first,), full_end[lo_index:hi_index]))
        hi = np.concatenate((full_start[lo_index:hi_index] - duration, (last,)))
        keep = lo <= hi
        return lo[keep].tolist(), hi[keep].tolist()


def plan(
    jobs: Sequence[JobRequest] | JobColumns,
    forecasts: Mapping[str, Forecast],
    slots: Mapping[str, int],
    now: float,
    busy: Sequence[Busy] | Holds | HeldProfile = (),
    windows: CleanestWindows | None = None,
) -> Placements:
    """Place every job; return placements in the order jobs were placed (least slack first).

    ``forecasts`` and ``slots`` name every region a job may use; a region missing from
    ``forecasts`` has no data, one missing from ``slots`` has one slot. ``busy`` holds
    slots before any job is placed (it may exceed a region's slots); as a
    ``HeldProfile``, the jobs are placed one by one by the greedy (what the longest run of
    fitting jobs accepted at once comes to), for a few jobs against many held slots.
    ``windows``: the jobs' ``cleanest_windows`` over the same forecasts, where the caller
    has searched them.
    """
    if not len(jobs):
        return Placements.empty()
    columns = jobs if isinstance(jobs, JobColumns) else JobColumns.from_requests(jobs)
    count = len(columns)
    if windows is not None and len(windows.keys) != count:
        raise ValueError("windows must have one row per job")
    job_ids, duration = columns.job_ids, columns.durations
    not_before, deadline = columns.not_before, columns.deadlines
    order = np.lexsort((job_ids, deadline - duration - now))
    if windows is None:  # searched in placement order: nothing to permute
        windows = cleanest_windows(columns.take(order), forecasts, now)
        position, keys, starts = windows.position, windows.keys, windows.starts
    else:
        position, keys = windows.position[order], windows.keys[order]
        starts = windows.starts[order]
    names = windows.names
    job_ids, duration = job_ids[order], duration[order]
    earliest = np.maximum(not_before[order], now)
    latest = np.maximum(deadline[order] - duration, earliest)

    regions = [_Region(PrefixIntegral(forecasts.get(name, Forecast.empty()))) for name in names]
    best = _rank_regions(keys, starts, position)
    rows = np.arange(count)
    chosen_key, chosen_start = keys[rows, best], starts[rows, best]
    any_covered = keys.min(axis=1) < _INF
    moved = np.zeros(count, dtype=np.bool_)
    waits = np.zeros(count, dtype=np.bool_)

    region_slots = np.array([slots.get(name, 1) for name in names], dtype=np.int64)
    if isinstance(busy, HeldProfile):
        occupancy = [busy.occupancy(name, int(n)) for name, n in zip(names, region_slots,
                                                                      strict=True)]
        _place_in_turn(0, regions, occupancy, keys, starts, position, duration, earliest,
                       latest, best, chosen_key, chosen_start, moved, waits)
        fit = count
    else:
        column = {name: i for i, name in enumerate(names)}
        held_column, held_start, held_end = (
            busy if isinstance(busy, Holds) else Holds.from_busy(busy)).columns(column)
        # The longest run of jobs, in order, whose cleanest windows fit all held at once
        # keeps them: each of those jobs would have found room there when its turn came.
        fit = _prefix_that_fits(best, chosen_start, chosen_start + duration, held_column,
                                held_start, held_end, region_slots)
    if fit < count:
        occupancy = [_Occupancy(int(n)) for n in region_slots]
        for col in range(len(names)):
            mine = held_column == col
            accepted = best[:fit] == col
            occupancy[col].hold_all(
                np.concatenate((held_start[mine], chosen_start[:fit][accepted])),
                np.concatenate((held_end[mine], chosen_start[:fit][accepted]
                                + duration[:fit][accepted])))
        _place_in_turn(fit, regions, occupancy, keys, starts, position, duration, earliest,
                       latest, best, chosen_key, chosen_start, moved, waits)

    covered = chosen_key != _INF
    reasons = np.where(covered, int(PlacementReason.COVERED_WINDOW),
                       np.where(any_covered, 0, int(PlacementReason.NO_COVERAGE)))
    reasons |= np.where(moved, int(PlacementReason.MOVED_FOR_SLOT), 0)
    reasons |= np.where(waits, int(PlacementReason.WAITING_FOR_SLOT), 0)
    reasons |= np.where(earliest > deadline[order] - duration,
                        int(PlacementReason.CANNOT_MEET_DEADLINE), 0)
    intensities = np.where(covered, chosen_key / KEY_SCALE, np.nan)
    return Placements(tuple(names), job_ids, best, chosen_start, intensities,
                      reasons.astype(np.int64))


def _listed_positions(regions: Sequence[tuple[str, ...]]) -> tuple[list[str], IntArray]:
    """(region names, sorted; position[j, r]: where job j first lists region r, or
    len(names) where it does not), with one pass over the jobs' regions."""
    listed_names = list(chain.from_iterable(regions))
    names = sorted(set(listed_names))
    column = {name: i for i, name in enumerate(names)}
    listed = np.fromiter(map(column.__getitem__, listed_names), np.int64, len(listed_names))
    lengths = np.fromiter(map(len, regions), np.int64, len(regions))
    row = np.repeat(np.arange(len(regions)), lengths)
    rank = np.arange(len(listed)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.full((len(regions), len(names)), len(names), dtype=np.int64)
    np.minimum.at(position, (row, listed), rank)
    return names, position


def _prefix_that_fits(
    column: IntArray, start: FloatArray, end: FloatArray, held_column: IntArray,
    held_start: FloatArray, held_end: FloatArray, slots: IntArray,
) -> int:
    """The most jobs, in placement order, whose windows all fit at once.

    Windows [start[i], end[i]) in region column[i], on top of the held intervals: a
    prefix fits when no region runs over its slots at any time inside one of its windows
    (held intervals alone may exceed slots elsewhere). If the first k windows fit, the
    greedy finds room for each of them in turn: when job i's turn comes, what is held
    inside its window is a subset of the prefix minus itself. So they are accepted as is.

    One sort of every start and end event (by region, time, ends before starts: the
    intervals are half-open); each region's events sum to zero, so one running sum serves
    all regions. A prefix keeps the events of its jobs and of the held intervals, so
    whether it fits is a mask and two running sums; the longest is found by bisection.
    Where held intervals outnumber the jobs (a submit plans one job against 100,000 of
    them), those that overlap no window of their region are left out first: they add
    nothing inside any window.
    """
    if len(held_column) > len(column):
        first_start = np.full(len(slots), np.inf)
        last_end = np.full(len(slots), -np.inf)
        np.minimum.at(first_start, column, start)
        np.maximum.at(last_end, column, end)
        overlapping = ((held_end > first_start[held_column])
                       & (held_start < last_end[held_column]))
        held_column, held_start, held_end = (
            held_column[overlapping], held_start[overlapping], held_end[overlapping])
    count, held = len(column), len(held_column)
    event_column = np.concatenate((column, column, held_column, held_column))
    time = np.concatenate((start, end, held_start, held_end))
    step = np.concatenate((np.ones(count, np.int64), np.full(count, -1, np.int64),
                           np.ones(held, np.int64), np.full(held, -1, np.int64)))
    # The job an event belongs to; held intervals count as job -1, in every prefix.
    owner = np.concatenate((np.arange(count), np.arange(count), np.full(2 * held, -1)))
    order = np.lexsort((step, time, event_column))
    step, owner = step[order], owner[order]
    limit = slots[event_column[order]]
    window_step = np.where(owner >= 0, step, 0)

    def fits(jobs: int) -> bool:
        kept = owner < jobs
        running = np.cumsum(step * kept)
        windows_open = np.cumsum(window_step * kept)
        return not bool(((running > limit) & (windows_open > 0) & kept).any())

    if fits(count):
        return count
    lo, hi = 0, count - 1  # the longest fitting prefix is in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _place_in_turn(
    first: int, regions: Sequence[_Region], occupancy: Sequence[_Occupancy],
    keys: FloatArray, starts: FloatArray, position: IntArray, duration: FloatArray,
    earliest: FloatArray, latest: FloatArray, best: IntArray, chosen_key: FloatArray,
    chosen_start: FloatArray, moved: npt.NDArray[np.bool_], waits: npt.NDArray[np.bool_],
) -> None:
    """The greedy, one job at a time from row ``first``: a job whose cleanest window is
    full takes its best window with room (rule 3), or waits (rule 4). Updates ``best``,
    ``chosen_key``, ``chosen_start``, ``moved`` and ``waits`` in place."""
    columns, firsts, lasts = best.tolist(), earliest.tolist(), latest.tolist()
    durations, chosen_starts = duration.tolist(), chosen_start.tolist()
    for row in range(first, len(columns)):
        col, start, length = columns[row], chosen_starts[row], durations[row]
        if occupancy[col].hold_if_room(start, start + length):
            continue
        bounds = sorted((key, where, rank, region) for key, where, rank, region in zip(
            keys[row].tolist(), starts[row].tolist(), position[row].tolist(),
            range(len(regions)), strict=True) if rank < len(regions))
        fitted = _cleanest_with_room(bounds, regions, occupancy, length, firsts[row],
                                     lasts[row])
        if fitted is None:
            waits[row] = True
        else:
            col, start, key = fitted
            best[row], chosen_start[row], chosen_key[row] = col, start, key
            moved[row] = True
        occupancy[col].hold(start, start + length)


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
    starts = np.empty((count, width))
    starts[:] = earliest[:, None]
    # By duration, then earliest and latest start: searches over sorted times run faster
    # (np.interp starts each search where the last one ended).
    by_duration = np.lexsort((latest, earliest, duration))
    for col, region in enumerate(regions):
        # This region's jobs by duration: each duration's jobs are one slice.
        rows = by_duration[allowed[by_duration, col]]
        if len(rows) == 0:
            continue
        lengths = duration[rows]
        first, last = earliest[rows], latest[rows]
        region_keys, region_starts = np.empty(len(rows)), np.empty(len(rows))
        bounds = (lengths[1:] != lengths[:-1]).nonzero()[0] + 1
        for begin, stop in zip([0, *bounds.tolist()], [*bounds.tolist(), len(rows)],
                               strict=True):
            # Not cached: the greedy rarely needs this duration again, and a week of five
            # minute steps times every duration and region would hold hundreds of MB.
            options = _Options(region.integral, float(lengths[begin]))
            region_keys[begin:stop], region_starts[begin:stop] = options.best_in(
                first[begin:stop], last[begin:stop])
        keys[rows, col] = region_keys
        starts[rows, col] = region_starts
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


def comparable_regions(regions: Sequence[str], units: Mapping[str, str]) -> list[str]:
    """The regions of a job whose forecasts can be ranked against each other.

    ``units`` holds each region's stored units, for regions with forecasts. gCO2/kWh
    compare across regions; a percentile index (WattTime's signal_index) ranks times
    within its own region only, and means nothing next to grams. So a job with a region
    in grams keeps its regions in grams; a job with only index regions keeps the first.
    Regions without forecasts yet are kept: the planner places nothing there.
    """
    known = {r: units[r] for r in regions if r in units}
    if len(known) < 2 or set(known.values()) == {GRAMS_PER_KWH}:
        return list(regions)
    if GRAMS_PER_KWH in known.values():
        return [r for r in regions if known.get(r, GRAMS_PER_KWH) == GRAMS_PER_KWH]
    first = next(iter(known))
    return [r for r in regions if r == first or r not in known]
