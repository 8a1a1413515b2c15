"""The csv provider: a local file re-read at every refresh; any bad row rejects the file."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler import forecasting
from scheduler.config import ProviderConfig
from scheduler.providers.base import ProviderError
from scheduler.providers.csvfile import CsvProvider
from scheduler.store import Store
from tests.conftest import hourly, write_csv

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
HEADER = "start,end,gco2_per_kwh,kind\n"


def _provider(path: Path, signal: str = "average", basis: str | None = None) -> CsvProvider:
    return CsvProvider(ProviderConfig(name="file", kind="csv", path=path, signal=signal,
                                      basis=basis))


def test_forecast_and_actual_rows_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "i.csv"
    path.write_text(
        HEADER
        + "2026-11-26T08:00:00Z,2026-11-26T09:00:00Z,210,actual\n"
        + "2026-11-26T09:00:00+00:00,2026-11-26T10:00:00+00:00,190.5,actual\n"
        + "2026-11-26T10:00:00Z,2026-11-26T11:00:00Z,180,forecast\n"
        + "2026-11-26T12:00:00+01:00,2026-11-26T13:00:00+01:00,175,\n",
        encoding="utf-8",
    )
    provider = _provider(path, signal="marginal", basis="direct")
    forecast = provider.fetch_forecast("z", NOW)
    actuals = provider.fetch_actuals("z", NOW - 3 * HOUR, NOW)
    assert [(p.start, p.end, p.value) for p in forecast] == [
        (NOW, NOW + HOUR, 180.0), (NOW + HOUR, NOW + 2 * HOUR, 175.0)]
    assert [p.value for p in actuals] == [210.0, 190.5]
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    assert {(p.signal, p.basis, p.vintage) for p in forecast + actuals} == {
        ("marginal", "direct", mtime)}


def test_actuals_outside_the_window_are_left_out(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", hourly(NOW - 5 * HOUR, [1, 2, 3, 4, 5]), kind="actual")
    points = _provider(path).fetch_actuals("z", NOW - 2 * HOUR, NOW)
    assert [p.value for p in points] == [4.0, 5.0]


@pytest.mark.parametrize(("row", "problem"), [
    ("2026-11-26T10:00:00Z,2026-11-26T11:00:00Z,lots,forecast", "line 3"),
    ("2026-11-26T10:00:00,2026-11-26T11:00:00,180,forecast", "no UTC offset"),
    ("yesterday,2026-11-26T11:00:00Z,180,forecast", "line 3"),
    (",2026-11-26T11:00:00Z,180,forecast", "empty time"),
    ("2026-11-26T10:00:00Z,2026-11-26T11:00:00Z,nan,forecast", "bad value nan"),
    ("2026-11-26T10:00:00Z,2026-11-26T11:00:00Z,-3,forecast", "bad value -3"),
    ("2026-11-26T10:00:00Z,2026-11-26T11:00:00Z,180,guess", "kind must be forecast or actual"),
    ("2026-11-26T09:30:00Z,2026-11-26T10:30:00Z,180,forecast", "duplicate or unsorted"),
    ("2026-11-26T11:00:00Z,2026-11-26T11:00:00Z,180,forecast", "empty interval"),
])
def test_a_bad_row_rejects_the_whole_file(tmp_path: Path, row: str, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "2026-11-26T09:00:00Z,2026-11-26T10:00:00Z,200,forecast\n"
                    + row + "\n", encoding="utf-8")
    with pytest.raises(ProviderError, match=problem) as raised:
        _provider(path).fetch_forecast("z", NOW)
    assert raised.value.where.startswith("file (csv)")


@pytest.mark.parametrize(("text", "problem"), [
    ("start,end\n2026-11-26T09:00:00Z,2026-11-26T10:00:00Z\n", "missing column"),
    (HEADER, "no data rows"),
])
def test_a_file_without_usable_rows_is_rejected(tmp_path: Path, text: str,
                                                problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProviderError, match=problem):
        _provider(path).fetch_forecast("z", NOW)


def test_the_file_is_re_read_at_every_refresh_as_a_new_vintage(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'g.db'}")
    path = write_csv(tmp_path / "f.csv", hourly(NOW, [300, 300, 300]))
    os.utime(path, (NOW.timestamp() - 600, NOW.timestamp() - 600))
    provider = _provider(path)
    first = forecasting.refresh_zone(store, provider, "z", NOW)
    write_csv(path, hourly(NOW, [300, 40, 300]))
    os.utime(path, (NOW.timestamp(), NOW.timestamp()))
    second = forecasting.refresh_zone(store, provider, "z", NOW + timedelta(minutes=1))
    assert first.ok and second.ok and second.stored == 3
    series = store.series("file", "z", NOW, NOW + 3 * HOUR)
    assert series.values == [300.0, 40.0, 300.0]
    assert set(series.vintages) == {NOW}


def test_an_unreadable_file_keeps_the_stored_forecast(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'g.db'}")
    path = write_csv(tmp_path / "f.csv", hourly(NOW, [300, 200]))
    provider = _provider(path)
    assert forecasting.refresh_zone(store, provider, "z", NOW).ok
    path.unlink()
    result = forecasting.refresh_zone(store, provider, "z", NOW)
    assert not result.ok and "cannot read" in result.error and str(path) in result.error
    assert store.series("file", "z", NOW, NOW + 2 * HOUR).values == [300.0, 200.0]
