"""Retention: a simulated month and more of refreshes, pruned by the daemon's own code.

Time is injected (``now`` values), nothing waits. The database stays bounded, the
vintages a job's plan used survive, points a pending emissions review needs survive, and
the planner's, report's and pruning's queries use indexes instead of scanning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select

from scheduler.daemon import Daemon
from scheduler.models import ForecastPoint, JobState
from scheduler.store import NewJob, PlanUpdate, PointRecord, Store
from tests.conftest import Workspace, hourly

START = datetime(2026, 1, 1, tzinfo=UTC)
ZONES = ("north", "south")
REFRESHES_PER_DAY = 6  # every four hours
SLOTS = 48  # a 24 h horizon of 30-minute slots
RETENTION_DAYS = 7
DAYS = 30
PER_DAY = REFRESHES_PER_DAY * SLOTS * len(ZONES)


def refresh(store: Store, at: datetime) -> None:
    """What one refresh of every zone stores: a new vintage of the next 24 h."""
    first = at.replace(minute=0)
    for n, zone in enumerate(ZONES):
        points = [PointRecord(first + i * timedelta(minutes=30),
                              first + (i + 1) * timedelta(minutes=30), 100.0 + n + i)
                  for i in range(SLOTS)]
        store.add_points(zone, zone, points, at)


def point_count(store: Store, vintage: datetime | None = None) -> int:
    query = select(func.count()).select_from(ForecastPoint)
    if vintage is not None:
        query = query.where(ForecastPoint.vintage == vintage)
    with store.reading() as session:
        return int(session.scalar(query) or 0)


def a_job(store: Store, at: datetime) -> int:
    job = store.add_job(NewJob(name="train", argv=["true"], cwd="/", env={}, duration_s=3600,
                               not_before=at, deadline=at + timedelta(days=1),
                               regions=["north"], power_watts=300.0), at)
    return job.id


@contextmanager
def captured_sql(store: Store) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "DELETE")):
            statements.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", remember)
    try:
        yield statements
    finally:
        event.remove(store.engine, "before_cursor_execute", remember)


def full_scans(store: Store, statements: list[tuple[str, Any]]) -> list[str]:
    """Query plan lines that read a whole table of jobs or forecast points."""
    scans = []
    raw = store.engine.raw_connection()
    try:
        for statement, parameters in statements:
            for row in raw.cursor().execute(f"EXPLAIN QUERY PLAN {statement}", parameters):
                detail = str(row[-1])
                if detail.startswith("SCAN") and ("forecast_points" in detail
                                                  or "jobs" in detail.split()):
                    scans.append(f"{detail} <- {statement.split()[0]} ...")
    finally:
        raw.close()
    return scans


def test_a_month_of_refreshes_stays_bounded_and_keeps_what_jobs_used(
    csv_workspace: Callable[..., Workspace],
) -> None:
    series = {zone: hourly(START, [100.0]) for zone in ZONES}
    ws = csv_workspace(series, daemon=f'tick = "1s"\nretention = "{RETENTION_DAYS}d"')
    store = ws.store()
    daemon = Daemon(ws.config(), store)
    planned_job = reviewed_job = 0
    planned_vintage = START + timedelta(days=2, hours=8)
    counts: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for day in range(DAYS):
        for n in range(REFRESHES_PER_DAY):
            refresh(store, START + timedelta(days=day, hours=4 * n))
        now = START + timedelta(days=day + 1)
        if day == 2:  # a job planned from one vintage of day 2
            planned_job = a_job(store, now)
            store.save_plans([PlanUpdate(planned_job, "north", now, 101.0, planned_vintage, 1)],
                             now)
        if day == 4:  # a job that ran on day 4, its emissions review still pending
            reviewed_job = a_job(store, now)
            store.save_plans([PlanUpdate(reviewed_job, "north", now, 101.0, None, 1)],
                             now)
            store.transition(reviewed_job, (JobState.PLANNED,), JobState.RUNNING, now, "run",
                             started_at=now - timedelta(hours=20), run_region="north")
            store.transition(reviewed_job, (JobState.RUNNING,), JobState.SUCCEEDED, now,
                             "done", ended_at=now - timedelta(hours=19), exit_code=0)
        if day == 15:  # the review is done: its points may go now
            store.update_job_fields(reviewed_job, actuals_state="done")
        daemon.prune(now)
        counts[day] = point_count(store)
        with store.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        sizes[day] = ws.db_path.stat().st_size

    # Bounded: never more than the retention window plus the kept vintage, except while
    # the review was pending (it holds points from the day before its run on).
    kept = SLOTS * len(ZONES)
    bound = RETENTION_DAYS * PER_DAY + kept
    assert all(counts[day] <= bound for day in range(0, 10))
    assert counts[14] > bound  # the pending review held days 3.. back
    assert all(counts[day] <= bound for day in range(16, DAYS))
    # Deleted pages are reused: the file stops growing once pruning keeps pace.
    assert sizes[DAYS - 1] <= sizes[16] * 1.05
    # The vintage the plan used is whole; its neighbours are gone.
    assert point_count(store, planned_vintage) == kept
    assert point_count(store, planned_vintage + timedelta(hours=4)) == 0
    assert store.get_job(planned_job).planned_vintage == planned_vintage

    # What the planner, `report` and pruning run use indexes, not full scans.
    now = START + timedelta(days=DAYS)
    keep = store.vintages_in_use()  # scans the jobs table, once an hour: small
    with captured_sql(store) as statements:
        store.series("north", "north", now - timedelta(days=1), now)
        store.unstarted_jobs()
        store.running_jobs()
        store.list_jobs(submitted_since=now - timedelta(days=7))
        store.prune_points(now - timedelta(days=RETENTION_DAYS), keep)
    assert len(statements) >= 5
    assert full_scans(store, statements) == []
    store.close()
