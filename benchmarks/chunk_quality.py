"""How far the chunk planner's fast path lands from the optimum, where the optimum is known.

The fast path of ``scheduler/chunking.py`` is a heuristic (its docstring). In one case the
optimum is simple: equal forecast steps, a minimum chunk of at most one step, no pause
limit, no restart overhead, and work of whole steps. Then any set of whole steps is a
valid plan, and no plan (partial steps included) holds the work for less than the sum of
its cheapest steps. This script draws such cases with a seeded generator, one region,
windows of 13 to 120 half-hour steps (all beyond the exact path's 12 cells), plans each
with ``plan_chunks``, and prints how often the plan is the optimum and how far off it is
otherwise, as a ratio of forecast emissions.

    .venv/bin/python benchmarks/chunk_quality.py [--cases N] [--seed S]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import numpy.typing as npt

from scheduler.chunking import ChunkJob, plan_chunks
from scheduler.intensity import Forecast

STEP_S = 1800.0


def emitted(values: npt.NDArray[np.float64], moment: float) -> float:
    """The forecast's integral from the window's start to ``moment`` (steps of STEP_S)."""
    whole = min(int(moment // STEP_S), len(values))
    inside = moment - whole * STEP_S if whole < len(values) else 0.0
    return float(values[:whole].sum() * STEP_S
                 + (values[whole] * inside if whole < len(values) else 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    ratios = []
    for _ in range(args.cases):
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
    print(f"cases: {len(ratios)} (seed {args.seed})")
    optimal = len(ratios) - len(off)
    print(f"optimal: {optimal} ({100 * optimal / len(ratios):.1f}%)")
    if off:
        print(f"off the optimum: {len(off)}; emissions over the optimum: median "
              f"{100 * (statistics.median(off) - 1):.2f}%, worst {100 * (max(off) - 1):.2f}%")


if __name__ == "__main__":
    main()
