"""The human report: one plain text line per job, then the totals per signal in words."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from scheduler import render
from scheduler.report.building import Report, SignalTotals, gc_paused, merged_totals
from scheduler.timespec import format_local, format_local_iso

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


def parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def table_columns(report: Report) -> list[list[str]]:
    """The cells of the human table (TABLE_COLUMNS), a column at a time."""
    jobs = report.columns
    starts = [parse_time(text) for text in jobs["started_at"]]
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


@gc_paused
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
    for chunk in chunks(lines, "\n"):
        out.write(chunk + "\n")


def chunks(items: Iterable[str], separator: str) -> Iterator[str]:
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
