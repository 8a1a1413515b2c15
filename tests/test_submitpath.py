"""The fast submit path (scheduler/submitpath.py, sqlite3 only) against the ORM store.

A job submitted through the fast path must be stored, planned and printed exactly as one
submitted through Store + planning: the same raw rows in jobs and job_events, the same job
object, the same forecast series.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Boolean

from scheduler import planning, render, submitpath
from scheduler.migrate import HEAD_REVISION
from scheduler.models import Job, JobState, JSONDict, JSONList, UTCDateTime
from scheduler.store import BUSY_TIMEOUT_S, NewJob, PointRecord, Store
from tests.conftest import Workspace, create_csv_workspace, floor_hour, hourly

HOUR = timedelta(hours=1)
NOW = datetime(2026, 11, 26, 10, 17, 23, 456789, tzinfo=UTC)
DIP = floor_hour(NOW) + 5 * HOUR


def raw_rows(workspace: Workspace, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(workspace.db_path) as connection:
        return connection.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def point(start: datetime, end: datetime, value: float, vintage: datetime) -> PointRecord:
    return PointRecord(start=start, end=end, value=value, vintage=vintage)


def populate(store: Store) -> None:
    """Forecasts in two vintages (the newer one with half-hour slots in part), a job
    running in ``a``, one overrunning its estimate, and one planned into a's dip."""
    first = floor_hour(NOW) - 2 * HOUR
    old, new = NOW - 3 * HOUR, NOW - HOUR
    store.add_points("a", "a", [point(s, e, 400.0, old) for s, e, _ in
                                hourly(first, [0.0] * 34)], NOW - 3 * HOUR)
    newer = [point(s, e, 50.0 if s in (DIP, DIP + HOUR, DIP + 2 * HOUR) else 300.0, new)
             for s, e, _ in hourly(first, [0.0] * 20)]
    newer += [point(s, e, 120.0 + i, new) for i, (s, e, _) in
              enumerate(hourly(first + 20 * HOUR, [0.0] * 8, timedelta(minutes=30)))]
    store.add_points("a", "a", newer, NOW - HOUR)
    store.add_points("b", "b", [point(s, e, 200.0, new) for s, e, _ in
                                hourly(first, [0.0] * 34)], NOW - HOUR)
    # A percentile index (WattTime's signal_index): low numbers that are not grams.
    store.add_points("idx", "idx", [PointRecord(s, e, 3.0, vintage=new, units="percentile")
                                    for s, e, _ in hourly(first, [0.0] * 34)], NOW - HOUR)
    common = {"argv": ["true"], "cwd": "/", "env": {}, "regions": ["a", "b"],
              "power_watts": 100.0, "not_before": NOW - 4 * HOUR, "deadline": NOW + 9 * HOUR,
              "submitted_at": NOW - 4 * HOUR, "run_region": None, "started_at": None,
              "planned_region": None, "planned_start": None, "planned_intensity": None}
    store.insert_job_rows([
        {**common, "name": "running", "state": "running", "duration_s": 7200,
         "run_region": "b", "started_at": NOW - 30 * timedelta(minutes=1)},
        {**common, "name": "overrunning", "state": "running", "duration_s": 600,
         "run_region": "a", "started_at": NOW - 2 * HOUR},
        {**common, "name": "planned", "state": "planned", "duration_s": 3600,
         "planned_region": "a", "planned_start": DIP, "planned_intensity": 50.0},
    ])


def twin(root: Path) -> Workspace:
    root.mkdir(exist_ok=True)
    workspace = create_csv_workspace(root, {"a": [], "b": [], "empty": [], "idx": []})
    store = workspace.store()
    try:
        populate(store)
    finally:
        store.close()
    return workspace


SPECS = {
    "both regions, dip partly held": NewJob(
        name="train", argv=["python", "train.py", "--lr", "3"], cwd="/srv",
        env={"B": "2", "A": "1"}, duration_s=7200, not_before=NOW, deadline=NOW + 24 * HOUR,
        regions=["a", "b"], power_watts=450.0, signal="average"),
    "one region, not before +3h": NewJob(
        name="later", argv=["true"], cwd="/", env={}, duration_s=5400,
        not_before=NOW + 3 * HOUR, deadline=NOW + 12 * HOUR, regions=["b"],
        power_watts=300.0, signal="average"),
    "half-hour slots of the newest vintage": NewJob(
        name="short", argv=["true"], cwd="/", env={}, duration_s=1800,
        not_before=floor_hour(NOW) + 20 * HOUR, deadline=floor_hour(NOW) + 23 * HOUR,
        regions=["a"], power_watts=300.0, signal="average"),
    "an index region beside grams": NewJob(
        name="mixed", argv=["true"], cwd="/", env={}, duration_s=3600, not_before=NOW,
        deadline=NOW + 6 * HOUR, regions=["idx", "b"], power_watts=300.0, signal="average"),
    "no forecast at all": NewJob(
        name="blind", argv=["true"], cwd="/", env={}, duration_s=3600, not_before=NOW,
        deadline=NOW + 6 * HOUR, regions=["empty"], power_watts=300.0, signal="average"),
}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_fast_path_stores_what_the_orm_path_stores(
    tmp_path: Path, spec: NewJob
) -> None:
    orm_side, fast_side = twin(tmp_path / "orm"), twin(tmp_path / "fast")

    store = orm_side.store()
    try:
        through_orm = planning.submit_job(store, orm_side.config(), spec, NOW)
    finally:
        store.close()
    connection = submitpath.connect(fast_side.config().database_url)
    assert connection is not None
    try:
        through_fast = submitpath.submit(connection, fast_side.config(), spec, NOW)
    finally:
        connection.close()

    for table in ("jobs", "job_events"):
        assert raw_rows(fast_side, table) == raw_rows(orm_side, table)
    assert through_fast.state == "planned"
    # What submit prints, and what the ORM reads back from the fast path's row.
    assert render.job_json(through_fast) == render.job_json(through_orm)
    store = fast_side.store()
    try:
        assert render.job_json(store.get_job(through_fast.id)) == render.job_json(through_orm)
        events = [render.event_json(e) for e in store.job_events(through_fast.id)]
    finally:
        store.close()
    assert [e["new_state"] for e in events] == ["queued", "planned"]
    if "idx" in spec.regions:  # never ranked against grams
        assert through_orm.planned_region == "b"
        assert "left out idx: a percentile index" in (through_orm.plan_note or "")


def test_the_dip_goes_to_the_new_job_only_where_a_slot_is_free(tmp_path: Path) -> None:
    """The busy intervals count: region a's one slot holds the planned job at the dip."""
    workspace = twin(tmp_path)
    connection = submitpath.connect(workspace.config().database_url)
    assert connection is not None
    try:
        job = submitpath.submit(connection, workspace.config(),
                                SPECS["both regions, dip partly held"], NOW)
    finally:
        connection.close()
    assert (job.planned_region, job.planned_start) == ("a", DIP + HOUR)
    assert job.planned_intensity == 50.0


def test_connect_refuses_a_database_not_at_head(tmp_path: Path) -> None:
    workspace = twin(tmp_path)
    url = workspace.config().database_url
    assert submitpath.connect(f"sqlite:///{tmp_path / 'missing.db'}") is None
    assert not (tmp_path / "missing.db").exists()
    with sqlite3.connect(workspace.db_path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0001'")
    assert submitpath.connect(url) is None
    with sqlite3.connect(workspace.db_path) as raw:
        raw.execute("DROP TABLE alembic_version")
    assert submitpath.connect(url) is None


def test_copied_constants_agree_with_their_sources() -> None:
    assert submitpath.BUSY_TIMEOUT_S == BUSY_TIMEOUT_S
    assert (submitpath.LOOKBACK, submitpath.OVERRUN_HOLD) == (planning.LOOKBACK,
                                                             planning.OVERRUN_HOLD)
    assert (submitpath.QUEUED, submitpath.PLANNED, submitpath.RUNNING) == (
        JobState.QUEUED.value, JobState.PLANNED.value, JobState.RUNNING.value)
    columns = Job.__table__.columns
    kinds = {
        submitpath.TIME_COLUMNS: UTCDateTime, submitpath.LIST_COLUMNS: JSONList,
        submitpath.DICT_COLUMNS: JSONDict, submitpath.BOOL_COLUMNS: Boolean,
    }
    for names, kind in kinds.items():
        assert names == {c.name for c in columns if isinstance(c.type, kind)}
    given_by_submit = {"name", "state", "argv", "cwd", "env", "duration_s", "not_before",
                       "deadline", "regions", "power_watts", "submitted_at", "signal",
                       "run_now_intensity"}
    assert set(submitpath.JOB_DEFAULTS) == {c.name for c in columns} - given_by_submit - {"id"}


# Store.series, as a property -------------------------------------------------------------

QUARTER = timedelta(minutes=15)
ORIGIN = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
_zones = itertools.count()

points_strategy = st.lists(
    st.tuples(st.integers(0, 40), st.sampled_from([1, 2, 4]), st.integers(0, 3),
              st.integers(0, 500), st.booleans(), st.sampled_from(["forecast", "actual"])),
    max_size=30,
)


@pytest.fixture(scope="module")
def series_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    workspace = create_csv_workspace(tmp_path_factory.mktemp("series"), {"a": []})
    store = workspace.store()
    yield store
    store.close()


@settings(max_examples=60, deadline=None)
@given(points=points_strategy, window=st.tuples(st.integers(0, 44), st.integers(1, 20)),
       issued_before=st.none() | st.integers(0, 4))
def test_forecast_slots_equal_store_series(
    series_store: Store, points: list[tuple[int, int, int, int, bool, str]],
    window: tuple[int, int], issued_before: int | None,
) -> None:
    zone = f"z{next(_zones)}"
    records = [PointRecord(start=ORIGIN + s * QUARTER, end=ORIGIN + (s + n) * QUARTER,
                           value=float(v), kind=kind, estimated=estimated,
                           vintage=ORIGIN + vintage * HOUR)
               for s, n, vintage, v, estimated, kind in points]
    series_store.add_points("p", zone, records, ORIGIN)
    start = ORIGIN + window[0] * QUARTER
    end = start + window[1] * QUARTER
    cutoff = None if issued_before is None else ORIGIN + issued_before * HOUR
    url = str(series_store.engine.url)
    connection = submitpath.connect(url)
    assert connection is not None
    try:
        for kind in ("forecast", "actual"):
            fast = submitpath.forecast_slots(connection, "p", zone, start, end, kind, cutoff)
            orm = series_store.series("p", zone, start, end, kind, cutoff)
            assert asdict(fast) == asdict(orm)
    finally:
        connection.close()


# The command --------------------------------------------------------------------------------


def test_submit_json_is_what_show_prints(tmp_path: Path) -> None:
    workspace = twin(tmp_path)
    submitted = workspace.cli("submit", "--json", "--duration", "2h", "--env", "X=1",
                              "--", "sleep", "5")
    assert submitted.returncode == 0, submitted.stderr
    shown = workspace.cli("show", str(submitted.json()["id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    document = shown.json()
    assert [e["new_state"] for e in document.pop("events")] == ["queued", "planned"]
    assert document == submitted.json()


def test_submit_creates_and_migrates_a_missing_database(tmp_path: Path) -> None:
    workspace = create_csv_workspace(tmp_path, {"a": hourly(floor_hour(NOW), [1.0])})
    first = workspace.cli("submit", "--duration", "1h", "--", "true")
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(workspace.db_path) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchone() == (
            HEAD_REVISION,)
    second = workspace.cli("submit", "--duration", "1h", "--", "true")  # the fast path now
    assert second.returncode == 0, second.stderr
    assert first.stdout.startswith("job 1 ") and second.stdout.startswith("job 2 ")


def test_an_unusable_database_fails_submit_with_one_line(tmp_path: Path) -> None:
    workspace = create_csv_workspace(tmp_path, {"a": []})
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    text = workspace.config_path.read_text(encoding="utf-8")
    workspace.config_path.write_text(text.replace(str(workspace.db_path), str(directory)),
                                     encoding="utf-8")
    result = workspace.cli("submit", "--duration", "1h", "--", "true")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gridshift: database error: unable to open database file"]


def test_loading_the_fast_path_leaves_the_environment_as_it_was() -> None:
    """submitpath loads numpy with one BLAS thread; nothing the process starts may inherit
    that setting."""
    script = ("import os\nfrom scheduler import submitpath\n"
              "assert 'OPENBLAS_NUM_THREADS' not in os.environ, os.environ\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
