"""The report's charts: per region, intensity over the period with the jobs' planned and
actual runs; then actual versus run-now emissions per job. matplotlib (the ``plot``
extra) is imported only when a chart is drawn."""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable
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
class Span:
    """A stretch of time a job was planned for, or ran, in one region."""

    region: str
    start: datetime
    length: timedelta


# What the charts read of each job.
_CHART_READS = ("id", "signal", "run_region", "planned_start", "duration_s", "started_at",
                "ended_at", "actual_emissions_g", "run_now_emissions_g", "interruptible")


@dataclass(frozen=True)
class ChartData:
    """What the charts show of a report's jobs: what each planned and each run (an
    interruptible job: each planned chunk and each run, not one band from its first start
    to its end), and the latest MAX_BARS jobs with both actual and run-now emissions."""

    planned: list[Span]
    ran: list[Span]  # a run still open: no length (started is all that is known)
    bars: list[tuple[str, float, float]]  # (job id and signal, actual g, run-now g)
    bar_jobs: int  # how many jobs have both

    @classmethod
    def of(cls, report: Report) -> ChartData:
        planned: list[Span] = []
        ran: list[Span] = []
        bars: deque[tuple[str, float, float]] = deque(maxlen=MAX_BARS)
        bar_jobs = 0
        for page in report.pages(_CHART_READS):
            interruptible = [job_id for job_id, mode in zip(page["id"], page["interruptible"],
                                                             strict=True) if mode is not None]
            chunks, runs = (report.store.parts_of_jobs(interruptible, snapshot=report.snapshot)
                            if interruptible else ({}, {}))
            for (job_id, planned_signal, region, planned_start, seconds, started, ended,
                 actual, run_now, mode) in zip(*page.values(), strict=True):
                if mode is not None:
                    planned.extend(Span(c.region, c.start, c.end - c.start)
                                   for c in chunks.get(job_id, ()))
                    ran.extend(Span(r.region, r.started_at, (r.ended_at or r.started_at)
                                    - r.started_at) for r in runs.get(job_id, ()))
                else:
                    planned_at = parse_time(planned_start)
                    if planned_at is not None:
                        planned.append(Span(region, planned_at, timedelta(seconds=seconds)))
                    begun, over = datetime.fromisoformat(started), parse_time(ended)
                    ran.append(Span(region, begun, (over or begun) - begun))
                if actual is not None and run_now is not None:
                    bar_jobs += 1
                    bars.append((f"{job_id} {report.signal_of(planned_signal, region)}",
                                 actual, run_now))
        return cls(planned, ran, list(bars), bar_jobs)

    @property
    def regions(self) -> list[str]:
        """The regions that get a chart panel: every region a reported job ran in."""
        return list(dict.fromkeys(span.region for span in self.ran if span.region))


def _period(report: Report, data: ChartData) -> tuple[datetime, datetime]:
    spans = [*data.ran, *data.planned]
    # The jobs' span (within --since/--until), with a margin so the edges stay visible.
    first = min(span.start for span in spans)
    last = max(span.start + span.length for span in spans)
    start = max(first, report.since) if report.since else first
    end = min(last, report.until) if report.until else last
    margin = max((end - start) / 20, timedelta(minutes=5))
    return start - margin, end + margin


def _draw_region(axes: Any, data: ChartData, store: Store, config: Config, region: str,
                 start: datetime, end: datetime) -> None:
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
    planned = _union([(span.start, span.length) for span in data.planned
                      if span.region == region])
    ran = _union([(span.start, span.length) for span in data.ran
                  if span.region == region and span.length])
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


def _draw_bars(axes: Any, data: ChartData) -> None:
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
    data = ChartData.of(report)
    panels: list[Callable[[Any], None]] = []
    if data.ran:
        start, end = _period(report, data)
        for region in data.regions:
            def draw(axes: Any, region: str = region) -> None:
                _draw_region(axes, data, report.store, report.config, region, start, end)
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
