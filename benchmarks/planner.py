"""Planner benchmark: 100,000 queued jobs across 16 regions, a week of 5-minute forecasts.

Run with ``.venv/bin/python benchmarks/planner.py`` (or ``make bench``). The workload is
seeded, so every run plans the same jobs:

- 16 regions, each a one-week forecast from ``now`` in 5-minute steps (T = 2,016): a
  daily solar dip and an evening peak with a per-region phase, level and noise, so the
  cleanest windows differ by region and time.
- 100,000 jobs: durations mostly round figures (15m ... 12h) with a share of odd ones in
  5-minute steps; deadlines from tight (duration plus up to 2 hours) to a day or two; a
  fifth may not start before a later time; each job may use between 1 and 16 regions.
- Two runs of ``plan()``: with unlimited slots (every job keeps its cleanest window), and
  with ``--slots`` per region (default 14,000), where everyone wants the same clean hours,
  so capacity binds: the script prints how many jobs did not get their cleanest window
  (capacity ignored), which the target requires to be at least 20%, and how many found no
  window with room at all.

With ``--interruptible SHARE`` (e.g. 0.1), that share of the jobs (chosen by the seed) is
interruptible (30-minute minimum chunk, no pause limit) and pairs of runs are timed in
turns in the same process: every job placed whole by ``plan()``, and the others placed by
``plan()`` then the interruptible ones by ``chunking.plan_chunks()`` around them, both
sets' cleanest windows found by one search first (what a re-plan does). The script
prints each pair's ratio and their median. The issue's target: the second within 2x of
the first.

Only the planners are timed. For each run the script prints every repeat's wall and CPU time
and their medians, and the process's peak RSS so far (on a shared machine the CPU time
shows what the planner itself costs). Targets: unlimited < 1 s and < 500 MB; binding < 3 s.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np

from scheduler.chunking import ChunkJob, plan_chunks, single_blocks
from scheduler.intensity import Forecast
from scheduler.placement import (
    Holds,
    JobColumns,
    JobRequest,
    PlacementReason,
    Placements,
    cleanest_windows,
    plan,
)

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STEP_S = 300.0
HOUR = 3600.0
ROUND_DURATIONS_H = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12)
ROUND_WEIGHTS = (8, 12, 6, 16, 8, 14, 8, 10, 6, 5, 2)
SLOTS = 14_000  # per region in the binding run: about 23% of jobs lose their best window
MIN_CHUNK_S = 1800.0


def make_forecasts(rng: np.random.Generator, regions: int, steps: int) -> dict[str, Forecast]:
    starts = NOW + STEP_S * np.arange(steps)
    hours = (starts - NOW) / HOUR
    forecasts = {}
    for index in range(regions):
        level = rng.uniform(120.0, 380.0)
        phase = rng.uniform(0.0, 24.0)
        solar_dip = -0.35 * level * np.clip(np.sin(2 * np.pi * (hours + phase) / 24.0), 0, None)
        evening = 0.2 * level * np.exp(-(((hours + phase + 5.0) % 24.0 - 12.0) ** 2) / 4.0)
        noise = rng.normal(0.0, 0.03 * level, steps).cumsum() * 0.2
        values = np.round(np.clip(level + solar_dip + evening + noise, 5.0, None))
        forecasts[f"region-{index}"] = Forecast(starts, starts + STEP_S, values)
    return forecasts


def make_jobs(rng: np.random.Generator, count: int, names: Sequence[str]) -> list[JobRequest]:
    weights = np.array(ROUND_WEIGHTS, dtype=np.float64)
    round_durations = rng.choice(ROUND_DURATIONS_H, size=count, p=weights / weights.sum()) * HOUR
    odd_durations = rng.integers(2, 121, size=count) * STEP_S  # 10 minutes to 10 hours
    durations = np.where(rng.random(count) < 0.15, odd_durations, round_durations)
    not_before = NOW + np.where(rng.random(count) < 0.2, rng.uniform(0, 12 * HOUR, count), 0.0)
    slack = np.select(
        [rng.random(count) < 0.2, rng.random(count) < 0.6],
        [rng.uniform(0, 2 * HOUR, count), rng.uniform(6 * HOUR, 24 * HOUR, count)],
        rng.uniform(24 * HOUR, 52 * HOUR, count),
    )
    deadlines = np.round(not_before + durations + slack)
    jobs = []
    for job_id in range(count):
        allowed = rng.permutation(len(names))[: rng.integers(1, len(names) + 1)]
        jobs.append(JobRequest(job_id, float(durations[job_id]), float(not_before[job_id]),
                               float(deadlines[job_id]), tuple(names[i] for i in allowed)))
    return jobs


def moved_from_best(placements: Placements, unconstrained: Placements) -> int:
    """How many placements differ from the job's cleanest window with capacity ignored."""
    by_job = np.argsort(unconstrained.job_ids)
    row = by_job[np.searchsorted(unconstrained.job_ids, placements.job_ids, sorter=by_job)]
    names = np.array(placements.region_names)
    other = np.array(unconstrained.region_names)
    differs = ((names[placements.region_index] != other[unconstrained.region_index[row]])
               | (placements.starts != unconstrained.starts[row]))
    return int(differs.sum())


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_runs(
    jobs: Sequence[JobRequest], forecasts: dict[str, Forecast], slots: dict[str, int],
    repeat: int,
) -> tuple[Placements, list[float], list[float]]:
    timings, cpu_timings = [], []
    placements = Placements.empty()
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        placements = plan(jobs, forecasts, slots, NOW)
        timings.append(time.perf_counter() - started)
        cpu_timings.append(time.process_time() - cpu_started)
    return placements, timings, cpu_timings


def as_chunk_job(job: JobRequest) -> ChunkJob:
    return ChunkJob(job.job_id, job.duration_s, job.not_before, job.deadline, job.regions,
                    MIN_CHUNK_S, None)


def timed_pairs(
    jobs: Sequence[JobRequest], whole: Sequence[JobRequest], chunked: Sequence[ChunkJob],
    forecasts: dict[str, Forecast], slots: dict[str, int], repeat: int,
) -> tuple[int, list[float], list[float]]:
    """``repeat`` pairs, run in turns so that a drift of the machine's speed weighs on both
    alike: every job whole by plan(), then what a re-plan does with the interruptible
    share (one search of both sets' cleanest windows, the interruptible jobs' single
    blocks included, plan() for the whole jobs, plan_chunks() for the others around their
    slots). Returns how many interruptible jobs got more than one chunk and each run's
    CPU time, all whole and mixed."""
    all_whole = JobColumns.from_requests(jobs)
    columns = JobColumns.from_requests(whole)
    by_id = np.argsort(columns.job_ids)
    whole_cpu, mixed_cpu = [], []
    split = 0
    for _ in range(repeat):
        cpu_started = time.process_time()
        plan(all_whole, forecasts, slots, NOW)
        whole_cpu.append(time.process_time() - cpu_started)
        cpu_started = time.process_time()
        windows = cleanest_windows(columns + single_blocks(chunked, NOW), forecasts, NOW)
        placements = plan(columns, forecasts, slots, NOW, windows=windows.rows(0, len(columns)))
        rows = by_id[np.searchsorted(columns.job_ids, placements.job_ids, sorter=by_id)]
        held = Holds.from_placements(placements, columns.durations[rows])
        chunk_placements = plan_chunks(chunked, forecasts, slots, NOW, held, windows.rows(
            len(columns), len(columns) + len(chunked)))
        mixed_cpu.append(time.process_time() - cpu_started)
        split = sum(1 for p in chunk_placements if len(p.chunks) > 1)
    return split, whole_cpu, mixed_cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--regions", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2016)
    parser.add_argument("--slots", type=int, default=SLOTS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--interruptible", type=float, default=0.0, metavar="SHARE",
                        help="share of the jobs that are interruptible, e.g. 0.1")
    args = parser.parse_args(argv)
    if not 0.0 <= args.interruptible <= 1.0:
        parser.error("--interruptible takes a share between 0 and 1")

    rng = np.random.default_rng(args.seed)
    forecasts = make_forecasts(rng, args.regions, args.steps)
    jobs = make_jobs(rng, args.jobs, list(forecasts))
    # Drawn from their own generator, so the jobs are those of a run without the option.
    chosen = np.random.default_rng(args.seed + 1).random(len(jobs)) < args.interruptible
    whole = [job for job, pick in zip(jobs, chosen, strict=True) if not pick]
    chunked = [as_chunk_job(job) for job, pick in zip(jobs, chosen, strict=True) if pick]
    out = sys.stdout
    out.write(f"{args.jobs} jobs x {args.regions} regions x {args.steps} steps; "
              f"distinct durations: {len({j.duration_s for j in jobs})}\n")
    unconstrained: Placements | None = None
    for label, per_region in (("unlimited slots", args.jobs), ("binding slots", args.slots)):
        slots = dict.fromkeys(forecasts, per_region)
        placements, timings, cpu_timings = timed_runs(jobs, forecasts, slots, args.repeat)
        rss = peak_rss_mb()
        if unconstrained is None:
            unconstrained = placements
        moved = moved_from_best(placements, unconstrained)
        waiting = int(placements.has(PlacementReason.WAITING_FOR_SLOT).sum())
        out.write(f"{label} ({per_region} per region): {moved} jobs "
                  f"({100.0 * moved / len(placements):.1f}%) not in their unconstrained "
                  f"cleanest window, {waiting} wait for a slot; peak RSS {rss:.0f} MB\n")
        out.write("  wall per run: " + ", ".join(f"{t:.3f}" for t in timings)
                  + " s; CPU per run: " + ", ".join(f"{t:.3f}" for t in cpu_timings) + " s\n")
        out.write(f"  {label}: planned {len(placements)} jobs in "
                  f"{statistics.median(timings):.3f} s wall, "
                  f"{statistics.median(cpu_timings):.3f} s CPU (medians)\n")
        if args.interruptible > 0:
            split, whole_cpu, mixed_cpu = timed_pairs(jobs, whole, chunked, forecasts, slots,
                                                      args.repeat)
            ratios = [mixed / alone for mixed, alone in zip(mixed_cpu, whole_cpu, strict=True)]
            out.write(f"  with {len(chunked)} interruptible ({100 * args.interruptible:g}%), "
                      f"{split} of them in more than one chunk; peak RSS "
                      f"{peak_rss_mb():.0f} MB\n")
            out.write("  in turns, CPU per run: all whole "
                      + ", ".join(f"{t:.3f}" for t in whole_cpu) + " s; with the share "
                      + ", ".join(f"{t:.3f}" for t in mixed_cpu) + " s; ratios "
                      + ", ".join(f"{r:.2f}" for r in ratios) + "\n")
            out.write(f"  {label}: all whole {statistics.median(whole_cpu):.3f} s CPU, "
                      f"with the interruptible share {statistics.median(mixed_cpu):.3f} s CPU "
                      f"(medians); median ratio {statistics.median(ratios):.2f}x\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
