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
import csv
import html
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from sqlalchemy import Boolean

from scheduler import accounting, render
from scheduler.config import Config
from scheduler.errors import GridshiftError
from scheduler.models import Job, JSONList
from scheduler.store import Store
from scheduler.timespec import format_local

TOTAL_KEYS = ("jobs", "energy_kwh", "scheduled_emissions_g", "actual_emissions_g",
              "run_now_emissions_g", "saved_g", "saved_pct", "forecast_mae",
              "deadline_misses", "awaiting_actuals")
# Chart geometry: the PNG is FIGURE_WIDTH_PX wide and PANEL_HEIGHT_PX per panel (one per
# region, plus the bar chart).
FIGURE_WIDTH_PX = 1200
PANEL_HEIGHT_PX = 350
DPI = 100
MAX_BARS = 40


@dataclass
class SignalTotals:
    """Totals over the jobs of one signal; see the module docstring for what sums skip."""

    basis: str = "not stated"
    jobs: int = 0
    energy_kwh: float = 0.0
    scheduled_emissions_g: float = 0.0
    actual_emissions_g: float = 0.0
    run_now_emissions_g: float = 0.0
    saved_g: float = 0.0
    compared_run_now_g: float = 0.0
    forecast_errors: list[float] = field(default_factory=list)
    deadline_misses: int = 0
    awaiting_actuals: int = 0
    estimated: int = 0

    @property
    def saved_pct(self) -> float | None:
        if not self.compared_run_now_g:
            return None
        return 100.0 * self.saved_g / self.compared_run_now_g

    @property
    def forecast_mae(self) -> float | None:
        if not self.forecast_errors:
            return None
        return sum(abs(e) for e in self.forecast_errors) / len(self.forecast_errors)

    def as_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in TOTAL_KEYS}


@dataclass(frozen=True)
class Report:
    since: datetime | None
    until: datetime | None
    regions: list[str]
    jobs: list[dict[str, Any]]  # job objects as in show --json, by start time
    signals: list[str]  # each job's signal, same order
    totals: dict[str, SignalTotals]

    def as_json(self) -> dict[str, Any]:
        return {"jobs": self.jobs,
                "totals": {name: t.as_json() for name, t in self.totals.items()}}


# Columns a report reads besides the job object's own (render.JOB_FIELDS), in this order.
REVIEW_COLUMNS = ("energy_kwh", "energy_method", "energy_note", "actual_intensity",
                  "intensity_estimated", "actuals_state", "run_now_actual_intensity",
                  "planned_window_actual_intensity")


def build(store: Store, config: Config, since: datetime | None, until: datetime | None,
          regions: Sequence[str]) -> Report:
    """Every finished job that started in [since, until) in ``regions`` (default all)."""
    rows = store.report_rows((*render.JOB_FIELDS, *REVIEW_COLUMNS), since, until, regions)
    jobs = job_objects(rows)
    window_at = len(render.JOB_FIELDS) + REVIEW_COLUMNS.index("planned_window_actual_intensity")
    totals: dict[str, SignalTotals] = {}
    regions_of: dict[str, set[str]] = {}
    signals = []
    for row, job in zip(rows, jobs, strict=True):
        region = job["run_region"]
        signal = job["signal"] or (config.signal_of(region) if region in config.regions
                                   else "average")
        total = totals.get(signal)
        if total is None:
            total = totals[signal] = SignalTotals()
            regions_of[signal] = set()
        regions_of[signal].add(region)
        _add(total, job, row[window_at])
        signals.append(signal)
    for signal, total in totals.items():
        total.basis = _basis(config, regions_of[signal])
    return Report(since, until, list(regions), jobs, signals, totals)


def job_objects(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The ``show --json`` job object of each row of ``store.report_rows`` read with
    ``render.JOB_FIELDS + REVIEW_COLUMNS``, built in one tight loop.

    Same keys, order and values as ``render.job_json`` (tests/test_report.py checks it),
    without building an ORM object per job.
    """
    fields = render.JOB_FIELDS
    review = len(fields)
    (energy_at, method_at, note_at, actual_at, estimated_at, state_at, run_now_at,
     window_at) = range(review, review + len(REVIEW_COLUMNS))
    lists = [name for name in fields if isinstance(Job.__table__.columns[name].type, JSONList)]
    flags = [name for name in fields if isinstance(Job.__table__.columns[name].type, Boolean)]
    jobs = []
    # One json.loads per column over all rows: 200,000 separate calls cost a second.
    parsed = {name: json.loads("[" + ",".join(row[fields.index(name)] for row in rows) + "]")
              for name in lists}
    for number, row in enumerate(rows):
        job = dict(zip(fields, row, strict=False))
        for name in lists:
            job[name] = parsed[name][number]
        for name in flags:
            job[name] = bool(job[name])
        planned_start = job["planned_start"]
        job["planned_end"] = None if planned_start is None else (
            datetime.fromisoformat(planned_start)
            + timedelta(seconds=job["duration_s"])).isoformat()
        emissions = accounting.emissions_from(
            job["power_watts"], job["duration_s"], job["planned_intensity"], row[energy_at],
            row[actual_at], row[run_now_at], row[window_at])
        estimated = row[estimated_at]
        job.update({
            "energy_kwh": row[energy_at],
            "energy_method": row[method_at],
            "energy_note": row[note_at],
            "actual_intensity": row[actual_at],
            "intensity_estimated": None if estimated is None else bool(estimated),
            "actuals_state": row[state_at],
            "scheduled_emissions_g": emissions.scheduled_g,
            "actual_emissions_g": emissions.actual_g,
            "run_now_emissions_g": emissions.run_now_g,
            "saved_g": emissions.saved_g,
        })
        jobs.append(job)
    return jobs


def _add(total: SignalTotals, job: dict[str, Any], window_actual: float | None) -> None:
    total.jobs += 1
    if job["energy_kwh"] is not None:
        total.energy_kwh += job["energy_kwh"]
    if job["scheduled_emissions_g"] is not None:
        total.scheduled_emissions_g += job["scheduled_emissions_g"]
    actual, run_now = job["actual_emissions_g"], job["run_now_emissions_g"]
    if actual is not None:
        total.actual_emissions_g += actual
    if run_now is not None:
        total.run_now_emissions_g += run_now
    if actual is not None and run_now is not None:
        total.saved_g += run_now - actual
        total.compared_run_now_g += run_now
    if job["planned_intensity"] is not None and window_actual is not None:
        total.forecast_errors.append(job["planned_intensity"] - window_actual)
    total.deadline_misses += bool(job["deadline_missed"])
    total.awaiting_actuals += job["actuals_state"] in accounting.AWAITING
    total.estimated += bool(job["intensity_estimated"])


def _basis(config: Config, regions: set[str]) -> str:
    """The basis (lifecycle or direct) the providers of these regions state, if any."""
    stated = {config.provider_for(r).basis or "not stated" for r in regions
              if r in config.regions}
    return ", ".join(sorted(stated)) or "not stated"


# Text, JSON, CSV ----------------------------------------------------------------------------

TABLE_COLUMNS = ("id", "name", "state", "region", "started", "hours", "kWh", "method",
                 "plan g/kWh", "actual g/kWh", "scheduled g", "actual g", "run-now g",
                 "saved g")


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def table_rows(report: Report) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for job in report.jobs:
        started, ended = _time(job["started_at"]), _time(job["ended_at"])
        hours = None if started is None or ended is None else (
            (ended - started).total_seconds() / 3600)
        actual = _number(job["actual_intensity"]) + ("*" if job["intensity_estimated"] else "")
        rows.append((str(job["id"]), job["name"], job["state"], job["run_region"] or "-",
                     format_local(started), _number(hours, 2),
                     _number(job["energy_kwh"], 3), job["energy_method"] or "-",
                     _number(job["planned_intensity"]), actual,
                     _number(job["scheduled_emissions_g"]), _number(job["actual_emissions_g"]),
                     _number(job["run_now_emissions_g"]), _number(job["saved_g"])))
    return rows


def write_text(report: Report, out: IO[str]) -> None:
    """Human output: one line per job, then totals per signal naming signal and basis."""
    period = (f"started from {format_local(report.since) if report.since else 'the start'} "
              f"to {format_local(report.until) if report.until else 'now'}")
    out.write(f"Emissions report: {len(report.jobs)} finished job(s) {period}\n")
    if not report.jobs:
        return
    out.write("\n")
    write_plain_table(TABLE_COLUMNS, table_rows(report), out)
    if any(job["intensity_estimated"] for job in report.jobs):
        out.write("* actual intensity estimated from forecasts (the provider published no "
                  "actuals yet)\n")
    for signal, total in report.totals.items():
        out.write(f"\nTotals, {signal} intensity signal ({total.basis} basis), gCO2eq:\n")
        saved_pct = "" if total.saved_pct is None else f" ({total.saved_pct:.1f}%)"
        lines = [
            ("jobs", str(total.jobs)),
            ("energy", f"{total.energy_kwh:.3f} kWh"),
            ("scheduled (plan's forecast x declared power)",
             f"{total.scheduled_emissions_g:.0f} g"),
            ("actual (measured energy x actual intensity)", f"{total.actual_emissions_g:.0f} g"),
            ("run now (same energy, started at submission)",
             f"{total.run_now_emissions_g:.0f} g"),
            ("saved", f"{total.saved_g:.0f} g{saved_pct}"),
            ("forecast mean absolute error", f"{_number(total.forecast_mae, 1)} g/kWh"),
            ("deadline misses", str(total.deadline_misses)),
            ("awaiting actuals", str(total.awaiting_actuals)),
            ("with estimated intensity", str(total.estimated)),
        ]
        width = max(len(label) for label, _ in lines)
        for label, value in lines:
            out.write(f"  {label:<{width}}  {value}\n")


def write_plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]], out: IO[str]) -> None:
    """A fixed-width text table (fast enough for 100,000 rows, unlike a rich table)."""
    widths = [len(name) for name in columns]
    if rows:
        widths = [max(width, *map(len, cells))
                  for width, cells in zip(widths, zip(*rows, strict=True), strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out.write(line.format(*columns).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    out.write("\n".join(line.format(*row).rstrip() for row in rows) + "\n")


def write_json(report: Report, out: IO[str]) -> None:
    """One document, compact: json's C encoder works only without indentation."""
    out.write(json.dumps(report.as_json(), check_circular=False) + "\n")


def write_csv(report: Report, out: IO[str]) -> None:
    """One row per job with the keys of the JSON job objects; lists as JSON text."""
    columns = list(report.jobs[0]) if report.jobs else _job_keys()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(job[c]) for c in columns] for job in report.jobs)


def _job_keys() -> list[str]:
    """The job object's keys, from a blank row (for the header of an empty CSV)."""
    blank: Any = SimpleNamespace(**{column.name: None for column in Job.__table__.columns})
    blank.argv, blank.regions, blank.power_watts, blank.duration_s = [], [], 0.0, 0
    return list(render.job_json(blank))


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list):
        return json.dumps(value)
    return "" if value is None else value


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
    planned = [(i.planned_start, i.planned_length) for i in here if i.planned_start is not None]
    ran = [(i.started, i.ended - i.started) for i in here if i.ended is not None]
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


def _draw_bars(axes: Any, report: Report) -> None:
    pairs = [(f"{job['id']}\n{signal}", job["actual_emissions_g"], job["run_now_emissions_g"])
             for job, signal in zip(report.jobs, report.signals, strict=True)
             if job["actual_emissions_g"] is not None and job["run_now_emissions_g"] is not None]
    shown = pairs[-MAX_BARS:]
    positions = list(range(len(shown)))
    axes.bar([p - 0.2 for p in positions], [a for _, a, _ in shown], width=0.4,
             color="tab:green", label="actual")
    axes.bar([p + 0.2 for p in positions], [r for _, _, r in shown], width=0.4,
             color="tab:orange", label="run now")
    axes.set_xticks(positions, [label for label, _, _ in shown], fontsize="small")
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
        f"<p>{len(report.jobs)} finished job(s) started from {html.escape(period)}. "
        "Emissions in gCO2eq; an actual intensity marked * is estimated from forecasts.</p>",
    ]
    for signal, total in report.totals.items():
        parts.append(f"<h2>Totals: {html.escape(signal)} intensity signal "
                     f"({html.escape(total.basis)} basis)</h2>")
        parts.append(_html_table(("total", "value"), [
            (key, "-" if value is None else
             (f"{value:.2f}" if isinstance(value, float) else str(value)))
            for key, value in total.as_json().items()]))
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
