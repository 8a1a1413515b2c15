"""Converters from the two real forecast archives to the simulator's CSV forms.

Each writes ``OUT/actuals/<REGION>.csv`` (``start,end,gco2_per_kwh``) and
``OUT/forecasts.csv`` (``issued_at,start,end,gco2_per_kwh,region``), ready for
``gridshift simulate --actuals OUT/actuals --forecasts OUT/forecasts.csv``.

- UK national ``fw48h`` summary (nmpowell/carbon-intensity-forecast-tracking): one row per
  half-hour window, 96 forecast columns by lead time 0, 0.5, ..., 47.5 h, captured at
  about hh:01 and hh:31. A value at lead L for window W was issued at W - L + 1 min. Its
  actual columns are empty, so the zero-lead value (the API's nowcast during the window)
  stands in for the actual; where that capture is missing, the shortest lead available.
- WattTime (dos-group/vessim ``watttime2023_caiso-north``): ``actual.csv`` is ``time,VALUE``,
  ``forecast.csv`` is ``request_time,forecast_time,VALUE``; each value holds for one step
  (5 minutes) from its timestamp; the request time is the issue time. Marginal (MOER)
  intensity: do not compare it with average intensity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scheduler.errors import BadInput
from scheduler.simulate.series import (
    FloatArray,
    Series,
    epoch_seconds,
    numbers,
    series_from_points,
)

UK_WINDOW_S = 1800.0
UK_CAPTURE_OFFSET_S = 60.0


@dataclass(frozen=True)
class Converted:
    actuals_path: Path
    forecasts_path: Path
    windows: int
    vintages: int
    forecast_rows: int
    notes: tuple[str, ...]


def _stamp(seconds: FloatArray) -> list[str]:
    import pandas as pd

    return list(pd.to_datetime(np.round(seconds), unit="s", utc=True)
                .strftime("%Y-%m-%dT%H:%M:%SZ"))


def _write(out_dir: Path, region: str, actuals: Series, issued: FloatArray, starts: FloatArray,
           ends: FloatArray, values: FloatArray) -> tuple[Path, Path]:
    import pandas as pd

    actuals_dir = out_dir / "actuals"
    try:
        actuals_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"cannot create {actuals_dir}: {error.strerror or error}") from None
    actuals_path = actuals_dir / f"{region}.csv"
    forecasts_path = out_dir / "forecasts.csv"
    pd.DataFrame({"start": _stamp(actuals.starts), "end": _stamp(actuals.ends),
                  "gco2_per_kwh": actuals.values}).to_csv(actuals_path, index=False)
    order = np.lexsort((starts, issued))
    pd.DataFrame({"issued_at": _stamp(issued[order]), "start": _stamp(starts[order]),
                  "end": _stamp(ends[order]), "gco2_per_kwh": values[order],
                  "region": region}).to_csv(forecasts_path, index=False)
    return actuals_path, forecasts_path


def convert_uk_fw48h(source: Path, out_dir: Path, region: str = "GB") -> Converted:
    """The UK summary CSV (two header rows: labels, then lead hours) to simulator CSVs."""
    import pandas as pd

    if not source.is_file():
        raise BadInput(f"{source}: no such file")
    with source.open(encoding="utf-8") as handle:
        labels = handle.readline().rstrip("\n").split(",")
        leads_text = handle.readline().rstrip("\n").split(",")
    forecast_columns = [i for i, label in enumerate(labels) if label == "intensity.forecast"]
    if not forecast_columns or not leads_text or leads_text[0] != "time_difference":
        raise BadInput(f"{source}: not a fw48h summary (expected a header row of "
                       "'intensity.forecast' columns and a 'time_difference' lead-time row)")
    try:
        leads_h = np.array([float(leads_text[i]) for i in forecast_columns])
    except (ValueError, IndexError):
        raise BadInput(f"{source}: the lead-time header row is not numeric") from None
    try:
        frame = pd.read_csv(source, header=None, skiprows=2, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise BadInput(f"{source}: not a readable CSV file ({error})") from None
    windows = epoch_seconds(frame[0], str(source))
    grid = np.column_stack([numbers(frame[i], str(source)) for i in forecast_columns])
    by_lead = np.argsort(leads_h, kind="stable")
    leads_h, grid = leads_h[by_lead], grid[:, by_lead]

    present = ~np.isnan(grid)
    has_any = present.any(axis=1)
    shortest = np.argmax(present, axis=1)  # first (shortest-lead) filled column per row
    actual_values = grid[np.arange(len(windows)), shortest]
    filled_later = int(np.sum(has_any & (shortest > 0)))
    actuals = Series(windows[has_any], windows[has_any] + UK_WINDOW_S, actual_values[has_any])

    rows, columns = np.nonzero(present)
    starts = windows[rows]
    issued = starts - leads_h[columns] * 3600.0 + UK_CAPTURE_OFFSET_S
    values = grid[rows, columns]
    actuals_path, forecasts_path = _write(out_dir, region, actuals, issued, starts,
                                          starts + UK_WINDOW_S, values)
    notes = (
        f"actuals: the zero-lead value (the API's nowcast) stands in for what the grid did; "
        f"{filled_later} of {len(actuals.values)} windows lack it and use their "
        f"shortest-lead forecast instead",
    )
    return Converted(actuals_path, forecasts_path, len(actuals.values),
                     len(np.unique(issued)), len(values), notes)


def convert_watttime(actual: Path, forecast: Path, out_dir: Path,
                     region: str = "CAISO_NORTH") -> Converted:
    """WattTime ``actual.csv`` and ``forecast.csv`` (one value column each) to simulator CSVs."""
    from scheduler.simulate.series import read_table

    actual_frame = read_table(actual)
    if len(actual_frame.columns) != 2 or actual_frame.columns[0] != "time":
        raise BadInput(f"{actual}: expected columns time,VALUE; got {list(actual_frame.columns)}")
    actuals = series_from_points(epoch_seconds(actual_frame["time"], str(actual)),
                                 numbers(actual_frame.iloc[:, 1], str(actual)), str(actual))
    frame = read_table(forecast)
    if len(frame.columns) != 3 or list(frame.columns[:2]) != ["request_time", "forecast_time"]:
        raise BadInput(f"{forecast}: expected columns request_time,forecast_time,VALUE; "
                       f"got {list(frame.columns)}")
    issued = epoch_seconds(frame["request_time"], str(forecast))
    starts = epoch_seconds(frame["forecast_time"], str(forecast))
    values = numbers(frame.iloc[:, 2], str(forecast))
    keep = ~np.isnan(values)
    issued, starts, values = issued[keep], starts[keep], values[keep]
    steps = np.diff(np.unique(starts))
    if not len(steps):
        raise BadInput(f"{forecast}: needs forecasts for at least two times")
    step = float(np.median(steps))
    actuals_path, forecasts_path = _write(out_dir, region, actuals, issued, starts,
                                          starts + step, values)
    notes = (f"marginal (MOER) intensity in gCO2/kWh; each value holds {step / 60:g} minutes "
             "from its timestamp; forecasts reach at most "
             f"{float(np.max(starts - issued)) / 60 + step / 60:g} minutes ahead",)
    return Converted(actuals_path, forecasts_path, len(actuals.values),
                     len(np.unique(issued)), len(values), notes)
