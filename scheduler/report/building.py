"""Which jobs a report holds and their totals per signal.

Totals are kept per signal (``average`` or ``marginal``) and never mix the two: grams of
average intensity and grams of marginal emissions answer different questions. Sums skip
jobs whose value is still unknown (a sum of no known value is None, never 0);
``saved_g`` and ``saved_pct`` use only jobs with both actual and run-now emissions, so
they compare like with like.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, wraps
from operator import itemgetter
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Boolean

from scheduler import accounting, render
from scheduler.config import Config
from scheduler.models import Job, JSONList, UTCDateTime
from scheduler.store import ReportPart, Store

P = ParamSpec("P")
R = TypeVar("R")

TOTAL_KEYS = ("jobs", "energy_kwh", "scheduled_emissions_g", "actual_emissions_g",
              "run_now_emissions_g", "saved_g", "saved_pct", "forecast_mae",
              "deadline_misses", "awaiting_actuals", "embodied_g", "sci_jobs", "sci_per_job_g",
              "energy_jobs", "scheduled_jobs", "actual_jobs", "run_now_jobs", "saved_jobs",
              "estimated_intensity_jobs")


def gc_paused(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with the cyclic garbage collector paused: a report over 100,000 jobs
    allocates millions of objects and no cycles, and the collector's passes over them cost
    a tenth of its time. Collection resumes (where it was on) on return."""

    @wraps(function)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return paused


@dataclass(frozen=True)
class SignalTotals:
    """Totals over the jobs of one signal; see the module docstring for what sums skip.

    It keeps the values it sums, and each sum is ``math.fsum``'s (correctly rounded
    whatever the order), so the totals of a report built in parts (``merged``) equal those
    of the whole, bit for bit.
    """

    bases: frozenset[str] = frozenset()  # the bases its regions' providers state
    jobs: int = 0
    energy_values: Sequence[float] = ()
    scheduled_values: Sequence[float] = ()
    actual_values: Sequence[float] = ()
    run_now_values: Sequence[float] = ()
    compared: Sequence[tuple[float, float]] = ()  # (actual, run-now) where both are known
    forecast_errors: Sequence[float] = ()
    deadline_misses: int = 0
    awaiting_actuals: int = 0
    estimated: int = 0
    embodied_values: Sequence[float] = ()
    sci_values: Sequence[float] = ()  # each job's SCI, where known

    @property
    def basis(self) -> str:
        return ", ".join(sorted(self.bases)) or "not stated"

    @property
    def energy_kwh(self) -> float | None:
        return _sum(self.energy_values)

    @property
    def scheduled_emissions_g(self) -> float | None:
        return _sum(self.scheduled_values)

    @property
    def actual_emissions_g(self) -> float | None:
        return _sum(self.actual_values)

    @property
    def run_now_emissions_g(self) -> float | None:
        return _sum(self.run_now_values)

    @cached_property
    def saved_g(self) -> float | None:
        return _sum([now - ran for ran, now in self.compared])

    # How many jobs each sum covers: the others' value is still unknown.
    @property
    def energy_jobs(self) -> int:
        return len(self.energy_values)

    @property
    def scheduled_jobs(self) -> int:
        return len(self.scheduled_values)

    @property
    def actual_jobs(self) -> int:
        return len(self.actual_values)

    @property
    def run_now_jobs(self) -> int:
        return len(self.run_now_values)

    @property
    def saved_jobs(self) -> int:
        return len(self.compared)

    @property
    def estimated_intensity_jobs(self) -> int:
        return self.estimated

    @cached_property
    def saved_pct(self) -> float | None:
        compared_run_now_g = math.fsum(now for _, now in self.compared)
        if self.saved_g is None or not compared_run_now_g:
            return None
        return 100.0 * self.saved_g / compared_run_now_g

    @property
    def embodied_g(self) -> float | None:
        """None where no job's embodied share is known (no region states its hardware)."""
        return math.fsum(self.embodied_values) if self.embodied_values else None

    @property
    def sci_jobs(self) -> int:
        return len(self.sci_values)

    @property
    def sci_per_job_g(self) -> float | None:
        """The SCI (gCO2eq per job) over the jobs whose every term is known."""
        return math.fsum(self.sci_values) / len(self.sci_values) if self.sci_values else None

    @property
    def forecast_mae(self) -> float | None:
        if not self.forecast_errors:
            return None
        return math.fsum(map(abs, self.forecast_errors)) / len(self.forecast_errors)

    def merged(self, other: SignalTotals) -> SignalTotals:
        """The totals over both sets of jobs."""
        return SignalTotals(
            self.bases | other.bases, self.jobs + other.jobs,
            [*self.energy_values, *other.energy_values],
            [*self.scheduled_values, *other.scheduled_values],
            [*self.actual_values, *other.actual_values],
            [*self.run_now_values, *other.run_now_values],
            [*self.compared, *other.compared],
            [*self.forecast_errors, *other.forecast_errors],
            self.deadline_misses + other.deadline_misses,
            self.awaiting_actuals + other.awaiting_actuals,
            self.estimated + other.estimated,
            [*self.embodied_values, *other.embodied_values],
            [*self.sci_values, *other.sci_values])

    def as_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in TOTAL_KEYS}


def _sum(values: Sequence[float]) -> float | None:
    """The sum of the known values; None (unknown, never 0) where no value is known."""
    return math.fsum(values) if values else None


def merged_totals(*parts: Mapping[str, SignalTotals]) -> dict[str, SignalTotals]:
    """Totals per signal over reports of disjoint jobs, signals in order of first use."""
    merged: dict[str, SignalTotals] = {}
    for totals in parts:
        for signal, total in totals.items():
            merged[signal] = merged[signal].merged(total) if signal in merged else total
    return merged


@dataclass(frozen=True)
class Report:
    """The reported jobs column by column (100,000 dicts would cost seconds), and totals.

    ``columns`` maps each key of the ``show --json`` job object, in its order, to one value
    per job, by start time; the values are those of ``show --json`` except that the list
    keys (``LIST_KEYS``) hold each list as its stored JSON text. ``jobs`` builds the job
    objects themselves.
    """

    since: datetime | None
    until: datetime | None
    regions: list[str]
    columns: dict[str, Sequence[Any]]
    signals: list[str]  # each job's signal, same order
    totals: dict[str, SignalTotals]

    @property
    def job_count(self) -> int:
        return len(self.signals)

    @cached_property
    @gc_paused
    def jobs(self) -> list[dict[str, Any]]:
        """The job objects as in show --json, by start time."""
        columns = dict(self.columns)
        for key in LIST_KEYS:
            columns[key] = _parse_json_texts(columns[key])
        return [dict(zip(columns, values, strict=True)) for values in
                zip(*columns.values(), strict=True)]

    def as_json(self) -> dict[str, Any]:
        return {"jobs": self.jobs,
                "totals": {name: t.as_json() for name, t in self.totals.items()}}


# Columns a report reads besides the job object's own (render.JOB_FIELDS), in this order.
REVIEW_COLUMNS = ("energy_kwh", "energy_method", "energy_note", "actual_intensity",
                  "intensity_estimated", "actuals_state", "run_now_actual_intensity",
                  "planned_window_actual_intensity")
LIST_KEYS = tuple(name for name in render.JOB_FIELDS
                  if isinstance(Job.__table__.columns[name].type, JSONList))
FLAG_KEYS = tuple(name for name in render.JOB_FIELDS
                  if isinstance(Job.__table__.columns[name].type, Boolean))
# Text columns that are ASCII by construction: times (ISO-8601, written by SQLite) and
# gridshift's own words (states, signals, energy methods, review states).
ASCII_KEYS = frozenset((*(name for name in render.JOB_FIELDS
                          if isinstance(Job.__table__.columns[name].type, UTCDateTime)),
                        "planned_end", "state", "signal", "energy_method", "actuals_state"))
# What the human table and the totals read: half the columns, a fraction of the times.
TABLE_READS = ("id", "name", "state", "duration_s", "power_watts", "signal",
               "planned_intensity", "run_region", "started_at", "ended_at", "deadline_missed",
               *REVIEW_COLUMNS)


@gc_paused
def build(store: Store, config: Config, since: datetime | None, until: datetime | None,
          regions: Sequence[str], table_only: bool = False, part: ReportPart = None) -> Report:
    """Every finished job that started in [since, until) in ``regions`` (default all); with
    ``part``, only those before or from a job (see ``Store.report_rows``).

    ``table_only``: read just what the human table and the totals show (``TABLE_READS``),
    so ``columns`` holds only some of the job object's keys and ``jobs`` must not be used.
    """
    names = TABLE_READS if table_only else (*render.JOB_FIELDS, *REVIEW_COLUMNS,
                                            *(column for _, column in render.OWNER_FIELDS))
    rows = store.report_rows(names, since, until, regions, part)
    stored: dict[str, Sequence[Any]] = (dict(zip(names, zip(*rows, strict=True), strict=True))
                                        if rows else dict.fromkeys(names, ()))
    columns = job_columns(stored, config)
    signal_of: dict[tuple[str | None, str | None], str] = {}
    for planned_signal, region in set(zip(columns["signal"], columns["run_region"], strict=True)):
        signal_of[planned_signal, region] = planned_signal or (
            config.signal_of(region) if region in config.regions else "average")
    signals = [signal_of[key] for key in
               zip(columns["signal"], columns["run_region"], strict=True)]
    totals = {signal: _signal_totals(config, columns, stored["planned_window_actual_intensity"],
                                     indices)
              for signal, indices in _indices_by_value(signals).items()}
    return Report(since, until, list(regions), columns, signals, totals)


def job_columns(stored: Mapping[str, Sequence[Any]],
                config: Config | None = None) -> dict[str, Sequence[Any]]:
    """The job object's columns (see ``Report``) from the columns of ``store.report_rows``
    read with ``render.JOB_FIELDS + REVIEW_COLUMNS`` (or with ``TABLE_READS``: then only
    the keys those columns give).

    Same keys, order and values as ``render.job_json`` with the same ``config``
    (tests/test_report.py checks it), a column at a time.
    """
    columns: dict[str, Sequence[Any]] = {name: stored[name] for name in render.JOB_FIELDS
                                         if name in stored}
    for name in FLAG_KEYS:
        columns[name] = [bool(value) for value in stored[name]]
    if "planned_start" in stored:
        parse = datetime.fromisoformat
        lengths = {seconds: timedelta(seconds=seconds) for seconds in set(stored["duration_s"])}
        columns["planned_end"] = [
            None if start is None else (parse(start) + lengths[seconds]).isoformat()
            for start, seconds in zip(stored["planned_start"], stored["duration_s"],
                                      strict=True)]
    emissions = accounting.emission_columns(
        stored["power_watts"], stored["duration_s"], stored["planned_intensity"],
        stored["energy_kwh"], stored["actual_intensity"], stored["run_now_actual_intensity"])
    columns.update({
        "energy_kwh": stored["energy_kwh"],
        "energy_method": stored["energy_method"],
        "energy_note": stored["energy_note"],
        "actual_intensity": stored["actual_intensity"],
        "intensity_estimated": [None if value is None else bool(value)
                                for value in stored["intensity_estimated"]],
        "actuals_state": stored["actuals_state"],
        "scheduled_emissions_g": emissions.scheduled_g,
        "actual_emissions_g": emissions.actual_g,
        "run_now_emissions_g": emissions.run_now_g,
        "saved_g": emissions.saved_g,
    })
    if config is None:
        embodied: Sequence[float | None] = [None] * len(emissions.actual_g)
        sci: Sequence[float | None] = embodied
    else:
        embodied, sci = accounting.sci_columns(config, stored["run_region"], stored["started_at"],
                                               stored["ended_at"], emissions.actual_g)
    columns.update({"embodied_g": embodied, "sci_g": sci})
    for key, column in render.OWNER_FIELDS:
        if column in stored:
            columns[key] = stored[column]
    return columns


def _indices_by_value(values: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        groups.setdefault(value, []).append(index)
    return groups


def _signal_totals(config: Config, columns: Mapping[str, Sequence[Any]],
                   window_actual: Sequence[float | None], indices: list[int]) -> SignalTotals:
    """Totals over the jobs at ``indices`` (those of one signal)."""
    every = len(indices) == len(window_actual)

    def pick(values: Sequence[Any]) -> Sequence[Any]:
        if every:
            return values
        return [values[indices[0]]] if len(indices) == 1 else itemgetter(*indices)(values)

    actual, run_now = pick(columns["actual_emissions_g"]), pick(columns["run_now_emissions_g"])
    return SignalTotals(
        bases=_bases(config, set(pick(columns["run_region"]))),
        jobs=len(indices),
        energy_values=_known(pick(columns["energy_kwh"])),
        scheduled_values=_known(pick(columns["scheduled_emissions_g"])),
        actual_values=_known(actual),
        run_now_values=_known(run_now),
        compared=[(ran, now) for ran, now in zip(actual, run_now, strict=True)
                  if ran is not None and now is not None],
        forecast_errors=[planned - window for planned, window in
                         zip(pick(columns["planned_intensity"]), pick(window_actual),
                             strict=True) if planned is not None and window is not None],
        deadline_misses=sum(pick(columns["deadline_missed"])),
        awaiting_actuals=sum(state in accounting.AWAITING
                             for state in pick(columns["actuals_state"])),
        estimated=sum(bool(flag) for flag in pick(columns["intensity_estimated"])),
        embodied_values=_known(pick(columns["embodied_g"])),
        sci_values=_known(pick(columns["sci_g"])),
    )


def _known(values: Sequence[float | None]) -> list[float]:
    """The known values (unknown ones are skipped)."""
    return [value for value in values if value is not None]


def _bases(config: Config, regions: set[str]) -> frozenset[str]:
    """The bases (lifecycle or direct) the providers of these regions state, if any."""
    return frozenset(config.provider_for(r).basis or "not stated" for r in regions
                     if r in config.regions)


def _parse_json_texts(texts: Sequence[str | None]) -> list[Any]:
    """Each JSON text parsed, with one json.loads for them all (100,000 calls cost a second)."""
    parsed: list[Any] = json.loads("[" + ",".join("null" if t is None else t for t in texts)
                                   + "]")
    return parsed
