"""``gridshift simulate`` and ``gridshift simulate convert``: parse, call, print.

Only typer is imported at start-up; numpy, pandas, rich and matplotlib load when a
simulation runs, so the rest of the CLI stays fast.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from scheduler.clihelp import Command, Group
from scheduler.errors import BadInput, GridshiftError
from scheduler.records import DEFAULT_MIN_CHUNK_S

if TYPE_CHECKING:
    from scheduler.simulate.scenario import Scenario

F = TypeVar("F", bound=Callable[..., Any])

DEMO_DIR = Path(__file__).resolve().parent.parent / "data"
DEMO_COUNT = 150
# The demo's forecasts: a vintage every hour covering 48 h ahead (as the UK's fw48h), off
# by up to 20% of the mean at 48 h lead and exact at the hour itself, so re-planning on
# each revision has something to gain over planning once.
DEMO_ERROR_AT_HORIZON = 0.2
DEMO_HORIZON_S = 48 * 3600.0
DEMO_ISSUE_EVERY_S = 3600.0
POLICY_MEANINGS = {
    "now": "starts at submission",
    "once": "plans once at submission, never revises",
    "gridshift": "re-plans on every forecast revision, as the daemon does",
    "oracle": "re-plans knowing the actual intensity",
}
POLICY_NAMES = ("now", "once", "gridshift", "oracle")
SCOPES = ("region", "all", "both")
COMPARE_NEEDS_INTERRUPTIBLE = ("--compare-whole needs interruptible jobs (--interruptible, "
                               "or the interruptible column of a jobs CSV)")

simulate_app = typer.Typer(
    help="Replay real grid data and forecasts: what would shifting jobs have saved?",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)
convert_app = typer.Typer(help="Convert real forecast archives to simulator CSV files.",
                          no_args_is_help=True, cls=Group)
simulate_app.add_typer(convert_app, name="convert")


def _handle_errors(command: F) -> F:
    """A GridshiftError becomes one line on stderr and its exit code (2 for bad input)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except GridshiftError as error:
            sys.stderr.write(f"gridshift: {error}\n")
            raise typer.Exit(error.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _duration(text: str, option: str) -> float:
    from scheduler.timespec import parse_duration

    try:
        return parse_duration(text).total_seconds()
    except BadInput as error:
        raise BadInput(f"{option}: {error}") from None


@simulate_app.callback()
@_handle_errors
def simulate(
    context: typer.Context,
    actuals: Annotated[Path | None, typer.Option(
        "--actuals", metavar="PATH", help="Actual intensity: a CSV file or a folder of them, "
        "one region per file (region = file stem).")] = None,
    forecasts: Annotated[Path | None, typer.Option(
        "--forecasts", metavar="PATH",
        help="Forecast vintages: issued_at,start,end,gco2_per_kwh[,region].")] = None,
    forecast_error: Annotated[float | None, typer.Option(
        "--forecast-error", metavar="FRACTION", help="Synthetic forecasts: actuals + Gaussian "
        "noise, sigma = FRACTION x the region's mean (default: perfect forecasts).")] = None,
    seed: Annotated[int, typer.Option("--seed", metavar="N",
                                      help="Seeds the workload and the noise.")] = 1,
    repeats: Annotated[int, typer.Option("--repeats", metavar="K",
                                         help="Average K noise seeds.")] = 1,
    jobs: Annotated[Path | None, typer.Option(
        "--jobs", metavar="FILE",
        help="Jobs CSV: id,submit_time,duration,deadline,regions,power_w"
        "[,interruptible,min_chunk].")] = None,
    workload: Annotated[str | None, typer.Option(
        "--workload", metavar="NAME", help="Built-in workload: ml-workday or nightly.")] = None,
    count: Annotated[int | None, typer.Option(
        "--count", metavar="N", help="Jobs per scope (ml-workday, default 3387) or most "
        "days (nightly, default every day).")] = None,
    min_duration: Annotated[str, typer.Option("--min-duration", metavar="DUR",
                                              help="ml-workday shortest job.")] = "4h",
    max_duration: Annotated[str, typer.Option("--max-duration", metavar="DUR",
                                              help="ml-workday longest job.")] = "90h",
    step: Annotated[str, typer.Option("--step", metavar="DUR",
                                      help="ml-workday duration step.")] = "30m",
    window: Annotated[str, typer.Option("--window", metavar="DUR",
                                        help="nightly: how far the job may move either way."
                                        )] = "3h",
    power: Annotated[float, typer.Option("--power", metavar="WATTS",
                                         help="Workload jobs' power draw.")] = 300.0,
    interruptible: Annotated[bool, typer.Option(
        "--interruptible", help="Workload jobs may pause between chunks of at least "
        "--min-chunk.")] = False,
    min_chunk: Annotated[str | None, typer.Option(
        "--min-chunk", metavar="DUR", help="Interruptible workload jobs' shortest chunk "
        "(default 30m).")] = None,
    compare_whole: Annotated[bool, typer.Option(
        "--compare-whole", help="Also simulate every interruptible job as a whole job and "
        "show both kinds side by side.")] = False,
    scope: Annotated[str, typer.Option(
        "--scope", metavar="region|all|both", help="Workload jobs confined to each region "
        "(region), free to move between all regions (all), or both as separate runs (both).")
        ] = "both",
    slots: Annotated[int | None, typer.Option(
        "--slots", metavar="N", help="Jobs each region runs at once (default: unlimited).")
    ] = None,
    policy: Annotated[list[str] | None, typer.Option(
        "--policy", metavar="NAME", help="now, once, gridshift or oracle (repeat; default all)."
    )] = None,
    region: Annotated[list[str] | None, typer.Option(
        "--region", metavar="NAME", help="Use only these regions of the actuals (repeat).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="FILE.png",
                                              help="Draw savings per policy and region.")
                    ] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="Run offline on bundled real data (Electricity Maps, 3 weeks, "
        "3 zones): ml-workday, hourly forecast revisions 48 h ahead.")] = False,
) -> None:
    """Replay jobs on real grid data under each policy and compare their emissions."""
    if context.invoked_subcommand is not None:
        return
    if demo:
        if actuals is not None or jobs is not None or workload is not None:
            raise BadInput("--demo brings its own data and workload: drop --actuals, "
                           "--jobs and --workload")
        actuals, workload = DEMO_DIR, "ml-workday"
        count = DEMO_COUNT if count is None else count
    revising = demo and forecasts is None and forecast_error is None
    if actuals is None:
        raise BadInput("give --actuals PATH (or try --demo)")
    if (jobs is None) == (workload is None):
        raise BadInput("give one of --jobs FILE or --workload NAME")
    if forecasts is not None and forecast_error is not None:
        raise BadInput("give --forecasts or --forecast-error, not both")
    if forecast_error is not None and not 0 <= forecast_error <= 10:
        raise BadInput("--forecast-error must be a fraction between 0 and 10, e.g. 0.05")
    if repeats < 1:
        raise BadInput("--repeats must be at least 1")
    if scope not in SCOPES:
        raise BadInput(f"unknown --scope {scope!r} (scopes: {', '.join(SCOPES)})")
    if count is not None and count < 1:
        raise BadInput("--count must be at least 1")
    if not power > 0:
        raise BadInput("--power must be above zero")
    policies = list(dict.fromkeys(policy or POLICY_NAMES))
    for name in policies:
        if name not in POLICY_NAMES:
            raise BadInput(f"unknown policy {name!r} (policies: {', '.join(POLICY_NAMES)})")
    if plot is not None and plot.suffix.lower() != ".png":
        raise BadInput(f"--plot {plot}: give a .png file name")
    if interruptible and workload is None:
        raise BadInput("--interruptible is for --workload jobs; a jobs CSV says it per job "
                       "in its interruptible column")
    if min_chunk is not None and not interruptible:
        raise BadInput("--min-chunk needs --interruptible")
    if compare_whole and workload is not None and not interruptible:
        raise BadInput(COMPARE_NEEDS_INTERRUPTIBLE)
    min_chunk_s = _duration(min_chunk, "--min-chunk") if min_chunk is not None else None
    if min_chunk_s is not None and not min_chunk_s > 0:
        raise BadInput("--min-chunk must be above zero")

    scenario = _scenario(
        actuals, forecasts, forecast_error, seed, repeats, jobs, workload, count,
        (_duration(min_duration, "--min-duration"), _duration(max_duration, "--max-duration"),
         _duration(step, "--step"), _duration(window, "--window")),
        power, scope, slots, policies, region, revising,
        interruptible, min_chunk_s, compare_whole,
    )
    from scheduler.simulate import results
    from scheduler.simulate.scenario import run

    progress = _LateProgress()
    try:
        rows = run(scenario, progress)
    finally:
        progress.close()
    title = (f"{scenario.job_count} jobs, {scenario.forecasts.describe()}"
             f"{'' if slots is None else f', {slots} slots per region'}"
             f"{' (demo: Electricity Maps data, ODbL)' if demo else ''}")
    if plot is not None:
        results.plot(rows, plot, title)
    if json_output:
        from scheduler import render

        render.print_json(results.as_json(rows))
    else:
        results.print_table(rows, title)
        shown = dict.fromkeys(["now", *(r.policy for r in rows)])  # now: the baseline
        sys.stdout.write("; ".join(f"{name}: {POLICY_MEANINGS[name]}" for name in shown)
                         + "\n")


def _scenario(
    actuals_path: Path, forecasts_path: Path | None, forecast_error: float | None, seed: int,
    repeats: int, jobs_path: Path | None, workload: str | None, count: int | None,
    durations: tuple[float, float, float, float], power: float, scope: str,
    slots: int | None, policies: list[str], chosen_regions: list[str] | None,
    revising: bool = False, interruptible: bool = False,
    min_chunk_s: float | None = None, compare_whole: bool = False,
) -> Scenario:
    from scheduler.simulate import workloads
    from scheduler.simulate.scenario import ForecastChoice, Scenario
    from scheduler.simulate.series import read_actuals, read_forecasts, revised_forecasts

    if workload is not None and workload not in workloads.WORKLOADS:
        raise BadInput(f"unknown workload {workload!r} "
                       f"(workloads: {', '.join(workloads.WORKLOADS)})")
    if slots is not None and slots < 1:
        raise BadInput("--slots must be at least 1")
    actuals = read_actuals(actuals_path)
    if chosen_regions:
        for name in chosen_regions:
            if name not in actuals:
                raise BadInput(f"unknown region {name!r} (the actuals have: "
                               f"{', '.join(sorted(actuals))})")
        actuals = {name: actuals[name] for name in dict.fromkeys(chosen_regions)}
    regions = list(actuals)
    archive = read_forecasts(forecasts_path, regions) if forecasts_path is not None else None
    if jobs_path is not None:
        job_sets = [workloads.read_jobs(jobs_path)]
        workloads.check_jobs(job_sets[0], actuals)
    else:
        assert workload is not None
        shortest, longest, step_s, window_s = durations
        options = workloads.WorkloadOptions(
            count=count or (3387 if workload == "ml-workday" else 100_000), seed=seed,
            min_duration_s=shortest, max_duration_s=longest, step_s=step_s,
            window_s=window_s, power_w=power, interruptible=interruptible,
            min_chunk_s=min_chunk_s or DEFAULT_MIN_CHUNK_S,
        )
        scopes = {"region": ["region"], "all": ["all"], "both": ["region", "all"]}[scope]
        if len(regions) == 1:
            scopes = ["region"]
        job_sets = []
        for part in scopes:
            first_id = 1 + sum(len(s) for s in job_sets)
            job_sets.append(workloads.generate(workload, regions, actuals, part, options,
                                               first_id))
    label = None
    if revising:
        archive = revised_forecasts(actuals, DEMO_ERROR_AT_HORIZON, DEMO_HORIZON_S,
                                    DEMO_ISSUE_EVERY_S, seed)
        label = "forecasts revised hourly, 48 h ahead"
    if compare_whole and not any(job.interruptible for s in job_sets for job in s):
        raise BadInput(COMPARE_NEEDS_INTERRUPTIBLE)
    choice = ForecastChoice(archive, forecast_error or 0.0, seed, repeats, label)
    return Scenario(actuals, job_sets, choice, policies, slots, compare_whole)


class _LateProgress:
    """A rich progress bar on stderr that appears only once a run has taken a second."""

    def __init__(self, delay_s: float = 1.0) -> None:
        self.started = time.monotonic()
        self.delay_s = delay_s
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if time.monotonic() - self.started < self.delay_s:
                return
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("simulating", total=total)
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _report(converted: Any) -> None:
    sys.stdout.write(
        f"wrote {converted.actuals_path} ({converted.windows} intervals) and "
        f"{converted.forecasts_path} ({converted.forecast_rows} rows, "
        f"{converted.vintages} vintages)\n"
    )
    for note in converted.notes:
        sys.stderr.write(f"note: {note}\n")


@convert_app.command("uk-fw48h", cls=Command)
@_handle_errors
def convert_uk(
    source: Annotated[Path, typer.Argument(metavar="SUMMARY_CSV",
                                           help="summary_national_fw48h.csv")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR")],
    region: Annotated[str, typer.Option("--region", metavar="NAME",
                                                        help="Region name to write.")] = "GB",
) -> None:
    """UK national 48-hour forecasts at every lead time -> actuals (zero lead) + vintages."""
    from scheduler.simulate.convert import convert_uk_fw48h

    _report(convert_uk_fw48h(source, out_dir, region))


@convert_app.command("watttime", cls=Command)
@_handle_errors
def convert_watttime(
    actual: Annotated[Path, typer.Argument(metavar="ACTUAL_CSV")],
    forecast: Annotated[Path, typer.Argument(metavar="FORECAST_CSV")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR")],
    region: Annotated[str, typer.Option("--region", metavar="NAME",
                                                        help="Region name to write.")
                      ] = "CAISO_NORTH",
) -> None:
    """WattTime actual.csv + forecast.csv (5-minute MOER) -> actuals + vintages."""
    from scheduler.simulate.convert import convert_watttime as run_convert

    _report(run_convert(actual, forecast, out_dir, region))
