"""The report's charts: per region, intensity over the period with the jobs' planned and
actual runs; then actual versus run-now emissions per job. matplotlib (the ``plot``
extra) is imported only when a chart is drawn."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler.config import Config
from scheduler.errors import GridshiftError
from scheduler.report.building import Report
from scheduler.report.table import parse_time
from scheduler.store import Store

# Chart geometry: the PNG is FIGURE_WIDTH_PX wide and PANEL_HEIGHT_PX per panel (one per
# region, plus the bar chart).
FIGURE_WIDTH_PX = 1200
PANEL_HEIGHT_PX = 350
DPI = 100
MAX_BARS = 40
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
    return [_Interval(job["run_region"], parse_time(job["planned_start"]),
                      timedelta(seconds=job["duration_s"]), datetime.fromisoformat(
                          job["started_at"]), parse_time(job["ended_at"]))
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
