"""`gridshift submit` without SQLAlchemy: the one module besides ``store`` that writes SQL.

Why it exists: ``submit`` must answer in under 0.3 s on a 2-core machine
(benchmarks/cli_startup.py), and importing SQLAlchemy's ORM alone takes about that long.
So for a database already at ``migrate.HEAD_REVISION`` this module issues, through the
standard library's sqlite3, the statements ``store.Store`` issues for a submit (add_job,
series, running_jobs, planned_slots, save_plans, get_job) with the same column encodings,
and mirrors ``planning.submit_job`` around the real planner. Any other database (no file
yet, an older schema) gets ``None`` back and the caller takes the full path, which migrates.

tests/test_submitpath.py proves the two paths store byte-identical rows and events, and
that ``forecast_slots`` equals ``Store.series``. Keep this module small: anything beyond
submit belongs in ``store``.
"""

from __future__ import annotations

import bisect
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if "numpy" not in sys.modules and "OPENBLAS_NUM_THREADS" not in os.environ:
    # numpy's OpenBLAS starts a busy-waiting thread per core when it loads: 50 ms or more
    # of a 2-core machine's submit, for a planner that does no linear algebra. Set for the
    # load only, so that nothing this process starts inherits it.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]

from scheduler import planner
from scheduler.config import Config
from scheduler.migrate import HEAD_REVISION
from scheduler.records import NewJob, Series
from scheduler.timespec import from_epoch, to_epoch

# Copies of constants that live in modules importing SQLAlchemy; tests check they agree.
BUSY_TIMEOUT_S = 60  # store.BUSY_TIMEOUT_S
LOOKBACK = timedelta(days=1)  # planning.LOOKBACK
OVERRUN_HOLD = timedelta(minutes=5)  # planning.OVERRUN_HOLD
QUEUED, PLANNED, RUNNING = "queued", "planned", "running"  # models.JobState values
UNSTARTED = (QUEUED, PLANNED)

# How models.Job's columns are stored, for reading a row back as the ORM would.
TIME_COLUMNS = frozenset({
    "not_before", "deadline", "submitted_at", "planned_start", "planned_vintage",
    "started_at", "ended_at", "cancel_requested_at", "actuals_checked_at",
})
LIST_COLUMNS = frozenset({"argv", "regions"})
DICT_COLUMNS = frozenset({"env"})
BOOL_COLUMNS = frozenset({"deadline_missed", "intensity_estimated"})
# Every column Store.add_job leaves to its model default.
JOB_DEFAULTS: dict[str, Any] = {
    "planned_region": None, "planned_start": None, "planned_intensity": None,
    "planned_vintage": None, "plan_note": None, "run_region": None, "started_at": None,
    "ended_at": None, "exit_code": None, "pid": None, "pid_started_at": None,
    "log_path": None, "cancel_requested_at": None, "deadline_missed": False,
    "end_reason": None, "energy_kwh": None, "energy_method": None, "energy_note": None,
    "actual_intensity": None, "run_now_actual_intensity": None,
    "planned_window_actual_intensity": None, "intensity_estimated": None,
    "actuals_state": None, "actuals_checked_at": None,
}


class JobRow:
    """A jobs row converted as the ORM converts it: attributes named like models.Job's."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None


def stored_time(value: datetime) -> str:
    """models.UTCDateTime as SQLAlchemy's DateTime writes it on SQLite: naive UTC text."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use aware UTC")
    v = value.astimezone(UTC)
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
            f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}")


def read_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


def _read_job(row: sqlite3.Row) -> JobRow:
    values: dict[str, Any] = {}
    for name in row.keys():  # sqlite3.Row iterates values, not keys
        value = row[name]
        if value is not None:
            if name in TIME_COLUMNS:
                value = read_time(value)
            elif name in LIST_COLUMNS:
                value = list(json.loads(value))
            elif name in DICT_COLUMNS:
                value = dict(json.loads(value))
            elif name in BOOL_COLUMNS:
                value = bool(value)
        values[name] = value
    return JobRow(values)


def connect(database_url: str) -> sqlite3.Connection | None:
    """A connection set up as store.make_engine sets one up, or None where the database
    is missing or not at HEAD_REVISION (the full path creates or migrates it)."""
    if not database_url.startswith("sqlite:///"):
        return None
    path = Path(database_url.removeprefix("sqlite:///"))
    if not path.exists():
        return None
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        has_versions = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        ).fetchone()
        revision = (connection.execute("SELECT version_num FROM alembic_version").fetchone()
                    if has_versions else None)
    except BaseException:
        connection.close()
        raise
    if revision is None or revision[0] != HEAD_REVISION:
        connection.close()
        return None
    return connection


@contextmanager
def _writing(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction holding SQLite's write lock from the start (as Store.writing)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def add_job(connection: sqlite3.Connection, spec: NewJob, run_now_intensity: float | None,
            now: datetime) -> int:
    """Store.add_job: the job in state ``queued`` and its 'submitted' event; its id."""
    values: dict[str, Any] = {
        "name": spec.name, "state": QUEUED, "argv": json.dumps(list(spec.argv)),
        "cwd": spec.cwd, "env": json.dumps(dict(spec.env), sort_keys=True),
        "duration_s": spec.duration_s, "not_before": stored_time(spec.not_before),
        "deadline": stored_time(spec.deadline), "regions": json.dumps(list(spec.regions)),
        "power_watts": spec.power_watts, "submitted_at": stored_time(now),
        "signal": spec.signal, "run_now_intensity": run_now_intensity, **JOB_DEFAULTS,
    }
    columns = ", ".join(f'"{name}"' for name in values)
    marks = ", ".join("?" for _ in values)
    with _writing(connection):
        cursor = connection.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})",
                                    list(values.values()))
        job_id = cursor.lastrowid
        assert job_id is not None
        connection.execute(
            "INSERT INTO job_events (job_id, at, old_state, new_state, reason) "
            "VALUES (?, ?, NULL, ?, 'submitted')", (job_id, stored_time(now), QUEUED))
    return job_id


def get_job(connection: sqlite3.Connection, job_id: int) -> JobRow:
    row = connection.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise LookupError(f"job {job_id} vanished right after it was stored")
    return _read_job(row)


def forecast_slots(
    connection: sqlite3.Connection, provider: str, zone: str, start: datetime, end: datetime,
    kind: str = "forecast", issued_before: datetime | None = None,
) -> Series:
    """Store.series: the newest value per slot overlapping [start, end); where slots of
    different vintages overlap, the newer vintage wins."""
    query = (
        'SELECT start, "end", value, max(vintage) AS vintage, estimated, signal, basis, units '
        "FROM forecast_points WHERE provider = ? AND zone = ? AND kind = ? AND start < ? "
        'AND "end" > ?'
    )
    parameters: list[Any] = [provider, zone, kind, stored_time(end), stored_time(start)]
    if issued_before is not None:
        query += " AND vintage < ?"
        parameters.append(stored_time(issued_before))
    query += ' GROUP BY start, "end"'
    rows = [(read_time(r[0]), read_time(r[1]), r[2], read_time(r[3]), bool(r[4]), r[5], r[6],
             r[7]) for r in connection.execute(query, parameters)]
    rows.sort(key=lambda r: r[3], reverse=True)  # type: ignore[arg-type, return-value]
    chosen: list[Any] = []
    starts: list[datetime] = []
    for row in rows:  # the same walk as Store.series
        slot_start, slot_end = row[0], row[1]
        assert slot_start is not None and slot_end is not None
        index = bisect.bisect_right(starts, slot_start)
        if index and chosen[index - 1][1] > slot_start:
            continue
        if index < len(chosen) and chosen[index][0] < slot_end:
            continue
        starts.insert(index, slot_start)
        chosen.insert(index, row)
    first = chosen[0] if chosen else None
    return Series(
        starts=[r[0] for r in chosen], ends=[r[1] for r in chosen],
        values=[r[2] for r in chosen], vintages=[r[3] for r in chosen],
        estimated=[r[4] for r in chosen],
        signal=first[5] if first else None, basis=first[6] if first else None,
        units=first[7] if first else None,
    )


def _forecast(slots: Series) -> planner.Forecast:
    return planner.Forecast.from_lists([to_epoch(s) for s in slots.starts],
                                       [to_epoch(e) for e in slots.ends], slots.values)


def _load(connection: sqlite3.Connection, config: Config, region: str, start: datetime,
          end: datetime) -> Series:
    settings = config.region(region)
    return forecast_slots(connection, settings.provider, settings.zone, start, end)


def _held_slots(connection: sqlite3.Connection, regions: Sequence[str], job_id: int,
                now: datetime) -> list[planner.Busy]:
    """planning.plan_new_job's busy intervals: running jobs, then the others' plans."""
    held = []
    for row in connection.execute("SELECT run_region, planned_region, started_at, duration_s "
                                  "FROM jobs WHERE state IN (?) ORDER BY id", (RUNNING,)):
        region, started = row[0] or row[1], read_time(row[2])
        if region is None or started is None:
            continue
        end = max(started + timedelta(seconds=row[3]), now + OVERRUN_HOLD)
        held.append(planner.Busy(region, to_epoch(started), to_epoch(end)))
    marks = ", ".join("?" for _ in regions)
    for region, start, duration_s in connection.execute(
        "SELECT planned_region, planned_start, duration_s FROM jobs WHERE state IN (?, ?) "
        f"AND planned_start IS NOT NULL AND planned_region IN ({marks}) AND id != ?",
        [*UNSTARTED, *regions, job_id],
    ):
        epoch = to_epoch(read_time(start))  # type: ignore[arg-type]
        held.append(planner.Busy(str(region), epoch, epoch + int(duration_s)))
    return [b for b in held if b.region in regions]


def _save_plan(connection: sqlite3.Connection, job_id: int, region: str, start: datetime,
               intensity: float | None, vintage: datetime | None, note: str,
               now: datetime) -> None:
    """Store.save_plans for one job: only while it has not started; an event on change."""
    with _writing(connection):
        current = connection.execute(
            "SELECT state, planned_region, planned_start FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if current is None or current[0] not in UNSTARTED:
            return
        same = current[1] == region and read_time(current[2]) == start
        connection.execute(
            "UPDATE jobs SET state = ?, planned_region = ?, planned_start = ?, "
            "planned_intensity = ?, planned_vintage = ?, plan_note = ? "
            "WHERE id = ? AND state IN (?, ?)",
            (PLANNED, region, stored_time(start), intensity,
             None if vintage is None else stored_time(vintage), note, job_id, *UNSTARTED),
        )
        if current[0] == PLANNED and same:
            return
        verb = "planned" if current[0] == QUEUED else "re-planned"
        shown = "no forecast" if intensity is None else f"{intensity:.0f} g/kWh"
        connection.execute(
            "INSERT INTO job_events (job_id, at, old_state, new_state, reason) "
            "VALUES (?, ?, ?, ?, ?)",
            (job_id, stored_time(now), current[0], PLANNED,
             f"{verb}: {region} at {start.isoformat()} ({shown}); {note}"),
        )


def submit(connection: sqlite3.Connection, config: Config, spec: NewJob,
           now: datetime) -> JobRow:
    """planning.submit_job without SQLAlchemy: store the job, plan it, return its row."""
    length = timedelta(seconds=spec.duration_s)
    first = _forecast(_load(connection, config, spec.regions[0], now - LOOKBACK, now + length))
    mean, covered = planner.window_mean(first, to_epoch(now), length.total_seconds())
    job_id = add_job(connection, spec, mean if covered else None, now)

    slots = {r: _load(connection, config, r, now - LOOKBACK, spec.deadline)
             for r in spec.regions}
    regions = planner.comparable_regions(
        spec.regions, {r: s.units or planner.GRAMS for r, s in slots.items() if len(s)})
    left_out = [r for r in spec.regions if r not in regions]
    request = planner.JobRequest(job_id=job_id, duration_s=float(spec.duration_s),
                                 not_before=to_epoch(spec.not_before),
                                 deadline=to_epoch(spec.deadline), regions=tuple(regions))
    placement = planner.plan(
        [request], {r: _forecast(slots[r]) for r in regions},
        {r: config.regions[r].slots for r in regions}, to_epoch(now),
        _held_slots(connection, regions, job_id, now),
    )[0]
    start = from_epoch(placement.start)
    chosen = slots[placement.region]
    used = [v for s, e, v in zip(chosen.starts, chosen.ends, chosen.vintages, strict=True)
            if s < start + length and e > start]
    _save_plan(connection, job_id, placement.region, start,
               placement.intensity if placement.covered else None,
               max(used) if used else None, placement.note + planner.left_out_note(left_out),
               now)
    return get_job(connection, job_id)
