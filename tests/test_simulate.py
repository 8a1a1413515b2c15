"""The simulator in-process: hand-computed scenarios, workloads, readers and properties."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import combinations, pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import BadInput
from scheduler.simulate.engine import Run, simulate
from scheduler.simulate.results import rows, run_emissions, totals_by_group
from scheduler.simulate.scenario import ForecastChoice, Scenario, run
from scheduler.simulate.series import (
    ForecastArchive,
    KnownSeries,
    Series,
    noisy_copy,
    read_actuals,
    read_forecasts,
    revised_forecasts,
)
from scheduler.simulate.workloads import (
    SimJob,
    WorkloadOptions,
    check_jobs,
    generate,
    ml_workday_deadline,
    read_jobs,
)

H = 3600.0
T0 = datetime(2023, 3, 6, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC


def hourly(values: Sequence[float], start: float = T0) -> Series:
    starts = start + H * np.arange(len(values), dtype=np.float64)
    return Series(starts, starts + H, np.asarray(values, dtype=np.float64))


def job(job_id: int, submit_h: float, duration_h: float, deadline_h: float,
        regions: tuple[str, ...] = ("GB",), power_w: float = 1000.0) -> SimJob:
    return SimJob(job_id, T0 + submit_h * H, duration_h * H, T0 + deadline_h * H, regions,
                  power_w)


def grams(policy: str, jobs: Sequence[SimJob], actuals: dict[str, Series],
          forecasts: KnownSeries | ForecastArchive | None = None,
          slots: int | None = None) -> float:
    runs = simulate(policy, jobs, actuals, forecasts or KnownSeries(actuals), slots)
    return float(np.sum(run_emissions(runs, actuals)))


def starts_h(runs: Sequence[Run]) -> dict[int, float]:
    return {r.job.job_id: (r.start - T0) / H for r in runs}


# Hand-computed scenarios ------------------------------------------------------------------


def test_each_policy_on_a_four_hour_day() -> None:
    actuals = {"GB": hourly([100, 50, 10, 80])}
    jobs = [job(1, 0, 1, 4)]  # 1 kW for one hour, anywhere in the four hours
    assert grams("now", jobs, actuals) == pytest.approx(100.0)
    assert grams("once", jobs, actuals) == pytest.approx(10.0)
    assert grams("gridshift", jobs, actuals) == pytest.approx(10.0)
    assert grams("oracle", jobs, actuals) == pytest.approx(10.0)

    result = run(Scenario(actuals, [jobs], ForecastChoice(), ["now", "gridshift", "oracle"]))
    by_policy = {r.policy: r for r in result}
    assert by_policy["gridshift"].saving_pct == pytest.approx(90.0)
    assert by_policy["gridshift"].oracle_share_pct == pytest.approx(100.0)
    assert by_policy["gridshift"].mean_delay_s == pytest.approx(2 * H)
    assert by_policy["now"].energy_kwh == pytest.approx(1.0)
    assert by_policy["now"].mean_intensity == pytest.approx(100.0)


def test_emissions_weigh_each_interval_by_its_overlap() -> None:
    actuals = {"GB": hourly([100, 50, 10, 80])}
    # 2 kW from 00:30 to 02:00: 0.5 h at 100 and 1 h at 50 -> 2 x (50 + 50) = 200 g.
    jobs = [job(1, 0.5, 1.5, 2.0, power_w=2000)]
    assert grams("now", jobs, actuals) == pytest.approx(200.0)
    assert grams("oracle", jobs, actuals) == pytest.approx(200.0)  # no slack: same window


def test_once_plans_with_the_vintage_known_at_submission_gridshift_replans() -> None:
    actuals = {"GB": hourly([100, 90, 60, 20])}
    archive = _archive([
        (T0 - H, 0, [100, 90, 30, 70]),  # believes 02:00 is cleanest
        (T0 + H, 1, [90, 60, 20]),       # issued after the submission: 03:00 is
    ])
    jobs = [job(1, 10 / 60, 1, 4)]
    once = simulate("once", jobs, actuals, archive)
    assert starts_h(once) == {1: 2.0}
    assert grams("once", jobs, actuals, archive) == pytest.approx(60.0)
    gridshift = simulate("gridshift", jobs, actuals, archive)
    assert starts_h(gridshift) == {1: 3.0}
    assert grams("gridshift", jobs, actuals, archive) == pytest.approx(20.0)


def test_a_vintage_is_invisible_before_it_is_issued() -> None:
    archive = _archive([(T0 - H, 0, [100, 90, 30, 70]), (T0 + H, 1, [90, 60, 20])])
    before = archive.view("GB", T0 + 0.5 * H, T0 + 4 * H)
    assert list(before.values) == [100, 90, 30, 70]
    after = archive.view("GB", T0 + H, T0 + 4 * H)
    assert list(after.starts) == [T0 + H, T0 + 2 * H, T0 + 3 * H]
    assert list(after.values) == [90, 60, 20]


def test_no_forecast_yet_means_starting_at_submission() -> None:
    actuals = {"GB": hourly([100, 90, 10, 20])}
    archive = _archive([(T0 + 2 * H, 2, [10, 20])])  # nothing known at 00:00
    assert starts_h(simulate("once", [job(1, 0, 1, 4)], actuals, archive)) == {1: 0.0}


def test_now_waits_for_a_free_slot_and_goes_over_capacity_at_the_latest_start() -> None:
    actuals = {"GB": hourly([100] * 6)}
    jobs = [job(1, 0, 1, 5), job(2, 0, 1, 5), job(3, 0, 1, 1)]
    runs = simulate("now", jobs, actuals, KnownSeries(actuals), slots=1)
    # Job 2 waits for job 1's slot; job 3 has no slack, so it starts at once, over capacity.
    assert starts_h(runs) == {1: 0.0, 2: 1.0, 3: 0.0}
    assert totals_by_group(runs, actuals)[("GB", "whole")].deadline_misses == 0


def test_capacity_gives_the_cleanest_hour_to_the_least_slack() -> None:
    actuals = {"GB": hourly([100, 10, 20, 100, 100])}
    jobs = [job(1, 0, 1, 5), job(2, 0, 1, 3)]
    for policy in ("once", "gridshift", "oracle"):
        runs = simulate(policy, jobs, actuals, KnownSeries(actuals), slots=1)
        assert starts_h(runs) == {1: 2.0, 2: 1.0}, policy
    unlimited = simulate("gridshift", jobs, actuals, KnownSeries(actuals))
    assert starts_h(unlimited) == {1: 1.0, 2: 1.0}


def test_a_job_with_no_room_waits_then_starts_at_its_latest_start() -> None:
    # Job 1 holds the only slot from 00:00 to 03:00; job 2 must start by 02:00. The planner
    # finds no window with room, keeps job 2 at its cleanest hour (00:00) and the
    # dispatcher holds it until its latest start, then runs it over capacity.
    actuals = {"GB": hourly([10, 10, 50, 30, 90, 90])}
    jobs = [job(1, 0, 3, 3), job(2, 0, 1, 3)]
    for policy in ("once", "gridshift"):
        runs = simulate(policy, jobs, actuals, KnownSeries(actuals), slots=1)
        assert starts_h(runs) == {1: 0.0, 2: 2.0}, policy
        assert totals_by_group(runs, actuals)[("GB", "whole")].deadline_misses == 0


def test_a_job_that_cannot_make_its_deadline_counts_as_missed_by_every_policy() -> None:
    actuals = {"GB": hourly([100, 10, 10])}
    jobs = [job(1, 0, 2, 1)]
    for policy in ("now", "once", "gridshift", "oracle"):
        runs = simulate(policy, jobs, actuals, KnownSeries(actuals))
        assert starts_h(runs) == {1: 0.0}
        assert totals_by_group(runs, actuals)[("GB", "whole")].deadline_misses == 1


def test_moving_between_regions_counts_under_all_and_now_runs_at_home() -> None:
    actuals = {"GB": hourly([100, 100]), "FR": hourly([20, 40])}
    jobs = [job(1, 0, 1, 2, regions=("GB", "FR"))]
    assert grams("now", jobs, actuals) == pytest.approx(100.0)
    runs = simulate("gridshift", jobs, actuals, KnownSeries(actuals))
    assert [(r.region, (r.start - T0) / H) for r in runs] == [("FR", 0.0)]
    assert list(totals_by_group(runs, actuals)) == [("all", "whole")]


def test_repeats_average_the_noise_seeds() -> None:
    actuals = {"GB": hourly([100, 80, 60, 90, 95, 70, 85, 75] * 3)}
    jobs = [job(i, i, 1, i + 6) for i in range(1, 12)]
    single = [run(Scenario(actuals, [jobs], ForecastChoice(None, 0.3, seed, 1), ["once"]))[0]
              for seed in (7, 8, 9)]
    averaged = run(Scenario(actuals, [jobs], ForecastChoice(None, 0.3, 7, 3), ["once"]))[0]
    assert averaged.emissions_g == pytest.approx(np.mean([r.emissions_g for r in single]))
    assert len({round(r.emissions_g, 6) for r in single}) > 1  # the seeds do differ


def test_noise_is_seeded_and_scaled_to_the_region_mean() -> None:
    actuals = {"GB": hourly([200.0] * 2000)}
    first = noisy_copy(actuals, 0.1, 3).series["GB"].values
    again = noisy_copy(actuals, 0.1, 3).series["GB"].values
    other = noisy_copy(actuals, 0.1, 4).series["GB"].values
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.std(first - 200.0) == pytest.approx(20.0, rel=0.1)


def test_revised_forecasts_are_exact_now_and_err_more_the_further_ahead() -> None:
    actuals = {"GB": hourly([200.0] * 400)}
    archive = revised_forecasts(actuals, 0.2, 48 * H, H, seed=5)
    assert list(archive.issue_times()) == [T0 + k * H for k in range(400)]
    seen_at = [archive.view("GB", T0 + k * H + 60, T0 + (k + 48) * H) for k in range(300)]
    assert all(len(view.values) == 48 for view in seen_at)
    # The hour under way is known exactly; errors grow with lead (sigma 40 g at 48 h).
    assert {float(view.values[0]) for view in seen_at} == {200.0}
    near = np.concatenate([view.values[1:6] for view in seen_at]) - 200.0
    far = np.concatenate([view.values[40:] for view in seen_at]) - 200.0
    assert np.std(far) == pytest.approx(40.0 * 44 / 48, rel=0.15)
    assert np.std(near) < np.std(far) / 4
    again = revised_forecasts(actuals, 0.2, 48 * H, H, seed=5)
    assert np.array_equal(again.view("GB", T0 + 7 * H, T0 + 30 * H).values,
                          archive.view("GB", T0 + 7 * H, T0 + 30 * H).values)


def _archive(vintages: list[tuple[float, int, list[float]]]) -> ForecastArchive:
    issued, starts, values = [], [], []
    for issued_at, first_hour, points in vintages:
        for k, value in enumerate(points):
            issued.append(issued_at)
            starts.append(T0 + (first_hour + k) * H)
            values.append(value)
    s = np.array(starts)
    return ForecastArchive.from_rows({"GB": (np.array(issued), s, s + H,
                                             np.array(values, dtype=np.float64))})


# Workloads --------------------------------------------------------------------------------


def _at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2023, 3, day, hour, minute, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("submit", "hours", "deadline"), [
    (_at(6, 10), 4, _at(6, 14)),      # Monday: finishes inside workday hours, no slack
    (_at(9, 13), 4, _at(9, 17)),      # Thursday: 17:00 sharp still counts as inside
    (_at(6, 15), 4, _at(7, 9)),       # Monday 19:00 -> Tuesday 09:00
    (_at(10, 15), 4, _at(13, 9)),     # Friday 19:00 -> Monday 09:00
    (_at(6, 10), 90, _at(10, 9)),     # Friday 04:00 -> Friday 09:00
    (_at(10, 16, 30), 48, _at(13, 9)),  # Sunday 16:30 -> Monday 09:00
])
def test_ml_workday_deadline(submit: float, hours: float, deadline: float) -> None:
    assert ml_workday_deadline(submit, hours * H) == deadline


def test_ml_workday_jobs_follow_the_scenario() -> None:
    actuals = {"GB": hourly([100.0] * 24 * 28), "FR": hourly([50.0] * 24 * 28)}
    options = WorkloadOptions(count=200, seed=5)
    jobs = generate("ml-workday", ["GB", "FR"], actuals, "region", options)
    assert len(jobs) == 400
    assert {j.regions for j in jobs} == {("GB",), ("FR",)}
    in_gb = sorted((j.submit, j.duration_s) for j in jobs if j.regions == ("GB",))
    assert in_gb == sorted((j.submit, j.duration_s) for j in jobs if j.regions == ("FR",))
    for item in jobs:
        submitted = datetime.fromtimestamp(item.submit, UTC)
        assert submitted.weekday() < 5 and 9 <= submitted.hour < 17
        assert 4 * H <= item.duration_s <= 90 * H and item.duration_s % 1800 == 0
        assert item.deadline == ml_workday_deadline(item.submit, item.duration_s)
    check_jobs(jobs, actuals)  # every window lies inside the actuals
    assert generate("ml-workday", ["GB", "FR"], actuals, "region", options) == jobs
    reseeded = generate("ml-workday", ["GB", "FR"], actuals, "region",
                        WorkloadOptions(count=200, seed=6))
    assert reseeded != jobs
    moving = generate("ml-workday", ["GB", "FR"], actuals, "all", options)
    assert len(moving) == 200 and {len(j.regions) for j in moving} == {2}
    assert {j.regions[0] for j in moving} == {"GB", "FR"}  # home regions vary


def test_nightly_jobs_may_move_the_window_either_way() -> None:
    actuals = {"GB": hourly([100.0] * 24 * 5)}
    jobs = generate("nightly", ["GB"], actuals, "region", WorkloadOptions(window_s=2 * H))
    # Day one's 01:00 window starts before the data: four full windows remain.
    assert [(j.usual_start - T0) / H for j in jobs if j.usual_start] == [25, 49, 73, 97]
    assert all(j.submit == j.baseline_start - 2 * H for j in jobs)
    assert all(j.deadline == j.baseline_start + 2.5 * H for j in jobs)
    assert starts_h(simulate("now", jobs[:1], actuals, KnownSeries(actuals))) == {1: 25.0}


def test_unknown_workload_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown workload"):
        generate("weekly", ["GB"], {"GB": hourly([1.0] * 48)}, "region", WorkloadOptions())


# Readers ----------------------------------------------------------------------------------


def test_the_three_actuals_forms_read_alike(tmp_path: Path) -> None:
    (tmp_path / "em").mkdir()
    (tmp_path / "em" / "GB.csv").write_text(
        "Datetime (UTC),Zone Id,Carbon Intensity gCO₂eq/kWh (LCA)\n"
        "2023-03-06 00:00:00,GB,100\n2023-03-06 01:00:00,GB,\n2023-03-06 02:00:00,GB,30\n",
        encoding="utf-8")
    (tmp_path / "intervals.csv").write_text(
        "start,end,gco2_per_kwh\n2023-03-06T00:00:00Z,2023-03-06T01:00:00Z,100\n"
        "2023-03-06T02:00:00+00:00,2023-03-06T03:00:00+00:00,30\n", encoding="utf-8")
    (tmp_path / "points.csv").write_text(
        "time,value\n2023-03-06T02:00Z,30\n2023-03-06T00:00Z,100\n2023-03-06T01:00Z,\n",
        encoding="utf-8")
    forms = [read_actuals(tmp_path / "em")["GB"], read_actuals(tmp_path / "intervals.csv")[
        "intervals"], read_actuals(tmp_path / "points.csv")["points"]]
    for series in forms:  # 01:00-02:00 has no data in each
        assert list(series.starts) == [T0, T0 + 2 * H]
        assert list(series.ends) == [T0 + H, T0 + 3 * H]
        assert list(series.values) == [100, 30]


@pytest.mark.parametrize(("text", "message"), [
    ("when,what\n1,2\n", "unknown columns"),
    ("time,value\n2023-03-06T00:00Z,1\n2023-03-06T00:00Z,2\n", "appears twice"),
    ("time,value\nyesterday,1\ntoday,2\n", "bad timestamp"),
    ("time,value\n2023-03-06T00:00Z,lots\n2023-03-06T01:00Z,2\n", "not a number"),
    ("start,end,gco2_per_kwh\n2023-03-06T00:00Z,2023-03-06T02:00Z,1\n"
     "2023-03-06T01:00Z,2023-03-06T03:00Z,2\n", "overlap"),
])
def test_bad_actuals_are_bad_input(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "GB.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadInput, match=message):
        read_actuals(path)


@pytest.mark.parametrize(("row", "message"), [
    ("1,2023-03-06T00:00Z,2h,2023-03-06T04:00Z,GB", "missing column(s) power_w"),
    ("1,2023-03-06T00:00Z,2 hours,2023-03-06T04:00Z,GB,100", "bad duration"),
    ("1,2023-03-06T04:00Z,2h,2023-03-06T04:00Z,GB,100", "deadline is not after"),
    ("1,2023-03-06T00:00Z,2h,2023-03-06T04:00Z,,100", "no regions"),
    ("1,2023-03-06T00:00Z,2h,2023-03-06T04:00Z,GB,0", "power_w must be above zero"),
])
def test_bad_jobs_files_are_bad_input(tmp_path: Path, row: str, message: str) -> None:
    header = "id,submit_time,duration,deadline,regions" + ("" if "missing" in message
                                                          else ",power_w")
    path = tmp_path / "jobs.csv"
    path.write_text(f"{header}\n{row}\n", encoding="utf-8")
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_jobs(path)


def test_jobs_must_name_known_regions_covered_by_the_actuals() -> None:
    actuals = {"GB": hourly([100.0] * 4)}
    with pytest.raises(BadInput, match="unknown region 'FR'"):
        check_jobs([job(1, 0, 1, 4, regions=("FR",))], actuals)
    with pytest.raises(BadInput, match="do not cover"):
        check_jobs([job(1, 2, 3, 5)], actuals)


def test_forecast_rows_without_region_belong_to_the_only_region(tmp_path: Path) -> None:
    path = tmp_path / "vintages.csv"
    path.write_text("issued_at,start,end,gco2_per_kwh\n"
                    "2023-03-06T00:00Z,2023-03-06T01:00Z,2023-03-06T02:00Z,40\n"
                    "2023-03-06T00:30Z,2023-03-06T01:00Z,2023-03-06T02:00Z,45\n",
                    encoding="utf-8")
    archive = read_forecasts(path, ["GB"])
    assert list(archive.issue_times()) == [T0, T0 + 0.5 * H]
    assert list(archive.view("GB", T0 + 0.25 * H, T0 + 3 * H).values) == [40]
    assert list(archive.view("GB", T0 + 0.5 * H, T0 + 3 * H).values) == [45]


# Properties -------------------------------------------------------------------------------

levels = st.integers(0, 20).map(lambda k: 25.0 * k)  # coarse values: ties happen


@st.composite
def scenarios(draw: st.DrawFn, interruptible: st.SearchStrategy[bool] = st.just(False)
              ) -> tuple[dict[str, Series], list[SimJob]]:
    hours = draw(st.integers(12, 36))
    names = ["A", "B"][: draw(st.integers(1, 2))]
    actuals = {name: hourly(draw(st.lists(levels, min_size=hours, max_size=hours)))
               for name in names}
    jobs = []
    for job_id in range(1, draw(st.integers(1, 6)) + 1):
        submit = draw(st.integers(0, (hours - 7) * 6)) * 600.0
        duration = draw(st.integers(1, 12)) * 1800.0
        slack = draw(st.integers(0, 12)) * 1800.0
        deadline = min(submit + duration + slack, (hours - 0.5) * H)
        if deadline < submit + duration:
            deadline = submit + duration
        regions = tuple(draw(st.permutations(names))[: draw(st.integers(1, len(names)))])
        jobs.append(SimJob(job_id, T0 + submit, duration, T0 + deadline, regions, 1000.0,
                           interruptible=draw(interruptible),
                           min_chunk_s=draw(st.integers(1, 4)) * 1800.0))
    return actuals, jobs


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.floats(0.0, 0.5), st.integers(0, 1000))
def test_oracle_is_never_beaten(case: tuple[dict[str, Series], list[SimJob]],
                                error: float, seed: int) -> None:
    actuals, jobs = case
    forecast = noisy_copy(actuals, error, seed)
    best = grams("oracle", jobs, actuals, forecast)  # oracle ignores it: it sees actuals
    for policy in ("now", "once", "gridshift"):
        assert best <= grams(policy, jobs, actuals, forecast) + 1e-6 * max(best, 1.0), policy


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_with_perfect_forecasts_and_no_capacity_limit_gridshift_is_the_oracle(
    case: tuple[dict[str, Series], list[SimJob]],
) -> None:
    actuals, jobs = case
    perfect = noisy_copy(actuals, 0.0, 1)
    gridshift = simulate("gridshift", jobs, actuals, perfect)
    oracle = simulate("oracle", jobs, actuals, perfect)
    assert sorted((r.job.job_id, r.region, r.start) for r in gridshift) == \
        sorted((r.job.job_id, r.region, r.start) for r in oracle)
    assert np.sum(run_emissions(gridshift, actuals)) == pytest.approx(
        np.sum(run_emissions(oracle, actuals)))


def test_rows_compare_against_now_and_oracle() -> None:
    actuals = {"GB": hourly([100, 50, 10, 80])}
    jobs = [job(1, 0, 1, 4), job(2, 0, 1, 2)]
    per_policy = {p: totals_by_group(simulate(p, jobs, actuals, KnownSeries(actuals)), actuals)
                  for p in ("now", "oracle")}
    result = rows(per_policy, ["now", "oracle"])
    # now: 100 + 100 = 200 g; oracle: 10 (02:00) + 50 (01:00) = 60 g.
    assert [(r.policy, r.emissions_g) for r in result] == [("now", 200.0), ("oracle", 60.0)]
    assert result[1].saving_pct == pytest.approx(70.0)
    assert result[0].oracle_share_pct == pytest.approx(0.0)


@settings(max_examples=60, deadline=None)
@given(scenarios(st.booleans()), st.integers(1, 2),
       st.sampled_from(["now", "once", "gridshift", "oracle"]))
def test_a_region_runs_more_than_its_slots_only_to_keep_a_deadline(
    case: tuple[dict[str, Series], list[SimJob]], slots: int, policy: str,
) -> None:
    actuals, jobs = case
    runs = simulate(policy, jobs, actuals, noisy_copy(actuals, 0.2, 1), slots)
    assert sorted({r.job.job_id for r in runs}) == sorted(j.job_id for j in jobs)
    done: dict[int, float] = {}
    for index, current in enumerate(runs):  # runs come in the order they started
        assert current.start >= current.job.submit
        left = current.job.duration_s - done.get(current.job.job_id, 0.0)
        busy = sum(1 for other in runs[:index]
                   if other.region == current.region and other.end > current.start)
        if busy >= slots:  # over capacity: only at its latest (re)start
            assert current.start >= current.job.deadline - left - 1e-6
        done[current.job.job_id] = done.get(current.job.job_id, 0.0) + current.end - current.start
    assert all(done[j.job_id] == pytest.approx(j.duration_s) for j in jobs)
    assert all(r.end <= r.job.deadline + 1e-6 for r in runs)  # no deadline missed


# Interruptible jobs -----------------------------------------------------------------------


def chunked(job_id: int, submit_h: float, duration_h: float, deadline_h: float,
            min_chunk_h: float = 0.5, regions: tuple[str, ...] = ("GB",)) -> SimJob:
    return SimJob(job_id, T0 + submit_h * H, duration_h * H, T0 + deadline_h * H, regions,
                  1000.0, interruptible=True, min_chunk_s=min_chunk_h * H)


def spans_h(runs: Sequence[Run]) -> dict[int, list[tuple[float, float]]]:
    spans: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        spans.setdefault(r.job.job_id, []).append(((r.start - T0) / H, (r.end - T0) / H))
    return spans


@pytest.mark.parametrize("policy", ["once", "gridshift", "oracle"])
def test_an_interruptible_job_runs_in_the_clean_hours_and_pauses_in_between(policy: str) -> None:
    actuals = {"GB": hourly([10, 100, 100, 10])}
    runs = simulate(policy, [chunked(1, 0, 2, 4, min_chunk_h=1)], actuals, KnownSeries(actuals))
    assert spans_h(runs) == {1: [(0.0, 1.0), (3.0, 4.0)]}
    totals = totals_by_group(runs, actuals)[("GB", "interruptible")]
    assert (totals.emissions_g, totals.energy_kwh, totals.mean_runs) == (20.0, 2.0, 2.0)
    assert totals.mean_delay_s == 0 and totals.deadline_misses == 0


def test_now_runs_an_interruptible_job_uninterrupted_from_submission() -> None:
    actuals = {"GB": hourly([10, 100, 100, 10])}
    runs = simulate("now", [chunked(1, 0, 2, 4)], actuals, KnownSeries(actuals))
    assert spans_h(runs) == {1: [(0.0, 2.0)]}


def test_a_paused_job_frees_its_slot() -> None:
    actuals = {"GB": hourly([10, 100, 100, 10])}
    # Job 1 runs 00:00-01:00 and 03:00-04:00; job 2 (whole, submitted at 01:00, due by
    # 03:00) takes the one slot while job 1 is paused.
    jobs = [chunked(1, 0, 2, 4, min_chunk_h=1), job(2, 1, 1, 3)]
    for policy in ("once", "gridshift", "oracle"):
        runs = simulate(policy, jobs, actuals, KnownSeries(actuals), slots=1)
        assert spans_h(runs) == {1: [(0.0, 1.0), (3.0, 4.0)], 2: [(1.0, 2.0)]}, policy


def test_once_plans_around_the_later_chunks_of_a_running_job() -> None:
    actuals = {"GB": hourly([10, 100, 100, 10])}
    # Job 2, submitted at 00:30 while job 1 runs its first chunk, would take 03:00-04:00
    # (the cleanest hour) but job 1 holds the only slot then: it takes 01:00-02:00.
    jobs = [chunked(1, 0, 2, 4, min_chunk_h=1), job(2, 0.5, 1, 4)]
    runs = simulate("once", jobs, actuals, KnownSeries(actuals), slots=1)
    assert spans_h(runs) == {1: [(0.0, 1.0), (3.0, 4.0)], 2: [(1.0, 2.0)]}


def test_gridshift_extends_a_running_chunk_when_a_revision_makes_the_next_hour_clean() -> None:
    actuals = {"GB": hourly([10, 10, 100, 100])}
    # Issued before the start: 01:00 looks dirty, so the plan is 00:00-01:00 + 03:00-04:00.
    # Issued at 00:30, while the first chunk runs: 01:00 is clean after all.
    archive = _archive([(T0 - H, 0, [10, 100, 100, 10]), (T0 + 0.5 * H, 0, [10, 10, 100, 100])])
    jobs = [chunked(1, 0, 2, 4, min_chunk_h=1)]
    once = simulate("once", jobs, actuals, archive)
    gridshift = simulate("gridshift", jobs, actuals, archive)
    assert spans_h(once) == {1: [(0.0, 1.0), (3.0, 4.0)]}
    assert spans_h(gridshift) == {1: [(0.0, 2.0)]}  # one run: the chunk grew, no pause
    assert np.sum(run_emissions(gridshift, actuals)) == pytest.approx(20.0)


def test_gridshift_cuts_a_running_chunk_when_a_revision_makes_its_rest_dirty() -> None:
    actuals = {"GB": hourly([10, 100, 10, 100])}
    archive = _archive([(T0 - H, 0, [10, 10, 100, 100]), (T0 + 0.5 * H, 0, [10, 100, 10, 100])])
    jobs = [chunked(1, 0, 2, 4, min_chunk_h=0.5)]
    assert spans_h(simulate("once", jobs, actuals, archive)) == {1: [(0.0, 2.0)]}
    gridshift = simulate("gridshift", jobs, actuals, archive)
    assert spans_h(gridshift) == {1: [(0.0, 1.0), (2.0, 3.0)]}
    assert np.sum(run_emissions(gridshift, actuals)) == pytest.approx(20.0)


def test_a_chunk_missed_while_waiting_for_a_slot_is_made_up_before_the_deadline() -> None:
    actuals = {"GB": hourly([10, 100, 100, 10, 100, 100])}
    # Job 1 holds the only slot 00:00-02:00 (no slack); interruptible job 2 planned around
    # it at submission cannot take a slot it did not plan for, yet finishes by 06:00.
    jobs = [job(1, 0, 2, 2), chunked(2, 0, 2, 6, min_chunk_h=1)]
    runs = simulate("once", jobs, actuals, KnownSeries(actuals), slots=1)
    spans = spans_h(runs)
    assert spans[1] == [(0.0, 2.0)]
    assert sum(end - start for start, end in spans[2]) == pytest.approx(2.0)
    assert all(start >= 2.0 for start, _ in spans[2]) and spans[2][-1][1] <= 6.0


def test_jobs_csv_interruptible_columns(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text("id,submit_time,duration,deadline,regions,power_w,interruptible,min_chunk\n"
                    "1,2023-03-06T00:00Z,2h,2023-03-06T04:00Z,GB,100,suspend,1h\n"
                    "2,2023-03-06T00:00Z,2h,2023-03-06T04:00Z,GB,100,checkpoint,\n"
                    "3,2023-03-06T00:00Z,2h,2023-03-06T04:00Z,GB,100,,\n", encoding="utf-8")
    jobs = read_jobs(path)
    assert [(j.interruptible, j.min_chunk_s) for j in jobs] == [
        (True, 3600.0), (True, 1800.0), (False, 1800.0)]


@pytest.mark.parametrize(("cells", "message"), [
    ("sometimes,", "interruptible 'sometimes' is not suspend or checkpoint"),
    (",1h", "min_chunk is given but the job is not interruptible"),
    ("suspend,0", "min_chunk must be above zero"),
    ("suspend,soon", "min_chunk:"),
])
def test_bad_interruptible_columns_are_bad_input(tmp_path: Path, cells: str,
                                                 message: str) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text("id,submit_time,duration,deadline,regions,power_w,interruptible,min_chunk\n"
                    f"1,2023-03-06T00:00Z,2h,2023-03-06T04:00Z,GB,100,{cells}\n",
                    encoding="utf-8")
    with pytest.raises(BadInput, match=f"row 2: {message}"):
        read_jobs(path)


@settings(max_examples=60, deadline=None)
@given(scenarios(st.just(True)), st.sampled_from(["once", "gridshift", "oracle"]))
def test_interruptible_jobs_never_emit_more_than_the_same_jobs_whole(
    case: tuple[dict[str, Series], list[SimJob]], policy: str,
) -> None:
    actuals, jobs = case
    whole = [j.as_whole() for j in jobs]
    assert grams(policy, jobs, actuals) <= grams(policy, whole, actuals) + 1e-6
    runs = simulate(policy, jobs, actuals, KnownSeries(actuals))
    for job_id, spans in spans_h(runs).items():
        done = next(j for j in jobs if j.job_id == job_id)
        assert sum(end - start for start, end in spans) * H == pytest.approx(done.duration_s)
        assert spans == sorted(spans)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(spans))


def _cheapest_steps(values: Sequence[float], first: int, last: int, work: int,
                    min_chunk: int) -> float:
    """Brute force: the cheapest set of ``work`` steps in [first, last) whose runs of
    consecutive steps are each at least ``min_chunk`` long (one run if work < min_chunk)."""
    best = float("inf")
    for chosen in combinations(range(first, last), work):
        runs, length = [], 1
        for a, b in pairwise(chosen):
            if b == a + 1:
                length += 1
            else:
                runs.append(length)
                length = 1
        runs.append(length)
        if (len(runs) == 1 if work < min_chunk else min(runs) >= min_chunk):
            best = min(best, sum(values[i] for i in chosen))
    return best


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_oracle_places_interruptible_jobs_at_the_brute_force_optimum(data: st.DataObject) -> None:
    steps = data.draw(st.integers(4, 12))
    values = data.draw(st.lists(levels, min_size=steps, max_size=steps))
    starts = T0 + 1800.0 * np.arange(steps, dtype=np.float64)
    actuals = {"GB": Series(starts, starts + 1800.0, np.asarray(values, dtype=np.float64))}
    jobs, best = [], 0.0
    for job_id in range(1, data.draw(st.integers(1, 3)) + 1):
        first = data.draw(st.integers(0, steps - 1))
        work = data.draw(st.integers(1, steps - first))
        last = data.draw(st.integers(first + work, steps))
        min_chunk = data.draw(st.integers(1, 3))
        jobs.append(chunked(job_id, first / 2, work / 2, last / 2, min_chunk_h=min_chunk / 2))
        best += _cheapest_steps(values, first, last, work, min_chunk) * 0.5  # 1 kW, 0.5 h
    assert grams("oracle", jobs, actuals) == pytest.approx(best)
