"""``replay``: real hourly intensity bundled with gridshift, replayed onto today's dates.

No network and no credentials: the offline demo (``config/demo.toml``) runs on it. Zones are
the bundled files in ``scheduler/data/`` (``GB``, ``DE-LU``, ``US-CAL-CISO``: Electricity
Maps, life-cycle basis, see ``ATTRIBUTION.md``).

How a time maps onto the data: the bundled data is three whole weeks of hours starting on a
Monday at 00:00 UTC, not a whole year, so the replay repeats it: an hour ``t`` gets the value
at position ``(hours from the data's first hour to t) mod (hours in the data)``. The count is
in whole UTC hours, so 29 February, year boundaries and daylight saving change nothing, and
since the data is a whole number of weeks every hour keeps its weekday and hour of the day
(Monday 09:00 UTC replays a real Monday 09:00). Where the cycle wraps, the last Sunday 23:00
is followed by the first Monday 00:00.

A forecast is the real data of the coming hours (``horizon``, default 48 h), from the hour
holding ``now``: a perfect forecast, issued at the start of that hour (its vintage, so
refreshes within one hour store nothing new). Actuals are the same values for hours that
have ended. Every point's basis is ``lifecycle replay`` (config.REPLAY_BASIS), so
``forecast``, ``plan`` and ``report`` say the data is replayed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources

from scheduler.config import DEFAULT_REPLAY_HORIZON, ProviderConfig, replay_zones
from scheduler.providers.base import Provider, ProviderError, check_points
from scheduler.records import PointRecord

HOUR = timedelta(hours=1)
TIME_COLUMN = "Datetime (UTC)"
VALUE_COLUMN = "Carbon Intensity gCO₂eq/kWh (LCA)"


@dataclass(frozen=True)
class ReplayData:
    """One zone's bundled hours: ``values[i]`` holds over [first + i h, first + (i+1) h)."""

    first: datetime
    values: tuple[float, ...]

    def value_at(self, hour: datetime) -> float:
        """The replayed value of the hour starting at ``hour`` (a whole UTC hour)."""
        offset = (hour - self.first) // HOUR
        return self.values[offset % len(self.values)]


def parse_bundled(text: str, where: str) -> ReplayData:
    """An Electricity Maps hourly export: contiguous hours, finite non-negative values."""
    reader = csv.DictReader(io.StringIO(text))
    if not {TIME_COLUMN, VALUE_COLUMN} <= set(reader.fieldnames or []):
        raise ProviderError(where, f"bundled data lacks {TIME_COLUMN!r} or {VALUE_COLUMN!r}")
    starts: list[datetime] = []
    values: list[float] = []
    for line, row in enumerate(reader, start=2):
        try:
            start = datetime.fromisoformat(row[TIME_COLUMN]).replace(tzinfo=UTC)
            value = float(row[VALUE_COLUMN])
        except (TypeError, ValueError) as error:
            raise ProviderError(where, f"bundled data line {line}: {error}") from None
        if starts and start != starts[-1] + HOUR:
            raise ProviderError(where, f"bundled data line {line}: not the hour after the last")
        starts.append(start)
        values.append(value)
    check_points([PointRecord(s, s + HOUR, v) for s, v in zip(starts, values, strict=True)],
                 where)
    return ReplayData(starts[0], tuple(values))


def hours_overlapping(start: datetime, end: datetime) -> list[datetime]:
    """The start of every whole UTC hour overlapping [start, end)."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour < end:
        hours.append(hour)
        hour += HOUR
    return hours


def replayed_points(data: ReplayData, hours: Sequence[datetime], kind: str, signal: str,
                    basis: str | None, vintage: datetime | None) -> list[PointRecord]:
    return [PointRecord(start=h, end=h + HOUR, value=data.value_at(h), kind=kind,
                        signal=signal, basis=basis, vintage=vintage) for h in hours]


class ReplayProvider(Provider):
    kind = "replay"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self.horizon = config.horizon or DEFAULT_REPLAY_HORIZON
        self.usual_horizon = self.horizon
        self._data: dict[str, ReplayData] = {}

    def _load(self, zone: str) -> ReplayData:
        if zone not in self._data:
            where = self.where(zone)
            if zone not in replay_zones():
                raise ProviderError(where, f"no bundled data for this zone (bundled: "
                                           f"{', '.join(replay_zones())})")
            text = resources.files("scheduler").joinpath("data", f"{zone}.csv").read_text(
                encoding="utf-8")
            self._data[zone] = parse_bundled(text, where)
        return self._data[zone]

    def fetch_forecast(self, zone: str, now: datetime) -> list[PointRecord]:
        hours = hours_overlapping(now, now + self.horizon)
        return replayed_points(self._load(zone), hours, "forecast", self.signal,
                               self.config.basis, vintage=hours[0])

    def fetch_actuals(self, zone: str, start: datetime, end: datetime) -> list[PointRecord]:
        ended = [h for h in hours_overlapping(start, end) if h + HOUR <= end]
        return replayed_points(self._load(zone), ended, "actual", self.signal,
                               self.config.basis, vintage=None)
