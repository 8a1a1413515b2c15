"""Simulator benchmarks: what shifting saves on real data, and how fast the simulator runs.

    python benchmarks/simulate.py savings --intensity DIR [--errors 0,0.05,0.1] [--repeats K]
    python benchmarks/simulate.py uk --summary FILE
    python benchmarks/simulate.py speed --intensity DIR [--policy gridshift] [--interruptible]

``DIR`` holds Electricity Maps yearly exports named ``<ZONE>_<YEAR>_hourly.csv`` (the
region is the part before the first ``_``); ``FILE`` is the UK ``summary_national_fw48h.csv``.
Each prints its figures; nothing is timed in the test suite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from scheduler.simulate import workloads
from scheduler.simulate.results import Row
from scheduler.simulate.scenario import ForecastChoice, Scenario, run
from scheduler.simulate.series import Series, read_forecasts, read_series

ML_WORKDAY_JOBS = 3387  # the ML scenario of Let's Wait Awhile


def load_year(folder: Path) -> dict[str, Series]:
    files = sorted(folder.glob("*.csv"))
    if not files:
        sys.exit(f"no CSV files in {folder}")
    return {path.name.split("_")[0]: read_series(path) for path in files}


def ml_workday_sets(actuals: dict[str, Series], count: int, seed: int,
                    options: workloads.WorkloadOptions | None = None
                    ) -> tuple[list[workloads.SimJob], list[workloads.SimJob]]:
    chosen = options or workloads.WorkloadOptions(count=count, seed=seed)
    regions = list(actuals)
    alone = workloads.generate("ml-workday", regions, actuals, "region", chosen)
    together = workloads.generate("ml-workday", regions, actuals, "all", chosen,
                                  first_id=len(alone) + 1)
    return alone, together


def print_rows(heading: str, result: list[Row], seconds: float) -> None:
    print(f"\n## {heading}  ({seconds:.1f} s)")
    print(f"{'policy':<10} {'region':<12} {'jobs':>5} {'g/kWh':>7} {'saving%':>8} "
          f"{'oracle%':>8} {'missed':>6} {'delay h':>8}")
    for row in result:
        share = "-" if row.oracle_share_pct is None else f"{row.oracle_share_pct:.1f}"
        saving = "-" if row.saving_pct is None else f"{row.saving_pct:.2f}"
        intensity = "-" if row.mean_intensity is None else f"{row.mean_intensity:.1f}"
        print(f"{row.policy:<10} {row.region:<12} {row.jobs:>5} {intensity:>7} "
              f"{saving:>8} {share:>8} {row.deadline_misses:>6g} "
              f"{row.mean_delay_s / 3600:>8.1f}")
    sys.stdout.flush()


def savings(args: argparse.Namespace) -> None:
    actuals = load_year(Path(args.intensity))
    alone, together = ml_workday_sets(actuals, args.count, args.seed)
    print(f"ml-workday: {args.count} jobs per region alone ({len(actuals)} regions) and "
          f"{args.count} jobs across all regions; seed {args.seed}")
    for error in (float(e) for e in args.errors.split(",")):
        label = "perfect forecasts" if error == 0 else f"{100 * error:g}% forecast error"
        if error and args.repeats > 1:
            label += f", {args.repeats} seeds averaged"
        choice = ForecastChoice(None, error, args.seed, args.repeats)
        started = time.perf_counter()
        result = run(Scenario(actuals, [alone, together], choice, args.policies.split(",")))
        print_rows(label, result, time.perf_counter() - started)


def uk(args: argparse.Namespace) -> None:
    from scheduler.simulate.convert import convert_uk_fw48h

    with tempfile.TemporaryDirectory() as folder:
        converted = convert_uk_fw48h(Path(args.summary), Path(folder))
        actuals = {"GB": read_series(converted.actuals_path)}
        archive = read_forecasts(converted.forecasts_path, ["GB"])
    print(f"UK archive: {converted.windows} half-hour windows, {converted.vintages} vintages; "
          f"{converted.notes[0]}")
    cases = [
        ("ml-workday 4-90 h", "ml-workday",
         workloads.WorkloadOptions(count=args.count, seed=args.seed)),
        ("ml-workday 1-12 h", "ml-workday",
         workloads.WorkloadOptions(count=args.count, seed=args.seed, min_duration_s=3600.0,
                                   max_duration_s=12 * 3600.0)),
        ("nightly +-6 h", "nightly", workloads.WorkloadOptions(seed=args.seed,
                                                               count=100_000,
                                                               window_s=6 * 3600.0)),
    ]
    for label, name, options in cases:
        jobs = workloads.generate(name, ["GB"], actuals, "region", options)
        for forecast_label, choice in (("archived vintages", ForecastChoice(archive)),
                                       ("perfect forecasts", ForecastChoice())):
            started = time.perf_counter()
            result = run(Scenario(actuals, [jobs], choice, ["once", "gridshift", "oracle"]))
            print_rows(f"{label}, {forecast_label}", result, time.perf_counter() - started)


def speed(args: argparse.Namespace) -> None:
    actuals = load_year(Path(args.intensity))
    options = workloads.WorkloadOptions(count=args.count, seed=args.seed,
                                        interruptible=args.interruptible)
    alone, together = ml_workday_sets(actuals, args.count, args.seed, options)
    choice = ForecastChoice(None, args.error, args.seed, 1)
    kind = "interruptible (30-minute chunks)" if args.interruptible else "whole"
    for label, jobs in ((f"{len(together)} jobs, each free to use all {len(actuals)} regions",
                         together),
                        (f"{len(alone)} jobs, {args.count} confined to each region", alone)):
        started, cpu_started = time.perf_counter(), time.process_time()
        run(Scenario(actuals, [jobs], choice, [args.policy]))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        print(f"{args.policy}: one year, {label}, {kind}, {100 * args.error:g}% error: "
              f"{seconds:.1f} s wall, {cpu:.1f} s CPU (includes the 'now' baseline)")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    first = commands.add_parser("savings")
    first.add_argument("--intensity", required=True)
    first.add_argument("--errors", default="0,0.05,0.1")
    first.add_argument("--repeats", type=int, default=1)
    first.add_argument("--policies", default="now,once,gridshift,oracle")
    second = commands.add_parser("uk")
    second.add_argument("--summary", required=True)
    third = commands.add_parser("speed")
    third.add_argument("--intensity", required=True)
    third.add_argument("--policy", default="gridshift")
    third.add_argument("--error", type=float, default=0.05)
    third.add_argument("--interruptible", action="store_true",
                       help="every job interruptible, with the default 30-minute minimum chunk")
    for command in (first, second, third):
        command.add_argument("--count", type=int, default=ML_WORKDAY_JOBS)
        command.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    {"savings": savings, "uk": uk, "speed": speed}[args.command](args)


if __name__ == "__main__":
    main()
