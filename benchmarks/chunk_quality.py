"""How far the chunk planner's fast path lands from the optimum, where the optimum is known.

The fast path of ``scheduler/chunking.py`` is a heuristic (its docstring). Two measures:

- Default: one case where the optimum is simple. Equal forecast steps, a minimum chunk of
  at most one step, no pause limit, no restart overhead, and work of whole steps: any set
  of whole steps is a valid plan, and no plan (partial steps included) holds the work for
  less than the sum of its cheapest steps. The script draws such cases with a seeded
  generator, one region, windows of 13 to 120 half-hour steps (all beyond the exact
  path's 12 cells), plans each with ``plan_chunks``, and prints how often the plan is the
  optimum and how far off it is otherwise, as a ratio of forecast emissions.
- ``--planner-jobs N``: the first N interruptible jobs of ``benchmarks/planner.py
  --interruptible 0.1`` (5-minute steps, a 30-minute minimum chunk, no pause limit,
  unlimited slots), planned together as that benchmark plans them. Each plan is compared
  with the cheapest plan of whole steps inside the job's window in any of its regions
  (``cheapest_whole_steps``, an exact dynamic programme; jobs whose work is not whole
  steps are skipped). Plans may also use the window's partial first and last steps, so
  this optimum is an upper bound of the true one: the excess printed is a lower bound of
  the fast path's.

    .venv/bin/python benchmarks/chunk_quality.py [--cases N] [--seed S]
    .venv/bin/python benchmarks/chunk_quality.py --planner-jobs 1000
"""

from __future__ import annotations

import argparse
import math
import statistics
from bisect import bisect_left, bisect_right

import numpy as np
import numpy.typing as npt

from scheduler.chunking import ChunkJob, plan_chunks
from scheduler.intensity import Forecast, PrefixIntegral

STEP_S = 1800.0


def emitted(values: npt.NDArray[np.float64], moment: float) -> float:
    """The forecast's integral from the window's start to ``moment`` (steps of STEP_S)."""
    whole = min(int(moment // STEP_S), len(values))
    inside = moment - whole * STEP_S if whole < len(values) else 0.0
    return float(values[:whole].sum() * STEP_S
                 + (values[whole] * inside if whole < len(values) else 0.0))


def cheapest_whole_steps(values: npt.NDArray[np.float64], work: int, min_run: int) -> float:
    """The least sum of ``work`` of ``values`` chosen so that every run of consecutive chosen
    steps is at least ``min_run`` long (inf if no choice is).

    A dynamic programme over layers u, the steps left out so far. In a layer, ``out[w]`` is
    the least cost with u + w steps decided, w of them chosen and the last one not;
    ``inside[w]`` the same with the last one chosen, in a run of at least ``min_run``. A
    run of at least ``min_run`` is one block of ``min_run`` and then single steps, so
    ``inside[w] = C[u + w] + min over k <= w - min_run of (out[k] - C[u + k])``, with C the
    prefix sums: one cumulative minimum per layer, O((n - work) * work) in all.
    """
    count = len(values)
    if work <= 0:
        return 0.0
    if work > count or min_run > work:
        return math.inf
    min_run = max(min_run, 1)
    prefix = np.concatenate(([0.0], np.cumsum(values)))
    out = np.full(work + 1, math.inf)
    out[0] = 0.0
    best = math.inf
    for left_out in range(count - work + 1):
        before = prefix[left_out:left_out + work + 1]
        inside = np.full(work + 1, math.inf)
        lowest = np.minimum.accumulate(out - before)
        inside[min_run:] = before[min_run:] + lowest[:work + 1 - min_run]
        best = min(best, float(inside[work]), float(out[work]))
        out = np.minimum(out, inside)  # the next step left out: the next layer
    return best


def simple_cases(cases: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(cases):
        steps = int(rng.integers(13, 121))
        values = rng.integers(0, 400, steps).astype(np.float64)
        starts = np.arange(steps, dtype=np.float64) * STEP_S
        forecast = Forecast(starts, starts + STEP_S, values)
        work_steps = int(rng.integers(1, steps))
        min_chunk = float(rng.choice([STEP_S, STEP_S / 2]))
        job = ChunkJob(1, work_steps * STEP_S, 0.0, steps * STEP_S, ("region",),
                       min_chunk_s=min_chunk, max_chunks=None)
        [placed] = plan_chunks([job], {"region": forecast}, {}, 0.0)
        planned = sum(emitted(values, end) - emitted(values, start)
                      for start, end in placed.chunks)
        optimum = float(np.sort(values)[:work_steps].sum()) * STEP_S
        ratios.append(planned / optimum if optimum > 0 else (1.0 if planned == 0 else np.inf))
    off = [r for r in ratios if r > 1 + 1e-9]
    print(f"cases: {len(ratios)} (seed {seed})")
    optimal = len(ratios) - len(off)
    print(f"optimal: {optimal} ({100 * optimal / len(ratios):.1f}%)")
    if off:
        print(f"off the optimum: {len(off)}; emissions over the optimum: median "
              f"{100 * (statistics.median(off) - 1):.2f}%, worst {100 * (max(off) - 1):.2f}%")


def planner_jobs(count: int) -> None:
    import planner  # benchmarks/planner.py, beside this script

    rng = np.random.default_rng(2026)  # planner.py's default seed: the same workload
    forecasts = planner.make_forecasts(rng, 16, 2016)
    jobs = planner.make_jobs(rng, 100_000, list(forecasts))
    chosen = np.random.default_rng(2027).random(len(jobs)) < 0.1
    chunked = [planner.as_chunk_job(job) for job, pick in zip(jobs, chosen, strict=True)
               if pick]
    placed = {p.job_id: p for p in plan_chunks(chunked, forecasts,
                                               dict.fromkeys(forecasts, len(jobs)),
                                               planner.NOW)}
    integrals = {name: PrefixIntegral(forecast) for name, forecast in forecasts.items()}
    step = planner.STEP_S
    min_run = math.ceil(planner.MIN_CHUNK_S / step)
    compared, skipped, elsewhere = 0, 0, 0
    ratios = []
    for job in chunked[:count]:
        work = job.work_s / step
        if work != int(work) or job.one_chunk_only():
            skipped += 1
            continue
        placement = placed[job.job_id]
        value, _ = integrals[placement.region].at(np.array(placement.chunks).ravel())
        planned = float((value[1::2] - value[0::2]).sum())
        optimum = {}
        for name in job.regions:
            forecast = forecasts[name]
            first = bisect_left(forecast.starts.tolist(), max(planner.NOW, job.not_before))
            stop = bisect_right(forecast.ends.tolist(), job.deadline)
            optimum[name] = cheapest_whole_steps(forecast.values[first:stop] * step, int(work),
                                                 min_run)
        best = min(optimum.values())
        compared += 1
        ratios.append(planned / best)
        if planned > best * (1 + 1e-9) and best < optimum[placement.region] * (1 - 1e-9):
            elsewhere += 1
    off = [r for r in ratios if r > 1 + 1e-9]
    print(f"interruptible jobs of benchmarks/planner.py compared: {compared} "
          f"(skipped {skipped}: work not whole steps, or one chunk only)")
    print(f"at or below the cheapest plan of whole steps: {compared - len(off)} "
          f"({100 * (compared - len(off)) / compared:.1f}%)")
    if off:
        print(f"above it: {len(off)}; emissions over it: median "
              f"{100 * (statistics.median(off) - 1):.2f}%, worst {100 * (max(off) - 1):.2f}%; "
              f"{elsewhere} of them had a cheaper plan only in a region other than the "
              f"planned one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--planner-jobs", type=int, default=0, metavar="N",
                        help="compare the planner benchmark's first N interruptible jobs "
                             "with the cheapest plan of whole steps")
    args = parser.parse_args()
    if args.planner_jobs > 0:
        planner_jobs(args.planner_jobs)
    else:
        simple_cases(args.cases, args.seed)


if __name__ == "__main__":
    main()
