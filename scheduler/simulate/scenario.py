"""One simulation request, end to end: job sets x policies x repeats -> result rows.

Job sets are simulated separately (jobs confined to one region each, and jobs free to move
between regions), so a workload's two scopes never compete for slots. ``now`` is always
simulated, as every saving is measured against it; ``oracle`` only when asked for. With
``compare_whole``, every job set is simulated a second time with each job as a whole job,
so interruptible and whole rows of the same jobs come side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from scheduler.simulate.engine import simulate
from scheduler.simulate.results import Group, Row, Totals, average, rows, totals_by_group
from scheduler.simulate.series import ForecastArchive, KnownSeries, Series, noisy_copy
from scheduler.simulate.workloads import SimJob


@dataclass(frozen=True)
class ForecastChoice:
    """What ``once`` and ``gridshift`` see: real vintages, or actuals plus noise."""

    archive: ForecastArchive | None = None
    error_fraction: float = 0.0
    seed: int = 1
    repeats: int = 1
    label: str | None = None  # how describe() names synthetic vintages in ``archive``

    def describe(self) -> str:
        if self.label is not None:
            return self.label
        if self.archive is not None:
            return "archived forecast vintages"
        if self.error_fraction == 0:
            return "perfect forecasts"
        repeats = f", {self.repeats} seeds averaged" if self.repeats > 1 else ""
        return f"forecasts with {100 * self.error_fraction:g}% error{repeats}"


@dataclass(frozen=True)
class Scenario:
    actuals: Mapping[str, Series]
    job_sets: Sequence[Sequence[SimJob]]
    forecasts: ForecastChoice
    policies: Sequence[str]
    slots: int | None = None
    compare_whole: bool = False

    @property
    def variants(self) -> list[Sequence[Sequence[SimJob]]]:
        """The job sets as given and, with ``compare_whole``, the same jobs all whole."""
        given = list(self.job_sets)
        if not self.compare_whole or not any(j.interruptible for s in given for j in s):
            return [given]
        return [given, [[job.as_whole() for job in s] for s in given]]

    @property
    def job_count(self) -> int:
        return sum(len(s) for s in self.job_sets)

    def simulation_count(self) -> int:
        """Simulations per job set: one per policy, one per seed where forecasts are noisy."""
        needed = set(self.policies) | {"now"}
        forecast_dependent = len(needed & {"once", "gridshift"})
        repeats = 1 if self.forecasts.archive is not None or not self.forecasts.error_fraction \
            else self.forecasts.repeats
        return (len(needed) - forecast_dependent + forecast_dependent * repeats) \
            * len(self.variants)


def run(scenario: Scenario, progress: Callable[[int, int], None] | None = None) -> list[Row]:
    """Simulate every policy asked for (plus ``now``); ``progress(done, total)`` in jobs."""
    choice = scenario.forecasts
    needed = [p for p in ("now", "once", "gridshift", "oracle")
              if p in scenario.policies or p == "now"]
    noisy = choice.archive is None and choice.error_fraction > 0
    seeds = [choice.seed + k for k in range(choice.repeats)] if noisy else [choice.seed]
    total = scenario.simulation_count() * scenario.job_count
    done = 0

    def report(count: int) -> None:
        if progress is not None:
            progress(done + count, total)

    per_policy: dict[str, dict[Group, Totals]] = {}
    for policy in needed:
        repeats: list[dict[Group, Totals]] = []
        for seed in (seeds if policy in ("once", "gridshift") else seeds[:1]):
            merged: dict[Group, Totals] = {}
            source = _source(scenario.actuals, choice, seed)
            for job_set in (s for variant in scenario.variants for s in variant):
                runs = []
                for jobs in independent_parts(job_set):
                    runs += simulate(policy, jobs, scenario.actuals, source, scenario.slots,
                                     report)
                    done += len(jobs)
                merged.update(totals_by_group(runs, scenario.actuals))
            repeats.append(merged)
        per_policy[policy] = average(repeats)
    return rows(per_policy, [p for p in ("now", "once", "gridshift", "oracle")
                             if p in scenario.policies])


def independent_parts(jobs: Sequence[SimJob]) -> list[list[SimJob]]:
    """Split jobs that cannot affect each other: when every job is confined to one region,
    regions share neither slots nor forecasts, so each region is its own simulation (the
    same runs, far fewer jobs per planner call)."""
    if any(len(job.regions) != 1 for job in jobs):
        return [list(jobs)]
    parts: dict[str, list[SimJob]] = {}
    for job in jobs:
        parts.setdefault(job.regions[0], []).append(job)
    return list(parts.values())


def _source(actuals: Mapping[str, Series], choice: ForecastChoice,
            seed: int) -> ForecastArchive | KnownSeries:
    if choice.archive is not None:
        return choice.archive
    if choice.error_fraction > 0:
        return noisy_copy(actuals, choice.error_fraction, seed)
    return KnownSeries(actuals)
