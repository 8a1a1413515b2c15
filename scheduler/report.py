"""``gridshift report``: what the plan promised, what happened, and what running at once
would have cost, per job and in total, as a table, JSON, CSV, a PNG chart or an HTML page.

Totals are kept per signal (``average`` or ``marginal``) and never mix the two: grams of
average intensity and grams of marginal emissions answer different questions. Sums skip
jobs whose value is still unknown; ``saved_g`` and ``saved_pct`` use only jobs with both
actual and run-now emissions, so they compare like with like.

matplotlib (the ``plot`` extra) is imported only for ``--plot`` and ``--html``.
"""

from __future__ import annotations

import base64
import gc
import html
import io
import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, wraps
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any, ParamSpec, TypeVar

import orjson
from sqlalchemy import Boolean

from scheduler import accounting, render
from scheduler.config import Config
from scheduler.errors import GridshiftError
from scheduler.models import Job, JSONList, UTCDateTime
from scheduler.store import ReportPart, Store
from scheduler.timespec import format_local, format_local_iso

P = ParamSpec("P")
R = TypeVar("R")

TOTAL_KEYS = ("jobs", "energy_kwh", "scheduled_emissions_g", "actual_emissions_g",
              "run_now_emissions_g", "saved_g", "saved_pct", "forecast_mae",
              "deadline_misses", "awaiting_actuals", "embodied_g", "sci_jobs", "sci_per_job_g",
              "energy_jobs", "scheduled_jobs", "actual_jobs", "run_now_jobs", "saved_jobs",
              "estimated_intensity_jobs")
# Chart geometry: the PNG is FIGURE_WIDTH_PX wide and PANEL_HEIGHT_PX per panel (one per
# region, plus the bar chart).
FIGURE_WIDTH_PX = 1200
PANEL_HEIGHT_PX = 350
DPI = 100
MAX_BARS = 40


def _gc_paused(function: Callable[P, R]) -> Callable[P, R]:
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
    @_gc_paused
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


@_gc_paused
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


# Text, JSON, CSV ----------------------------------------------------------------------------

TABLE_COLUMNS = ("id", "name", "state", "region", "started", "hours", "kWh", "method",
                 "plan g/kWh", "actual g/kWh", "scheduled g", "actual g", "run-now g",
                 "saved g")


def _numbers(values: Sequence[float | None], digits: int = 0) -> list[str]:
    form = f"%.{digits}f"
    if None not in values:
        return list(map(form.__mod__, values))
    return ["-" if value is None else form % value for value in values]


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def table_columns(report: Report) -> list[list[str]]:
    """The cells of the human table (TABLE_COLUMNS), a column at a time."""
    jobs = report.columns
    starts = [_time(text) for text in jobs["started_at"]]
    hours = [None if started is None or ended is None else
             (datetime.fromisoformat(ended) - started).total_seconds() / 3600
             for started, ended in zip(starts, jobs["ended_at"], strict=True)]
    actual = [cell + "*" if estimated else cell for cell, estimated in
              zip(_numbers(jobs["actual_intensity"]), jobs["intensity_estimated"], strict=True)]
    return [
        list(map(str, jobs["id"])),
        list(map(render.inert, jobs["name"])),  # user text: control characters escaped
        list(jobs["state"]),
        [render.inert(region) if region else "-" for region in jobs["run_region"]],
        format_local_iso(jobs["started_at"]),
        _numbers(hours, 2),
        _numbers(jobs["energy_kwh"], 3),
        [method or "-" for method in jobs["energy_method"]],
        _numbers(jobs["planned_intensity"]),
        actual,
        _numbers(jobs["scheduled_emissions_g"]),
        _numbers(jobs["actual_emissions_g"]),
        _numbers(jobs["run_now_emissions_g"]),
        _numbers(jobs["saved_g"]),
    ]


def table_rows(report: Report) -> list[tuple[str, ...]]:
    return list(zip(*table_columns(report), strict=True))


@dataclass(frozen=True)
class TablePart:
    """What the human output shows of some of a report's jobs: their table cells (a
    column at a time), whether any intensity is estimated, and their totals."""

    cells: list[list[str]]
    estimated: bool
    totals: dict[str, SignalTotals]

    @classmethod
    def of(cls, report: Report) -> TablePart:
        return cls(table_columns(report), any(report.columns["intensity_estimated"]),
                   report.totals)


def write_text(report: Report, out: IO[str]) -> None:
    """Human output: one line per job, then totals per signal naming signal and basis."""
    write_table_parts(report.since, report.until, [TablePart.of(report)], out)


@_gc_paused
def write_table_parts(since: datetime | None, until: datetime | None,
                      parts: Sequence[TablePart], out: IO[str]) -> None:
    """``write_text`` of the jobs of ``parts``, in order (see ``bulk``)."""
    cells = parts[0].cells if len(parts) == 1 else [
        list(itertools.chain.from_iterable(part.cells[column] for part in parts))
        for column in range(len(TABLE_COLUMNS))]
    job_count = len(cells[0])
    period = (f"started from {format_local(since) if since else 'the start'} "
              f"to {format_local(until) if until else 'now'}")
    out.write(f"Emissions report: {job_count} finished job(s) {period}\n")
    if not job_count:
        return
    out.write("\n")
    write_plain_table(TABLE_COLUMNS, cells, out)
    if any(part.estimated for part in parts):
        out.write("* actual intensity estimated from forecasts (the provider published no "
                  "actuals yet)\n")
    for signal, total in merged_totals(*(part.totals for part in parts)).items():
        out.write(f"\nTotals, {signal} intensity signal ({total.basis} basis), gCO2eq:\n")
        lines = total_lines(total)
        width = max(len(label) for label, _ in lines)
        for label, value in lines:
            out.write(f"  {label:<{width}}  {value}\n")


def total_lines(total: SignalTotals) -> list[tuple[str, str]]:
    """The totals of one signal as (label, value) lines in words: an unknown sum is "-",
    and a sum over only some of the jobs says over how many."""

    def over(text: str, known: int) -> str:
        if not known:
            return "-"
        return text if known == total.jobs else f"{text} over {known} of {total.jobs} jobs"

    saved_pct = "" if total.saved_pct is None else f" ({total.saved_pct:.1f}%)"
    return [
        ("jobs", str(total.jobs)),
        ("energy", over(f"{total.energy_kwh or 0.0:.3f} kWh", total.energy_jobs)),
        ("scheduled (plan's forecast x declared power)",
         over(f"{total.scheduled_emissions_g or 0.0:.0f} g", total.scheduled_jobs)),
        ("actual (measured energy x actual intensity)",
         over(f"{total.actual_emissions_g or 0.0:.0f} g", total.actual_jobs)),
        ("run now (same energy, started at submission)",
         over(f"{total.run_now_emissions_g or 0.0:.0f} g", total.run_now_jobs)),
        ("saved", over(f"{total.saved_g or 0.0:.0f} g{saved_pct}", total.saved_jobs)),
        ("forecast mean absolute error", f"{_number(total.forecast_mae, 1)} g/kWh"),
        ("deadline misses", str(total.deadline_misses)),
        ("awaiting actuals", str(total.awaiting_actuals)),
        ("with estimated intensity", str(total.estimated)),
        ("embodied (hardware's share)", f"{_number(total.embodied_g)} g"),
        (f"SCI per job ({total.sci_jobs} with every term known)",
         f"{_number(total.sci_per_job_g)} g"),
    ]


def write_plain_table(headers: Sequence[str], columns: Sequence[Sequence[str]],
                      out: IO[str]) -> None:
    """A fixed-width text table from its cells a column at a time (fast enough for 100,000
    rows, unlike a rich table): one %-format per line does all the padding."""
    widths = [max(len(header), *map(len, cells)) if cells else len(header)
              for header, cells in zip(headers, columns, strict=True)]
    line = "  ".join(f"%-{width}s" for width in widths[:-1]) + "  %s"
    _write_lines(out, [line % tuple(headers), "  ".join("-" * width for width in widths)])
    _write_lines(out, map(line.__mod__, zip(*columns, strict=True)))


def _write_lines(out: IO[str], lines: Iterable[str]) -> None:
    """Each line and a newline, written a few thousand lines at a time."""
    for chunk in _chunks(lines, "\n"):
        out.write(chunk + "\n")


def _chunks(items: Iterable[str], separator: str) -> Iterator[str]:
    """``separator.join(items)`` in pieces of a few thousand items, without the separator
    between pieces: one write of a 100 MB string costs several times more than many of a
    few hundred kB."""
    batch: list[str] = []
    for text in items:
        batch.append(text)
        if len(batch) == ITEMS_PER_CHUNK:
            yield separator.join(batch)
            batch.clear()
    if batch:
        yield separator.join(batch)


ITEMS_PER_CHUNK = 2000


# A report's JSON or CSV is a head, a body of one item per job, and a tail: so it can be
# built in two parts (``bulk``), whose bodies are joined by BODY_SEPARATOR.
BODY_SEPARATOR = {"json": ",", "csv": ""}


def write_json(report: Report, out: IO[str]) -> None:
    """One compact document: {"jobs": [...], "totals": {...}}."""
    out.write(json_head())
    write_body(report, "json", out)
    out.write(json_tail(report.totals))


def json_head() -> str:
    return '{"jobs":['


def json_tail(totals: Mapping[str, SignalTotals]) -> str:
    return ('],"totals":' + json.dumps({name: total.as_json() for name, total in totals.items()},
                                       separators=(",", ":")) + "}\n")


def write_csv(report: Report, out: IO[str]) -> None:
    """One row per job with the keys of the JSON job objects; lists as JSON text. Cells as
    the csv module writes them (minimal quoting)."""
    out.write(csv_head(report))
    write_body(report, "csv", out)


def csv_head(report: Report) -> str:
    columns = list(report.columns) if report.columns else _job_keys()
    return ",".join(map(_csv_text, columns)) + "\n"


@_gc_paused
def write_body(report: Report, form: str, out: IO[str]) -> None:
    """The report's jobs as JSON objects joined by commas (``form`` "json") or CSV lines
    (``form`` "csv"), built a column at a time: json.dumps or csv.writer over 100,000 job
    rows costs seconds."""
    if not report.job_count:
        return
    if form == "csv":
        for chunk in _chunks(map(",".join, zip(*map(_csv_cells, report.columns.values()),
                                               strict=True)), "\n"):
            out.write(chunk + "\n")
        return
    # orjson encodes a few thousand job dicts at a time; every text it gets is ASCII
    # (see _json_values), so the document is ASCII as json.dumps would write it.
    columns = {key: _json_values(key, values) for key, values in report.columns.items()}
    keys = list(columns)
    rows = zip(*columns.values(), strict=True)
    lead = b""
    while batch := list(itertools.islice(rows, ITEMS_PER_CHUNK)):
        encoded = orjson.dumps(list(map(dict, map(zip, itertools.repeat(keys), batch))))
        write_ascii(out, lead + encoded[1:-1])  # without the list's brackets
        lead = b","


def write_ascii(out: IO[str], data: bytes) -> None:
    """Write ASCII ``data`` to the text stream ``out``: to its byte buffer where it has
    one, else decoded."""
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write(data.decode("ascii"))
        return
    out.flush()
    buffer.write(data)


def _json_values(key: str, values: Sequence[Any]) -> Sequence[Any]:
    """One column's values as orjson should encode them: lists (stored as JSON text) and
    text that is not ASCII as ready JSON (json.dumps' ASCII escapes, which also carry the
    surrogates a non-UTF-8 command line leaves and orjson refuses), the rest as they are."""
    if key in LIST_KEYS:
        return [None if text is None else orjson.Fragment(text) for text in values]
    if key not in ASCII_KEYS and isinstance(_first_known(values), str) and not all(
            map(str.isascii, filter(None, values))):
        return [value if value is None or value.isascii() else
                orjson.Fragment(encode_basestring_ascii(value)) for value in values]
    return values


def _number_texts(values: Sequence[float | int | bool | None]) -> list[str]:
    """Numbers, booleans and nulls as JSON text: one orjson array split at its commas
    (json.dumps spends most of a report's encoding time on float repr). Floats come out
    as the shortest text that reads back to the same number, as repr's do."""
    return orjson.dumps(values).decode("ascii")[1:-1].split(",")


def _first_known(values: Sequence[Any]) -> Any:
    return next((value for value in values if value is not None), None)


def _csv_cells(values: Sequence[Any]) -> Sequence[str]:
    first = _first_known(values)
    if isinstance(first, str):
        known = values if None not in values else ["" if v is None else v for v in values]
        if _needs_quotes("".join(known)):  # then look at each
            return list(map(_csv_text, known))
        return known
    if isinstance(first, bool):  # as the csv module writes them
        return ["" if value is None else str(value) for value in values]
    # Numbers: JSON's text is a CSV cell too (floats as the shortest exact text).
    texts = _number_texts(values)
    return texts if None not in values else ["" if text == "null" else text for text in texts]


def _needs_quotes(text: str) -> bool:
    return '"' in text or "," in text or "\n" in text or "\r" in text


def _csv_text(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if _needs_quotes(text) else text


def _job_keys() -> list[str]:
    """The job object's keys, from a blank row (for the header of an empty CSV)."""
    blank: Any = SimpleNamespace(**{column.name: None for column in Job.__table__.columns})
    blank.argv, blank.regions, blank.power_watts, blank.duration_s = [], [], 0.0, 0
    return list(render.job_json(blank))


# Charts -------------------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise GridshiftError("charts need matplotlib: pip install 'gridshift[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _dates() -> Any:
    import matplotlib.dates

    return matplotlib.dates


def plot_regions(report: Report) -> list[str]:
    """The regions that get a chart panel: every region a reported job ran in."""
    return list(dict.fromkeys(job["run_region"] for job in report.jobs if job["run_region"]))


@dataclass(frozen=True)
class _Interval:
    region: str
    planned_start: datetime | None
    planned_length: timedelta
    started: datetime
    ended: datetime | None


def _intervals(report: Report) -> list[_Interval]:
    return [_Interval(job["run_region"], _time(job["planned_start"]),
                      timedelta(seconds=job["duration_s"]), datetime.fromisoformat(
                          job["started_at"]), _time(job["ended_at"]))
            for job in report.jobs]


def _period(report: Report, intervals: Sequence[_Interval]) -> tuple[datetime, datetime]:
    starts = [i.started for i in intervals]
    starts += [i.planned_start for i in intervals if i.planned_start is not None]
    ends = [i.ended or i.started for i in intervals]
    ends += [i.planned_start + i.planned_length for i in intervals
             if i.planned_start is not None]
    # The jobs' span (within --since/--until), with a margin so the edges stay visible.
    start = max(min(starts), report.since) if report.since else min(starts)
    end = min(max(ends), report.until) if report.until else max(ends)
    margin = max((end - start) / 20, timedelta(minutes=5))
    return start - margin, end + margin


def _draw_region(axes: Any, intervals: Sequence[_Interval], store: Store, config: Config,
                 region: str, start: datetime, end: datetime) -> None:
    settings = config.regions.get(region)
    title = region
    if settings is not None:
        signal = config.providers[settings.provider].signal
        title = f"{region} ({settings.provider} zone {settings.zone}, {signal} signal)"
        for kind, colour in (("forecast", "tab:blue"), ("actual", "tab:red")):
            series = store.series(settings.provider, settings.zone, start, end, kind=kind)
            if len(series):
                times = [*series.starts, series.ends[-1]]
                values = [*series.values, series.values[-1]]
                label = "forecast (newest vintage)" if kind == "forecast" else "actual"
                axes.step(times, values, where="post", color=colour, label=label)
    here = [i for i in intervals if i.region == region]
    planned = _union([(i.planned_start, i.planned_length) for i in here
                      if i.planned_start is not None])
    ran = _union([(i.started, i.ended - i.started) for i in here if i.ended is not None])
    band = axes.get_xaxis_transform()  # x in data, y in axes fractions
    axes.broken_barh(planned, (0.02, 0.05), transform=band, color="tab:gray", alpha=0.5,
                     label="planned run")
    axes.broken_barh(ran, (0.08, 0.05), transform=band, color="tab:green", alpha=0.7,
                     label="actual run")
    axes.set_xlim(start, end)
    axes.set_ylim(bottom=0)
    locator = _dates().AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(_dates().ConciseDateFormatter(locator))
    axes.set_ylabel("gCO2eq/kWh")
    axes.set_title(title, loc="left")
    axes.legend(loc="upper right", fontsize="small")


def _union(spans: list[tuple[datetime, timedelta]]) -> list[tuple[datetime, timedelta]]:
    """The same time covered by as few (start, length) spans as possible: a band drawn from
    100,000 overlapping bars looks the same and costs seconds more to draw."""
    merged: list[tuple[datetime, timedelta]] = []
    for start, length in sorted(spans):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            first, covered = merged[-1]
            merged[-1] = (first, max(covered, start + length - first))
        else:
            merged.append((start, length))
    return merged


def _draw_bars(axes: Any, report: Report) -> None:
    pairs = [(f"{job['id']} {signal}", job["actual_emissions_g"], job["run_now_emissions_g"])
             for job, signal in zip(report.jobs, report.signals, strict=True)
             if job["actual_emissions_g"] is not None and job["run_now_emissions_g"] is not None]
    shown = pairs[-MAX_BARS:]
    positions = list(range(len(shown)))
    axes.bar([p - 0.2 for p in positions], [a for _, a, _ in shown], width=0.4,
             color="tab:green", label="actual")
    axes.bar([p + 0.2 for p in positions], [r for _, _, r in shown], width=0.4,
             color="tab:orange", label="run now")
    # Upright, 40 labels of "id signal" would overlap in 1200 px.
    axes.set_xticks(positions, [label for label, _, _ in shown], fontsize="small",
                    rotation=90)
    axes.set_xlabel("job id and signal")
    axes.set_ylabel("gCO2eq")
    latest = f" (latest {len(shown)} of {len(pairs)})" if len(pairs) > len(shown) else ""
    axes.set_title(f"actual versus run-now emissions per job{latest}", loc="left")
    if shown:
        axes.legend(loc="upper right", fontsize="small")


def _panels(report: Report, store: Store, config: Config) -> list[Callable[[Any], None]]:
    """One drawing function per panel: each region, then the bar chart."""
    panels: list[Callable[[Any], None]] = []
    if report.jobs:
        intervals = _intervals(report)
        start, end = _period(report, intervals)
        for region in plot_regions(report):
            def draw(axes: Any, region: str = region) -> None:
                _draw_region(axes, intervals, store, config, region, start, end)
            panels.append(draw)
    panels.append(lambda axes: _draw_bars(axes, report))
    return panels


def _png(plt: Any, figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()


def plot_png(report: Report, store: Store, config: Config) -> bytes:
    """All panels stacked in one PNG, FIGURE_WIDTH_PX x PANEL_HEIGHT_PX per panel."""
    plt = _pyplot()
    panels = _panels(report, store, config)
    figure, axes = plt.subplots(len(panels), 1, squeeze=False,
                                figsize=(FIGURE_WIDTH_PX / DPI,
                                         PANEL_HEIGHT_PX * len(panels) / DPI),
                                layout="constrained")
    for draw, ax in zip(panels, axes[:, 0], strict=True):
        draw(ax)
    return _png(plt, figure)


def panel_pngs(report: Report, store: Store, config: Config) -> list[bytes]:
    """Each panel as its own PNG (for the HTML page)."""
    plt = _pyplot()
    images = []
    for draw in _panels(report, store, config):
        figure, ax = plt.subplots(figsize=(FIGURE_WIDTH_PX / DPI, PANEL_HEIGHT_PX / DPI),
                                  layout="constrained")
        draw(ax)
        images.append(_png(plt, figure))
    return images


# HTML ---------------------------------------------------------------------------------------

_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right}
th{background:#f0f0f0}td.text{text-align:left}img{max-width:100%;display:block}"""


@_gc_paused
def html_page(report: Report, images: Sequence[bytes], note: str = "") -> str:
    """A self-contained page: totals, the per-job table and the charts inlined as base64."""
    period = (f"{format_local(report.since) if report.since else 'the start'} to "
              f"{format_local(report.until) if report.until else 'now'}")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>gridshift emissions report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>gridshift emissions report</h1>",
        f"<p>{report.job_count} finished job(s) started from {html.escape(period)}. "
        "Emissions in gCO2eq; an actual intensity marked * is estimated from forecasts.</p>",
    ]
    for signal, total in report.totals.items():
        parts.append(f"<h2>Totals: {html.escape(signal)} intensity signal "
                     f"({html.escape(total.basis)} basis)</h2>")
        parts.append(_html_table(("total", "value"), total_lines(total)))
    parts.append("<h2>Jobs</h2>")
    parts.append(_html_table(TABLE_COLUMNS, table_rows(report), text_columns={1, 2, 3, 4, 7}))
    parts.append("<h2>Charts</h2>")
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    for number, image in enumerate(images, start=1):
        encoded = base64.b64encode(image).decode("ascii")
        parts.append(f'<img alt="chart {number}" src="data:image/png;base64,{encoded}">')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[str]],
                text_columns: set[int] | None = None) -> str:
    text = text_columns if text_columns is not None else {0}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(
            f'<td class="text">{html.escape(cell)}</td>' if i in text
            else f"<td>{html.escape(cell)}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def html_report(report: Report, store: Store, config: Config) -> str:
    """The HTML page with charts, or with a note saying why there are none."""
    try:
        images = panel_pngs(report, store, config)
        note = ""
    except GridshiftError as error:
        images, note = [], f"No charts: {error}"
    return html_page(report, images, note)


def write_file(path: Path, data: bytes) -> None:
    """Write atomically: a reader never sees half a chart or page."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(data)
        temporary.replace(path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise GridshiftError(f"cannot write {path}: {error.strerror or error}") from None
