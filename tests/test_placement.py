"""The planner against a brute-force reference, plus the rules a user would notice.

The reference works on an integer time grid that contains every breakpoint (forecast
boundaries, now, not_before, deadlines, busy intervals are all whole numbers): it
computes the exact overlap-weighted mean (a Fraction) of every window starting at every
whole time, counts held slots unit by unit, and picks by the documented rules. The mean
over [s, s + d) is linear between breakpoints and room changes only at them, so the best
whole-number start is the best real start.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.intensity import Forecast, PrefixIntegral, window_mean
from scheduler.placement import (
    Busy,
    HeldProfile,
    Holds,
    JobRequest,
    Placement,
    plan,
    region_options,
)
from scheduler.records import PlacementReason, describe

REGION_NAMES = ("north", "south", "west")
HORIZON = 48  # forecasts cover at most [0, HORIZON); windows may run past it
PROPERTY = settings(max_examples=60, deadline=None)


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    value: int


@dataclass(frozen=True)
class Scenario:
    now: int
    segments: dict[str, tuple[Segment, ...]]
    slots: dict[str, int]
    jobs: tuple[JobRequest, ...]
    busy: tuple[Busy, ...]

    def forecasts(self) -> dict[str, Forecast]:
        return {name: to_forecast(segs) for name, segs in self.segments.items()}


def to_forecast(segments: Sequence[Segment]) -> Forecast:
    return Forecast.from_lists([s.start for s in segments], [s.end for s in segments],
                               [s.value for s in segments])


# --- the brute-force reference ------------------------------------------------------------


@functools.cache
def unit_values(segments: tuple[Segment, ...]) -> dict[int, int]:
    """The forecast value over each unit [t, t + 1) that a segment covers."""
    return {t: s.value for s in segments for t in range(s.start, s.end)}


def exact_mean(segments: Sequence[Segment], start: int, duration: int) -> Fraction | None:
    """Mean over [start, start + duration) unit by unit; None unless every unit is covered."""
    values = unit_values(tuple(segments))
    total = 0
    for t in range(start, start + duration):
        if t not in values:
            return None
        total += values[t]
    return Fraction(total, duration)


def feasible_starts(job: JobRequest, now: int) -> range:
    earliest = max(now, int(job.not_before))
    latest = max(int(job.deadline - job.duration_s), earliest)
    return range(earliest, latest + 1)


@dataclass(frozen=True)
class Expected:
    job_id: int
    region: str
    start: int
    mean: Fraction | None
    waits: bool


def reference_plan(scenario: Scenario) -> list[Expected]:
    """Least slack first; per job the best window with room by (covered, mean, start,
    listed region); no window with room anywhere: the best window, waiting for a slot."""
    held: dict[tuple[str, int], int] = {}
    for b in scenario.busy:
        for t in range(int(b.start), int(b.end)):
            held[b.region, t] = held.get((b.region, t), 0) + 1
    order = sorted(scenario.jobs,
                   key=lambda j: (j.deadline - j.duration_s - scenario.now, j.job_id))
    expected = []
    for job in order:
        duration = int(job.duration_s)
        ranked = []
        for position, region in enumerate(job.regions):
            slots = scenario.slots.get(region, 1)
            for start in feasible_starts(job, scenario.now):
                mean = exact_mean(scenario.segments.get(region, ()), start, duration)
                room = all(held.get((region, t), 0) < slots
                           for t in range(start, start + duration))
                rank = (mean is None, mean if mean is not None else 0, start, position)
                ranked.append((not room, rank, region, start, mean))
        full, _, region, start, mean = min(ranked)
        if full:  # no window with room: the best window ignoring capacity
            _, _, region, start, mean = min(ranked, key=lambda r: r[1])
        for t in range(start, start + duration):
            held[region, t] = held.get((region, t), 0) + 1
        expected.append(Expected(job.job_id, region, start, mean, full))
    return expected


# --- scenarios ----------------------------------------------------------------------------


@st.composite
def segment_lists(draw: st.DrawFn, max_value: int = 9) -> tuple[Segment, ...]:
    """Whole-number intervals in [0, HORIZON), sometimes with gaps, small values (ties)."""
    segments = []
    t = draw(st.integers(0, 4))
    while t < HORIZON:
        length = draw(st.integers(1, 8))
        end = min(t + length, HORIZON)
        segments.append(Segment(t, end, draw(st.integers(0, max_value))))
        t = end + draw(st.sampled_from([0, 0, 0, 0, 0, 1, 3]))
    return tuple(segments)


@st.composite
def scenarios(draw: st.DrawFn, max_regions: int = 3, max_jobs: int = 5,
              capacity: bool = True, max_slots: int = 2) -> Scenario:
    """Regions (one in ten without data), jobs (some that cannot make their deadline),
    slots and busy intervals; ``capacity=False`` gives every region room for all."""
    names = REGION_NAMES[: draw(st.integers(1, max_regions))]
    segments = {name: () if draw(st.integers(0, 9)) == 0 else draw(segment_lists())
                for name in names}
    now = draw(st.integers(0, 8))
    jobs = []
    for job_id in range(draw(st.integers(1, max_jobs))):
        duration = draw(st.integers(1, 14))
        not_before = draw(st.integers(0, 30))
        deadline = not_before + duration + draw(st.integers(-3, 30))
        regions = draw(st.permutations(names))[: draw(st.integers(1, len(names)))]
        jobs.append(JobRequest(job_id, float(duration), float(not_before), float(deadline),
                               tuple(regions)))
    slots = {name: draw(st.integers(1, max_slots)) if capacity else 1_000 for name in names}
    busy = []
    if capacity:
        for _ in range(draw(st.integers(0, 3))):
            start = draw(st.integers(0, 50))
            busy.append(Busy(draw(st.sampled_from(names)), float(start),
                             float(start + draw(st.integers(1, 12)))))
    return Scenario(now, segments, slots, tuple(jobs), tuple(busy))


def run_plan(scenario: Scenario) -> list[Placement]:
    return plan(scenario.jobs, scenario.forecasts(), scenario.slots, float(scenario.now),
                scenario.busy)


def assert_matches(placement: Placement, expected: Expected) -> None:
    assert (placement.job_id, placement.region, placement.start) == (
        expected.job_id, expected.region, expected.start)
    assert placement.covered == (expected.mean is not None)
    if expected.mean is None:
        assert placement.intensity is None
    else:
        assert placement.intensity == pytest.approx(float(expected.mean), abs=1e-6)
    assert placement.waits_for_slot == expected.waits


# --- the planner equals brute force -------------------------------------------------------


@PROPERTY
@given(scenarios(max_regions=1, max_jobs=1, capacity=False))
def test_single_region_picks_the_brute_force_minimum_and_its_earliest_start(
    scenario: Scenario,
) -> None:
    [placement] = run_plan(scenario)
    [expected] = reference_plan(scenario)
    assert_matches(placement, expected)


@PROPERTY
@given(scenarios(max_regions=3, max_jobs=1, capacity=False))
def test_several_regions_lowest_mean_then_earliest_start_then_first_listed(
    scenario: Scenario,
) -> None:
    [placement] = run_plan(scenario)
    [expected] = reference_plan(scenario)
    assert_matches(placement, expected)


@PROPERTY
@given(scenarios(max_regions=3, max_jobs=5, capacity=True))
def test_with_capacity_every_job_gets_the_brute_force_choice(scenario: Scenario) -> None:
    placements = run_plan(scenario)
    expected = reference_plan(scenario)
    assert len(placements) == len(expected)
    for placement, wanted in zip(placements, expected, strict=True):
        assert_matches(placement, wanted)


@PROPERTY
@given(scenarios(max_regions=3, max_jobs=24, capacity=True, max_slots=6))
def test_many_jobs_sharing_slots_match_brute_force(scenario: Scenario) -> None:
    """Enough jobs that some fit in their cleanest windows all at once (accepted together)
    and later ones do not (placed one at a time)."""
    placements = run_plan(scenario)
    expected = reference_plan(scenario)
    assert len(placements) == len(expected)
    for placement, wanted in zip(placements, expected, strict=True):
        assert_matches(placement, wanted)


def has_room(held: Sequence[Busy], region: str, start: float, end: float, slots: int) -> bool:
    """Whether fewer than ``slots`` held intervals overlap anywhere in [start, end)."""
    mine = [b for b in held if b.region == region]
    times = [start] + [b.start for b in mine if start < b.start < end]
    return all(sum(1 for b in mine if b.start <= t < b.end) < slots for t in times)


def one_at_a_time(scenario: Scenario) -> list[Placement]:
    """The greedy by its definition, job by job in least-slack order, around the busy
    intervals and every job placed before it (a waiting job holds its window): a job
    keeps its cleanest window (planned alone, capacity ignored) where that has room, else
    the planner places it alone around what is held, in a window with room unless it
    waits."""
    order = sorted(scenario.jobs,
                   key=lambda j: (j.deadline - j.duration_s - scenario.now, j.job_id))
    unlimited = dict.fromkeys(scenario.slots, 10**6)
    held = list(scenario.busy)
    placed = []
    for job in order:
        [placement] = plan([job], scenario.forecasts(), unlimited, float(scenario.now))
        if not has_room(held, placement.region, placement.start,
                        placement.start + job.duration_s, scenario.slots[placement.region]):
            [placement] = plan([job], scenario.forecasts(), scenario.slots,
                               float(scenario.now), held)
            assert placement.waits_for_slot or has_room(
                held, placement.region, placement.start, placement.start + job.duration_s,
                scenario.slots[placement.region])
        held.append(Busy(placement.region, placement.start, placement.start + job.duration_s))
        placed.append(placement)
    return placed


@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from([1, 3, 8, 1_000]))
def test_placing_all_jobs_at_once_equals_placing_them_one_at_a_time(
    data: st.DataObject, slots: int,
) -> None:
    """Up to 60 jobs: more than brute force can check. Whatever ``plan`` accepts in bulk
    (every cleanest window that fits with all the others held) must be what placing the
    jobs one by one gives; with 1,000 slots every job is accepted that way."""
    scenario = data.draw(scenarios(max_regions=3, max_jobs=60, capacity=True))
    scenario = Scenario(scenario.now, scenario.segments, dict.fromkeys(scenario.slots, slots),
                        scenario.jobs, scenario.busy)
    assert list(run_plan(scenario)) == one_at_a_time(scenario)


@PROPERTY
@given(segment_lists(), st.integers(1, 14), st.integers(0, 8),
       st.lists(st.tuples(st.integers(0, 30), st.integers(-3, 30)), min_size=20, max_size=30))
def test_many_jobs_of_one_duration_match_brute_force(
    segments: tuple[Segment, ...], duration: int, now: int, windows: list[tuple[int, int]],
) -> None:
    """Enough jobs of one duration that the planner answers them all with one indexed
    look-up each (a sparse table) rather than scanning each job's range."""
    jobs = tuple(JobRequest(i, float(duration), float(not_before),
                            float(not_before + duration + slack), ("north",))
                 for i, (not_before, slack) in enumerate(windows))
    scenario = Scenario(now, {"north": segments}, {"north": 1_000}, jobs, ())
    for placement, expected in zip(run_plan(scenario), reference_plan(scenario), strict=True):
        assert_matches(placement, expected)


def test_ties_go_to_the_earliest_start_then_the_first_listed_region() -> None:
    flat = Forecast.from_lists([0, 10, 20], [10, 20, 30], [50, 50, 50])
    job = JobRequest(1, 5.0, 3.0, 30.0, ("west", "east"))
    [placement] = plan([job], {"east": flat, "west": flat}, {}, now=0.0)
    assert (placement.region, placement.start, placement.intensity) == ("west", 3.0, 50.0)
    job = JobRequest(1, 5.0, 3.0, 30.0, ("east", "west"))
    [placement] = plan([job], {"east": flat, "west": flat}, {}, now=0.0)
    assert placement.region == "east"


def test_float_noise_does_not_split_a_tie() -> None:
    """A repeating pattern: every 2-hour window has the same exact mean, but prefix sums
    of these decimals at real epoch times differ in the last bits from window to window."""
    now = 1_767_225_600.123456
    pattern = [123.456, 7.891, 333.333, 0.007]
    starts = [now + 1800 * i for i in range(96)]
    forecast = Forecast.from_lists(starts, [s + 1800 for s in starts],
                                   [pattern[i % 4] for i in range(96)])
    job = JobRequest(1, 7200.0, now, now + 96 * 1800, ("r",))
    [placement] = plan([job], {"r": forecast}, {}, now=now)
    assert placement.start == now
    assert placement.intensity == pytest.approx(sum(pattern) / 4, abs=1e-6)


# --- why boundary candidates suffice -----------------------------------------------------


@PROPERTY
@given(segment_lists(), st.integers(1, 12), st.integers(0, 20), st.integers(0, 30))
def test_boundary_candidates_hold_the_optimum_of_a_finer_grid(
    segments: tuple[Segment, ...], duration: int, earliest: int, span: int,
) -> None:
    """Scale every time by 2: breakpoints are even, the grid also has every midpoint.

    The lowest mean over all grid starts is reached at the earliest start, the latest
    start, a boundary b or b - duration, and the earliest start reaching it is one of them.
    """
    doubled = [Segment(2 * s.start, 2 * s.end, s.value) for s in segments]
    d, first, last = 2 * duration, 2 * earliest, 2 * (earliest + span)
    means = {s: exact_mean(doubled, s, d) for s in range(first, last + 1)}
    covered = {s: m for s, m in means.items() if m is not None}
    if not covered:
        return
    boundaries = {t for s in doubled for t in (s.start, s.end)}
    candidates = ({first, last} | boundaries | {b - d for b in boundaries}) & set(covered)
    best = min(covered.values())
    assert min(covered[s] for s in candidates) == best
    assert min(s for s, m in covered.items() if m == best) in candidates

    [placement] = plan([JobRequest(0, float(d), float(first), float(last + d), ("r",))],
                       {"r": to_forecast(doubled)}, {}, now=0.0)
    assert placement.intensity == pytest.approx(float(best), abs=1e-6)
    assert placement.start == min(s for s, m in covered.items() if m == best)


@pytest.mark.parametrize(
    ("values", "duration", "window", "expected_start"),
    [
        ([10, 50, 50, 50], 10, (3, 40), 3.0),   # optimum at the earliest start
        ([50, 50, 50, 10], 10, (5, 37), 27.0),  # at the latest start (deadline - duration)
        ([50, 10, 10, 50], 5, (2, 40), 10.0),   # at a boundary b
        ([60, 50, 10, 60], 15, (0, 40), 15.0),  # at b - duration (the window ends at b = 30)
    ],
)
def test_each_kind_of_candidate_can_be_the_optimum(
    values: list[int], duration: int, window: tuple[int, int], expected_start: float,
) -> None:
    segments = [Segment(10 * i, 10 * i + 10, v) for i, v in enumerate(values)]
    job = JobRequest(1, float(duration), float(window[0]), float(window[1]), ("r",))
    [placement] = plan([job], {"r": to_forecast(segments)}, {}, now=0.0)
    means = {s: exact_mean(segments, s, duration)
             for s in range(window[0], window[1] - duration + 1)}
    best = min(m for m in means.values() if m is not None)
    assert min(s for s, m in means.items() if m == best) == expected_start
    assert placement.start == expected_start
    assert placement.intensity == pytest.approx(float(best), abs=1e-6)


@PROPERTY
@given(segment_lists(), st.lists(st.floats(-10, 60, allow_nan=False), min_size=1, max_size=40),
       st.floats(0.5, 30))
def test_one_window_and_many_windows_get_the_same_key(
    segments: tuple[Segment, ...], starts: list[float], duration: float,
) -> None:
    """A job searching a few ranges computes keys one at a time, the bulk search many at
    once: they must agree to the last bit, or a tie would depend on which path ran."""
    integral = PrefixIntegral(to_forecast(segments))
    together = integral.window_keys(np.array(starts), duration).tolist()
    assert [integral.window_key(start, duration) for start in starts] == together


# --- capacity ------------------------------------------------------------------------------


@PROPERTY
@given(scenarios(max_regions=3, max_jobs=6, capacity=True))
def test_no_region_runs_more_than_its_slots(scenario: Scenario) -> None:
    """Busy intervals plus placements that did not have to wait never exceed ``slots``
    wherever the busy intervals alone fit."""
    placements = run_plan(scenario)
    durations = {j.job_id: j.duration_s for j in scenario.jobs}
    for region, slots in scenario.slots.items():
        intervals = [(b.start, b.end, True) for b in scenario.busy if b.region == region]
        intervals += [(p.start, p.start + durations[p.job_id], False) for p in placements
                      if p.region == region and not p.waits_for_slot]
        for t in range(-5, 120):
            busy_here = sum(1 for s, e, is_busy in intervals if is_busy and s <= t < e)
            running = sum(1 for s, e, _ in intervals if s <= t < e)
            if busy_here <= slots:
                assert running <= slots, (region, t)


@PROPERTY
@given(scenarios(max_regions=2, max_jobs=6, capacity=True))
def test_jobs_are_placed_in_order_of_least_slack(scenario: Scenario) -> None:
    placements = run_plan(scenario)
    jobs = {j.job_id: j for j in scenario.jobs}
    slack = [jobs[p.job_id].deadline - jobs[p.job_id].duration_s - scenario.now
             for p in placements]
    assert slack == sorted(slack)


def test_least_slack_job_gets_the_dip_and_the_other_takes_its_best_window_with_room() -> None:
    # One slot; the dip is [20, 30). Job 1 is flexible, job 2 must run by 35.
    forecast = Forecast.from_lists([0, 10, 20, 30, 40], [10, 20, 30, 40, 50],
                                   [300, 200, 100, 250, 400])
    flexible = JobRequest(1, 10.0, 0.0, 50.0, ("r",))
    urgent = JobRequest(2, 10.0, 15.0, 35.0, ("r",))
    first, second = plan([flexible, urgent], {"r": forecast}, {"r": 1}, now=0.0)
    assert (first.job_id, first.start, first.intensity) == (2, 20.0, 100.0)
    # Alone, job 1 would take [20, 30) too; now its best window with room is [10, 20).
    [alone] = plan([flexible], {"r": forecast}, {"r": 1}, now=0.0)
    assert alone.start == 20.0
    assert (second.job_id, second.start, second.intensity) == (1, 10.0, 200.0)
    assert PlacementReason.MOVED_FOR_SLOT in second.reason and not second.waits_for_slot


def test_best_window_with_room_may_start_where_a_held_slot_ends_or_end_where_one_starts(
) -> None:
    # The dip [10, 20) is held. Neither answer below is a forecast boundary b or b - 5.
    forecast = Forecast.from_lists([0, 10, 20, 30], [10, 20, 30, 40], [300, 100, 110, 400])
    job = JobRequest(1, 5.0, 0.0, 40.0, ("r",))
    [placement] = plan([job], {"r": forecast}, {"r": 1}, now=0.0,
                       busy=[Busy("r", 7.0, 23.0)])
    assert (placement.start, placement.intensity) == (23.0, 110.0)  # as the hold ends
    [placement] = plan([job], {"r": forecast}, {"r": 1}, now=0.0,
                       busy=[Busy("r", 12.0, 27.0)])
    # Ends as the hold starts: [7, 12) = (3 x 300 + 2 x 100) / 5, cleaner than [27, 32).
    assert (placement.start, placement.intensity) == (7.0, 220.0)


def test_a_full_region_sends_the_job_to_the_next_cleanest_region() -> None:
    clean = Forecast.from_lists([0], [40], [50])
    dirty = Forecast.from_lists([0], [40], [400])
    job = JobRequest(1, 10.0, 0.0, 40.0, ("clean", "dirty"))
    [placement] = plan([job], {"clean": clean, "dirty": dirty}, {"clean": 1, "dirty": 1},
                       now=0.0, busy=[Busy("clean", 0.0, 40.0)])
    assert (placement.region, placement.start, placement.intensity) == ("dirty", 0.0, 400.0)


def test_no_window_with_room_keeps_the_cleanest_window_and_waits() -> None:
    forecast = Forecast.from_lists([0, 10], [10, 20], [300, 100])
    job = JobRequest(1, 10.0, 0.0, 20.0, ("r",))
    [placement] = plan([job], {"r": forecast}, {"r": 2}, now=0.0,
                       busy=[Busy("r", 0.0, 20.0), Busy("r", 5.0, 20.0)])
    assert placement.waits_for_slot
    assert (placement.start, placement.intensity) == (10.0, 100.0)
    assert "waits for a free slot" in describe(placement.reason)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        (PlacementReason.COVERED_WINDOW, "cleanest covered window"),
        (PlacementReason.COVERED_WINDOW | PlacementReason.MOVED_FOR_SLOT,
         "cleanest covered window with a free slot"),
        (PlacementReason.MOVED_FOR_SLOT,
         "every covered window is full: earliest window with a free slot"),
        (PlacementReason.NO_COVERAGE,
         "no region has forecasts covering a feasible window: earliest feasible start"),
        (PlacementReason.NO_COVERAGE | PlacementReason.MOVED_FOR_SLOT,
         "no region has forecasts covering a feasible window: earliest feasible start with "
         "a free slot"),
        (PlacementReason.COVERED_WINDOW | PlacementReason.WAITING_FOR_SLOT,
         "cleanest covered window; every feasible window is full: waits for a free slot"),
        (PlacementReason.CANNOT_MEET_DEADLINE | PlacementReason.NO_COVERAGE,
         "cannot finish by its deadline: starts as early as possible; no region has "
         "forecasts covering a feasible window: earliest feasible start"),
    ],
)
def test_each_reason_reads_as_the_note_users_already_know(
    reason: PlacementReason, words: str,
) -> None:
    assert describe(reason) == words


def test_a_job_moved_off_its_full_cleanest_window_says_why() -> None:
    forecast = Forecast.from_lists([0, 10, 20], [10, 20, 30], [300, 100, 200])
    jobs = [JobRequest(1, 10.0, 0.0, 30.0, ("r",)), JobRequest(2, 10.0, 0.0, 31.0, ("r",))]
    first, second = plan(jobs, {"r": forecast}, {"r": 1}, now=0.0)
    assert first.reason == PlacementReason.COVERED_WINDOW and first.start == 10.0
    assert second.reason == PlacementReason.COVERED_WINDOW | PlacementReason.MOVED_FOR_SLOT
    assert second.start == 20.0


# --- missing data --------------------------------------------------------------------------


@PROPERTY
@given(scenarios(max_regions=3, max_jobs=1, capacity=False))
def test_an_uncovered_window_is_never_chosen_while_a_covered_one_exists(
    scenario: Scenario,
) -> None:
    [placement] = run_plan(scenario)
    [job] = scenario.jobs
    any_covered = any(
        exact_mean(scenario.segments[r], s, int(job.duration_s)) is not None
        for r in job.regions for s in feasible_starts(job, scenario.now))
    assert placement.covered == any_covered
    if not any_covered:
        assert placement.region == job.regions[0]
        assert placement.start == max(scenario.now, job.not_before)
        assert placement.intensity is None
        assert PlacementReason.NO_COVERAGE in placement.reason


def test_partly_covered_clean_window_loses_to_a_covered_dirtier_one() -> None:
    # [30, 40) would be cleaner, but the forecast stops at 35.
    forecast = Forecast.from_lists([0, 30], [30, 35], [200, 10])
    job = JobRequest(1, 10.0, 0.0, 40.0, ("r",))
    [placement] = plan([job], {"r": forecast}, {}, now=0.0)
    assert placement.covered and placement.start == 25.0
    assert placement.intensity == pytest.approx((5 * 200 + 5 * 10) / 10)


def test_regions_without_data_run_at_the_earliest_start_in_the_first_region() -> None:
    job = JobRequest(7, 60.0, 100.0, 1000.0, ("a", "b"))
    for forecasts in ({}, {"a": Forecast.empty(), "b": Forecast.empty()}):
        [placement] = plan([job], forecasts, {}, now=130.0)
        assert (placement.region, placement.start, placement.covered) == ("a", 130.0, False)
        assert placement.intensity is None
        assert PlacementReason.NO_COVERAGE in placement.reason


def test_a_region_without_data_loses_to_one_with_data() -> None:
    job = JobRequest(7, 10.0, 0.0, 100.0, ("empty", "data"))
    forecast = Forecast.from_lists([0], [100], [500])
    [placement] = plan([job], {"data": forecast}, {}, now=0.0)
    assert (placement.region, placement.covered, placement.intensity) == ("data", True, 500.0)


# --- deadlines -----------------------------------------------------------------------------


@PROPERTY
@given(scenarios(max_regions=3, max_jobs=5, capacity=True))
def test_every_job_starts_in_its_feasible_range(scenario: Scenario) -> None:
    jobs = {j.job_id: j for j in scenario.jobs}
    for placement in run_plan(scenario):
        job = jobs[placement.job_id]
        earliest = max(scenario.now, job.not_before)
        assert placement.start >= earliest
        if earliest + job.duration_s <= job.deadline:
            assert placement.start + job.duration_s <= job.deadline
            assert PlacementReason.CANNOT_MEET_DEADLINE not in placement.reason
        else:
            assert placement.start == earliest
            assert PlacementReason.CANNOT_MEET_DEADLINE in placement.reason


def test_a_job_that_cannot_finish_in_time_starts_at_once_even_if_later_is_cleaner() -> None:
    forecast = Forecast.from_lists([0, 10], [10, 100], [500, 10])
    job = JobRequest(1, 30.0, 0.0, 20.0, ("r",))
    [placement] = plan([job], {"r": forecast}, {}, now=5.0)
    assert placement.start == 5.0
    assert "cannot finish by its deadline" in describe(placement.reason)


# --- helpers the CLI uses ------------------------------------------------------------------


@PROPERTY
@given(segment_lists(), st.integers(-5, 50), st.integers(1, 20))
def test_window_mean_is_the_overlap_weighted_mean(
    segments: tuple[Segment, ...], start: int, duration: int,
) -> None:
    mean, covered = window_mean(to_forecast(segments), float(start), float(duration))
    expected = exact_mean(segments, start, duration)
    assert covered == (expected is not None)
    if expected is not None:
        assert mean == pytest.approx(float(expected), abs=1e-6)


def test_region_options_lists_each_regions_cleanest_window_best_first() -> None:
    forecasts = {
        "a": Forecast.from_lists([0, 10], [10, 40], [300, 200]),
        "b": Forecast.from_lists([0, 20], [20, 40], [150, 100]),
        "c": Forecast.from_lists([0], [5], [50]),  # too short for a covered window
    }
    options = region_options(10.0, 0.0, 40.0, ["c", "a", "b"], forecasts, now=0.0)
    assert [(o.region, o.start, o.end, o.intensity, o.covered) for o in options] == [
        ("b", 20.0, 30.0, 100.0, True),
        ("a", 10.0, 20.0, 200.0, True),
        ("c", 0.0, 10.0, None, False),
    ]


def test_no_jobs_no_placements() -> None:
    assert len(plan([], {}, {}, now=0.0)) == 0


def test_bad_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="duration"):
        JobRequest(1, 0.0, 0.0, 10.0, ("r",))
    with pytest.raises(ValueError, match="region"):
        JobRequest(1, 5.0, 0.0, 10.0, ())
    with pytest.raises(ValueError, match="overlap"):
        Forecast.from_lists([0, 5], [10, 20], [1, 2])


@PROPERTY
@given(scenario=scenarios(max_jobs=5, max_slots=2), extra=st.integers(0, 40))
def test_a_held_profile_places_as_the_held_slots_do(scenario: Scenario, extra: int) -> None:
    """A submit plans its few jobs against the daemon's ``HeldProfile`` (the step functions
    of what is held) instead of every held slot: the same placements, reasons included,
    whether the profile was made at once or one hold at a time."""
    busy = [*scenario.busy, Busy(scenario.jobs[0].regions[0], float(extra),
                                 float(extra + 3))]
    holds = Holds.from_busy(busy)
    one_by_one = HeldProfile()
    for hold in busy:
        one_by_one = one_by_one.plus(Holds.from_busy([hold]))
    expected = plan(scenario.jobs, scenario.forecasts(), scenario.slots,
                    float(scenario.now), holds)
    for profile in (HeldProfile.of(holds), one_by_one):
        placed = plan(scenario.jobs, scenario.forecasts(), scenario.slots,
                      float(scenario.now), profile)
        assert list(placed) == list(expected)

