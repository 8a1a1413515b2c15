"""Pure chunk placement for interruptible jobs. No I/O, never reads the clock.

An interruptible job's remaining work is placed as chunks: disjoint, non-adjacent
intervals [start, end), each at least ``min_chunk_s`` long (a job whose whole remaining
work is shorter runs it as one chunk), at most ``max_chunks`` of them, all inside
[max(now, not_before), deadline], in one region. In checkpoint mode every relaunch costs
``restart_overhead_s``: k chunks hold ``work_s + (k - 1) * overhead`` seconds, or
``work_s + k * overhead`` for a job whose next chunk is itself a relaunch. A running job's
first chunk starts at ``now`` and continues its current run (no overhead); it may be cut
or extended, but the run so far plus that chunk is at least ``min_chunk_s``, and it is
never empty. The cost of a plan is its forecast emissions: the integral of the forecast
over its chunks (intensity x seconds; power is the job's own, the same in every region).
Times, forecasts (``placement.Forecast``), held slots (``placement.Holds``) and placement
reasons (``records.PlacementReason``) are the planner's.

What is exact and what is not:

- Exact path: for a job whose window in each of its regions spans at most
  ``EXACT_MAX_CELLS`` cells (a cell is a stretch between consecutive forecast boundaries,
  the window's ends and, with capacity, the ends of full stretches), the plan is the
  cheapest over every chunk plan whose boundaries all lie on those points except at most
  one (the end of the work: one end of one chunk, which may fall mid-step), in every
  region. A left-to-right and a right-to-left dynamic programme over the points
  (states: chunks so far, seconds placed) meet at the one chunk whose length is what is
  left. ``tests/test_chunking.py`` checks it against a brute-force enumeration.
- Fast path: any larger job. An exact programme over (time, work done, run length) is far
  too slow for a large queue (see benchmarks/planner.py ``--interruptible``), so the fast
  path works in the region of the job's cleanest single block and picks cells by one
  threshold: a cell qualifies when some block of ``min_chunk_s`` (whole cells) containing
  it has a mean intensity at or below the threshold, so every run of qualifying cells is a
  union of such blocks and at least ``min_chunk_s`` long. The threshold is the lowest one
  that gives enough seconds; the excess is trimmed from the dirtiest chunk ends that can
  spare it, the cheapest gaps are filled while there are more than ``max_chunks`` chunks,
  and in checkpoint mode the target is recomputed for the number of chunks found. It is a
  heuristic, not the optimum. It is not tried for a job whose single block is already as
  clean as the cleanest block of the minimum chunk in its window.
- Both paths compare their chunks with the job's cleanest single block (the answer for a
  job that is not interruptible, under the same constraints) and keep the block unless the
  chunks cost strictly less, so a plan is never worse than the block.

Rules shared with ``placement.plan``, in order:

1. Coverage: chunks are only placed where forecast data covers them; with no covered plan
   in any region, the job runs at once, as one block from its earliest start in its first
   region (``NO_COVERAGE``).
2. Deadline: a job whose work (with one block's overhead) cannot fit before its deadline
   runs at once as one block (``CANNOT_MEET_DEADLINE``).
3. Capacity is greedy: running jobs first (their region and first chunk are given), then
   least slack first (deadline - work - earliest start, then job id); slots held by
   ``busy`` and by jobs placed earlier (only over their chunks) are taken. A job whose
   cheapest plan has room everywhere keeps it; else it is planned again avoiding every
   cell that touches a full stretch (``MOVED_FOR_SLOT``), and if no such plan exists it
   keeps its cheapest plan and waits for a slot there (``WAITING_FOR_SLOT``). As in
   ``plan``, the longest run of jobs whose cheapest plans fit together is accepted at once.
4. Ties: lower cost (rounded to 1e-3 gCO2/kWh x s), then the single block, then the
   earlier first chunk, then the region the job lists first.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import numpy.typing as npt

from scheduler.intensity import FloatArray, Forecast, IntArray, PrefixIntegral
from scheduler.placement import (
    Busy,
    CleanestWindows,
    Holds,
    JobColumns,
    _cleanest_with_room,
    _Occupancy,
    _prefix_that_fits,
    _rank_regions,
    _Region,
    cleanest_windows,
)
from scheduler.records import PlacementReason

# Jobs whose window spans at most this many cells in every region are placed exactly.
EXACT_MAX_CELLS = 12
_INF = math.inf
_TIME_EPS = 1e-6  # seconds: stored times keep microseconds
_COST_DECIMALS = 3
_KEY_SCALE = 1e6  # planner keys are means in micro-gCO2/kWh
# Checkpoint mode: how many times the fast path re-targets for the chunks it found.
_RETARGETS = 4

Chunks = tuple[tuple[float, float], ...]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ChunkJob:
    """An interruptible job to place (see the module docstring for the constraints)."""

    job_id: int
    work_s: float  # remaining work, overhead not included
    not_before: float  # epoch seconds
    deadline: float
    regions: tuple[str, ...]  # one region once the job has run
    min_chunk_s: float
    max_chunks: int | None  # max_pauses + 1; None = no limit
    restart_overhead_s: float = 0.0  # per relaunch
    first_is_relaunch: bool = False  # a checkpointed job: its next chunk pays overhead too
    running_since: float | None = None  # running now: its first chunk starts at now

    def __post_init__(self) -> None:
        if not (math.isfinite(self.work_s) and self.work_s > 0):
            raise ValueError(f"job {self.job_id}: work must be a positive number of seconds")
        if not (math.isfinite(self.not_before) and math.isfinite(self.deadline)):
            raise ValueError(f"job {self.job_id}: not_before and deadline must be finite")
        if not self.regions:
            raise ValueError(f"job {self.job_id}: no region to run in")
        if self.min_chunk_s < 0 or self.restart_overhead_s < 0:
            raise ValueError(f"job {self.job_id}: min chunk and overhead must not be negative")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise ValueError(f"job {self.job_id}: max_chunks must be at least 1")

    def relaunches(self) -> int:
        """Relaunches before the first chunk: 1 for a checkpointed job not running."""
        return int(self.first_is_relaunch and self.running_since is None)

    def target(self, chunks: int) -> float:
        """Seconds that ``chunks`` chunks hold: the work plus each relaunch's overhead."""
        if not self.restart_overhead_s:
            return self.work_s
        return self.work_s + (chunks - 1 + self.relaunches()) * self.restart_overhead_s

    def one_chunk_only(self) -> bool:
        return self.work_s < self.min_chunk_s or self.max_chunks == 1


@dataclass(frozen=True)
class ChunkPlacement:
    job_id: int
    region: str
    chunks: Chunks  # (start, end), sorted, disjoint
    intensity: float | None  # energy-weighted mean forecast over the chunks; None if uncovered
    reason: PlacementReason


@dataclass(frozen=True)
class _Plan:
    region: str
    chunks: Chunks
    cost: float  # forecast integral over the chunks; inf where not covered
    single: bool  # the single block (preferred on ties)

    def key(self, rank: int) -> tuple[float, int, float, int]:
        return (round(self.cost, _COST_DECIMALS), 0 if self.single else 1, self.chunks[0][0],
                rank)


@dataclass
class _Cells:
    """One region's forecast as cells, with what both paths need: plain lists for
    bisection, prefix sums for block means, and per minimum chunk the block means."""

    integral: PrefixIntegral
    starts: FloatArray
    ends: FloatArray
    values: FloatArray
    lengths: FloatArray
    gap_before: BoolArray  # cell i does not start where cell i - 1 ends
    cost_before: FloatArray  # integral over cells < i
    length_before: FloatArray
    start_list: list[float]
    end_list: list[float]
    value_list: list[float]
    gaps_before: list[int]  # how many cells up to i (included) start after a gap
    typical_length: float  # the shortest cell: a block of ceil(m / it) cells is >= m
    step: float | None  # the cells' common length, None where they differ
    has_gaps: bool
    cost_list: list[float]  # cost_before as a list
    region: _Region  # the planner's per-duration windows, kept across jobs
    blocks: dict[float, tuple[int, FloatArray, FloatArray]] = field(default_factory=dict)

    @classmethod
    def of(cls, forecast: Forecast) -> _Cells:
        starts, ends, values = forecast.starts, forecast.ends, forecast.values
        lengths = ends - starts
        gap_before = np.ones(len(starts), dtype=np.bool_)
        gap_before[1:] = starts[1:] != ends[:-1]
        gaps = [0, *np.cumsum(gap_before[1:], dtype=np.int64).tolist()]
        cost_before = np.concatenate(([0.0], np.cumsum(values * lengths)))
        equal = len(lengths) > 0 and bool(np.all(lengths == lengths[0]))
        integral = PrefixIntegral(forecast)
        return cls(integral, starts, ends, values, lengths, gap_before,
                   cost_before, np.concatenate(([0.0], np.cumsum(lengths))), starts.tolist(),
                   ends.tolist(), values.tolist(), gaps,
                   float(lengths.min()) if len(lengths) else 1.0,
                   float(lengths[0]) if equal else None, bool(gap_before[1:].any()),
                   cost_before.tolist(), _Region(integral))

    def covering(self, min_chunk: float) -> tuple[int, FloatArray, FloatArray]:
        """(width, means, covering) for chunks of at least ``min_chunk``: means[p] is the
        mean over cells p .. p + width - 1 (+inf where they are not contiguous), width
        cells being at least ``min_chunk`` long; covering[i] is the lowest mean of the
        blocks that contain cell i."""
        cached = self.blocks.get(min_chunk)
        if cached is None:
            width = max(1, math.ceil(min_chunk / self.typical_length - 1e-9))
            count = len(self.starts) - width + 1
            if count <= 0:
                means = np.zeros(0)
            else:
                cost = self.cost_before[width:] - self.cost_before[:count]
                length = self.length_before[width:] - self.length_before[:count]
                gaps = np.concatenate(([0], np.cumsum(self.gap_before[1:])))
                broken = (gaps[width - 1:] - gaps[:count]) > 0
                means = np.where(broken, _INF, cost / length)
            cached = (width, means, _covering_min(means, width, len(self.starts)))
            self.blocks[min_chunk] = cached
        return cached

    def integral_to(self, time: float) -> float:
        """The forecast's integral from its first cell to ``time`` (gaps count nothing)."""
        index = bisect_right(self.start_list, time) - 1
        if index < 0:
            return 0.0
        covered = min(time - self.start_list[index],
                      self.end_list[index] - self.start_list[index])
        return self.cost_list[index] + self.value_list[index] * covered

    def cost(self, start: float, end: float) -> float:
        """Forecast integral over [start, end), +inf unless data covers all of it."""
        value, cover = self.integral.at(np.array((start, end)))
        if cover[1] - cover[0] < end - start - _TIME_EPS:
            return _INF
        return float(value[1] - value[0])

    def chunks_cost(self, chunks: Chunks) -> float:
        if not chunks:
            return 0.0
        bounds = np.array(chunks).ravel()
        value, cover = self.integral.at(bounds)
        lengths = bounds[1::2] - bounds[0::2]
        if np.any(cover[1::2] - cover[0::2] < lengths - _TIME_EPS):
            return _INF
        return float((value[1::2] - value[0::2]).sum())


def plan_chunks(
    jobs: Sequence[ChunkJob],
    forecasts: Mapping[str, Forecast],
    slots: Mapping[str, int],
    now: float,
    busy: Sequence[Busy] | Holds = (),
    windows: CleanestWindows | None = None,
) -> list[ChunkPlacement]:
    """Place every job as chunks; return placements in the order jobs were placed.

    ``forecasts`` and ``slots`` name every region a job may use; a region missing from
    ``forecasts`` has no data, one missing from ``slots`` has one slot. ``busy`` holds
    slots before any job is placed (it may exceed a region's slots). ``windows``: the
    ``cleanest_windows`` of the jobs' ``single_blocks``, where the caller has searched
    them (with other jobs', in one pass).
    """
    if not jobs:
        return []
    if windows is None:
        windows = cleanest_windows(single_blocks(jobs, now), forecasts, now)
    elif len(windows.keys) != len(jobs):
        raise ValueError("windows must have one row per job")
    rows = sorted(range(len(jobs)), key=lambda row: (
        jobs[row].running_since is None,
        jobs[row].deadline - jobs[row].target(1) - _earliest(jobs[row], now),
        jobs[row].job_id))
    order = [jobs[row] for row in rows]
    names = windows.names
    cells = {name: _Cells.of(forecasts.get(name, Forecast.empty())) for name in names}
    singles = _single_blocks(order, rows, windows)
    best = [_cheapest(job, cells, single, now) for job, single in zip(order, singles.plans,
                                                                         strict=True)]

    column = {name: i for i, name in enumerate(names)}
    held_column, held_start, held_end = (
        busy if isinstance(busy, Holds) else Holds.from_busy(busy)).columns(column)
    owner = np.repeat(np.arange(len(order)), [len(plan.chunks) for _, plan in best])
    chunk_column = np.array([column[plan.region] for _, plan in best for _ in plan.chunks],
                            dtype=np.int64)
    bounds = np.array([c for _, plan in best for c in plan.chunks], dtype=np.float64)
    region_slots = np.array([slots.get(name, 1) for name in names], dtype=np.int64)
    fit_chunks = _prefix_that_fits(chunk_column, bounds[:, 0], bounds[:, 1], held_column,
                                   held_start, held_end, region_slots)
    # Jobs whose every chunk is in the fitting prefix of chunks keep their cheapest plan.
    fit = int(owner[fit_chunks]) if fit_chunks < len(owner) else len(order)
    placements = [_placement(job, plan, reason) for job, (reason, plan)
                  in zip(order[:fit], best[:fit], strict=True)]
    if fit < len(order):
        occupancy = {name: _Occupancy(int(region_slots[i])) for i, name in enumerate(names)}
        for i, name in enumerate(names):
            mine = held_column == i
            accepted = (owner < fit) & (chunk_column == i)
            occupancy[name].hold_all(
                np.concatenate((held_start[mine], bounds[accepted, 0])),
                np.concatenate((held_end[mine], bounds[accepted, 1])))
        for row in range(fit, len(order)):
            job, (reason, plan) = order[row], best[row]
            room = occupancy[plan.region]
            if not all(room.has_room(start, end) for start, end in plan.chunks):
                moved = None
                if PlacementReason.COVERED_WINDOW in reason:
                    moved = _cheapest_covered(
                        job, cells, singles.plans[row], now,
                        partial(_single_with_room, job, row, singles, names, cells,
                                occupancy=occupancy), occupancy)
                if moved is None or not all(occupancy[moved.region].has_room(start, end)
                                            for start, end in moved.chunks):
                    reason |= PlacementReason.WAITING_FOR_SLOT
                else:
                    plan = moved
                    reason |= PlacementReason.MOVED_FOR_SLOT
            for start, end in plan.chunks:
                occupancy[plan.region].hold(start, end)
            placements.append(_placement(job, plan, reason))
    return placements


def _earliest(job: ChunkJob, now: float) -> float:
    return now if job.running_since is not None else max(now, job.not_before)


def _first_min(job: ChunkJob, now: float) -> float | None:
    """A running job's shortest first chunk (its run so far counts); None if not running."""
    if job.running_since is None:
        return None
    return max(job.min_chunk_s - (now - job.running_since), 0.0)


def _placement(job: ChunkJob, plan: _Plan, reason: PlacementReason) -> ChunkPlacement:
    length = sum(end - start for start, end in plan.chunks)
    intensity = None if plan.cost == _INF else round(plan.cost / length, 6)
    return ChunkPlacement(job.job_id, plan.region, plan.chunks, intensity, reason)


@dataclass(frozen=True)
class _Singles:
    """Every job's cleanest single block, capacity ignored: ``plans[row]`` over its
    regions; ``keys``/``starts``/``position`` per region column, as the planner's greedy
    reads them to find the cleanest block with room."""

    plans: list[_Plan]
    keys: FloatArray
    starts: FloatArray
    position: IntArray


def single_blocks(jobs: Sequence[ChunkJob], now: float) -> JobColumns:
    """Each job as the planner's whole job of its single block: its target for one chunk,
    from its earliest start; a running job's block is fixed, it runs on from now."""
    durations = np.array([job.target(1) for job in jobs], dtype=np.float64)
    earliest = np.array([_earliest(job, now) for job in jobs], dtype=np.float64)
    running = np.array([job.running_since is not None for job in jobs], dtype=np.bool_)
    deadlines = np.where(running, earliest + durations, [job.deadline for job in jobs])
    # The planner's latest start is deadline - duration: for a running job exactly now
    # (the sum may round up by an ulp).
    for _ in range(4):
        late = running & (deadlines - durations > earliest)
        if not late.any():
            break
        deadlines[late] = np.nextafter(deadlines[late], -np.inf)
    return JobColumns(np.array([job.job_id for job in jobs], dtype=np.int64), durations,
                      earliest, deadlines, [job.regions for job in jobs])


def _single_blocks(order: Sequence[ChunkJob], rows: Sequence[int], windows: CleanestWindows
                   ) -> _Singles:
    """Per job (``order``, row ``rows[i]`` of ``windows``), its cleanest single block over
    its regions, capacity ignored, ranked by the planner's rules."""
    picked = np.array(rows, dtype=np.int64)
    keys, starts = windows.keys[picked], windows.starts[picked]
    position = windows.position[picked]
    duration = np.array([job.target(1) for job in order])
    best = _rank_regions(keys, starts, position)
    at = np.arange(len(order))
    costs = keys[at, best] / _KEY_SCALE * duration
    names = windows.names
    plans = [_Plan(names[col], ((start, start + length),), cost, True)
             for col, start, length, cost in zip(best.tolist(), starts[at, best].tolist(),
                                                  duration.tolist(), costs.tolist(), strict=True)]
    return _Singles(plans, keys, starts, position)


def _cheapest(
    job: ChunkJob, cells: Mapping[str, _Cells], single: _Plan, now: float,
) -> tuple[PlacementReason, _Plan]:
    """The job's cheapest plan over its regions, capacity ignored, and why."""
    earliest = _earliest(job, now)
    first = job.regions[0]
    block = ((earliest, earliest + job.target(1)),)
    if block[0][1] > job.deadline:
        cost = cells[first].chunks_cost(block)
        covered = PlacementReason.COVERED_WINDOW if cost < _INF else (
            PlacementReason.NO_COVERAGE)
        return PlacementReason.CANNOT_MEET_DEADLINE | covered, _Plan(first, block, cost, True)
    found = _cheapest_covered(job, cells, single, now)
    if found is None:
        return PlacementReason.NO_COVERAGE, _Plan(first, block, _INF, True)
    return PlacementReason.COVERED_WINDOW, found


def _cheapest_covered(
    job: ChunkJob, cells: Mapping[str, _Cells], single: _Plan, now: float,
    with_room: Callable[[float], list[_Plan]] | None = None,
    occupancy: Mapping[str, _Occupancy] | None = None,
) -> _Plan | None:
    """The cheapest covered plan over the job's regions (with ``occupancy``: with room at
    every moment, the single block from ``with_room``), or None. ``single``: its cleanest
    block, capacity ignored."""
    earliest = _earliest(job, now)
    candidates = [single] if with_room is None else with_room(earliest)
    if _small(cells[single.region], earliest, job.deadline) and all(
            _small(cells[name], earliest, job.deadline) for name in job.regions):
        bound = min((plan.cost for plan in candidates), default=_INF)
        for name in job.regions:
            full = occupancy[name].full_stretches() if occupancy is not None else None
            if full is None and _lower_bound(job, cells[name], earliest) > bound + 1e-3:
                continue  # no plan here can beat one already found
            found = _exact_plan(job, cells[name], earliest, now, full)
            if found is not None:
                candidates.append(_Plan(name, found[1], found[0], False))
                bound = min(bound, found[0])
    elif not _block_is_cleanest(job, cells[single.region], single, earliest):
        region = single.region
        full = occupancy[region].full_stretches() if occupancy is not None else None
        found = _fast_plan(job, cells[region], earliest, now, full)
        if found is not None:
            candidates.append(_Plan(region, found[1], found[0], False))
    covered = [plan for plan in candidates if plan.cost < _INF]
    if not covered:
        return None
    if len(covered) == 1:
        return covered[0]
    if len(covered) == 2 and covered[0].region == covered[1].region:
        first, second = covered
        return first if first.key(0) <= second.key(0) else second
    rank_of = {name: i for i, name in enumerate(job.regions)}
    return min(covered, key=lambda p: p.key(rank_of[p.region]))


def _block_is_cleanest(job: ChunkJob, cells: _Cells, single: _Plan, earliest: float
                       ) -> bool:
    """Whether the single block is already as clean as the cleanest block of the minimum
    chunk in the window: chunks, each at least that long, could hardly beat it, so the
    fast path is not tried."""
    if single.cost == _INF or job.running_since is not None:
        return False
    width, means, _ = cells.covering(job.min_chunk_s)
    first = bisect_left(cells.start_list, earliest)
    stop = bisect_right(cells.end_list, job.deadline) - width + 1
    if stop <= first:
        return False
    block_mean = single.cost / (single.chunks[0][1] - single.chunks[0][0])
    return block_mean <= float(means[first:stop].min()) + 1e-9


def _lower_bound(job: ChunkJob, cells: _Cells, earliest: float) -> float:
    """No plan in this region costs less: its lowest value in the window for as many
    seconds as the shortest plan holds (none when a value is negative)."""
    first = bisect_right(cells.end_list, earliest)
    stop = bisect_left(cells.start_list, job.deadline)
    lowest = min(cells.value_list[first:stop], default=_INF)
    return -_INF if lowest < 0 else lowest * job.target(1)


def _small(cells: _Cells, earliest: float, deadline: float) -> bool:
    """Whether the exact path takes a window: at most EXACT_MAX_CELLS cells. Where cells of
    one length cover it without a gap, a window longer than that many is not: no count."""
    if (cells.step is not None and not cells.has_gaps
            and deadline - earliest > (EXACT_MAX_CELLS + 1) * cells.step
            and cells.start_list[0] <= earliest and deadline <= cells.end_list[-1]):
        return False
    return _cell_count(cells, earliest, deadline) <= EXACT_MAX_CELLS


def _cell_count(cells: _Cells, earliest: float, deadline: float) -> int:
    """How many cells the exact path's grid has over [earliest, deadline]: the forecast
    cells it overlaps, the gaps between them, and any uncovered part at either end."""
    first = bisect_right(cells.end_list, earliest)
    stop = bisect_left(cells.start_list, deadline)
    if stop <= first:
        return 1
    gaps = cells.gaps_before[stop - 1] - cells.gaps_before[first]
    return (stop - first + gaps + (cells.start_list[first] > earliest)
            + (cells.end_list[stop - 1] < deadline))


def _single_with_room(job: ChunkJob, row: int, singles: _Singles, names: Sequence[str],
                      cells: Mapping[str, _Cells], earliest: float,
                      occupancy: Mapping[str, _Occupancy]) -> list[_Plan]:
    """The cleanest single block with room over the job's regions (the greedy's whole-job
    answer): the planner's search, region by region while a region's block with capacity
    ignored could still beat the one found."""
    duration = job.target(1)
    latest = earliest if job.running_since is not None else max(job.deadline - duration,
                                                                earliest)
    count = len(names)
    bounds = sorted((key, start, rank, col) for key, start, rank, col in zip(
        singles.keys[row].tolist(), singles.starts[row].tolist(),
        singles.position[row].tolist(), range(count), strict=True) if rank < count)
    found = _cleanest_with_room(bounds, [cells[name].region for name in names],
                                [occupancy[name] for name in names], duration, earliest,
                                latest)
    if found is None:
        return []
    col, start, key = found
    cost = _INF if key == _INF else key / _KEY_SCALE * duration
    return [_Plan(names[col], ((start, start + duration),), cost, True)]


# --- the exact path ------------------------------------------------------------------------

_State = dict[tuple[int, float], tuple[float, float, Chunks]]  # (k, seconds) -> cost, s, chunks


def _keep(states: _State, chunks_count: int, seconds: float, cost: float, chunks: Chunks
          ) -> None:
    key = (chunks_count, round(seconds, 6))
    held = states.get(key)
    if held is None or (round(cost, _COST_DECIMALS), chunks) < (
            round(held[0], _COST_DECIMALS), held[2]):
        states[key] = (cost, seconds, chunks)


def _exact_plan(job: ChunkJob, cells: _Cells, earliest: float, now: float,
                full: tuple[FloatArray, FloatArray] | None) -> tuple[float, Chunks] | None:
    """(cost, chunks) of the cheapest plan in one region whose boundaries are grid points
    but for one end of one chunk, or None when no plan is covered (and has room)."""
    starts, ends = cells.start_list, cells.end_list
    inner = [*starts[bisect_right(starts, earliest):bisect_left(starts, job.deadline)],
             *ends[bisect_right(ends, earliest):bisect_left(ends, job.deadline)]]
    if full is not None:
        inner.extend(t for t in (*full[0].tolist(), *full[1].tolist())
                     if earliest < t < job.deadline)
    points = sorted({earliest, job.deadline, *inner})
    n = len(points) - 1
    rates: list[float] = []
    for a in range(n):
        cost = cells.cost(points[a], points[a + 1])
        if full is not None and _touches_full(full, points[a], points[a + 1]):
            cost = _INF
        rates.append(cost / (points[a + 1] - points[a]))
    prefix, unusable = [0.0], [0]
    for a in range(n):
        usable = rates[a] < _INF
        prefix.append(prefix[-1] + (rates[a] * (points[a + 1] - points[a]) if usable else 0.0))
        unusable.append(unusable[-1] + (not usable))

    def grid_cost(a: int, b: int) -> float:
        return _INF if unusable[b] - unusable[a] else prefix[b] - prefix[a]

    def cost_between(start: float, end: float) -> float:
        total = 0.0
        for c in range(max(bisect_right(points, start) - 1, 0), min(bisect_left(points, end), n)):
            overlap = min(end, points[c + 1]) - max(start, points[c])
            if overlap > 0:
                if rates[c] == _INF:
                    return _INF
                total += rates[c] * overlap
        return total

    first_min = _first_min(job, now)
    running = first_min is not None
    single_only = job.one_chunk_only()
    limit = 1 if single_only else (job.max_chunks or n + 1)
    empty: _State = {(0, 0.0): (0.0, 0.0, ())}

    # ending[b]: grid chunks ending exactly at b; upto[b]: all within [0, b] (or none).
    ending: list[_State] = [{} for _ in range(n + 1)]
    upto: list[_State] = [dict(empty)]
    for b in range(1, n + 1):
        for a in range(b):
            length = points[b] - points[a]
            cost = grid_cost(a, b)
            if cost == _INF or single_only:
                continue
            before = empty if a == 0 else upto[a - 1]
            for (count, _), (held, seconds, chunks) in before.items():
                first = count == 0
                if running and first and a != 0:
                    continue
                shortest = first_min if running and first else job.min_chunk_s
                if count + 1 > limit or length < (shortest or 0.0) - _TIME_EPS:
                    continue
                _keep(ending[b], count + 1, seconds + length, held + cost,
                      (*chunks, (points[a], points[b])))
        merged = dict(upto[b - 1])
        for (count, _), (held, seconds, chunks) in ending[b].items():
            _keep(merged, count, seconds, held, chunks)
        upto.append(merged)

    # starting[a]: grid chunks (never the first chunk) starting exactly at a;
    # after[a]: all within [a, n] (or none).
    starting: list[_State] = [{} for _ in range(n + 1)]
    after: list[_State] = [dict(empty) for _ in range(n + 2)]
    for a in range(n - 1, -1, -1):
        for b in range(a + 1, n + 1):
            length = points[b] - points[a]
            cost = grid_cost(a, b)
            if cost == _INF or single_only or length < job.min_chunk_s - _TIME_EPS:
                continue
            for (count, _), (held, seconds, chunks) in after[b + 1].items():
                if count + 2 > limit:  # the special chunk comes before
                    continue
                _keep(starting[a], count + 1, seconds + length, held + cost,
                      ((points[a], points[b]), *chunks))
        merged = dict(after[a + 1])
        for (count, _), (held, seconds, chunks) in starting[a].items():
            _keep(merged, count, seconds, held, chunks)
        after[a] = merged

    best: tuple[float, Chunks] | None = None

    def consider(left: tuple[int, float, float, Chunks], right: tuple[int, float, float, Chunks],
                 anchor: float, forward: bool) -> None:
        """The plan left + one chunk from ``anchor`` (forward) or to it + right."""
        nonlocal best
        count = left[0] + 1 + right[0]
        if count > limit:
            return
        length = job.target(count) - left[1] - right[1]
        first = left[0] == 0
        shortest = 0.0 if single_only else (
            first_min if running and first else job.min_chunk_s) or 0.0
        if length <= _TIME_EPS or length < shortest - _TIME_EPS:
            return
        start, end = (anchor, anchor + length) if forward else (anchor - length, anchor)
        lower = left[3][-1][1] if left[3] else None
        upper = right[3][0][0] if right[3] else None
        if (start < points[0] - _TIME_EPS or end > points[n] + _TIME_EPS
                or (lower is not None and start <= lower + _TIME_EPS)
                or (upper is not None and end >= upper - _TIME_EPS)
                or (running and first and abs(start - points[0]) > _TIME_EPS)):
            return
        cost = cost_between(start, end)
        if cost == _INF:
            return
        total = left[2] + cost + right[2]
        chunks = (*left[3], (start, end), *right[3])
        if best is None or (round(total, _COST_DECIMALS), chunks) < (
                round(best[0], _COST_DECIMALS), best[1]):
            best = (total, chunks)

    def entries(states: _State) -> list[tuple[int, float, float, Chunks]]:
        return [(count, seconds, cost, chunks)
                for (count, _), (cost, seconds, chunks) in states.items()]

    rights = [entries(starting[j]) for j in range(n + 1)]
    none = (0, 0.0, 0.0, ())
    for a in range(n):  # the special chunk starts at grid point a
        for left in entries(empty if a == 0 else upto[a - 1]):
            consider(left, none, points[a], True)
            for j in range(a + 1, n + 1):
                for right in rights[j]:
                    consider(left, right, points[a], True)
    lefts = [entries(ending[i]) for i in range(n + 1)]
    for b in range(1, n + 1):  # the special chunk ends at grid point b
        for right in entries(after[b + 1]):
            consider(none, right, points[b], False)
            for i in range(b):
                for left in lefts[i]:
                    consider(left, right, points[b], False)
    return best


def _touching_full(full: tuple[FloatArray, FloatArray], starts: FloatArray, ends: FloatArray
                   ) -> BoolArray:
    """Per [starts[i], ends[i]): whether it overlaps a full stretch."""
    full_start, full_end = full
    if not len(full_start):
        return np.zeros(len(starts), dtype=np.bool_)
    index = full_end.searchsorted(starts, side="right")
    inside = index < len(full_start)
    touching: BoolArray = inside & (full_start[np.minimum(index, len(full_start) - 1)] < ends)
    return touching


def _touches_full(full: tuple[FloatArray, FloatArray], start: float, end: float) -> bool:
    """Whether [start, end) overlaps a full stretch."""
    index = int(full[1].searchsorted(start, side="right"))
    return index < len(full[0]) and float(full[0][index]) < end


# --- the fast path -------------------------------------------------------------------------


def _covering_min(means: FloatArray, width: int, count: int) -> FloatArray:
    """Per cell i < count: the lowest of means[p] over the blocks p covering it
    (i - width < p <= i, 0 <= p < len(means)), by doubling: O(count log width)."""
    pad = np.full(width - 1, _INF)
    values = np.concatenate((pad, means, pad, np.full(max(count - len(means) - width + 1, 0),
                                                      _INF)))
    span = 1
    while span * 2 <= width:
        values = np.minimum(values[:-span], values[span:])
        span *= 2
    if span < width:
        values = np.minimum(values[:-(width - span)], values[width - span:])
    return values[:count]


def _fast_plan(job: ChunkJob, cells: _Cells, earliest: float, now: float,
               full: tuple[FloatArray, FloatArray] | None) -> tuple[float, Chunks] | None:
    """(cost, chunks) by the threshold heuristic of the module docstring, or None."""
    running_min = _first_min(job, now)
    first_shortest = job.min_chunk_s if running_min is None else running_min
    if job.one_chunk_only() or job.target(2) < first_shortest + job.min_chunk_s:
        return None  # no room for two chunks: the single block is the plan
    running = running_min is not None
    first_min = running_min or 0.0
    lo = bisect_left(cells.start_list, earliest)
    hi = bisect_right(cells.end_list, job.deadline)
    count = hi - lo
    if count <= 0:
        return None
    head: tuple[float, float] | None = None
    if running and cells.start_list[lo] > now:
        head_end = cells.start_list[lo]
        if cells.cost(now, head_end) == _INF:
            return None
        head = (now, head_end)
    width, means, covering = cells.covering(job.min_chunk_s)
    local = means[lo:max(hi - width + 1, lo)]  # the blocks inside the window
    blocked = None
    if full is not None:
        blocked = _touching_full(full, cells.starts[lo:hi], cells.ends[lo:hi])
        bad = np.concatenate(([0], np.cumsum(blocked)))
        local = np.where(bad[width:width + len(local)] - bad[:len(local)] > 0, _INF, local)
    if blocked is None and count >= 2 * width:
        # The region's covering minimum, but for the cells within a block of either end,
        # whose blocks reaching out of the window do not count.
        qualifying = covering[lo:hi].copy()
        if width > 1:
            qualifying[:width - 1] = np.minimum.accumulate(means[lo:lo + width - 1])
            tail = means[hi - 2 * width + 2:hi - width + 1][::-1]
            qualifying[count - width + 1:] = np.minimum.accumulate(tail)[::-1]
    else:
        qualifying = _covering_min(local, width, count)
    if running:
        forced = bisect_left(cells.start_list, now + first_min, lo, hi) - lo
        if head is None:
            forced = max(forced, 1)  # the running chunk is never empty
        if blocked is not None and blocked[:forced].any():
            return None
        qualifying[:forced] = -_INF
        if first_min <= 0:  # it may stop at the first boundary, not before
            first_min = (cells.end_list[lo + forced - 1] if forced else cells.start_list[lo]
                         ) - now
    # The cells must hold what the head's shortest part leaves: the rest of the head is
    # one more chunk end that trimming may cut.
    head_credit = min(head[1] - head[0], running_min or 0.0) if head else 0.0
    lengths = cells.lengths[lo:hi]
    target = job.target(1)
    for _ in range(_RETARGETS):
        threshold = _threshold(cells, qualifying, lengths, target - head_credit)
        if threshold == _INF:
            return None
        chosen = _choose(qualifying, local, width, lengths, cells.step, target - head_credit,
                         threshold)
        chunks = _merge_to(job, cells, _runs(cells, lo, chosen, head), full)
        if chunks is None:
            return None
        wanted = job.target(len(chunks))
        if sum(end - start for start, end in chunks) < wanted - _TIME_EPS:
            target = wanted  # more chunks than assumed: more overhead
            continue
        trimmed = _trim(job, cells, chunks, wanted, first_min if running else None)
        if trimmed is None:
            return None
        return sum(cells.integral_to(end) - cells.integral_to(start)
                   for start, end in trimmed), trimmed
    return None


def _threshold(cells: _Cells, qualifying: FloatArray, lengths: FloatArray, needed: float
               ) -> float:
    """The lowest value v such that the cells with qualifying <= v hold ``needed`` seconds
    (+inf if even every covered cell does not)."""
    if cells.step is not None:  # equal cells: the k-th smallest value
        rank = math.ceil((needed - _TIME_EPS) / cells.step) - 1
        if rank >= len(qualifying):
            return _INF
        return float(np.partition(qualifying, max(rank, 0))[max(rank, 0)])
    by_value = np.argsort(qualifying, kind="stable")
    enough = int(np.cumsum(lengths[by_value]).searchsorted(needed - _TIME_EPS))
    return _INF if enough >= len(qualifying) else float(qualifying[by_value[enough]])


def _choose(qualifying: FloatArray, means: FloatArray, width: int, lengths: FloatArray,
            step: float | None, needed: float, threshold: float) -> BoolArray:
    """The cells at or below ``threshold`` when they hold at most two blocks more than
    ``needed`` seconds (trimming takes the rest); else those below it, then the blocks at
    it, earliest first, until ``needed`` seconds (a flat forecast ties everything)."""
    chosen: BoolArray = qualifying <= threshold

    def held(cells: BoolArray) -> float:
        return (int(np.count_nonzero(cells)) * step if step is not None
                else float(lengths[cells].sum()))

    if held(chosen) - needed <= 2 * width * (step or float(lengths.max())):
        return chosen
    chosen = (qualifying < threshold) | (qualifying == -_INF)
    missing = needed - held(chosen)
    for block in np.flatnonzero(means == threshold).tolist():
        if missing <= _TIME_EPS:
            break
        added = ~chosen[block:block + width]
        missing -= float(lengths[block:block + width][added].sum())
        chosen[block:block + width] = True
    return chosen


def _runs(cells: _Cells, lo: int, chosen: BoolArray, head: tuple[float, float] | None
          ) -> list[list[float]]:
    """The chosen cells (from cell ``lo``) as [start, end] runs, split at gaps in the data;
    a running job's head (now to the first cell) joins the first run if it touches it."""
    count = len(chosen)
    if cells.has_gaps:
        gap = cells.gap_before[lo:lo + count]
        previous = np.concatenate(([False], chosen[:-1]))
        following = np.concatenate((chosen[1:], [False]))
        gap_after = np.concatenate((gap[1:], [True]))
        first = (np.flatnonzero(chosen & (~previous | gap)) + lo).tolist()
        last = (np.flatnonzero(chosen & (~following | gap_after)) + lo).tolist()
    else:
        # Where the chosen cells begin and end (exclusive): alternate changes of a padded mask.
        padded = np.zeros(count + 2, dtype=np.bool_)
        padded[1:-1] = chosen
        edges = (padded[1:] != padded[:-1]).nonzero()[0].tolist()
        first = [lo + a for a in edges[0::2]]
        last = [lo + b - 1 for b in edges[1::2]]
    start_list, end_list = cells.start_list, cells.end_list
    runs = [[start_list[a], end_list[b]] for a, b in zip(first, last, strict=True)]
    if head is not None:
        if runs and abs(runs[0][0] - head[1]) <= _TIME_EPS:
            runs[0][0] = head[0]
        else:
            runs.insert(0, [head[0], head[1]])
    return runs


def _merge_to(job: ChunkJob, cells: _Cells, runs: list[list[float]],
              full: tuple[FloatArray, FloatArray] | None) -> list[list[float]] | None:
    """Fill the cheapest gaps (by mean intensity, never a full one) until at most
    max_chunks runs remain."""
    if job.max_chunks is None or len(runs) <= job.max_chunks:
        return runs
    gaps = []
    for index in range(len(runs) - 1):
        start, end = runs[index][1], runs[index + 1][0]
        blocked = full is not None and _touches_full(full, start, end)
        gaps.append((_INF if blocked else cells.cost(start, end) / (end - start), index))
    gaps.sort()
    filled = {index for mean, index in gaps[:len(runs) - job.max_chunks] if mean < _INF}
    if len(filled) < len(runs) - job.max_chunks:
        return None
    merged = [list(runs[0])]
    for index in range(1, len(runs)):
        if index - 1 in filled:
            merged[-1][1] = runs[index][1]
        else:
            merged.append(list(runs[index]))
    return merged


def _trim(job: ChunkJob, cells: _Cells, runs: list[list[float]], wanted: float,
          first_min: float | None) -> Chunks | None:
    """Cut runs down to ``wanted`` seconds, dirtiest chunk end first, keeping every chunk at
    least min_chunk_s (a running job's first chunk: ``first_min``, its start fixed)."""
    excess = sum(end - start for start, end in runs) - wanted
    starts, ends, values = cells.start_list, cells.end_list, cells.value_list
    while excess > _TIME_EPS:
        # A whole run no longer than the excess may go (ties at the threshold can choose
        # more runs of the minimum chunk than the work needs): the dirtiest such run, when
        # it is dirtier than any end that could be cut instead.
        # Runs lie on covered cells: their cost is a difference of the integral.
        droppable = [((cells.integral_to(end) - cells.integral_to(start)) / (end - start),
                      index)
                     for index, (start, end) in enumerate(runs)
                     if len(runs) > 1 and end - start <= excess + _TIME_EPS
                     and not (index == 0 and first_min is not None)]
        dropping = max(droppable, default=None)
        best: tuple[float, int, bool] | None = None
        for index, (start, end) in enumerate(runs):
            shortest = first_min if index == 0 and first_min is not None else job.min_chunk_s
            if end - start - shortest <= _TIME_EPS:
                continue
            tail = bisect_left(starts, end) - 1  # the cell holding the run's last second
            if tail >= 0 and (best is None or values[tail] > best[0]):
                best = (values[tail], index, True)
            if index == 0 and first_min is not None:
                continue
            lead = bisect_right(ends, start)  # the cell holding its first second
            if lead < len(values) and (best is None or values[lead] > best[0]):
                best = (values[lead], index, False)
        if dropping is not None and (best is None or dropping[0] >= best[0]):
            start, end = runs.pop(dropping[1])
            # One chunk fewer: one relaunch's overhead less to hold.
            excess -= (end - start) - (job.target(len(runs) + 1) - job.target(len(runs)))
            continue
        if best is None:
            return None
        _, index, at_end = best
        start, end = runs[index]
        shortest = first_min if index == 0 and first_min is not None else job.min_chunk_s
        if at_end:
            cell_start = max(starts[bisect_left(starts, end) - 1], start)
            cut = min(excess, end - cell_start, end - start - shortest)
            runs[index][1] = end - cut
        else:
            cell_end = min(ends[bisect_right(ends, start)], end)
            cut = min(excess, cell_end - start, end - start - shortest)
            runs[index][0] = start + cut
        excess -= cut
    return tuple((start, end) for start, end in runs)




def chunk_means(forecasts: Mapping[str, Forecast], placements: Sequence[ChunkPlacement]
                ) -> list[list[float | None]]:
    """Per placement, each chunk's mean forecast (None where data does not cover it): one
    prefix integral per region, every chunk of that region at once."""
    means: list[list[float | None]] = [[None] * len(p.chunks) for p in placements]
    by_region: dict[str, list[int]] = {}
    for row, placement in enumerate(placements):
        by_region.setdefault(placement.region, []).append(row)
    for region, rows in by_region.items():
        bounds = np.array([chunk for row in rows for chunk in placements[row].chunks],
                          dtype=np.float64).reshape(-1, 2)
        value, cover = PrefixIntegral(forecasts.get(region, Forecast.empty())).at(
            bounds.ravel())
        lengths = bounds[:, 1] - bounds[:, 0]
        covered = cover[1::2] - cover[0::2] >= lengths - _TIME_EPS
        mean = np.round((value[1::2] - value[0::2]) / lengths, 6)
        flat = [float(m) if ok else None for m, ok in zip(mean.tolist(), covered.tolist(),
                                                            strict=True)]
        at = 0
        for row in rows:
            count = len(placements[row].chunks)
            means[row] = flat[at:at + count]
            at += count
    return means
