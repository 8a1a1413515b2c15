"""The replay provider and the offline demo: bundled real data mapped onto today's dates."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler import forecasting, replanning
from scheduler.config import REPLAY_BASIS, ProviderConfig, load_config, parse_config
from scheduler.errors import ConfigError
from scheduler.providers import build_provider
from scheduler.providers.replay import ReplayData, ReplayProvider
from scheduler.store import Store
from tests.conftest import create_workspace

HOUR = timedelta(hours=1)
NOW = datetime(2026, 11, 26, 10, 40, tzinfo=UTC)
REPOSITORY = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPOSITORY / "config" / "demo.toml"
# The first rows of scheduler/data/GB.csv (Monday 2023-03-06 from 00:00 UTC).
GB_FIRST_VALUES = [328.84, 330.95, 323.74, 314.82]


def _provider(horizon: timedelta | None = None) -> ReplayProvider:
    return ReplayProvider(ProviderConfig(name="demo", kind="replay", basis=REPLAY_BASIS,
                                         horizon=horizon))


def _gb() -> ReplayData:
    return _provider()._load("GB")


def test_an_hour_replays_the_same_weekday_and_hour_through_leap_days_and_new_year() -> None:
    data = _gb()
    assert len(data.values) == 3 * 7 * 24
    assert list(data.values[:4]) == GB_FIRST_VALUES
    hour = datetime(2027, 12, 30, 0, tzinfo=UTC)
    while hour < datetime(2028, 3, 3, tzinfo=UTC):  # a year boundary and 29 February 2028
        position = ((hour - data.first) // HOUR) % len(data.values)
        replayed = data.first + position * HOUR
        assert (replayed.weekday(), replayed.hour) == (hour.weekday(), hour.hour)
        assert data.value_at(hour) == data.values[position]
        following = data.value_at(hour + HOUR)
        assert following == data.values[(position + 1) % len(data.values)]
        hour += HOUR


def test_forecast_is_the_real_data_of_the_coming_hours_labelled_replayed() -> None:
    provider = _provider(horizon=timedelta(hours=6))
    points = provider.fetch_forecast("GB", NOW)
    this_hour = NOW.replace(minute=0)
    assert [p.start for p in points] == [this_hour + i * HOUR for i in range(7)]
    assert all(p.end == p.start + HOUR for p in points)
    data = _gb()
    assert [p.value for p in points] == [data.value_at(p.start) for p in points]
    assert {(p.kind, p.signal, p.basis, p.vintage) for p in points} == {
        ("forecast", "average", REPLAY_BASIS, this_hour)}


def test_actuals_are_the_hours_that_have_ended() -> None:
    points = _provider().fetch_actuals("DE-LU", NOW - 3 * HOUR, NOW)
    this_hour = NOW.replace(minute=0)
    assert [p.start for p in points] == [this_hour - 3 * HOUR, this_hour - 2 * HOUR,
                                         this_hour - HOUR]
    assert {p.kind for p in points} == {"actual"}
    forecast = _provider().fetch_forecast("DE-LU", NOW - 3 * HOUR)
    assert [p.value for p in points] == [p.value for p in forecast[:3]]


def test_config_accepts_only_bundled_zones_and_replay_keys() -> None:
    def parse(zone: str, **keys: str) -> None:
        parse_config({"providers": {"r": {"kind": "replay", **keys}},
                      "regions": {"x": {"provider": "r", "zone": zone}}}, "t.toml", {})

    parse("US-CAL-CISO", horizon="12h")
    with pytest.raises(ConfigError, match=r"regions\.x\.zone.*DE-LU, GB, US-CAL-CISO"):
        parse("FR")
    with pytest.raises(ConfigError, match=r"providers\.r\.path.*unknown key"):
        parse("GB", path="x.csv")
    with pytest.raises(ConfigError, match=r"providers\.r\.horizon"):
        parse("GB", horizon="soon")


def test_demo_config_keeps_its_state_beside_the_repository_whatever_the_directory() -> None:
    config = load_config(str(DEMO_CONFIG), {})
    assert config.database_url == f"sqlite:///{REPOSITORY / '.demo' / 'gridshift.db'}"
    assert config.daemon.log_dir == REPOSITORY / ".demo" / "logs"
    assert {p.kind for p in config.providers.values()} == {"replay"}
    assert len(config.regions) >= 2
    assert all(isinstance(build_provider(p), ReplayProvider) for p in config.providers.values())


def test_demo_moves_a_two_hour_job_into_a_cleaner_window_on_most_days(tmp_path: Path) -> None:
    config = dataclasses.replace(load_config(str(DEMO_CONFIG), {}),
                                 database_url=f"sqlite:///{tmp_path / 'demo.db'}")
    store = Store.open(config.database_url)
    regions = list(config.regions)
    shifted_days = 0
    days = 21  # the bundled data's three weeks, each day at 09:20 UTC
    for day in range(days):
        now = datetime(2026, 11, 2, 9, 20, tzinfo=UTC) + day * timedelta(days=1)
        forecasting.refresh_all(config, store, now)
        preview = replanning.preview(store, config, 2 * HOUR, now, now + 24 * HOUR, regions,
                                   now)
        assert all(o.covered for o in preview.options)
        for option in preview.options:
            starting_now = replanning.run_now_intensity(store, config, option.region, now,
                                                      2 * HOUR)
            assert starting_now is not None
            # Cleaner by at least a tenth, at least an hour later, in the same region.
            if option.start >= (now + HOUR).timestamp() and option.intensity < 0.9 * starting_now:
                shifted_days += 1
                break
    assert shifted_days > days * 2 // 3


def test_demo_output_says_the_data_is_replayed(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    shutil.copy(DEMO_CONFIG, tmp_path / "config" / "demo.toml")
    workspace = create_workspace(tmp_path, "")
    workspace.config_path = tmp_path / "config" / "demo.toml"
    assert workspace.cli("db", "upgrade").returncode == 0
    assert (tmp_path / ".demo" / "gridshift.db").is_file()  # beside the config file
    refreshed = workspace.cli("forecast", "--refresh", "--region", "gb")
    assert refreshed.returncode == 0, refreshed.stderr
    assert f"average intensity ({REPLAY_BASIS}" in refreshed.stdout
    planned = workspace.cli("plan", "--duration", "2h", "--json")
    assert {o["basis"] for o in planned.json()["options"]} == {REPLAY_BASIS}
    submitted = workspace.cli("submit", "--duration", "2h", "--within", "24h", "--", "true")
    assert submitted.returncode == 0, submitted.stderr
    shown = workspace.cli("show", "1")
    assert "intensity replayed from bundled data" in shown.stdout
