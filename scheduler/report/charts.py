"""The report's charts: per region, intensity over the period with the jobs' planned and
actual runs; then actual versus run-now emissions per job. matplotlib (the ``plot``
extra) is imported only when a chart is drawn."""

from __future__ import annotations

import io
from collections import deque
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


@dataclass(frozen=True)
class _Interval:
    region: str
    planned_start: datetime | None
    planned_length: timedelta
    started: datetime
    ended: datetime | None


# What the charts read of each job.
_CHART_READS = ("id", "signal", "run_region", "planned_start", "duration_s", "started_at",
                "ended_at", "actual_emissions_g", "run_now_emissions_g")


@dataclass(frozen=True)
class _ChartData:
    """What the charts show of a report's jobs: each run (by region, in report order) and
    the latest MAX_BARS jobs with both actual and run-now emissions."""

    intervals: list[_Interval]
    bars: list[tuple[str, float, float]]  # (job id and signal, actual g, run-now g)
    bar_jobs: int  # how many jobs have both

    @classmethod
    def of(cls, report: Report) -> _ChartData:
        intervals: list[_Interval] = []
        bars: deque[tuple[str, float, float]] = deque(maxlen=MAX_BARS)
        bar_jobs = 0
        for page in report.pages(_CHART_READS):
            for (job_id, planned_signal, region, planned_start, seconds, started, ended,
                 actual, run_now) in zip(*page.values(), strict=True):
                intervals.append(_Interval(region, parse_time(planned_start),
                                           timedelta(seconds=seconds),
                                           datetime.fromisoformat(started), parse_time(ended)))
                if actual is not None and run_now is not None:
                    bar_jobs += 1
                    bars.append((f"{job_id} {report.signal_of(planned_signal, region)}",
                                 actual, run_now))
        return cls(intervals, list(bars), bar_jobs)

    @property
    def regions(self) -> list[str]:
        """The regions that get a chart panel: every region a reported job ran in."""
        return list(dict.fromkeys(i.region for i in self.intervals if i.region))


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


def _draw_bars(axes: Any, data: _ChartData) -> None:
    shown = data.bars
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
    latest = f" (latest {len(shown)} of {data.bar_jobs})" if data.bar_jobs > len(shown) else ""
    axes.set_title(f"actual versus run-now emissions per job{latest}", loc="left")
    if shown:
        axes.legend(loc="upper right", fontsize="small")


def _panels(report: Report) -> list[Callable[[Any], None]]:
    """One drawing function per panel: each region, then the bar chart."""
    data = _ChartData.of(report)
    panels: list[Callable[[Any], None]] = []
    if data.intervals:
        start, end = _period(report, data.intervals)
        for region in data.regions:
            def draw(axes: Any, region: str = region) -> None:
                _draw_region(axes, data.intervals, report.store, report.config, region,
                             start, end)
            panels.append(draw)
    panels.append(lambda axes: _draw_bars(axes, data))
    return panels


def _png(plt: Any, figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()


def plot_png(report: Report) -> bytes:
    """All panels stacked in one PNG, FIGURE_WIDTH_PX x PANEL_HEIGHT_PX per panel."""
    plt = _pyplot()
    panels = _panels(report)
    figure, axes = plt.subplots(len(panels), 1, squeeze=False,
                                figsize=(FIGURE_WIDTH_PX / DPI,
                                         PANEL_HEIGHT_PX * len(panels) / DPI),
                                layout="constrained")
    for draw, ax in zip(panels, axes[:, 0], strict=True):
        draw(ax)
    return _png(plt, figure)


def panel_pngs(report: Report) -> list[bytes]:
    """Each panel as its own PNG (for the HTML page)."""
    plt = _pyplot()
    images = []
    for draw in _panels(report):
        figure, ax = plt.subplots(figsize=(FIGURE_WIDTH_PX / DPI, PANEL_HEIGHT_PX / DPI),
                                  layout="constrained")
        draw(ax)
        images.append(_png(plt, figure))
    return images
