"""The ``csv`` provider: a local file ``start,end,gco2_per_kwh[,kind]``, re-read at every refresh.

Times are ISO-8601 UTC; ``kind`` is ``forecast`` (the default) or ``actual``. The vintage of
every point is the file's modification time, so an edited file is a new vintage. Rows may
come in any order; rows of one kind must not overlap. A UTF-8 byte-order mark is allowed.
"""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime
from pathlib import Path

from scheduler.config import ProviderConfig
from scheduler.providers.base import (
    Provider,
    ProviderError,
    check_points,
    overlapping,
    value_problem,
)
from scheduler.records import PointRecord

REQUIRED_COLUMNS = ("start", "end", "gco2_per_kwh")


def parse_csv(text: str, signal: str, basis: str | None, vintage: datetime | None,
              where: str, source: str = "", max_rows: int | None = None) -> list[PointRecord]:
    """Parse the whole file; any bad row rejects the file (naming ``source`` and the line).

    More than ``max_rows`` data rows reject the file before the rest is read."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        numbered = _parse_rows(reader, signal, basis, vintage, where, source, max_rows)
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise ProviderError(where, f"{source}after line {reader.line_num}: {error}") from None
    if not numbered:
        raise ProviderError(where, f"{source}no data rows")
    numbered.sort(key=lambda item: (item[0].kind, item[0].start))
    for (previous, previous_line), (current, current_line) in itertools.pairwise(numbered):
        if current.kind == previous.kind and current.start < previous.end:
            raise ProviderError(where, f"{source}line {current_line}: duplicate or unsorted "
                                       f"timestamps: {current.kind} "
                                       f"{current.start.isoformat()} overlaps line "
                                       f"{previous_line} ({previous.start.isoformat()} to "
                                       f"{previous.end.isoformat()})")
    points = [point for point, _line in numbered]
    for kind in ("forecast", "actual"):
        of_kind = [p for p in points if p.kind == kind]
        if of_kind:
            check_points(of_kind, where)
    return points


def _parse_rows(reader: csv.DictReader[str], signal: str, basis: str | None,
                vintage: datetime | None, where: str, source: str,
                max_rows: int | None) -> list[tuple[PointRecord, int]]:
    """Each data row as a point with its line number; the first bad row raises."""
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ProviderError(where, f"{source}missing column(s) {', '.join(missing)}")
    numbered: list[tuple[PointRecord, int]] = []
    for line, row in enumerate(reader, start=2):
        if max_rows is not None and len(numbered) >= max_rows:
            raise ProviderError(where, f"{source}more than {max_rows} rows, the most one "
                                       f"refresh stores (daemon.max_points_per_refresh)")
        try:
            start = _utc(row["start"])
            end = _utc(row["end"])
            value = float(row["gco2_per_kwh"])
        except (TypeError, ValueError, OverflowError) as error:
            raise ProviderError(where, f"{source}line {line}: {error}") from None
        problem = value_problem(value, "gco2_per_kwh")
        if problem is not None:
            raise ProviderError(where, f"{source}line {line}: {problem}")
        if end <= start:
            raise ProviderError(where, f"{source}line {line}: empty interval (end is not "
                                       f"after start)")
        kind = (row.get("kind") or "forecast").strip()
        if kind not in ("forecast", "actual"):
            raise ProviderError(where, f"{source}line {line}: kind must be forecast or actual")
        numbered.append((PointRecord(start=start, end=end, value=value, kind=kind,
                                     signal=signal, basis=basis, vintage=vintage), line))
    return numbered


def _utc(text: str | None) -> datetime:
    if not text:
        raise ValueError("empty time")
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    parsed = datetime.fromisoformat(cleaned)
    if parsed.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return parsed.astimezone(UTC)


class CsvProvider(Provider):
    kind = "csv"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        assert config.path is not None  # config validation requires it
        self.path: Path = config.path

    def _read(self, zone: str) -> list[PointRecord]:
        where = f"{self.name} (csv) zone {zone}"
        try:
            text = self.path.read_text(encoding="utf-8")
            vintage = datetime.fromtimestamp(self.path.stat().st_mtime, UTC)
        except (OSError, UnicodeDecodeError) as error:
            raise ProviderError(where, f"cannot read {self.path}: {error}") from None
        return parse_csv(text, self.config.signal, self.config.basis, vintage,
                         where, f"{self.path}: ", self.config.max_points)

    def fetch_forecast(self, zone: str, now: datetime) -> list[PointRecord]:
        return [p for p in self._read(zone) if p.kind == "forecast"]

    def fetch_actuals(self, zone: str, start: datetime, end: datetime) -> list[PointRecord]:
        return overlapping([p for p in self._read(zone) if p.kind == "actual"], start, end)
