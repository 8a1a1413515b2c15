"""Chunk placement against a brute-force reference, plus the rules a user would notice.

The reference enumerates every plan the exact path claims to search: sets of chunks whose
boundaries are grid points (forecast boundaries inside the window and the window's ends)
but for one end of one chunk, whose length is what the work still needs. It checks each
plan's constraints itself and integrates the step function segment by segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations, pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.chunking import (
    EXACT_MAX_CELLS,
    ChunkJob,
    ChunkPlacement,
    plan_chunks,
    single_blocks,
)
from scheduler.intensity import Forecast
from scheduler.placement import (
    Busy,
    Holds,
    JobColumns,
    JobRequest,
    cleanest_windows,
    plan,
)
from scheduler.records import PlacementReason

UNIT = 300.0  # five minutes: every time in a scenario is a whole number of units
HOUR = 3600.0
PROPERTY = settings(max_examples=80, deadline=None)


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    value: float


def to_forecast(segments: Sequence[Segment]) -> Forecast:
    return Forecast.from_lists([s.start for s in segments], [s.end for s in segments],
                               [s.value for s in segments])


def integral(segments: Sequence[Segment], start: float, end: float) -> float | None:
    """Forecast over [start, end), segment by segment; None unless data covers all of it."""
    total, covered = 0.0, 0.0
    for segment in segments:
        overlap = min(end, segment.end) - max(start, segment.start)
        if overlap > 0:
            total += overlap * segment.value
            covered += overlap
    return total if covered >= end - start - 1e-6 else None


def plan_cost(segments: Sequence[Segment], chunks: Sequence[tuple[float, float]]
              ) -> float | None:
    costs = [integral(segments, start, end) for start, end in chunks]
    return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)


def problems(job: ChunkJob, now: float, chunks: Sequence[tuple[float, float]]) -> list[str]:
    """What is wrong with ``chunks`` as a plan for ``job`` (empty: a valid plan)."""
    found = []
    earliest = now if job.running_since is not None else max(now, job.not_before)
    if not chunks:
        return ["no chunk"]
    if chunks[0][0] < earliest - 1e-6 or chunks[-1][1] > job.deadline + 1e-6:
        found.append("outside the window")
    if any(b[0] <= a[1] + 1e-6 for a, b in pairwise(chunks)):
        found.append("chunks overlap or touch")
    count = len(chunks)
    if job.max_chunks is not None and count > job.max_chunks:
        found.append("too many chunks")
    if job.work_s < job.min_chunk_s and count > 1:
        found.append("short work split")
    for index, (start, end) in enumerate(chunks):
        shortest = job.min_chunk_s if count > 1 else 0.0
        if index == 0 and job.running_since is not None:
            if count > 1:
                shortest = max(job.min_chunk_s - (now - job.running_since), 0.0)
            if abs(start - now) > 1e-6:
                found.append("running job's first chunk not at now")
        if end - start <= 0 or end - start < shortest - 1e-6:
            found.append(f"chunk {index} too short")
    relaunch = job.first_is_relaunch and job.running_since is None
    target = job.work_s + (count - 1 + relaunch) * job.restart_overhead_s
    if abs(sum(e - s for s, e in chunks) - target) > 1e-6:
        found.append("wrong amount of work")
    return found


def grid_plans(job: ChunkJob, points: Sequence[float], now: float
               ) -> list[tuple[tuple[float, float], ...]]:
    """Every plan of the class: grid chunks plus one chunk anchored at a grid point whose
    length makes up the work."""
    pairs = [(a, b) for a, b in combinations(range(len(points)), 2)]
    sets: list[tuple[tuple[int, int], ...]] = [()]

    def extend(prefix: tuple[tuple[int, int], ...], after: int) -> None:
        for a, b in pairs:
            if a > after:
                chosen = (*prefix, (a, b))
                sets.append(chosen)
                extend(chosen, b)

    extend((), -1)
    plans = []
    relaunch = job.first_is_relaunch and job.running_since is None
    for grid in sets:
        count = len(grid) + 1
        target = job.work_s + (count - 1 + relaunch) * job.restart_overhead_s
        length = target - sum(points[b] - points[a] for a, b in grid)
        for anchor in points:
            for chunk in ((anchor, anchor + length), (anchor - length, anchor)):
                chunks = sorted([*((points[a], points[b]) for a, b in grid), chunk])
                if not problems(job, now, chunks):
                    plans.append(tuple(chunks))
    return plans


def grid_points(segments: Sequence[Segment], earliest: float, deadline: float) -> list[float]:
    inner = {t for s in segments for t in (s.start, s.end) if earliest < t < deadline}
    return sorted({earliest, deadline, *inner})


@st.composite
def exact_cases(draw: st.DrawFn) -> tuple[list[Segment], ChunkJob, float]:
    """One region, a few forecast steps (gaps allowed), one job small enough to be exact."""
    segments, t = [], 0.0
    for _ in range(draw(st.integers(1, 5))):
        t += draw(st.sampled_from([0, 0, 0, 1])) * UNIT  # now and then a gap in the data
        length = draw(st.integers(1, 4)) * UNIT
        segments.append(Segment(t, t + length, draw(st.integers(0, 400))))
        t += length
    now = draw(st.integers(0, 3)) * UNIT
    running = draw(st.booleans()) and draw(st.booleans())
    not_before = now + draw(st.integers(0, 2)) * UNIT
    last = max(int(now / UNIT), int(t / UNIT)) + 2
    deadline = draw(st.integers(int(now / UNIT) + 1, last)) * UNIT
    job = ChunkJob(
        job_id=1,
        work_s=draw(st.integers(1, 12)) * UNIT / 2,
        not_before=not_before,
        deadline=deadline,
        regions=("north",),
        min_chunk_s=draw(st.sampled_from([0, 1, 2, 3])) * UNIT / 2,
        max_chunks=draw(st.sampled_from([None, 1, 2, 3])),
        restart_overhead_s=draw(st.sampled_from([0, 0, 1, 2])) * UNIT / 2,
        first_is_relaunch=draw(st.booleans()) and not running,
        running_since=now - draw(st.integers(0, 4)) * UNIT / 2 if running else None,
    )
    return segments, job, now


@PROPERTY
@given(exact_cases())
def test_exact_path_finds_the_cheapest_plan_of_the_class(
        case: tuple[list[Segment], ChunkJob, float]) -> None:
    segments, job, now = case
    earliest = now if job.running_since is not None else max(now, job.not_before)
    points = grid_points(segments, earliest, job.deadline)
    assert len(points) - 1 <= EXACT_MAX_CELLS
    [placed] = plan_chunks([job], {"north": to_forecast(segments)}, {"north": 1}, now)
    relaunch = job.first_is_relaunch and job.running_since is None
    if earliest + job.work_s + relaunch * job.restart_overhead_s > job.deadline:
        assert PlacementReason.CANNOT_MEET_DEADLINE in placed.reason
        assert placed.chunks == ((earliest, earliest + job.target(1)),)
        return
    costs = [c for c in (plan_cost(segments, p) for p in grid_plans(job, points, now))
             if c is not None]
    if not costs:
        assert placed.reason == PlacementReason.NO_COVERAGE
        assert placed.intensity is None
        assert placed.chunks == ((earliest, earliest + job.target(1)),)
        return
    assert placed.reason == PlacementReason.COVERED_WINDOW
    assert problems(job, now, placed.chunks) == []
    cost = plan_cost(segments, placed.chunks)
    assert cost is not None
    assert cost == pytest.approx(min(costs), abs=1e-3)
    assert placed.intensity == pytest.approx(
        cost / sum(e - s for s, e in placed.chunks), abs=1e-5)


def cleanest_block_cost(segments: Sequence[Segment], job: ChunkJob, now: float) -> float | None:
    """The non-interruptible answer's cost: the planner's cleanest single block."""
    duration = job.target(1)
    [whole] = plan([JobRequest(job.job_id, duration, job.not_before, job.deadline,
                               job.regions)], {"north": to_forecast(segments)}, {"north": 1},
                   now)
    return integral(segments, whole.start, whole.start + duration) if whole.covered else None


@st.composite
def fast_cases(draw: st.DrawFn) -> tuple[list[Segment], ChunkJob, float]:
    """A day of five-minute steps: far too many cells for the exact path."""
    steps = draw(st.integers(EXACT_MAX_CELLS + 4, 288))
    base = draw(st.lists(st.integers(0, 500), min_size=4, max_size=12))
    values = np.interp(np.linspace(0, len(base) - 1, steps), np.arange(len(base)), base)
    segments = [Segment(i * UNIT, (i + 1) * UNIT, float(round(v))) for i, v in
                enumerate(values)]
    now = draw(st.integers(0, 6)) * UNIT + draw(st.sampled_from([0.0, 17.0]))
    running = draw(st.booleans())
    work = draw(st.integers(2, 48)) * UNIT
    job = ChunkJob(
        job_id=1, work_s=work, not_before=now, deadline=steps * UNIT - draw(
            st.integers(0, 3)) * UNIT, regions=("north",),
        min_chunk_s=draw(st.sampled_from([600.0, 1800.0, 3600.0])),
        max_chunks=draw(st.sampled_from([None, 2, 4])),
        restart_overhead_s=draw(st.sampled_from([0.0, 300.0])),
        first_is_relaunch=draw(st.booleans()) and not running,
        running_since=now - draw(st.integers(0, 6)) * UNIT if running else None)
    return segments, job, now


@PROPERTY
@given(fast_cases())
def test_fast_path_plans_are_valid_and_never_worse_than_one_block(
        case: tuple[list[Segment], ChunkJob, float]) -> None:
    segments, job, now = case
    [placed] = plan_chunks([job], {"north": to_forecast(segments)}, {"north": 1}, now)
    if PlacementReason.CANNOT_MEET_DEADLINE in placed.reason:
        return
    assert problems(job, now, placed.chunks) == []
    cost = plan_cost(segments, placed.chunks)
    assert cost is not None
    if job.running_since is not None:
        block = integral(segments, now, now + job.target(1))
    else:
        block = cleanest_block_cost(segments, job, now)
    assert block is not None
    assert cost <= block + 1e-3


def two_valleys(step: float) -> Forecast:
    """Twelve hours, dirty but for two clean hours: 02:00-03:00 and 08:00-09:00."""
    hourly = [400, 400, 100, 400, 400, 400, 400, 400, 100, 400, 400, 400]
    values = np.repeat(np.array(hourly, dtype=np.float64), int(HOUR / step))
    starts = np.arange(len(values)) * step
    return Forecast(starts, starts + step, values)


@pytest.mark.parametrize("step", [HOUR, UNIT])  # exact path, fast path
def test_a_two_hour_job_runs_in_both_valleys_its_whole_twin_in_one_block(step: float) -> None:
    forecast = two_valleys(step)
    job = ChunkJob(1, 2 * HOUR, 0.0, 12 * HOUR, ("north",), 1800.0, None)
    [placed] = plan_chunks([job], {"north": forecast}, {"north": 4}, 0.0)
    assert placed.chunks == ((2 * HOUR, 3 * HOUR), (8 * HOUR, 9 * HOUR))
    assert placed.intensity == 100.0
    [whole] = plan([JobRequest(2, 2 * HOUR, 0.0, 12 * HOUR, ("north",))],
                   {"north": forecast}, {"north": 4}, 0.0)
    assert whole.intensity == 250.0  # one clean hour and one dirty one, at best


def test_ties_at_the_threshold_leave_out_a_whole_spare_chunk() -> None:
    """Half-hour steps, a half-hour minimum chunk, a 1.5-hour job, a day's window (the fast
    path): the three cleanest half-hours are apart and two tie for the third place, so one
    chunk too many qualifies; the plan drops the spare and keeps the three cleanest."""
    step = 1800.0
    values = np.full(48, 300.0)
    values[[5, 20, 31, 40]] = [44.0, 0.0, 46.0, 46.0]
    starts = np.arange(48) * step
    job = ChunkJob(1, 3 * step, 0.0, 48 * step, ("north",), step, None)
    [placed] = plan_chunks([job], {"north": Forecast(starts, starts + step, values)},
                           {"north": 1}, 0.0)
    assert len(placed.chunks) == 3
    assert placed.intensity == pytest.approx((44.0 + 0.0 + 46.0) / 3)


def test_max_chunks_one_is_a_single_block_and_the_limit_holds() -> None:
    forecast = two_valleys(UNIT)
    single = ChunkJob(1, 2 * HOUR, 0.0, 12 * HOUR, ("north",), 1800.0, 1)
    [placed] = plan_chunks([single], {"north": forecast}, {"north": 4}, 0.0)
    assert len(placed.chunks) == 1
    three_valleys = ChunkJob(2, 3 * HOUR, 0.0, 12 * HOUR, ("north",), 1800.0, 2)
    [placed] = plan_chunks([three_valleys], {"north": forecast}, {"north": 4}, 0.0)
    assert len(placed.chunks) <= 2


def test_checkpoint_overhead_is_paid_per_relaunch() -> None:
    job = ChunkJob(1, 2 * HOUR, 0.0, 12 * HOUR, ("north",), 1800.0, None,
                   restart_overhead_s=600.0, first_is_relaunch=True)
    [placed] = plan_chunks([job], {"north": two_valleys(UNIT)}, {"north": 4}, 0.0)
    held = sum(end - start for start, end in placed.chunks)
    assert held == 2 * HOUR + len(placed.chunks) * 600.0


def test_a_running_job_continues_now_and_may_be_cut() -> None:
    # Running since 23:50 the day before in a dirty hour: it is cut as soon as its run
    # reaches the minimum chunk, and finishes in the valleys.
    job = ChunkJob(1, 2 * HOUR, 0.0, 12 * HOUR, ("north",), 1800.0, None,
                   running_since=-600.0)
    [placed] = plan_chunks([job], {"north": two_valleys(UNIT)}, {"north": 4}, 0.0)
    assert placed.chunks[0] == (0.0, 1200.0)
    assert problems(job, 0.0, placed.chunks) == []


def test_no_forecast_runs_at_once_as_one_block() -> None:
    job = ChunkJob(1, HOUR, 600.0, 12 * HOUR, ("north", "south"), 1800.0, None)
    [placed] = plan_chunks([job], {}, {}, 0.0)
    assert placed.reason == PlacementReason.NO_COVERAGE
    assert (placed.region, placed.chunks, placed.intensity) == ("north", ((600.0, 4200.0),),
                                                                None)


def test_work_that_cannot_fit_runs_at_once() -> None:
    job = ChunkJob(1, 3 * HOUR, 0.0, 2 * HOUR, ("north",), 1800.0, None)
    [placed] = plan_chunks([job], {"north": two_valleys(UNIT)}, {"north": 4}, 0.0)
    assert PlacementReason.CANNOT_MEET_DEADLINE in placed.reason
    assert placed.chunks == ((0.0, 3 * HOUR),)


def test_the_cleaner_region_wins() -> None:
    clean = two_valleys(UNIT)
    dirty = Forecast(clean.starts, clean.ends, clean.values + 50.0)
    job = ChunkJob(1, 2 * HOUR, 0.0, 12 * HOUR, ("east", "west"), 1800.0, None)
    [placed] = plan_chunks([job], {"east": dirty, "west": clean}, {"east": 4, "west": 4}, 0.0)
    assert placed.region == "west"


def held_at(placements: Sequence[ChunkPlacement], busy: Sequence[Busy], region: str,
            moment: float) -> int:
    held = sum(1 for b in busy if b.region == region and b.start <= moment < b.end)
    return held + sum(1 for p in placements if p.region == region
                      for start, end in p.chunks if start <= moment < end)


@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from([HOUR, UNIT]), st.integers(1, 3))
def test_chunks_never_put_a_region_over_its_slots(data: st.DataObject, step: float,
                                                  slots: int) -> None:
    forecast = two_valleys(step)
    jobs = [ChunkJob(i, data.draw(st.integers(1, 8)) * 1800.0, 0.0, 12 * HOUR,
                     ("north", "south")[: data.draw(st.integers(1, 2))], 1800.0,
                     data.draw(st.sampled_from([None, 2])))
            for i in range(data.draw(st.integers(1, 8)))]
    busy = [Busy("north", 2 * HOUR, 3 * HOUR)] if data.draw(st.booleans()) else []
    placements = plan_chunks(jobs, {"north": forecast, "south": forecast},
                             {"north": slots, "south": slots}, 0.0, busy)
    assert sorted(p.job_id for p in placements) == [j.job_id for j in jobs]
    by_id = {job.job_id: job for job in jobs}
    moments = {t for p in placements for chunk in p.chunks for t in chunk}
    for placement in placements:
        assert problems(by_id[placement.job_id], 0.0, placement.chunks) == []
    if any(PlacementReason.WAITING_FOR_SLOT in p.reason for p in placements):
        return
    for region in ("north", "south"):
        for moment in moments:
            assert held_at(placements, busy, region, moment) <= slots


@settings(max_examples=40, deadline=None)
@given(st.data(), st.integers(1, 3))
def test_one_search_for_whole_and_chunked_jobs_plans_as_two_searches(
    data: st.DataObject, slots: int,
) -> None:
    """A re-plan searches its whole jobs' windows and its interruptible jobs' single
    blocks in one pass: every placement is what each planner finds searching alone."""
    forecasts = {"north": two_valleys(HOUR), "south": two_valleys(UNIT)}
    names = ("north", "south")
    whole = [JobRequest(100 + i, data.draw(st.integers(1, 6)) * 1800.0,
                        data.draw(st.integers(0, 4)) * HOUR, 12 * HOUR,
                        names[: data.draw(st.integers(1, 2))])
             for i in range(data.draw(st.integers(0, 6)))]
    running_since = data.draw(st.sampled_from([None, -600.0]))
    chunked = [ChunkJob(i, data.draw(st.integers(1, 8)) * 1800.0, 0.0, 12 * HOUR,
                        names[data.draw(st.integers(0, 1)):], 1800.0,
                        data.draw(st.sampled_from([None, 2])),
                        running_since=running_since if i == 0 else None)
               for i in range(data.draw(st.integers(1, 6)))]
    now = 0.0
    region_slots = dict.fromkeys(names, slots)
    columns = JobColumns.from_requests(whole)
    windows = cleanest_windows(columns + single_blocks(chunked, now), forecasts, now)
    shared = plan(columns, forecasts, region_slots, now, windows=windows.rows(0, len(whole)))
    alone = plan(columns, forecasts, region_slots, now)
    assert list(shared) == list(alone)
    held = Holds.from_placements(alone, columns.durations[
        np.searchsorted(columns.job_ids, alone.job_ids)])
    assert plan_chunks(chunked, forecasts, region_slots, now, held, windows.rows(
        len(whole), len(whole) + len(chunked))) == plan_chunks(
        chunked, forecasts, region_slots, now, held)


def test_a_full_valley_sends_the_second_job_to_the_other_one() -> None:
    forecast = two_valleys(UNIT)
    first = ChunkJob(1, HOUR, 0.0, 12 * HOUR, ("north",), 1800.0, None)
    second = replace(first, job_id=2, deadline=12 * HOUR + 1)
    placements = plan_chunks([first, second], {"north": forecast}, {"north": 1}, 0.0)
    by_id = {p.job_id: p for p in placements}
    assert by_id[1].chunks == ((2 * HOUR, 3 * HOUR),)
    assert by_id[2].chunks == ((8 * HOUR, 9 * HOUR),)
    assert PlacementReason.MOVED_FOR_SLOT in by_id[2].reason


def test_bad_jobs_are_refused() -> None:
    with pytest.raises(ValueError, match="work"):
        ChunkJob(1, 0.0, 0.0, HOUR, ("north",), 1800.0, None)
    with pytest.raises(ValueError, match="region"):
        ChunkJob(1, 60.0, 0.0, HOUR, (), 1800.0, None)
    with pytest.raises(ValueError, match="max_chunks"):
        ChunkJob(1, 60.0, 0.0, HOUR, ("north",), 1800.0, 0)
