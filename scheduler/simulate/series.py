"""Intensity data for the simulator: actuals, forecast vintages, and what a planner may see.

Every time inside is float seconds since the epoch (UTC), as in ``scheduler.placement``; a
timestamp without an offset in a file is read as UTC. A series is a step function: value i
holds over [starts[i], ends[i]); where no interval covers a time there is no data.

Actuals (one region per file, region name = file stem) come in three CSV forms:
- the Electricity Maps export: ``Datetime (UTC)`` and ``Carbon Intensity gCO₂eq/kWh (LCA)``;
- ``start,end,gco2_per_kwh``;
- ``time,value``.
In the two one-timestamp forms a value holds from its timestamp to the next row's (an
empty value leaves that span without data); the last row holds for the median step.

Forecast vintages are ``issued_at,start,end,gco2_per_kwh[,region]``. At a decision time a
planner sees, for every interval, the value from the newest vintage issued at or before
that time: vintages issued later stay invisible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from scheduler.errors import BadInput
from scheduler.intensity import Forecast, PrefixIntegral

if TYPE_CHECKING:
    import pandas as pd

FloatArray = npt.NDArray[np.float64]

EM_TIME = "Datetime (UTC)"
EM_VALUE = "Carbon Intensity gCO₂eq/kWh (LCA)"
ACCEPTED_FORMS = (f"'{EM_TIME}' + '{EM_VALUE}' (Electricity Maps export), "
                  "'start,end,gco2_per_kwh', or 'time,value'")


@dataclass(frozen=True)
class Series:
    """One region's intensity (gCO2eq/kWh) as a step function over sorted, disjoint intervals."""

    starts: FloatArray
    ends: FloatArray
    values: FloatArray

    def __post_init__(self) -> None:
        # Raises ValueError on unsorted or overlapping intervals: the planner's own check.
        Forecast(self.starts, self.ends, self.values)

    @property
    def first(self) -> float:
        return float(self.starts[0])

    @property
    def last(self) -> float:
        return float(self.ends[-1])

    def crop(self, start: float, end: float) -> Forecast:
        """The intervals overlapping [start, end), whole, as a planner forecast."""
        lo = int(np.searchsorted(self.ends, start, side="right"))
        hi = int(np.searchsorted(self.starts, end, side="left"))
        return Forecast(self.starts[lo:hi], self.ends[lo:hi], self.values[lo:hi])

    @cached_property
    def integral(self) -> PrefixIntegral:
        return PrefixIntegral(Forecast(self.starts, self.ends, self.values))

    def integrals(self, starts: FloatArray, ends: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per span [starts[k], ends[k]): (sum of value x overlap seconds, seconds covered)."""
        value_start, cover_start = self.integral.at(starts)
        value_end, cover_end = self.integral.at(ends)
        return value_end - value_start, cover_end - cover_start

    def covers(self, starts: FloatArray, ends: FloatArray) -> npt.NDArray[np.bool_]:
        """Whether data covers each span entirely (to a millisecond)."""
        _, covered = self.integrals(starts, ends)
        result: npt.NDArray[np.bool_] = covered >= (ends - starts) - 1e-3
        return result

    def mean(self) -> float:
        """Time-weighted mean over every covered interval."""
        lengths = self.ends - self.starts
        return float(np.sum(self.values * lengths) / np.sum(lengths))


def series_from_points(times: FloatArray, values: FloatArray, what: str) -> Series:
    """A step function from ``time,value`` rows: each value holds until the next timestamp."""
    order = np.argsort(times, kind="stable")
    times, values = times[order], values[order]
    if len(times) < 2:
        raise BadInput(f"{what}: needs at least two rows to know how long a value holds")
    steps = np.diff(times)
    if np.any(steps <= 0):
        duplicate = times[1:][steps <= 0][0]
        raise BadInput(f"{what}: timestamp {iso(float(duplicate))} appears twice")
    ends = np.concatenate((times[1:], [times[-1] + float(np.median(steps))]))
    keep = ~np.isnan(values)
    if not np.any(keep):
        raise BadInput(f"{what}: no values")
    return Series(times[keep], ends[keep], values[keep])


def series_from_intervals(starts: FloatArray, ends: FloatArray, values: FloatArray,
                          what: str) -> Series:
    order = np.argsort(starts, kind="stable")
    starts, ends, values = starts[order], ends[order], values[order]
    keep = ~np.isnan(values)
    starts, ends, values = starts[keep], ends[keep], values[keep]
    if not len(starts):
        raise BadInput(f"{what}: no values")
    if np.any(ends <= starts):
        raise BadInput(f"{what}: an interval ends before it starts "
                       f"(start {iso(float(starts[ends <= starts][0]))})")
    if np.any(starts[1:] < ends[:-1]):
        clash = starts[1:][starts[1:] < ends[:-1]][0]
        raise BadInput(f"{what}: intervals overlap at {iso(float(clash))}")
    return Series(starts, ends, values)


def iso(seconds: float) -> str:
    from scheduler.timespec import from_epoch, iso_utc

    return iso_utc(from_epoch(seconds)) or ""


# Reading files ---------------------------------------------------------------------------


def read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "empty"
        raise BadInput(f"{path}: not a readable CSV file ({first_line})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def epoch_seconds(column: pd.Series[Any], what: str) -> FloatArray:
    """Timestamps (ISO-8601; naive means UTC) as float epoch seconds; BadInput if unparsable."""
    import pandas as pd

    try:
        parsed = pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError) as error:
        raise BadInput(f"{what}: bad timestamp ({error})") from None
    if parsed.isna().any():
        raise BadInput(f"{what}: empty timestamp in row {int(parsed.isna().argmax()) + 2}")
    nanoseconds = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    result: FloatArray = nanoseconds / 1e9
    return result


def numbers(column: pd.Series[Any], what: str) -> FloatArray:
    import pandas as pd

    parsed = pd.to_numeric(column, errors="coerce")
    bad = parsed.isna() & column.notna() & (column.astype(str).str.strip() != "")
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise BadInput(f"{what}: {column.iloc[row]!r} in row {row + 2} is not a number")
    result: FloatArray = parsed.to_numpy(dtype=np.float64)
    return result


def read_series(path: Path) -> Series:
    """One actuals file in any of the accepted forms."""
    frame = read_table(path)
    columns = set(frame.columns)
    what = str(path)
    if EM_TIME in columns and EM_VALUE in columns:
        return series_from_points(epoch_seconds(frame[EM_TIME], what),
                                  numbers(frame[EM_VALUE], what), what)
    if {"start", "end", "gco2_per_kwh"} <= columns:
        return series_from_intervals(epoch_seconds(frame["start"], what),
                                     epoch_seconds(frame["end"], what),
                                     numbers(frame["gco2_per_kwh"], what), what)
    if {"time", "value"} <= columns:
        return series_from_points(epoch_seconds(frame["time"], what),
                                  numbers(frame["value"], what), what)
    raise BadInput(f"{path}: unknown columns {sorted(columns)}; expected {ACCEPTED_FORMS}")


def csv_files(path: Path, what: str) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
        if not files:
            raise BadInput(f"{what} {path}: folder holds no .csv files")
        return files
    if not path.exists():
        raise BadInput(f"{what} {path}: no such file or folder")
    return [path]


def read_actuals(path: Path) -> dict[str, Series]:
    """Actuals from a CSV file or a folder of them: {region (file stem): series}."""
    return {file.stem: read_series(file) for file in csv_files(path, "--actuals")}


# What a planner may see ---------------------------------------------------------------------


class ForecastSource(Protocol):
    """What the planner sees at a decision time (``now``)."""

    def issue_times(self) -> FloatArray:
        """Times at which a new vintage appears (the re-planning policy plans again)."""
        ...

    def view(self, region: str, now: float, until: float) -> Forecast:
        """The forecast known at ``now`` for [now, until): vintages issued at or before now."""
        ...


@dataclass(frozen=True)
class KnownSeries:
    """A forecast known from the start and never revised: the actuals (the oracle, a perfect
    forecast) or a synthetic noisy copy of them."""

    series: Mapping[str, Series]

    def issue_times(self) -> FloatArray:
        return np.array([], dtype=np.float64)

    def view(self, region: str, now: float, until: float) -> Forecast:
        known = self.series.get(region)
        return Forecast.empty() if known is None else known.crop(now, until)


def noisy_copy(actuals: Mapping[str, Series], fraction: float, seed: int) -> KnownSeries:
    """Actuals plus Gaussian noise, sigma = fraction x the region's mean; seeded.

    Regions draw from one generator in sorted order, so a seed gives the same noise for a
    region whatever else is simulated alongside it only when the region set is the same.
    """
    generator = np.random.default_rng(seed)
    noisy = {}
    for name in sorted(actuals):
        series = actuals[name]
        sigma = fraction * series.mean()
        noise = generator.normal(0.0, sigma, len(series.values)) if sigma > 0 else 0.0
        noisy[name] = Series(series.starts, series.ends, series.values + noise)
    return KnownSeries(noisy)


def revised_forecasts(actuals: Mapping[str, Series], fraction: float, horizon_s: float,
                      every_s: float, seed: int) -> ForecastArchive:
    """Synthetic vintages that improve as a time approaches, as real forecasts do.

    A vintage is issued every ``every_s`` seconds from each region's first interval and
    covers the intervals overlapping the next ``horizon_s``. Its value for an interval
    starting ``lead`` seconds after the issue is the actual plus Gaussian noise with sigma =
    ``fraction`` x the region's mean x ``lead / horizon_s`` (exact at lead zero), floored
    at zero. A re-planning policy sees each revision; a single-shot one only the first.
    """
    generator = np.random.default_rng(seed)
    rows = {}
    for name in sorted(actuals):
        series = actuals[name]
        sigma = fraction * series.mean()
        parts: list[list[FloatArray]] = [[], [], [], []]
        for issued in np.arange(series.first, series.last, every_s):
            covered = (series.ends > issued) & (series.starts < issued + horizon_s)
            lead = np.maximum(series.starts[covered] - issued, 0.0)
            noise = generator.normal(0.0, 1.0, len(lead)) * sigma * lead / horizon_s
            parts[0].append(np.full(len(lead), issued))
            parts[1].append(series.starts[covered])
            parts[2].append(series.ends[covered])
            parts[3].append(np.maximum(series.values[covered] + noise, 0.0))
        rows[name] = (np.concatenate(parts[0]), np.concatenate(parts[1]),
                      np.concatenate(parts[2]), np.concatenate(parts[3]))
    return ForecastArchive.from_rows(rows)


@dataclass(frozen=True)
class _RegionVintages:
    """Every forecast row of one region, sorted by (start, issued_at)."""

    issued: FloatArray
    starts: FloatArray
    ends: FloatArray
    values: FloatArray
    longest: float


@dataclass(frozen=True)
class ForecastArchive:
    """Real forecast vintages: the planner sees only those issued at or before ``now``."""

    regions: Mapping[str, _RegionVintages]

    @classmethod
    def from_rows(cls, rows: Mapping[str, tuple[FloatArray, FloatArray, FloatArray, FloatArray]]
                  ) -> ForecastArchive:
        """From per-region arrays (issued_at, start, end, value), in any order."""
        regions = {}
        for name, (issued, starts, ends, values) in rows.items():
            order = np.lexsort((issued, starts))
            longest = float(np.max(ends - starts)) if len(starts) else 0.0
            regions[name] = _RegionVintages(issued[order], starts[order], ends[order],
                                            values[order], longest)
        return cls(regions)

    def issue_times(self) -> FloatArray:
        if not self.regions:
            return np.array([], dtype=np.float64)
        return np.unique(np.concatenate([r.issued for r in self.regions.values()]))

    def view(self, region: str, now: float, until: float) -> Forecast:
        rows = self.regions.get(region)
        if rows is None:
            return Forecast.empty()
        lo = int(np.searchsorted(rows.starts, now - rows.longest, side="left"))
        hi = int(np.searchsorted(rows.starts, until, side="left"))
        index = np.arange(lo, hi)
        index = index[(rows.issued[index] <= now) & (rows.ends[index] > now)]
        if not len(index):
            return Forecast.empty()
        starts = rows.starts[index]
        # Rows of one start are sorted by issue time: the last of each run is the newest.
        newest = index[np.append(starts[1:] != starts[:-1], True)]
        starts, ends, values = rows.starts[newest], rows.ends[newest], rows.values[newest]
        ends = np.minimum(ends, np.append(starts[1:], np.inf))  # vintages on other grids
        return Forecast(starts, ends, values)


def read_forecasts(path: Path, known_regions: Sequence[str]) -> ForecastArchive:
    """Vintages from a file or folder; rows without a region column belong to the file stem
    (or to the only region simulated)."""
    columns: dict[str, list[FloatArray]] = {}
    for file in csv_files(path, "--forecasts"):
        frame = read_table(file)
        what = str(file)
        needed = {"issued_at", "start", "end", "gco2_per_kwh"}
        if not needed <= set(frame.columns):
            raise BadInput(f"{file}: forecast columns must be "
                           f"issued_at,start,end,gco2_per_kwh[,region]; got {list(frame.columns)}")
        if "region" in frame.columns:
            region_column = frame["region"].astype(str).str.strip()
        else:
            import pandas as pd

            only = file.stem if path.is_dir() or len(known_regions) != 1 else known_regions[0]
            region_column = pd.Series([only] * len(frame), index=frame.index)
        issued = epoch_seconds(frame["issued_at"], what)
        starts = epoch_seconds(frame["start"], what)
        ends = epoch_seconds(frame["end"], what)
        values = numbers(frame["gco2_per_kwh"], what)
        if np.any(ends <= starts):
            raise BadInput(f"{file}: a forecast interval ends before it starts")
        for region in region_column.unique():
            mask = (region_column == region).to_numpy() & ~np.isnan(values)
            parts = columns.setdefault(str(region), [])
            parts.extend([issued[mask], starts[mask], ends[mask], values[mask]])
    return ForecastArchive.from_rows({
        name: (np.concatenate(parts[0::4]), np.concatenate(parts[1::4]),
               np.concatenate(parts[2::4]), np.concatenate(parts[3::4]))
        for name, parts in columns.items()
    })
