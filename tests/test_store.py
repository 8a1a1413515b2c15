"""The store on both backends (a real SQLite file, a real PostgreSQL database):
conditional transitions, history, forecast vintages; and SQLite's WAL and write locks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError

from scheduler.errors import StateConflict, UnknownJob
from scheduler.models import TRANSITIONS, ForecastPoint, JobRun, JobState
from scheduler.records import ChunkPlan
from scheduler.store import NewJob, PlanUpdate, PointRecord, Store

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gridshift.db"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """The store on each backend in turn."""
    opened = Store.open(database_url)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{db_path}")
    yield opened
    opened.close()


def new_job(name: str = "train") -> NewJob:
    return NewJob(name=name, argv=["python", "train.py", "--lr", "3"], cwd="/tmp",
                  env={"A": "1"}, duration_s=3600, not_before=NOW, deadline=NOW + 24 * HOUR,
                  regions=["gb"], power_watts=250.0)


def raw_connection(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(db_path, timeout=0, isolation_level=None)


def test_database_file_is_in_wal_mode_and_private(sqlite_store: Store, db_path: Path) -> None:
    sqlite_store.add_job(new_job(), NOW)
    with raw_connection(db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db_path.stat().st_mode & 0o077 == 0


def test_a_write_transaction_holds_the_write_lock_from_its_first_statement(
    sqlite_store: Store, db_path: Path
) -> None:
    """BEGIN IMMEDIATE: even a write transaction that starts by reading blocks other
    writers, so a read-then-write never fails half-way with "database is locked"."""
    store = sqlite_store
    other = raw_connection(db_path)
    try:
        with store.writing() as session:
            session.execute(select(1)).all()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released at commit
        other.execute("ROLLBACK")
        with store.reading() as session:  # readers never block a writer (WAL)
            session.execute(select(1)).all()
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


def test_every_store_write_begins_immediate(sqlite_store: Store) -> None:
    store = sqlite_store
    statements: list[str] = []

    def remember(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", remember)
    try:
        job = store.add_job(new_job(), NOW)
        store.transition(job.id, (JobState.QUEUED,), JobState.PLANNED, NOW, "planned")
    finally:
        event.remove(store.engine, "before_cursor_execute", remember)
    writes = [i for i, s in enumerate(statements) if s.startswith(("INSERT", "UPDATE"))]
    begins = [i for i, s in enumerate(statements) if s.startswith("BEGIN")]
    assert writes
    for index in writes:
        latest_begin = max(b for b in begins if b < index)
        assert statements[latest_begin] == "BEGIN IMMEDIATE"


def test_add_job_stores_every_field_and_a_first_event(store: Store) -> None:
    job = store.add_job(new_job(), NOW)
    stored = store.get_job(job.id)
    assert stored.state == JobState.QUEUED
    assert stored.argv == ["python", "train.py", "--lr", "3"]
    assert stored.env == {"A": "1"}
    assert stored.deadline == NOW + 24 * HOUR
    assert stored.deadline.tzinfo is not None and stored.deadline.utcoffset() == timedelta(0)
    events = store.job_events(job.id)
    assert [(e.old_state, e.new_state, e.reason, e.at) for e in events] == [
        (None, "queued", "submitted", NOW)
    ]


def test_times_come_back_aware_utc_to_the_microsecond(store: Store) -> None:
    """Whatever the zone given, and whatever the backend's own type for a time."""
    paris = timezone(timedelta(hours=1))
    deadline = datetime(2026, 11, 27, 11, 30, 15, 123456, tzinfo=paris)
    job = store.add_job(NewJob(**{**new_job().__dict__, "deadline": deadline}), NOW)
    stored = store.get_job(job.id).deadline
    assert stored == deadline and stored.tzinfo == UTC
    assert stored.isoformat() == "2026-11-27T10:30:15.123456+00:00"


def test_naive_datetimes_never_reach_the_database(store: Store) -> None:
    naive = NewJob(**{**new_job().__dict__, "deadline": datetime(2026, 11, 27)})
    with pytest.raises(Exception, match="naive"):
        store.add_job(naive, NOW)
    assert store.list_jobs() == []


def test_legal_path_records_each_transition_in_order(store: Store) -> None:
    job = store.add_job(new_job(), NOW)
    steps = [
        ((JobState.QUEUED,), JobState.PLANNED, "planned"),
        ((JobState.PLANNED,), JobState.RUNNING, "launched"),
        ((JobState.RUNNING,), JobState.SUCCEEDED, "exit status 0"),
    ]
    for minutes, (expected, new_state, reason) in enumerate(steps, start=1):
        store.transition(job.id, expected, new_state, NOW + timedelta(minutes=minutes), reason)
    history = [(e.old_state, e.new_state, e.reason) for e in store.job_events(job.id)]
    assert history == [
        (None, "queued", "submitted"),
        ("queued", "planned", "planned"),
        ("planned", "running", "launched"),
        ("running", "succeeded", "exit status 0"),
    ]
    assert [e.at for e in store.job_events(job.id)] == [
        NOW + timedelta(minutes=m) for m in range(4)
    ]


def test_transition_from_the_wrong_state_changes_nothing(store: Store) -> None:
    job = store.add_job(new_job(), NOW)
    store.transition(job.id, (JobState.QUEUED,), JobState.CANCELLED, NOW, "cancelled by user")
    with pytest.raises(StateConflict, match="cancelled"):
        store.transition(job.id, (JobState.PLANNED,), JobState.RUNNING, NOW, "launched",
                         started_at=NOW)
    stored = store.get_job(job.id)
    assert stored.state == JobState.CANCELLED
    assert stored.started_at is None
    assert [e.new_state for e in store.job_events(job.id)] == ["queued", "cancelled"]


def test_two_racing_claims_on_one_job_only_one_wins(store: Store, database_url: str) -> None:
    """The CLI's cancel and the daemon's launch both hold a stale copy of a planned job."""
    job = store.add_job(new_job(), NOW)
    store.transition(job.id, (JobState.QUEUED,), JobState.PLANNED, NOW, "planned")
    other_process = Store.open(database_url)
    try:
        other_process.transition(job.id, (JobState.QUEUED, JobState.PLANNED),
                                 JobState.CANCELLED, NOW, "cancelled by user")
        with pytest.raises(StateConflict):
            store.transition(job.id, (JobState.PLANNED,), JobState.RUNNING, NOW, "launched")
    finally:
        other_process.close()
    assert store.get_job(job.id).state == JobState.CANCELLED


@pytest.mark.parametrize(
    ("expected", "new_state"),
    [
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.SUCCEEDED, JobState.RUNNING),
        (JobState.CANCELLED, JobState.PLANNED),
        (JobState.LOST, JobState.SUCCEEDED),
        (JobState.RUNNING, JobState.QUEUED),
    ],
)
def test_illegal_transitions_are_refused_before_touching_the_database(
    store: Store, expected: JobState, new_state: JobState
) -> None:
    job = store.add_job(new_job(), NOW)
    with pytest.raises(ValueError, match="illegal transition"):
        store.transition(job.id, (expected,), new_state, NOW, "nonsense")
    assert len(store.job_events(job.id)) == 1


def test_transition_table_is_the_documented_state_machine() -> None:
    legal = {(old.value, new.value) for old, news in TRANSITIONS.items() for new in news}
    assert legal == {
        ("queued", "planned"), ("queued", "cancelled"),
        ("planned", "planned"), ("planned", "running"), ("planned", "cancelled"),
        ("running", "succeeded"), ("running", "failed"), ("running", "cancelled"),
        ("running", "lost"), ("running", "planned"), ("running", "paused"),
        ("paused", "paused"), ("paused", "running"), ("paused", "cancelled"),
        ("paused", "succeeded"), ("paused", "failed"), ("paused", "lost"),
    }


def test_a_new_plan_of_chunks_replaces_the_old_one(store: Store) -> None:
    job = store.add_job(new_job("chunked"), NOW)
    store.save_chunks({job.id: [ChunkPlan("gb", NOW, NOW + HOUR, 100.0),
                                ChunkPlan("gb", NOW + 3 * HOUR, NOW + 4 * HOUR)]})
    assert [chunk.start for chunk in store.job_chunks(job.id)] == [NOW, NOW + 3 * HOUR]
    assert store.get_job(job.id).chunk_end == NOW + HOUR

    store.save_chunks({job.id: [ChunkPlan("fr", NOW + HOUR, NOW + 2 * HOUR, 50.0)]})
    assert store.job_chunks(job.id) == [ChunkPlan("fr", NOW + HOUR, NOW + 2 * HOUR, 50.0)]
    assert store.get_job(job.id).chunk_end == NOW + 2 * HOUR


def test_runs_and_chunks_are_read_per_job_and_a_runs_actual_is_stored(store: Store) -> None:
    first, second, whole = (store.add_job(new_job(name), NOW) for name in ("a", "b", "c"))
    store.save_chunks({first.id: [ChunkPlan("gb", NOW + HOUR, NOW + 2 * HOUR, 80.0)],
                       second.id: [ChunkPlan("fr", NOW, NOW + HOUR)]})
    with store.writing() as session:
        session.add_all([
            JobRun(job_id=first.id, run=2, region="gb", started_at=NOW - HOUR),
            JobRun(job_id=first.id, run=1, region="gb", started_at=NOW - 3 * HOUR,
                   ended_at=NOW - 2 * HOUR, outcome="suspended", energy_kwh=0.5)])
    store.record_run_actual(first.id, 1, 210.0)
    assert [(run.run, run.actual_intensity) for run in store.job_runs(first.id)] == [
        (1, 210.0), (2, None)]
    with pytest.raises(UnknownJob):
        store.record_run_actual(second.id, 1, 100.0)  # it has no run 1
    chunks, runs = store.parts_of_jobs([first.id, second.id, whole.id])
    assert chunks == {first.id: [ChunkPlan("gb", NOW + HOUR, NOW + 2 * HOUR, 80.0)],
                      second.id: [ChunkPlan("fr", NOW, NOW + HOUR)]}
    assert {job_id: [run.run for run in job_runs] for job_id, job_runs in runs.items()} == {
        first.id: [1, 2]}


def test_unknown_job_is_reported(store: Store) -> None:
    with pytest.raises(UnknownJob, match="no job with id 42"):
        store.get_job(42)
    with pytest.raises(UnknownJob):
        store.transition(42, (JobState.QUEUED,), JobState.PLANNED, NOW, "planned")


def test_save_plans_records_changes_only_and_skips_started_jobs(store: Store) -> None:
    waiting = store.add_job(new_job("waiting"), NOW)
    started = store.add_job(new_job("started"), NOW)
    store.transition(started.id, (JobState.QUEUED,), JobState.PLANNED, NOW, "planned")
    store.transition(started.id, (JobState.PLANNED,), JobState.RUNNING, NOW, "launched")
    plan = PlanUpdate(waiting.id, "gb", NOW + 2 * HOUR, 120.0, NOW, 1)
    moved = PlanUpdate(waiting.id, "gb", NOW + 3 * HOUR, 110.0, NOW, 1)
    late = PlanUpdate(started.id, "gb", NOW + 5 * HOUR, 90.0, NOW, 1)

    assert store.save_plans([plan, late], NOW) == 1
    assert store.save_plans([plan], NOW) == 0  # same place: no new event
    assert store.save_plans([moved], NOW) == 1
    stored = store.get_job(waiting.id)
    assert (stored.state, stored.planned_start, stored.planned_intensity) == (
        JobState.PLANNED, NOW + 3 * HOUR, 110.0)
    reasons = [e.reason for e in store.job_events(waiting.id)]
    assert reasons[0] == "submitted"
    assert reasons[1].startswith("planned: gb at")
    assert reasons[2].startswith("re-planned: gb at")
    assert len(reasons) == 3
    assert store.get_job(started.id).planned_start is None


def test_the_database_refuses_to_rewrite_history(store: Store) -> None:
    job = store.add_job(new_job(), NOW)
    for statement in ("UPDATE job_events SET reason = 'edited'", "DELETE FROM job_events"):
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as connection:
            connection.execute(text(statement))
    assert [e.reason for e in store.job_events(job.id)] == ["submitted"]


def test_job_events_is_append_only_history(store: Store) -> None:
    job = store.add_job(new_job(), NOW)
    store.transition(job.id, (JobState.QUEUED,), JobState.PLANNED, NOW, "planned")
    before = [(e.id, e.at, e.old_state, e.new_state, e.reason) for e in store.job_events(job.id)]
    store.transition(job.id, (JobState.PLANNED,), JobState.CANCELLED, NOW + HOUR, "cancelled")
    after = [(e.id, e.at, e.old_state, e.new_state, e.reason) for e in store.job_events(job.id)]
    assert after[: len(before)] == before
    assert len(after) == len(before) + 1


# Forecast points ------------------------------------------------------------------------


def hourly_points(values: list[float], vintage: datetime | None,
                  start: datetime = NOW) -> list[PointRecord]:
    return [PointRecord(start=start + i * HOUR, end=start + (i + 1) * HOUR, value=v,
                        vintage=vintage) for i, v in enumerate(values)]


def point_count(store: Store) -> int:
    with store.reading() as session:
        return int(session.scalar(select(func.count()).select_from(ForecastPoint)) or 0)


def test_identical_points_are_stored_once(store: Store) -> None:
    issued = NOW - HOUR
    points = hourly_points([200, 150, 100], issued)
    assert store.add_points("uk", "national", points, NOW) == 3
    assert store.add_points("uk", "national", points, NOW + timedelta(minutes=5)) == 0
    assert point_count(store) == 3
    # The same slots for another zone are different points.
    assert store.add_points("uk", "13", points, NOW) == 3


def test_every_vintage_is_kept_and_series_reads_the_newest(store: Store) -> None:
    old, new = NOW - 2 * HOUR, NOW - HOUR
    store.add_points("uk", "national", hourly_points([200, 150, 100, 90], old), NOW)
    store.add_points("uk", "national", hourly_points([210, 140], new), NOW)
    assert point_count(store) == 6

    series = store.series("uk", "national", NOW, NOW + 4 * HOUR)
    assert series.values == [210, 140, 100, 90]  # newer where it exists, older beyond it
    assert series.vintages == [new, new, old, old]
    assert series.starts == [NOW + i * HOUR for i in range(4)]
    assert series.ends == [NOW + (i + 1) * HOUR for i in range(4)]

    known_then = store.series("uk", "national", NOW, NOW + 4 * HOUR, issued_before=new)
    assert known_then.values == [200, 150, 100, 90]
    assert store.series("uk", "national", NOW, NOW + 4 * HOUR, issued_before=old).values == []


def test_missing_vintage_means_fetch_time(store: Store) -> None:
    store.add_points("f", "z", hourly_points([300], None), NOW)
    store.add_points("f", "z", hourly_points([100], None), NOW + timedelta(minutes=30))
    series = store.series("f", "z", NOW, NOW + HOUR)
    assert series.values == [100]
    assert series.vintages == [NOW + timedelta(minutes=30)]


def test_series_never_overlaps_when_vintages_use_different_slot_lengths(store: Store) -> None:
    old, new = NOW - 2 * HOUR, NOW - HOUR
    store.add_points("uk", "national", hourly_points([200, 100, 50], old), NOW)
    half_hours = [PointRecord(NOW + HOUR + i * timedelta(minutes=30),
                              NOW + HOUR + (i + 1) * timedelta(minutes=30), v, vintage=new)
                  for i, v in enumerate([120, 130])]
    store.add_points("uk", "national", half_hours, NOW)
    series = store.series("uk", "national", NOW, NOW + 3 * HOUR)
    assert series.values == [200, 120, 130, 50]
    for end, next_start in zip(series.ends, series.starts[1:], strict=False):
        assert end <= next_start


def test_series_only_reads_its_window_and_kind(store: Store) -> None:
    store.add_points("uk", "national", hourly_points([1, 2, 3, 4, 5], NOW), NOW)
    store.add_points("uk", "national",
                     [PointRecord(NOW, NOW + HOUR, 999, kind="actual", vintage=NOW)], NOW)
    series = store.series("uk", "national", NOW + timedelta(minutes=90), NOW + 3 * HOUR)
    assert series.values == [2, 3]  # slots overlapping [01:30, 03:00)
    assert store.series("uk", "national", NOW, NOW + HOUR, kind="actual").values == [999]


def newest_per_slot_reference(points: list[tuple[datetime, datetime, float, datetime]]
                              ) -> list[tuple[datetime, datetime, float, datetime]]:
    """Brute force: newest vintage first, keep a point unless a kept one overlaps it."""
    kept: list[tuple[datetime, datetime, float, datetime]] = []
    for point in sorted(points, key=lambda p: p[3], reverse=True):
        if not any(point[0] < k[1] and point[1] > k[0] for k in kept):
            kept.append(point)
    return sorted(kept)


TEN_MINUTES = timedelta(minutes=10)
vintage_strategy = st.lists(  # one vintage: consecutive slots of 1..6 ten-minute steps
    st.tuples(st.integers(0, 3), st.integers(1, 6), st.integers(0, 500)), min_size=1,
    max_size=8)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vintages=st.lists(vintage_strategy, min_size=1, max_size=6),
       window=st.tuples(st.integers(0, 60), st.integers(1, 60)))
def test_series_matches_a_brute_force_newest_vintage_reference(
    store: Store, vintages: list[list[tuple[int, int, int]]], window: tuple[int, int]
) -> None:
    zone = f"z{point_count(store)}"  # a fresh zone per example, one database
    everything = []
    for number, slots in enumerate(vintages):
        issued = NOW - timedelta(days=1) + number * HOUR
        cursor = NOW
        points = []
        for gap, length, value in slots:
            start = cursor + gap * TEN_MINUTES
            cursor = start + length * TEN_MINUTES
            points.append(PointRecord(start, cursor, float(value), vintage=issued))
            everything.append((start, cursor, float(value), issued))
        store.add_points("p", zone, points, NOW)
    begin = NOW + window[0] * TEN_MINUTES
    end = begin + window[1] * TEN_MINUTES
    # The contract is per window: of the points overlapping it, newer vintages win.
    expected = newest_per_slot_reference([p for p in everything if p[0] < end and p[1] > begin])
    series = store.series("p", zone, begin, end)
    assert list(zip(series.starts, series.ends, series.values, series.vintages,
                    strict=True)) == expected



# Upserts ----------------------------------------------------------------------------------


def test_refresh_outcomes_and_the_heartbeat_keep_one_row_each(store: Store) -> None:
    store.record_refresh("uk", "national", "forecast", NOW, True, "ok", points=96,
                         horizon_end=NOW + 48 * HOUR)
    store.record_refresh("uk", "national", "forecast", NOW + HOUR, False, "timed out")
    store.record_refresh("uk", "national", "actual", NOW, True, "ok", points=4)
    forecast, actual = (next(r for r in store.refreshes() if r.kind == kind)
                        for kind in ("forecast", "actual"))
    assert len(store.refreshes()) == 2
    assert (forecast.at, forecast.ok, forecast.message, forecast.last_success_at) == (
        NOW + HOUR, False, "timed out", NOW)  # the last success is kept
    assert (actual.ok, actual.points) == (True, 4)

    store.beat(100, "host-a", NOW, NOW)
    store.mark_stopped(100, NOW + HOUR)
    store.beat(200, "host-b", NOW + 2 * HOUR, NOW + 2 * HOUR)
    beat = store.heartbeat()
    assert beat is not None
    assert (beat.pid, beat.hostname, beat.started_at, beat.stopped_at) == (
        200, "host-b", NOW + 2 * HOUR, None)


@settings(max_examples=300, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                           timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                      timezone(timedelta(hours=-8))])))
def test_sqlite_times_are_stored_as_sqlalchemy_stores_them(moment: datetime) -> None:
    """The store's own SQLite time conversion writes the text SQLAlchemy's DateTime wrote
    and reads it back to the same instant, so databases written before it read the same."""
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from scheduler.models import UTCDateTime

    dialect = sqlite_dialect.dialect()
    plain = sqlite_dialect.DATETIME()
    naive_utc = moment.astimezone(UTC).replace(tzinfo=None)
    stored = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)(moment)
    assert stored == plain.bind_processor(dialect)(naive_utc)
    read = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)(stored)
    assert read == moment and read.tzinfo == UTC
    assert read == plain.result_processor(dialect, None)(stored).replace(tzinfo=UTC)


@pytest.mark.parametrize("microsecond", [0, 499_999, 999_400, 999_500, 999_708, 999_999])
def test_times_read_as_epoch_seconds_are_exact_to_the_microsecond(
        store: Store, microsecond: int) -> None:
    """What a re-plan reads of the queue (times as epoch seconds computed by the database)
    is the stored instant: a time in the last half millisecond of a second once read a
    whole second late on SQLite, and every re-plan then moved such jobs."""
    not_before = NOW + timedelta(minutes=7, seconds=59, microseconds=microsecond)
    job = store.add_job(replace(new_job(), not_before=not_before,
                                deadline=not_before + 24 * HOUR), NOW)
    queue = store.unstarted_for_planning()
    [row] = [index for index, job_id in enumerate(queue.ids) if job_id == job.id]
    assert queue.not_before[row] == pytest.approx(not_before.timestamp(), abs=1e-6)
    assert queue.deadlines[row] == pytest.approx((not_before + 24 * HOUR).timestamp(),
                                                 abs=1e-6)
