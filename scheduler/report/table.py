"""The human report: one plain text line per job, then the totals per signal in words."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from scheduler import accounting, render
from scheduler.report.building import Report, SignalTotals
from scheduler.timespec import format_local, format_local_iso

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


# The jobs columns the table reads (each a key of the job document too).
TABLE_READS = ("id", "name", "state", "run_region", "started_at", "ended_at", "energy_kwh",
               "energy_method", "planned_intensity", "actual_intensity", "intensity_estimated",
               "scheduled_emissions_g", "actual_emissions_g", "run_now_emissions_g", "saved_g",
               *accounting.HELD_READS)


def page_cells(jobs: Mapping[str, Sequence[Any]]) -> list[Sequence[str]]:
    """The cells of the human table (TABLE_COLUMNS) for a page of jobs (TABLE_READS ->
    one value per job), a column at a time."""
    starts = [parse_time(text) for text in jobs["started_at"]]
    # An interruptible job's hours are those its runs held the hardware, not its pauses.
    held = (accounting.held_column(*(jobs[name] for name in accounting.HELD_READS))
            or [None] * len(starts))
    hours = [seconds / 3600 if seconds is not None else
             None if started is None or ended is None else
             (datetime.fromisoformat(ended) - started).total_seconds() / 3600
             for started, ended, seconds in zip(starts, jobs["ended_at"], held, strict=True)]
    actual = [cell + "*" if estimated else cell for cell, estimated in
              zip(_numbers(jobs["actual_intensity"]), jobs["intensity_estimated"], strict=True)]
    return [
        list(map(str, jobs["id"])),
        render.inert_column(jobs["name"]),  # user text: control characters escaped
        list(jobs["state"]),
        render.inert_column([region or "-" for region in jobs["run_region"]]),
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


@dataclass(frozen=True)
class Table:
    """Every job's table cells (a column at a time: the widths need every row), and
    whether any actual intensity is an estimate."""

    cells: list[list[str]]
    estimated: bool

    @classmethod
    def of(cls, report: Report) -> Table:
        cells: list[list[str]] = [[] for _ in TABLE_COLUMNS]
        estimated = False
        for page in report.pages(TABLE_READS):
            for column, page_column in zip(cells, page_cells(page), strict=True):
                column.extend(page_column)
            estimated = estimated or any(page["intensity_estimated"])
        return cls(cells, estimated)

    @property
    def rows(self) -> list[tuple[str, ...]]:
        return list(zip(*self.cells, strict=True))


def write_text(report: Report, out: IO[str]) -> None:
    """Human output: one line per job, then totals per signal naming signal and basis."""
    table = Table.of(report)
    job_count = len(table.cells[0])
    period = (f"started from {format_local(report.since) if report.since else 'the start'} "
              f"to {format_local(report.until) if report.until else 'now'}")
    out.write(f"Emissions report: {job_count} finished job(s) {period}\n")
    if not job_count:
        return
    out.write("\n")
    write_plain_table(TABLE_COLUMNS, table.cells, out)
    if table.estimated:
        out.write("* actual intensity estimated from forecasts (the provider published no "
                  "actuals yet)\n")
    for signal, total in report.totals().items():
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
        ("with estimated intensity", str(total.estimated_intensity_jobs)),
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
