"""What each policy's runs emitted, measured on the actuals, and how to show it.

Emissions of a run = power x the sum over the actuals' intervals it overlaps of
intensity x overlap: every policy, the ``now`` baseline included, is measured on the same
actuals; an interruptible job's emissions are summed over every run (chunk) it ran. One
row per policy, group and kind: a region name for jobs confined to that region, or "all"
for jobs that may move between regions; "whole", "interruptible" or "mixed" for the jobs'
kind. Savings are against ``now`` on the same jobs, which runs every job uninterrupted
from its earliest start, so whole and interruptible rows are measured alike.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.errors import BadInput
from scheduler.render import inert
from scheduler.simulate.engine import POLICIES, Run
from scheduler.simulate.series import Series
from scheduler.simulate.workloads import SimJob

DEADLINE_TOLERANCE_S = 1e-3
JSON_KEYS = ("policy", "region", "kind", "jobs", "energy_kwh", "emissions_g",
             "mean_intensity", "saving_pct", "oracle_share_pct", "deadline_misses",
             "mean_delay_s", "p95_delay_s", "mean_runs")
KINDS = ("whole", "interruptible", "mixed")


@dataclass(frozen=True)
class Totals:
    """One policy over one group of jobs (averaged over repeats where there are several)."""

    jobs: int
    energy_kwh: float
    emissions_g: float
    deadline_misses: float
    mean_delay_s: float
    p95_delay_s: float
    mean_runs: float  # runs (chunks that ran) per job: 1 for whole jobs

    @property
    def mean_intensity(self) -> float | None:
        return self.emissions_g / self.energy_kwh if self.energy_kwh else None


@dataclass(frozen=True)
class Row:
    policy: str
    region: str
    kind: str
    jobs: int
    energy_kwh: float
    emissions_g: float
    mean_intensity: float | None
    saving_pct: float | None
    oracle_share_pct: float | None
    deadline_misses: float
    mean_delay_s: float
    p95_delay_s: float
    mean_runs: float


def run_emissions(runs: Sequence[Run], actuals: Mapping[str, Series]) -> np.ndarray:
    """Grams of CO2eq per run, in the order given."""
    grams = np.zeros(len(runs))
    for region, series in actuals.items():
        index = np.array([i for i, r in enumerate(runs) if r.region == region], dtype=np.int64)
        if not len(index):
            continue
        starts = np.array([runs[i].start for i in index])
        ends = np.array([runs[i].end for i in index])
        intensity_seconds, covered = series.integrals(starts, ends)
        if np.any(covered < (ends - starts) - 1e-3):
            raise BadInput(f"a job ran in {region} outside its actuals; "
                           "extend the actuals or shorten the jobs")
        power_kw = np.array([runs[i].job.power_w for i in index]) / 1000.0
        grams[index] = power_kw * intensity_seconds / 3600.0
    return grams


def kind_of(jobs: Sequence[SimJob]) -> str:
    """"whole", "interruptible", or "mixed" when the jobs are of both kinds."""
    interruptible = sum(job.interruptible for job in jobs)
    return "whole" if not interruptible else (
        "interruptible" if interruptible == len(jobs) else "mixed")


Group = tuple[str, str]  # (region or "all", kind)


def totals_by_group(runs: Sequence[Run], actuals: Mapping[str, Series]) -> dict[Group, Totals]:
    """Totals per (region group, kind of its jobs); a job's runs count once for delay
    (its first start), deadline (its last end) and jobs, all of them for energy."""
    grams = run_emissions(runs, actuals)
    by_job: dict[int, list[int]] = {}
    for i, run in enumerate(runs):
        by_job.setdefault(run.job.job_id, []).append(i)
    groups: dict[str, list[list[int]]] = {}
    for index in by_job.values():
        groups.setdefault(runs[index[0]].job.group, []).append(index)
    totals = {}
    for group, jobs in groups.items():
        firsts = [runs[min(index, key=lambda i: runs[i].start)] for index in jobs]
        lasts = [max(runs[i].end for i in index) for index in jobs]
        delays = np.array([r.start - r.job.submit for r in firsts])
        chosen = [i for index in jobs for i in index]
        energy = sum(runs[i].job.power_w * (runs[i].end - runs[i].start) for i in chosen) / 3.6e6
        misses = sum(end > r.job.deadline + DEADLINE_TOLERANCE_S
                     for r, end in zip(firsts, lasts, strict=True))
        totals[(group, kind_of([r.job for r in firsts]))] = Totals(
            len(jobs), energy, float(np.sum(grams[chosen])), float(misses),
            float(np.mean(delays)), float(np.percentile(delays, 95)), len(chosen) / len(jobs))
    return totals


def average(repeats: Sequence[Mapping[Group, Totals]]) -> dict[Group, Totals]:
    """Totals averaged over repeats (seeds) of one policy."""
    if len(repeats) == 1:
        return dict(repeats[0])
    return {
        group: Totals(
            repeats[0][group].jobs,
            float(np.mean([r[group].energy_kwh for r in repeats])),
            float(np.mean([r[group].emissions_g for r in repeats])),
            float(np.mean([r[group].deadline_misses for r in repeats])),
            float(np.mean([r[group].mean_delay_s for r in repeats])),
            float(np.mean([r[group].p95_delay_s for r in repeats])),
            float(np.mean([r[group].mean_runs for r in repeats])),
        )
        for group in repeats[0]
    }


def rows(per_policy: Mapping[str, Mapping[Group, Totals]], shown: Sequence[str]) -> list[Row]:
    """Rows for the policies in ``shown``, the kinds of one region side by side; savings
    against ``now``, share against ``oracle`` (None where that baseline was not simulated
    or saves nothing)."""
    baseline = per_policy["now"]
    oracle = per_policy.get("oracle")
    result = []
    for policy in shown:
        for group in sorted(per_policy[policy],
                            key=lambda g: (g[0] == "all", g[0], KINDS.index(g[1]))):
            totals = per_policy[policy][group]
            base = baseline[group].emissions_g
            saving = 100.0 * (base - totals.emissions_g) / base if base else None
            share = None
            if oracle is not None:
                best_saving = base - oracle[group].emissions_g
                if best_saving > 1e-9 * max(base, 1.0):
                    share = 100.0 * (base - totals.emissions_g) / best_saving
            result.append(Row(policy, group[0], group[1], totals.jobs, totals.energy_kwh,
                              totals.emissions_g, totals.mean_intensity, saving, share,
                              totals.deadline_misses, totals.mean_delay_s, totals.p95_delay_s,
                              totals.mean_runs))
    return result


def as_json(result: Sequence[Row]) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        return round(value, 6) if isinstance(value, float) else value

    return {"results": [{key: clean(asdict(row)[key]) for key in JSON_KEYS} for row in result]}


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h"


def print_table(result: Sequence[Row], title: str) -> None:
    """A compact rich table on stdout (120 columns when stdout is not a terminal, 140 with
    the ``kind`` and ``runs`` columns, which appear where some jobs are interruptible)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    kinds = any(r.kind != "whole" for r in result)
    table = Table(title=inert(title), title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False)
    columns = ["policy", "region", *(["kind"] if kinds else []), "jobs", "kWh", "kg CO2",
               "g/kWh", "saved", "of oracle", "missed", "delay", "p95 delay",
               *(["runs"] if kinds else [])]
    for column in columns:
        table.add_column(column, justify="left" if column in ("policy", "region", "kind")
                         else "right")
    for r in result:
        table.add_row(inert(r.policy), inert(r.region), *([r.kind] if kinds else []),
                      str(r.jobs), f"{r.energy_kwh:,.0f}", f"{r.emissions_g / 1000:,.1f}",
                      _number(r.mean_intensity), _pct(r.saving_pct), _pct(r.oracle_share_pct),
                      f"{r.deadline_misses:g}", _hours(r.mean_delay_s), _hours(r.p95_delay_s),
                      *([f"{r.mean_runs:.1f}"] if kinds else []))
    # markup=False: region names and titles come from data files and are printed as text.
    console = Console(highlight=False, soft_wrap=False, markup=False,
                      width=None if sys.stdout.isatty() else 140 if kinds else 120)
    console.print(table)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def plot(result: Sequence[Row], path: Path, title: str) -> None:
    """Bar chart of saving vs ``now`` per policy, grouped by region (and kind), written to
    ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = any(r.kind != "whole" for r in result)

    def label(row: Row) -> str:
        return f"{row.region}\n{row.kind}" if kinds else row.region

    groups = list(dict.fromkeys(label(r) for r in result))
    policies = [p for p in POLICIES if any(r.policy == p for r in result)]
    width = 0.8 / max(len(policies), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 4))
    for k, policy in enumerate(policies):
        values = [next((r.saving_pct or 0.0 for r in result
                        if r.policy == policy and label(r) == g), 0.0) for g in groups]
        axes.bar(np.arange(len(groups)) + k * width, values, width, label=policy)
    axes.set_xticks(np.arange(len(groups)) + width * (len(policies) - 1) / 2, groups)
    axes.set_ylabel("emissions saved vs run-now (%)")
    axes.set_title(title)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.legend()
    figure.tight_layout()
    try:
        figure.savefig(path, format="png")
    except OSError as error:
        raise BadInput(f"--plot {path}: cannot write ({error.strerror or error})") from None
    finally:
        plt.close(figure)
    sys.stderr.write(f"wrote {path}\n")
