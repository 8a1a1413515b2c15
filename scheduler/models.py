"""SQLAlchemy tables, and the job state machine with its legal transitions written down.

The schema is created and changed only through Alembic migrations in ``migrations/``;
``tests/test_migrations.py`` checks that ``upgrade head`` matches this metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    DDL,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from scheduler.units import GRAMS_PER_KWH, JOULES_PER_KWH


class JobState(StrEnum):
    QUEUED = "queued"  # submitted, not yet placed (no forecast read for it yet)
    PLANNED = "planned"  # placed in a region and start time; re-planned until it starts
    RUNNING = "running"  # launched; the process (or its wrapper) is alive
    SUCCEEDED = "succeeded"  # exited with status 0
    FAILED = "failed"  # exited non-zero, was killed by a signal, or could not start
    CANCELLED = "cancelled"  # cancelled by a user before or while it ran
    LOST = "lost"  # the process vanished and no exit status was recorded (a reboot)
    # An interruptible job between two of its chunks: suspended (its process stopped with
    # SIGSTOP, pid kept) or checkpointed (its process exited 75 after the checkpoint
    # signal; relaunched at its next chunk). Resumed at its next chunk's start.
    PAUSED = "paused"


# Every legal transition; store.transition() refuses anything else.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.PLANNED, JobState.CANCELLED}),
    JobState.PLANNED: frozenset({JobState.PLANNED, JobState.RUNNING, JobState.CANCELLED}),
    # running -> planned: only after a crash, when the command provably never started
    # (the daemon stopped between claiming the job and its wrapper spawning the command).
    # running -> paused: an interruptible job's chunk ended (suspended or checkpointed).
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.LOST,
         JobState.PLANNED, JobState.PAUSED}
    ),
    # paused -> paused: a re-plan moved its next chunk. paused -> running: resumed (SIGCONT)
    # or relaunched (checkpoint). paused -> succeeded/failed/lost: a suspended process
    # ended while stopped (killed by someone else, or it had exited as it was stopped).
    JobState.PAUSED: frozenset(
        {JobState.PAUSED, JobState.RUNNING, JobState.CANCELLED, JobState.SUCCEEDED,
         JobState.FAILED, JobState.LOST}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.LOST: frozenset(),
}
UNSTARTED = (JobState.QUEUED, JobState.PLANNED)
FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.LOST)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out; stored as naive UTC text."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)

    # On SQLite the text conversion is done here, in one C call each way, instead of
    # SQLAlchemy's format string in and regular expression out after the two methods
    # above: a first plan of a large queue converts every job's times. The text is the
    # same: SQLAlchemy's SQLite storage format is ISO 8601 with a space and microseconds.
    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any]:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)  # type: ignore[return-value]
        return _sqlite_text

    def result_processor(self, dialect: Dialect, coltype: object
                         ) -> Callable[[Any], datetime | None]:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)  # type: ignore[return-value]
        return _sqlite_datetime


def _sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use aware UTC")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


class JSONList(TypeDecorator[list[Any]]):
    """A JSON array stored as text (argv, regions)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[Any] | None, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> list[Any] | None:
        return None if value is None else list(json.loads(value))


class JSONDict(TypeDecorator[dict[str, Any]]):
    impl = Text
    cache_ok = True

    def process_bind_param(self, value: dict[str, Any] | None, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def process_result_value(self, value: str | None, dialect: Dialect) -> dict[str, Any] | None:
        return None if value is None else dict(json.loads(value))


def scheduled_grams(planned_intensity: Any, power_watts: Any, duration_s: Any
                    ) -> ColumnElement[Any]:
    """SQL for the plan's emissions: planned intensity x declared power x declared duration
    (gCO2eq; NULL without a planned intensity), from those three columns."""
    expression: ColumnElement[Any] = planned_intensity * (power_watts * duration_s
                                                          / JOULES_PER_KWH)
    return expression


class Base(DeclarativeBase):
    pass


REPORT_ORDER_INDEX = "ix_jobs_report_order"
# Longest job name the column holds (PostgreSQL enforces it; SQLite would not).
MAX_NAME_CHARS = 200
_STATES = ", ".join(f"'{s.value}'" for s in JobState)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"state IN ({_STATES})", name="ck_jobs_state"),
        CheckConstraint("duration_s > 0", name="ck_jobs_duration_positive"),
        CheckConstraint("power_watts > 0", name="ck_jobs_power_positive"),
        Index("ix_jobs_submitted_at", "submitted_at"),
        Index("ix_jobs_owner_uid", "owner_uid"),
        Index("ix_jobs_array_id", "array_id"),
        # Due launches; any lookup by state (migration 0009 dropped an index of state
        # alone, which this one covers).
        Index("ix_jobs_state_planned_start", "state", "planned_start"),
        Index("ix_jobs_slurm_region", "slurm_region"),  # the jobs held in Slurm, every tick
        Index("ix_jobs_interruptible", "interruptible"),  # what a re-plan chunks
        # Report order, covering what a report filters on first (migration 0003; the store
        # names it in report queries, where SQLite would otherwise pick a state index).
        Index(REPORT_ORDER_INDEX, "started_at", "id", "state",
              sqlite_where=text("started_at IS NOT NULL"),
              postgresql_where=text("started_at IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)
    argv: Mapped[list[Any]] = mapped_column(JSONList)
    cwd: Mapped[str] = mapped_column(Text)
    env: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    duration_s: Mapped[int] = mapped_column(Integer)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    regions: Mapped[list[Any]] = mapped_column(JSONList)
    power_watts: Mapped[float] = mapped_column(Float)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)


    # The plan: re-written at every re-plan until the job starts.
    planned_region: Mapped[str | None] = mapped_column(String(100), default=None)
    planned_start: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    planned_intensity: Mapped[float | None] = mapped_column(Float, default=None)
    planned_vintage: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    plan_note: Mapped[str | None] = mapped_column(Text, default=None)
    signal: Mapped[str | None] = mapped_column(String(16), default=None)
    # Counterfactual: mean forecast intensity over [submitted_at, +duration) in the
    # job's first region, fixed at submission.
    run_now_intensity: Mapped[float | None] = mapped_column(Float, default=None)

    # The run.
    run_region: Mapped[str | None] = mapped_column(String(100), default=None)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    pid_started_at: Mapped[float | None] = mapped_column(Float, default=None)
    log_path: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    deadline_missed: Mapped[bool] = mapped_column(default=False)
    end_reason: Mapped[str | None] = mapped_column(Text, default=None)

    # Emissions review (filled after the run).
    energy_kwh: Mapped[float | None] = mapped_column(Float, default=None)
    energy_method: Mapped[str | None] = mapped_column(String(16), default=None)
    energy_note: Mapped[str | None] = mapped_column(Text, default=None)
    actual_intensity: Mapped[float | None] = mapped_column(Float, default=None)
    run_now_actual_intensity: Mapped[float | None] = mapped_column(Float, default=None)
    planned_window_actual_intensity: Mapped[float | None] = mapped_column(Float, default=None)
    intensity_estimated: Mapped[bool | None] = mapped_column(default=None)
    actuals_state: Mapped[str | None] = mapped_column(String(16), default=None)
    actuals_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    # Who submitted it (from the socket's peer credentials, or this process's ids) and what
    # it runs with. NULL on jobs stored before migration 0004: the daemon's user and
    # environment. ``environment`` is the submitter's captured environment (the owner's
    # secrets: never printed); ``env`` holds the --env values applied on top.
    owner_uid: Mapped[int | None] = mapped_column(Integer, default=None)
    owner_gid: Mapped[int | None] = mapped_column(Integer, default=None)
    owner_name: Mapped[str | None] = mapped_column(String(64), default=None)
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSONDict, default=None)
    umask: Mapped[int | None] = mapped_column(Integer, default=None)
    # Job arrays: array_id is the id of the array's first job (as in Slurm).
    array_id: Mapped[int | None] = mapped_column(Integer, default=None)
    array_index: Mapped[int | None] = mapped_column(Integer, default=None)
    # Why the job is placed where it is: records.PlacementReason flags (migration 0005;
    # NULL for jobs planned before it, whose plan_note alone says it). With the plan_*
    # columns of migration 0010 it is what `show` puts into words (records.plan_note).
    plan_reason: Mapped[int | None] = mapped_column(Integer, default=None)
    # Slurm regions (migration 0006): the Slurm job that runs this job, kept once it ended;
    # slurm_region is where a Slurm job is held for it (NULL once gridshift is done with
    # that Slurm job), slurm_begin the begin time last given to Slurm.
    slurm_job_id: Mapped[str | None] = mapped_column(String(64), default=None)
    slurm_region: Mapped[str | None] = mapped_column(String(100), default=None)
    slurm_begin: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    # What the emissions review figures, in gCO2eq (forecast_error in gCO2eq/kWh): stored by
    # the store with every write of their inputs (``review_figures``, migration 0007), so the
    # report reads and sums them instead of deriving them per job. NULL while unknown.
    actual_emissions_g: Mapped[float | None] = mapped_column(Float, default=None)
    run_now_emissions_g: Mapped[float | None] = mapped_column(Float, default=None)
    saved_g: Mapped[float | None] = mapped_column(Float, default=None)
    forecast_error: Mapped[float | None] = mapped_column(Float, default=None)

    # Interruptible jobs (migration 0008); interruptible is NULL for a job run as one block.
    # 'suspend' or 'checkpoint' (see JobState.PAUSED); min_chunk_s is the shortest chunk,
    # max_pauses NULL means no limit; restart_overhead_s is added to the work of every
    # relaunch (checkpoint mode). checkpoint_signal is a signal name ('SIGTERM').
    interruptible: Mapped[str | None] = mapped_column(String(16), default=None)
    min_chunk_s: Mapped[int | None] = mapped_column(Integer, default=None)
    max_pauses: Mapped[int | None] = mapped_column(Integer, default=None)
    restart_overhead_s: Mapped[int | None] = mapped_column(Integer, default=None)
    checkpoint_signal: Mapped[str | None] = mapped_column(String(16), default=None)
    checkpoint_grace_s: Mapped[int | None] = mapped_column(Integer, default=None)
    # Progress: seconds of the job's work done by runs that ended (restart overhead not
    # counted), and how many runs started. The remaining work is duration_s - work_done_s.
    work_done_s: Mapped[float | None] = mapped_column(Float, default=None)
    run_count: Mapped[int | None] = mapped_column(Integer, default=None)
    # The end of the chunk the job runs in (running) or starts next (planned, paused): the
    # dispatcher pauses a running job there. planned_start is that chunk's start.
    chunk_end: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # When the checkpoint signal was sent to the current run: its grace counts from here,
    # across a daemon restart.
    checkpoint_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    # The rest of a plan's note (migration 0010), beside plan_reason: the regions left out
    # of the comparison (NULL: none), whether the region's intensity was replayed from
    # bundled data, and an interruptible plan's number of chunks (NULL for a whole job).
    # plan_note keeps only the words of jobs planned before these were stored.
    plan_left_out: Mapped[list[Any] | None] = mapped_column(JSONList, default=None)
    plan_replayed: Mapped[bool | None] = mapped_column(default=None)
    plan_chunk_count: Mapped[int | None] = mapped_column(Integer, default=None)

    # The plan's figure changes at every re-plan until the job starts: computed by the
    # database in each SELECT from the plan's own columns, never stored (a job just
    # inserted has it loaded by the store).
    scheduled_emissions_g: Mapped[float | None] = column_property(
        scheduled_grams(planned_intensity, power_watts, duration_s))  # type: ignore[arg-type]


def review_figures() -> dict[str, ColumnElement[Any]]:
    """The stored review figures as SQL over a job's own columns: each job's emissions,
    defined once. actual = measured energy x actual intensity over the real run; run-now
    = the same energy x the actual intensity had it started at submission; saved =
    run-now - actual; forecast_error = the plan's mean forecast - the actual mean over the
    planned window. Any unknown input leaves the figure NULL."""
    jobs = Job.__table__.c
    actual = jobs.energy_kwh * jobs.actual_intensity
    run_now = jobs.energy_kwh * jobs.run_now_actual_intensity
    return {"actual_emissions_g": actual, "run_now_emissions_g": run_now,
            "saved_g": run_now - actual,
            "forecast_error": jobs.planned_intensity - jobs.planned_window_actual_intensity}


# The columns ``review_figures`` reads: a write of any of them rewrites the figures.
REVIEW_INPUTS = frozenset({"energy_kwh", "actual_intensity", "run_now_actual_intensity",
                           "planned_intensity", "planned_window_actual_intensity"})


class JobEvent(Base):
    """Append-only history: every transition with time, old and new state, and reason."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id", "job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    old_state: Mapped[str | None] = mapped_column(String(16))
    new_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)


# The database itself refuses to change or delete a job event (migration 0002 adds the
# same triggers to existing databases; tests/test_migrations.py compares them). The
# statements per dialect: PostgreSQL's triggers call a function.
JOB_EVENTS_APPEND_ONLY: dict[str, tuple[str, ...]] = {
    "sqlite": tuple(
        f"CREATE TRIGGER job_events_no_{verb.lower()} BEFORE {verb} ON job_events "
        f"BEGIN SELECT RAISE(ABORT, 'job_events is append-only'); END"
        for verb in ("UPDATE", "DELETE")
    ),
    "postgresql": (
        "CREATE FUNCTION job_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'job_events is append-only'; END $$",
        *(f"CREATE TRIGGER job_events_no_{verb.lower()} BEFORE {verb} ON job_events "
          f"FOR EACH ROW EXECUTE FUNCTION job_events_append_only()"
          for verb in ("UPDATE", "DELETE")),
    ),
}
for _dialect, _statements in JOB_EVENTS_APPEND_ONLY.items():
    for _statement in _statements:
        event.listen(JobEvent.__table__, "after_create",
                     DDL(_statement).execute_if(dialect=_dialect))  # type: ignore[no-untyped-call]


class JobChunk(Base):
    """One chunk of an interruptible job's plan: rewritten at every re-plan. seq 0 is the
    chunk in jobs.planned_start / chunk_end (running or next)."""

    __tablename__ = "job_chunks"
    __table_args__ = (
        UniqueConstraint("job_id", "seq", name="uq_job_chunks_job_seq"),
        CheckConstraint("\"end\" > start", name="ck_job_chunks_interval"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    seq: Mapped[int] = mapped_column(Integer)
    region: Mapped[str] = mapped_column(String(100))
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    intensity: Mapped[float | None] = mapped_column(Float, default=None)  # forecast mean


class JobRun(Base):
    """One run of an interruptible job: from a launch or resume to its pause or end.
    The job's energy_kwh is the sum over its runs and its actual_intensity their
    energy-weighted mean, so the job's review figures cover every run."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job_id", "run", name="uq_job_runs_job_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    run: Mapped[int] = mapped_column(Integer)  # 1, 2, ... (GRIDSHIFT_RUN)
    region: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # 'suspended', 'checkpointed', or the job's final state when the run ended the job.
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)
    work_s: Mapped[float | None] = mapped_column(Float, default=None)  # work done in it
    energy_kwh: Mapped[float | None] = mapped_column(Float, default=None)
    energy_method: Mapped[str | None] = mapped_column(String(16), default=None)
    actual_intensity: Mapped[float | None] = mapped_column(Float, default=None)


class JobDocument(Base):
    """The object of a job that started and finished, as a report writes it (``report
    --json`` and ``--csv``): encoded once, when the job finishes or its review changes,
    instead of at every report (``documents.stored_texts``). The keys that need the config (the
    embodied share of SCI) are left out: a report writes ``head``, those keys, then
    ``tail``. The store rewrites it with every write to the job or its runs, in the same
    transaction; a finished job without one (finished before migration 0011, or written
    by a writer that could not render it) is encoded when printed."""

    __tablename__ = "job_documents"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True,
                                        autoincrement=False)
    json_head: Mapped[str] = mapped_column(Text)  # '{"id":1,...' up to the config's keys
    json_tail: Mapped[str] = mapped_column(Text)  # '"user":...}' after them
    csv_head: Mapped[str] = mapped_column(Text)  # the CSV row's cells before them
    csv_tail: Mapped[str] = mapped_column(Text)  # and after them


class ForecastPoint(Base):
    """One published value for one slot of one zone, as issued at one vintage.

    Every vintage is kept (later work compares forecasts with what happened); the
    unique constraint keeps an identical point from being stored twice.
    """

    __tablename__ = "forecast_points"
    __table_args__ = (
        UniqueConstraint("provider", "zone", "kind", "start", "end", "vintage",
                         name="uq_forecast_points_identity"),
        CheckConstraint("kind IN ('forecast', 'actual')", name="ck_forecast_points_kind"),
        CheckConstraint("\"end\" > start", name="ck_forecast_points_interval"),
        Index("ix_forecast_points_lookup", "provider", "zone", "kind", "start"),
        Index("ix_forecast_points_vintage", "vintage"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(100))
    zone: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(8))
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    value: Mapped[float] = mapped_column(Float)
    units: Mapped[str] = mapped_column(String(24), default=GRAMS_PER_KWH)
    signal: Mapped[str] = mapped_column(String(16), default="average")
    basis: Mapped[str | None] = mapped_column(String(16), default=None)
    estimated: Mapped[bool] = mapped_column(default=False)
    vintage: Mapped[datetime] = mapped_column(UTCDateTime)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProviderRefresh(Base):
    """The outcome of the latest refresh per provider, zone and kind (for `status`)."""

    __tablename__ = "provider_refreshes"
    __table_args__ = (UniqueConstraint("provider", "zone", "kind", name="uq_provider_refreshes"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(100))
    zone: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    ok: Mapped[bool] = mapped_column()
    message: Mapped[str] = mapped_column(Text)
    points: Mapped[int] = mapped_column(Integer, default=0)
    horizon_end: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class DaemonHeartbeat(Base):
    """One row per database: the running daemon's pid and last sign of life."""

    __tablename__ = "daemon_heartbeat"
    __table_args__ = (CheckConstraint("id = 1", name="ck_daemon_heartbeat_single"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
