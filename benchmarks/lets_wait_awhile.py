"""Reproduce Let's Wait Awhile's Scenario II (Wiesner et al., Middleware 2021) with the
simulator: ML jobs, next-workday deadlines, 5% forecast error, whole and interruptible.

    python benchmarks/lets_wait_awhile.py --lwa-repo DIR [--region ger] [--repeats 10]

``DIR`` is a copy of the public repository dos-group/lets-wait-awhile: a checkout, or its
git directory (the files are read with ``git show HEAD:data/<region>_ci.csv``). Its data
carry no licence, so nothing of them is kept here. Prints, per region and kind, the
paper's saving, ours, ours against a strict run-now baseline, and the CPU seconds spent on
the region so far.

The experiment is the paper's own, as its code (``simulate.py``, ``strategy.py``,
``evaluation.ipynb``) defines it; each point below is a choice of that code, reproduced:
- Intensity: ``data/<region>_ci.csv`` from 2020-01-01 00:00, rows at :00 and :30 only, each
  value holding for its 30 minutes (naive times, read as UTC, as the code reads them).
- Jobs: 3,387, seeded ``default_rng(0)``: a multinomial draw of jobs per workday of 2020,
  each day's start times drawn from 09:00, 09:30, ..., 16:30 and sorted, then durations
  drawn from 4 h, 4.5 h, ..., 89.5 h (``range(240, 5400, 30)`` minutes).
- Deadline ("next_workday"): from the earliest finish, Saturday -> Monday 09:00; Sunday or
  after 17:00 -> 09:00 the next day (so Friday evening -> Saturday 09:00); before 09:00 ->
  09:00 that day; otherwise the earliest finish. The code's window holds one 30-minute
  step more than that (``ci[t:t + duration + forecast + 1]``), so the job must finish by
  the deadline plus 30 minutes.
- Baseline: the same code with no forecast horizon, whose window also holds one step
  more: a job starts at submission or 30 minutes later, whichever is cleaner on the
  actual intensity. Savings are against it; the last column is against starting at
  submission (our ``now``).
- Forecast error: the actuals plus Gaussian noise, sigma = 5% of the region's mean, one
  noisy copy of the whole year per seed, seeds 0 to 9; the results of the ten are
  averaged. The simulator's ``--forecast-error 0.05 --seed 0 --repeats 10`` draws the same
  noise. Jobs are planned once, at submission (our ``once`` policy), as the paper's
  strategies do; with unlimited slots.
- Interruptible: the job runs in the cleanest 30-minute steps of its window (the paper
  takes the ``duration`` lowest forecast steps): a minimum chunk of 30 minutes.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from scheduler.simulate.engine import simulate
from scheduler.simulate.results import run_emissions
from scheduler.simulate.series import KnownSeries, Series, noisy_copy
from scheduler.simulate.workloads import SimJob

STEP_S = 1800.0
JOB_COUNT = 3387
ERROR = 0.05
REGIONS = {"ger": "DE", "gb": "GB", "fr": "FR"}
# The paper's Scenario II savings, next-workday deadlines, 5% error, as its
# evaluation.ipynb prints them: (whole, interruptible).
PAPER = {"ger": (5.91, 7.93), "gb": (6.56, 9.03), "fr": (4.77, 5.92)}


def read_csv_text(repo: Path, name: str) -> str:
    """A data file from a checkout, or from a git directory at HEAD."""
    path = repo / "data" / name
    if path.is_file():
        return path.read_text(encoding="utf-8")
    shown = subprocess.run(["git", "--git-dir", str(repo), "show", f"HEAD:data/{name}"],
                           capture_output=True, text=True, check=False)
    if shown.returncode != 0:
        sys.exit(f"{repo}: neither data/{name} nor a git directory holding it "
                 f"({shown.stderr.strip()})")
    return shown.stdout


def load_intensity(repo: Path, region: str) -> Series:
    frame = pd.read_csv(io.StringIO(read_csv_text(repo, f"{region}_ci.csv")), index_col=0,
                        parse_dates=True)
    values = frame["Carbon Intensity"]
    values = values[values.index >= pd.Timestamp("2020-01-01")]
    values = values[values.index.minute % 30 == 0]
    starts = np.array([moment.timestamp() for moment in values.index.tz_localize(UTC)])
    steps = np.diff(starts)
    if np.any(steps != STEP_S):
        sys.exit(f"{region}_ci.csv: expected one value every 30 minutes")
    return Series(starts, starts + STEP_S, values.to_numpy(dtype=np.float64))


def paper_jobs() -> list[tuple[float, float]]:
    """(submit, duration) of the paper's ML jobs, in epoch seconds, drawn as its code does."""
    rng = np.random.default_rng(0)
    durations_min = range(4 * 60, 90 * 60, 30)
    start_minutes = range(9 * 60, 17 * 60, 30)
    days = pd.date_range("2020-01-01", "2020-12-31", freq="D")
    workdays = [day for day in days if day.weekday() <= 4]
    per_workday = rng.multinomial(JOB_COUNT, [1 / len(workdays)] * len(workdays))
    per_day = pd.Series(per_workday, index=workdays).reindex(days, fill_value=0)
    submits = []
    for day, count in per_day.items():
        for minute in np.sort(rng.choice(start_minutes, size=count)):
            moment = (day + timedelta(minutes=int(minute))).to_pydatetime()
            submits.append(moment.replace(tzinfo=UTC).timestamp())
    durations = rng.choice(durations_min, size=JOB_COUNT) * 60.0
    return list(zip(submits, durations.tolist(), strict=True))


def next_workday_deadline(earliest_finish: float) -> float:
    """The paper code's "next_workday" finish-by time (see the module docstring)."""
    finish = datetime.fromtimestamp(earliest_finish, UTC)
    nine = finish.replace(hour=9, minute=0, second=0)
    hour = finish.hour + (0.5 if finish.minute == 30 else 0.0)
    if finish.weekday() == 5:
        return (nine + timedelta(days=2)).timestamp()
    if finish.weekday() == 6 or hour > 17:
        return (nine + timedelta(days=1)).timestamp()
    if hour < 9:
        return nine.timestamp()
    return earliest_finish


def job_sets(region: str) -> tuple[list[SimJob], list[SimJob], list[SimJob]]:
    """(baseline, whole, interruptible) jobs: the same submissions and work."""
    baseline, whole, interruptible = [], [], []
    for job_id, (submit, duration) in enumerate(paper_jobs(), start=1):
        shifted_deadline = next_workday_deadline(submit + duration) + STEP_S
        baseline.append(SimJob(job_id, submit, duration, submit + duration + STEP_S,
                               (region,), 1.0))
        job = SimJob(job_id, submit, duration, shifted_deadline, (region,), 1.0)
        whole.append(job)
        interruptible.append(SimJob(job_id, submit, duration, shifted_deadline, (region,),
                                    1.0, interruptible=True, min_chunk_s=STEP_S))
    return baseline, whole, interruptible


def grams(policy: str, jobs: list[SimJob], actuals: dict[str, Series],
          forecasts: KnownSeries) -> float:
    runs = simulate(policy, jobs, actuals, forecasts)
    missed = sum(1 for r in runs if r.end > r.job.deadline + 1e-3)
    if missed:
        sys.exit(f"{missed} runs ended after their job's deadline")
    return float(np.sum(run_emissions(runs, actuals)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lwa-repo", type=Path, required=True, metavar="DIR",
                        help="a checkout or git directory of dos-group/lets-wait-awhile")
    parser.add_argument("--region", action="append", choices=sorted(REGIONS),
                        help="the paper's region file prefix (repeat; default all three)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="noise seeds 0..K-1 averaged (the paper: 10)")
    args = parser.parse_args()
    chosen = args.region or list(REGIONS)
    print(f"Let's Wait Awhile, Scenario II: {JOB_COUNT} ML jobs, next-workday deadlines, "
          f"{ERROR:.0%} forecast error ({args.repeats} seeds), planned once at submission")
    print(f"{'region':<7}{'kind':<15}{'paper':>8}{'ours':>8}{'diff pp':>9}"
          f"{'ours vs now':>13}{'CPU s':>8}")
    for region in chosen:
        series = load_intensity(args.lwa_repo, region)
        actuals = {region: series}
        baseline, whole, interruptible = job_sets(region)
        started = time.process_time()
        base = grams("once", baseline, actuals, KnownSeries(actuals))
        run_now = grams("now", baseline, actuals, KnownSeries(actuals))
        for kind, jobs, paper in (("whole", whole, PAPER[region][0]),
                                  ("interruptible", interruptible, PAPER[region][1])):
            emitted = float(np.mean([
                grams("once", jobs, actuals, noisy_copy(actuals, ERROR, seed))
                for seed in range(args.repeats)]))
            ours = 100 * (1 - emitted / base)
            versus_now = 100 * (1 - emitted / run_now)
            print(f"{REGIONS[region]:<7}{kind:<15}{paper:>7.2f}%{ours:>7.2f}%"
                  f"{ours - paper:>+9.2f}{versus_now:>12.2f}%"
                  f"{time.process_time() - started:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
