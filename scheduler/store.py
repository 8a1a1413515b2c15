"""The one module that writes SQL: jobs, their conditional transitions, forecast points.

The database is SQLite (the embedded default) or PostgreSQL (``postgresql+psycopg://``,
for a team); everything else in gridshift is the same on both. SQLite runs in WAL mode
with a busy timeout. Every write transaction on SQLite starts with ``BEGIN IMMEDIATE``: a
deferred transaction that later upgrades to a write fails with "database is locked" under
concurrency even with a busy timeout. PostgreSQL locks rows, not the database: a
transition reads the job's state ``FOR UPDATE``. Every job state change is ``UPDATE ...
WHERE id = :id AND state IN (:expected)`` checked by row count, so the CLI and the daemon
never race.
"""

from __future__ import annotations

import bisect
import functools
import json
import os
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    column,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.functions import FunctionElement

from scheduler import documents, render
from scheduler.errors import GridshiftError, StateConflict, UnknownJob
from scheduler.models import (
    FINISHED,
    REPORT_ORDER_INDEX,
    REVIEW_INPUTS,
    TRANSITIONS,
    UNSTARTED,
    DaemonHeartbeat,
    ForecastPoint,
    Job,
    JobChunk,
    JobDocument,
    JobEvent,
    JobRun,
    JobState,
    ProviderRefresh,
    UTCDateTime,
    review_figures,
    scheduled_grams,
)
from scheduler.records import ChunkPlan, NewJob, PointRecord, RunEnd, Series, plan_note

BUSY_TIMEOUT_S = 60
# Rows a report reads and converts at a time: large enough that per-page costs vanish,
# small enough that a page's Python objects stay a few megabytes.
REPORT_PAGE_ROWS = 5000
# Ids per IN (...) list: well under SQLite's limit on bound variables.
_IDS_PER_QUERY = 10_000
__all__ = ["NewJob", "PlanUpdate", "PointRecord", "Series", "Store"]


# The PostgreSQL advisory lock that keeps one daemon per database (any bigint: the server
# scopes advisory locks to the database).
DAEMON_LOCK_KEY = 0x6772_6964_7368_01


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def shown_url(url: str) -> str:
    """The URL as printed and logged: a password in it becomes ``***``."""
    parts = urlsplit(url)
    if is_sqlite(url) or parts.password is None:
        return url
    user_and_password, _at, host = parts.netloc.rpartition("@")
    user = user_and_password.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def make_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite (see below) or PostgreSQL as it is."""
    if not is_sqlite(url):
        # pre_ping: a pooled connection the server closed (a restart) is replaced, not
        # handed to the next request.
        return create_engine(url, pool_pre_ping=True)
    return _make_sqlite_engine(url)


def _make_sqlite_engine(url: str) -> Engine:
    """An engine with WAL, a busy timeout and owner-only files; writes use BEGIN IMMEDIATE."""
    path = sqlite_path(url)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("gridshift_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Store:
    """All reads and writes of gridshift's state. Methods take ``now`` where they stamp time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(gridshift_begin="IMMEDIATE")
        self._sqlite = engine.dialect.name == "sqlite"
        # INSERT ... ON CONFLICT: the same statement in both dialects' own constructs.
        self._insert = sqlite.insert if self._sqlite else postgresql.insert

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> Store:
        engine = make_engine(url)
        if migrate:
            from scheduler.migrate import ensure_schema

            ensure_schema(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _reading_in(self, snapshot: Session | None) -> Iterator[Session]:
        """``snapshot`` (a ``reading`` session the caller holds) where given, else a
        read transaction of its own."""
        if snapshot is not None:
            yield snapshot
            return
        with self.reading() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A write transaction that holds SQLite's write lock from its first statement
        (PostgreSQL locks the rows it writes). The stored documents of the jobs it wrote
        (``_touch``) are rewritten before it commits, so none is ever stale."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session
            if touched := session.info.get(_TOUCHED_JOBS):
                self._store_documents(session, sorted(touched))

    # Stored documents (models.JobDocument) ----------------------------------------------

    def _store_documents(self, session: Session, job_ids: Sequence[int]) -> None:
        """Rewrite the stored documents of ``job_ids``: drop each, and encode it again
        where the job is finished, having started (the jobs a report holds)."""
        session.flush()
        connection = session.connection()
        for first in range(0, len(job_ids), _IDS_PER_QUERY):
            ids = job_ids[first:first + _IDS_PER_QUERY]
            connection.execute(delete(JobDocument).where(JobDocument.job_id.in_(ids)))
            rows = [
                {"job_id": job_id, "json_head": json_head, "json_tail": json_tail,
                 "csv_head": csv_head, "csv_tail": csv_tail}
                for job_id, (json_head, json_tail, csv_head, csv_tail)
                in self._encoded_documents(session, ids, finished_only=True)]
            if rows:
                connection.execute(insert(JobDocument), rows)

    def _encoded_documents(self, session: Session, job_ids: Sequence[int],
                           finished_only: bool = False
                           ) -> list[tuple[int, tuple[str, str, str, str]]]:
        """(id, ``documents.stored_texts``) of each of ``job_ids`` (only those finished
        after starting, where asked), encoded from its row and its parts as they are now."""
        query = self._documents_query[finished_only]
        rows = session.connection().execute(query, {"ids": list(job_ids)}).all()
        if not rows:
            return []
        stored = dict(zip(render.DOCUMENT_COLUMNS, zip(*rows, strict=True), strict=True))
        document = render.document_columns(stored, None)
        ids = list(document["id"])
        interruptible = [job_id for job_id, mode in zip(ids, document["interruptible"],
                                                         strict=True) if mode is not None]
        chunks, runs = (self.parts_of_jobs(interruptible, snapshot=session)
                        if interruptible else ({}, {}))
        document.update(render.parts_columns(ids, chunks, runs))
        return list(zip(ids, documents.stored_texts(document), strict=True))

    @functools.cached_property
    def _documents_query(self) -> dict[bool, Any]:
        """What ``_encoded_documents`` reads, built once (a write to a finished job runs it):
        every job's, and finished jobs' only."""
        query = (select(*(_report_column(name, self._sqlite)
                          for name in render.DOCUMENT_COLUMNS))
                 .select_from(Job.__table__)
                 .where(_job_column("id").in_(bindparam("ids", expanding=True)))
                 .order_by(_job_column("id")))
        return {False: query, True: query.where(
            _job_column("state").in_([s.value for s in FINISHED]),
            _job_column("started_at").is_not(None))}

    def store_missing_documents(self) -> int:
        """Encode the stored document of every finished job that has none (jobs finished
        before migration 0011); returns how many. ``gridshift db upgrade`` runs it."""
        query = (select(Job.id).outerjoin(JobDocument, JobDocument.job_id == Job.id)
                 .where(Job.state.in_([s.value for s in FINISHED]),
                        Job.started_at.is_not(None), JobDocument.job_id.is_(None))
                 .order_by(Job.id))
        with self.reading() as session:
            missing = list(session.scalars(query))
        for first in range(0, len(missing), REPORT_PAGE_ROWS):
            with self.writing() as session:
                _touch(session, missing[first:first + REPORT_PAGE_ROWS])
        return len(missing)

    def documents_of_jobs(self, job_ids: Sequence[int], snapshot: Session | None = None
                          ) -> dict[int, tuple[str, str, str, str]]:
        """The texts a stored document would hold (``documents.stored_texts``) of each of
        ``job_ids``, encoded now: a report's jobs that have none stored."""
        with self._reading_in(snapshot) as session:
            return dict(self._encoded_documents(session, job_ids))

    # Jobs -----------------------------------------------------------------------------

    def add_job(self, new: NewJob, now: datetime) -> Job:
        """Insert a job in state ``queued`` with its first event; return it with its id."""
        job = Job(
            name=new.name,
            state=JobState.QUEUED.value,
            argv=list(new.argv),
            cwd=new.cwd,
            env=dict(new.env),
            duration_s=new.duration_s,
            not_before=new.not_before,
            deadline=new.deadline,
            regions=list(new.regions),
            power_watts=new.power_watts,
            submitted_at=now,
            signal=new.signal,
            run_now_intensity=new.run_now_intensity,
            owner_uid=new.owner_uid,
            owner_gid=new.owner_gid,
            owner_name=new.owner_name,
            environment=None if new.environment is None else dict(new.environment),
            umask=new.umask,
            array_id=new.array_id,
            array_index=new.array_index,
            **_interruptible_values(new),
        )
        with self.writing() as session:
            session.add(job)
            session.flush()
            session.add(JobEvent(job_id=job.id, at=now, old_state=None,
                                 new_state=JobState.QUEUED.value, reason="submitted"))
            _load_scheduled_grams(session, [job])
        return job

    def add_jobs(self, specs: Sequence[NewJob], plans: Sequence[PlanUpdate], now: datetime,
                 array: Sequence[int] | None = None) -> list[Job]:
        """Store new jobs already placed, in one transaction: each is ``planned`` with its
        "submitted" and "planned" events, or nothing is stored. ``plans[i]`` places
        ``specs[i]`` (its job_id is ignored). With ``array`` (one index per spec) the jobs
        form an array whose id is the first job's id."""
        if len(plans) != len(specs) or (array is not None and len(array) != len(specs)):
            raise ValueError("one plan (and one array index) per job")
        rows = [self._job_values(spec, plan, now) for spec, plan in zip(specs, plans, strict=True)]
        table: Table = Job.__table__  # type: ignore[assignment]
        # Core inserts, ids returned in order: the ORM's flush inserted an array's 1,000
        # jobs one statement each.
        returning_ids = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        with self.writing() as session:
            connection = session.connection()
            ids: list[int] = []
            if array is not None:
                first = connection.execute(returning_ids, [rows[0]]).scalar_one()
                connection.execute(update(table).where(table.c.id == first)
                                   .values(array_id=first, array_index=array[0]))
                ids.append(first)
                for row, index in zip(rows, array, strict=True):
                    row["array_id"], row["array_index"] = first, index
            if len(rows) > len(ids):
                ids.extend(connection.execute(returning_ids, rows[len(ids):]).scalars())
            events = []
            for job_id, plan in zip(ids, plans, strict=True):
                events.append({"job_id": job_id, "at": now, "old_state": None,
                               "new_state": JobState.QUEUED.value, "reason": "submitted"})
                events.append({"job_id": job_id, "at": now,
                               "old_state": JobState.QUEUED.value,
                               "new_state": JobState.PLANNED.value,
                               "reason": f"planned: {plan.describe()}"})
            connection.execute(insert(JobEvent), events)
            chunk_rows = [{"job_id": job_id, "seq": seq, "region": chunk.region,
                           "start": chunk.start, "end": chunk.end, "intensity": chunk.intensity}
                          for job_id, plan in zip(ids, plans, strict=True)
                          for seq, chunk in enumerate(plan.chunks)]
            if chunk_rows:
                connection.execute(insert(JobChunk), chunk_rows)
            jobs = [Job(id=job_id, **row) for job_id, row in zip(ids, rows, strict=True)]
            _load_scheduled_grams(session, jobs)
        return jobs

    @staticmethod
    def _job_values(new: NewJob, plan: PlanUpdate, now: datetime) -> dict[str, Any]:
        """The columns of a new job, placed by ``plan``."""
        return {
            "name": new.name, "state": JobState.PLANNED.value, "argv": list(new.argv),
            "cwd": new.cwd, "env": dict(new.env), "duration_s": new.duration_s,
            "not_before": new.not_before, "deadline": new.deadline,
            "regions": list(new.regions), "power_watts": new.power_watts,
            "submitted_at": now, "signal": new.signal,
            "run_now_intensity": new.run_now_intensity, "owner_uid": new.owner_uid,
            "owner_gid": new.owner_gid, "owner_name": new.owner_name,
            "environment": None if new.environment is None else dict(new.environment),
            "umask": new.umask, "planned_region": plan.region, "planned_start": plan.start,
            "planned_intensity": plan.intensity, "planned_vintage": plan.vintage,
            **plan.note_columns(), "deadline_missed": False,
            "chunk_end": plan.chunks[0].end if plan.chunks else None,
            "array_id": None, "array_index": None, **_interruptible_values(new),
        }

    def job_chunks(self, job_id: int) -> list[ChunkPlan]:
        """An interruptible job's planned chunks, in order (empty for any other job)."""
        query = select(JobChunk).where(JobChunk.job_id == job_id).order_by(JobChunk.seq)
        with self.reading() as session:
            return [ChunkPlan(chunk.region, chunk.start, chunk.end, chunk.intensity)
                    for chunk in session.scalars(query)]

    def save_chunks(self, plans: Mapping[int, Sequence[ChunkPlan]]) -> None:
        """Replace each job's planned chunks with ``plans[job_id]`` (in order) and point its
        chunk_end at the first chunk's end. The plan's other columns (planned_start...)
        are written by whoever placed it, with its event."""
        if not plans:
            return
        ids = list(plans)
        rows = [{"job_id": job_id, "seq": seq, "region": chunk.region, "start": chunk.start,
                 "end": chunk.end, "intensity": chunk.intensity}
                for job_id, chunks in plans.items() for seq, chunk in enumerate(chunks)]
        with self.writing() as session:
            connection = session.connection()
            for part in range(0, len(ids), _IDS_PER_STATEMENT):
                connection.execute(delete(JobChunk).where(
                    JobChunk.job_id.in_(ids[part:part + _IDS_PER_STATEMENT])))
            if rows:
                connection.execute(insert(JobChunk), rows)
            firsts = [{"chunk_id": job_id, "chunk_end": chunks[0].end}
                      for job_id, chunks in plans.items() if chunks]
            if firsts:
                jobs = Job.__table__.c
                connection.execute(update(Job).where(jobs.id == bindparam("chunk_id"))
                                   .values(chunk_end=bindparam("chunk_end")), firsts)

    # Runs of interruptible jobs (scheduler/executors/local.py) ---------------------------

    def job_runs(self, job_id: int) -> list[JobRun]:
        """An interruptible job's runs, in order (empty for any other job)."""
        query = select(JobRun).where(JobRun.job_id == job_id).order_by(JobRun.run)
        with self.reading() as session:
            return list(session.scalars(query))

    def paused_jobs(self) -> list[Job]:
        """Every paused job, oldest first (few: the dispatcher reads them every tick)."""
        return self.list_jobs((JobState.PAUSED,))

    def begin_run(self, job_id: int, expected: Collection[JobState], now: datetime,
                  reason: str, region: str, **fields: Any) -> int:
        """Move the job to running (from one of ``expected``, with ``fields``), count a run
        and open its job_runs row starting ``now``, all in one transaction. Returns the
        run's number (1 for the first). StateConflict when the job is in another state."""
        with self.writing() as session:
            done = session.scalar(select(Job.run_count).where(Job.id == job_id)) or 0
            run = done + 1
            _transition_in(session, job_id, expected, JobState.RUNNING, now, reason,
                           {**fields, "run_count": run})
            session.add(JobRun(job_id=job_id, run=run, region=region, started_at=now))
        return run

    def undo_run(self, job_id: int, new_state: JobState, now: datetime, reason: str,
                 **fields: Any) -> None:
        """A run whose command provably never started: move the running job to
        ``new_state`` and forget the run (its row and its count), in one transaction."""
        with self.writing() as session:
            run = session.scalar(select(Job.run_count).where(Job.id == job_id)) or 0
            _transition_in(session, job_id, (JobState.RUNNING,), new_state, now, reason,
                           {**fields, "run_count": max(run - 1, 0)})
            session.execute(delete(JobRun).where(JobRun.job_id == job_id, JobRun.run == run,
                                                 JobRun.ended_at.is_(None)))

    def end_run(self, job_id: int, expected: Collection[JobState], new_state: JobState,
                now: datetime, reason: str, run: RunEnd | None, **fields: Any) -> None:
        """Move the job to ``new_state`` and close its open run with ``run`` (its end,
        outcome, work and energy), adding the run's work to the job's work_done_s, in one
        transaction. With ``run`` None (a paused job ending) only the transition is made."""
        with self.writing() as session:
            runs = JobRun.__table__.c
            open_run = None if run is None else session.scalar(select(JobRun.run).where(
                runs.job_id == job_id, runs.ended_at.is_(None)).order_by(runs.run.desc()))
            done = session.scalar(select(Job.work_done_s).where(Job.id == job_id)) or 0.0
            if run is not None and open_run is not None:
                fields = {**fields, "work_done_s": done + run.work_s}
            _transition_in(session, job_id, expected, new_state, now, reason, fields)
            if run is not None and open_run is not None:
                session.execute(update(JobRun).where(
                    runs.job_id == job_id, runs.run == open_run).values(
                    ended_at=run.ended_at, outcome=run.outcome, work_s=run.work_s,
                    energy_kwh=run.energy_kwh, energy_method=run.energy_method))

    def get_job(self, job_id: int) -> Job:
        with self.reading() as session:
            job = session.get(Job, job_id)
        if job is None:
            raise UnknownJob(job_id)
        return job

    def list_jobs(
        self,
        states: Collection[JobState] = (),
        submitted_since: datetime | None = None,
        submitted_until: datetime | None = None,
        owner_uid: int | None = None,
        owner_name: str | None = None,
        array_id: int | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[Job]:
        query = select(Job).order_by(Job.id.desc() if newest_first else Job.id)
        if states:
            query = query.where(Job.state.in_([s.value for s in states]))
        if owner_uid is not None:
            query = query.where(Job.owner_uid == owner_uid)
        if owner_name is not None:
            query = query.where(Job.owner_name == owner_name)
        if array_id is not None:
            query = query.where(Job.array_id == array_id)
        if submitted_since is not None:
            query = query.where(Job.submitted_at >= submitted_since)
        if submitted_until is not None:
            query = query.where(Job.submitted_at < submitted_until)
        if submitted_since is not None or submitted_until is not None:
            # Ordered by submission so SQLite reads ix_jobs_submitted_at instead of
            # scanning every job in id order (ids follow submission order anyway).
            query = query.order_by(None).order_by(Job.submitted_at, Job.id)
        if limit is not None:
            query = query.limit(limit)
        with self.reading() as session:
            return list(session.scalars(query))

    def unstarted_jobs(self) -> list[Job]:
        return self.list_jobs(UNSTARTED)

    def unstarted_for_planning(self) -> UnstartedJobs:
        """What a re-plan reads of every job that has not started and runs as one block
        (interruptible jobs: ``interruptible_for_planning``), oldest first, as
        columns, times as epoch seconds computed by the database: a re-plan reads the whole
        queue (100,000 jobs), and ORM objects or parsing times in Python cost most of it."""
        c = Job.__table__.c
        query = (select(c.id, c.state, c.duration_s, _EpochSeconds(c.not_before),
                        _EpochSeconds(c.deadline), cast(c.regions, String), c.planned_region,
                        _EpochSeconds(c.planned_start), c.planned_intensity,
                        _EpochSeconds(c.planned_vintage), c.plan_reason, c.plan_left_out,
                        c.plan_replayed, c.plan_note.is_(None))
                 .where(c.state.in_([s.value for s in UNSTARTED]), c.interruptible.is_(None))
                 .order_by(c.id))
        with self.reading() as session:
            rows = session.connection().execute(query).all()
        if not rows:
            return UnstartedJobs(*([] for _ in fields(UnstartedJobs)))
        columns = [list(column) for column in zip(*rows, strict=True)]
        regions_of: dict[str, tuple[str, ...]] = {}  # few distinct region lists: parse once
        for text_value in set(columns[5]):
            regions_of[text_value] = tuple(json.loads(text_value))
        columns[5] = [regions_of[text_value] for text_value in columns[5]]
        return UnstartedJobs(*columns)

    def interruptible_for_planning(self) -> list[InterruptibleRow]:
        """Every interruptible job a re-plan places (queued, planned, paused or running),
        oldest first, with its stored chunks and the start of its current run (the newest
        job_runs row not ended; None where the runtime wrote none). Through
        ix_jobs_interruptible: the whole-job queue is never read."""
        c = Job.__table__.c
        chunk, run = JobChunk.__table__.c, JobRun.__table__.c
        states = [s.value for s in (*UNSTARTED, JobState.PAUSED, JobState.RUNNING)]
        # "> ''" rather than IS NOT NULL, which SQLite answers without the index.
        mine = and_(c.interruptible > "", c.state.in_(states))
        query = (select(c.id, c.state, c.duration_s, _EpochSeconds(c.not_before),
                        _EpochSeconds(c.deadline), cast(c.regions, String), c.interruptible,
                        c.min_chunk_s, c.max_pauses, c.restart_overhead_s, c.work_done_s,
                        c.run_count, c.run_region, _EpochSeconds(c.started_at),
                        c.planned_region, _EpochSeconds(c.planned_start),
                        c.planned_intensity, _EpochSeconds(c.planned_vintage),
                        c.plan_reason, c.plan_left_out, c.plan_replayed, c.plan_chunk_count,
                        c.plan_note.is_(None))
                 .where(mine).order_by(c.id))
        chunks_query = (select(chunk.job_id, chunk.region, _EpochSeconds(chunk.start),
                               _EpochSeconds(chunk.end))
                        .join(Job.__table__, c.id == chunk.job_id).where(mine)
                        .order_by(chunk.job_id, chunk.seq))
        runs_query = (select(run.job_id, _EpochSeconds(run.started_at))
                      .join(Job.__table__, c.id == run.job_id)
                      .where(mine, c.state == JobState.RUNNING.value, run.ended_at.is_(None))
                      .order_by(run.job_id, run.run))
        with self.reading() as session:
            connection = session.connection()
            rows = connection.execute(query).all()
            chunk_rows = connection.execute(chunks_query).all() if rows else []
            run_rows = connection.execute(runs_query).all() if rows else []
        planned: dict[int, list[tuple[str, float, float]]] = {}
        for job_id, region, start, end in chunk_rows:
            planned.setdefault(job_id, []).append((str(region), float(start), float(end)))
        run_start = {job_id: float(start) for job_id, start in run_rows}  # the newest wins
        regions_of: dict[str, tuple[str, ...]] = {}
        jobs = []
        for row in rows:
            regions = regions_of.get(row[5])
            if regions is None:
                regions = regions_of[row[5]] = tuple(json.loads(row[5]))
            values: list[Any] = [*row[:5], regions, *row[6:], tuple(planned.get(row[0], ())),
                                 run_start.get(row[0])]
            jobs.append(InterruptibleRow(*values))
        return jobs

    def due_jobs(self, now: datetime) -> list[Job]:
        """Planned jobs whose planned start has come, soonest first (what a tick launches)."""
        query = (select(Job).where(Job.state == JobState.PLANNED.value,
                                   Job.planned_start <= now)
                 .order_by(Job.planned_start, Job.id))
        with self.reading() as session:
            return list(session.scalars(query))

    def running_jobs(self) -> list[Job]:
        return self.list_jobs((JobState.RUNNING,))

    def slurm_held_jobs(self) -> list[Job]:
        """Jobs for which a Slurm job is held (slurm_region set), in any state."""
        # "> ''" (region names are never empty), not IS NOT NULL, which SQLite answers by
        # reading every job instead of ix_jobs_slurm_region.
        query = select(Job).where(Job.slurm_region > "")
        with self.reading() as session:
            return sorted(session.scalars(query), key=lambda job: job.id)

    def planned_unsubmitted(self, regions: Collection[str]) -> list[Job]:
        """Planned jobs in ``regions`` (Slurm regions) not yet handed to Slurm."""
        query = (select(Job).where(Job.state == JobState.PLANNED.value,
                                   Job.planned_region.in_(list(regions)),
                                   Job.slurm_region.is_(None)).order_by(Job.id))
        with self.reading() as session:
            return list(session.scalars(query))

    def job_events(self, job_id: int) -> list[JobEvent]:
        query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        with self.reading() as session:
            return list(session.scalars(query))

    def transition(
        self,
        job_id: int,
        expected: Collection[JobState],
        new_state: JobState,
        now: datetime,
        reason: str,
        **fields: Any,
    ) -> None:
        """Move a job from one of ``expected`` to ``new_state`` and record the event.

        The update is conditional on the current state; raise StateConflict (and change
        nothing) when the job is not in an expected state.
        """
        with self.writing() as session:
            _transition_in(session, job_id, expected, new_state, now, reason, fields)

    def update_job_fields(self, job_id: int, **fields: Any) -> None:
        """Set fields that are not a state change (pid after launch, emissions review);
        the review's figures follow their inputs in the same transaction."""
        with self.writing() as session:
            result = session.execute(
                update(Job).where(Job.id == job_id).values(**fields)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise UnknownJob(job_id)
            _rewrite_review_figures(session, job_id, fields)
            _touch(session, [job_id])

    def save_review(self, job_id: int, fields: Mapping[str, Any]) -> dict[str, float | None]:
        """Store an emissions review's ``fields`` and with them the job's emissions
        figures (``models.review_figures``); return those figures and the plan's."""
        self.update_job_fields(job_id, **fields)
        names = ("scheduled_emissions_g", *review_figures())
        with self.reading() as session:
            row = session.execute(select(*(getattr(Job, name) for name in names))
                                  .where(Job.id == job_id)).one()
        return dict(zip(names, row, strict=True))

    def save_plans(self, plans: Sequence[PlanUpdate], now: datetime) -> int:
        """Write placements for jobs that have not started; skip jobs that started meanwhile.

        Only jobs whose placement changed are written, in bulk statements; a job moving from
        queued to planned, or whose region or start changed, gets one event. Returns how
        many jobs moved (or were planned for the first time).

        Written through the driver's executemany with parameters converted once: the first
        plan of a large queue writes every job, and SQLAlchemy's per-row parameter handling
        cost ten times the database's own work.
        """
        unstarted = [s.value for s in UNSTARTED]
        rows: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        with self.writing() as session:
            connection = session.connection()
            stored_time = _stored_time_binder(connection.dialect)
            current: dict[int, Any] = {}
            ids = [int(plan.job_id) for plan in plans]
            columns = ("id, state, planned_region, CAST(planned_start AS VARCHAR), "
                       "planned_intensity, CAST(planned_vintage AS VARCHAR), plan_reason, "
                       "plan_left_out, plan_replayed, plan_chunk_count, plan_note IS NULL")
            for first in range(0, len(ids), _IDS_PER_QUERY):
                # Ids written into the statement (integers only), not bound one by one:
                # a first plan lists every job of the queue.
                listed = ",".join(map(str, ids[first:first + _IDS_PER_QUERY]))
                current.update((row[0], row) for row in connection.exec_driver_sql(
                    f"SELECT {columns} FROM jobs WHERE id IN ({listed})").fetchall())
            at = stored_time(now)
            for plan in plans:
                row = current.get(plan.job_id)
                if row is None or row.state not in unstarted:
                    continue
                moved = row.planned_region != plan.region or not _same_stored_time(
                    row[3], plan.start)
                note = plan.stored_note()
                if row.state == JobState.PLANNED.value and not moved and (
                        row.planned_intensity == plan.intensity and tuple(row[6:]) == note
                        and _same_stored_time(row[5], plan.vintage)):
                    continue
                rows.append((plan.region, stored_time(plan.start), plan.intensity,
                             stored_time(plan.vintage), *note[:-1], plan.job_id))
                if row.state == JobState.PLANNED.value and not moved:
                    continue
                verb = "planned" if row.state == JobState.QUEUED.value else "re-planned"
                events.append((plan.job_id, at, row.state, JobState.PLANNED.value,
                               f"{verb}: {plan.describe()}"))
            mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
            # In id order: a re-plan lists jobs in placement order, and updates at random
            # places in a large table read and write its pages again and again once they
            # no longer fit SQLite's cache.
            rows.sort(key=itemgetter(-1))
            events.sort(key=itemgetter(0))
            if rows:
                states = ", ".join(f"'{state}'" for state in unstarted)
                connection.exec_driver_sql(
                    f"UPDATE jobs SET state = '{JobState.PLANNED.value}', "
                    f"planned_region = {mark}, planned_start = {mark}, "
                    f"planned_intensity = {mark}, planned_vintage = {mark}, "
                    f"plan_reason = {mark}, plan_left_out = {mark}, "
                    f"plan_replayed = {mark}, plan_chunk_count = {mark}, plan_note = NULL "
                    f"WHERE id = {mark} AND state IN ({states})", rows)
            if events:
                connection.exec_driver_sql(
                    "INSERT INTO job_events (job_id, at, old_state, new_state, reason) "
                    f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark})", events)
        return len(events)

    def count_by_state(self) -> dict[str, int]:
        with self.reading() as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state))
            return {str(state): int(count) for state, count in rows.tuples()}

    def newest_point_id(self) -> int:
        with self.reading() as session:
            return session.scalar(select(func.max(ForecastPoint.id))) or 0

    def change_marker(self) -> tuple[int, int, int]:
        """Cheap fingerprint of what the planner depends on: newest point, job and event."""
        with self.reading() as session:
            return (
                session.scalar(select(func.max(ForecastPoint.id))) or 0,
                session.scalar(select(func.max(Job.id))) or 0,
                session.scalar(select(func.max(JobEvent.id))) or 0,
            )

    # Forecast points ---------------------------------------------------------------------

    def add_points(
        self, provider: str, zone: str, points: Sequence[PointRecord], fetched_at: datetime
    ) -> int:
        """Store points, skipping any identical one already stored; return how many were new."""
        if not points:
            return 0
        rows = [
            {
                "provider": provider, "zone": zone, "kind": p.kind, "start": p.start,
                "end": p.end, "value": p.value, "units": p.units, "signal": p.signal,
                "basis": p.basis, "estimated": p.estimated,
                "vintage": p.vintage or fetched_at, "fetched_at": fetched_at,
            }
            for p in points
        ]
        statement: Any = self._insert(ForecastPoint).on_conflict_do_nothing()
        if not self._sqlite:
            # psycopg reports no row count for an executemany: count the ids it returns.
            statement = statement.returning(ForecastPoint.id)
        inserted, batch = 0, 2000
        # One short transaction per batch: a submit never waits behind a whole refresh.
        for first in range(0, len(rows), batch):
            with self.writing() as session:
                # Core executemany: SQLite reports the rows it really inserted.
                result = session.connection().execute(statement, rows[first:first + batch])
                inserted += (max(int(result.rowcount), 0) if self._sqlite
                             else len(result.all()))
        return inserted

    def series(
        self,
        provider: str,
        zone: str,
        start: datetime,
        end: datetime,
        kind: str = "forecast",
        issued_before: datetime | None = None,
    ) -> Series:
        """The newest value for each slot overlapping [start, end), as a step function.

        ``issued_before`` limits it to vintages issued before that time (what was known
        then). Where slots of different vintages overlap, the newer vintage wins.
        """
        # Every refresh stores a vintage of the same slots: keep one row per slot in SQL.
        # With a single max() SQLite takes the other (bare) columns from that newest row;
        # PostgreSQL says the same with DISTINCT ON, newest vintage first.
        newest = (func.max(ForecastPoint.vintage).label("vintage") if self._sqlite
                  else ForecastPoint.vintage)
        query = (
            select(ForecastPoint.start, ForecastPoint.end, ForecastPoint.value, newest,
                   ForecastPoint.estimated, ForecastPoint.signal, ForecastPoint.basis,
                   ForecastPoint.units)
            .where(ForecastPoint.provider == provider, ForecastPoint.zone == zone,
                   ForecastPoint.kind == kind, ForecastPoint.start < end,
                   ForecastPoint.end > start)
        )
        if self._sqlite:
            query = query.group_by(ForecastPoint.start, ForecastPoint.end)
        else:
            query = (query.distinct(ForecastPoint.start, ForecastPoint.end)
                     .order_by(ForecastPoint.start, ForecastPoint.end,
                               ForecastPoint.vintage.desc()))
        if issued_before is not None:
            query = query.where(ForecastPoint.vintage < issued_before)
        with self.reading() as session:
            rows = sorted(session.execute(query).all(), key=lambda r: r.vintage, reverse=True)
        # Slots of different lengths may overlap: newest vintage first, keep a slot unless a
        # kept one overlaps it. Kept slots never overlap, so they stay sorted by start and
        # end, and only the neighbours of the insertion point need checking.
        chosen: list[Any] = []
        starts: list[datetime] = []
        for row in rows:
            index = bisect.bisect_right(starts, row.start)
            if index and chosen[index - 1].end > row.start:
                continue
            if index < len(chosen) and chosen[index].start < row.end:
                continue
            starts.insert(index, row.start)
            chosen.insert(index, row)
        first = chosen[0] if chosen else None
        return Series(
            starts=[r.start for r in chosen],
            ends=[r.end for r in chosen],
            values=[r.value for r in chosen],
            vintages=[r.vintage for r in chosen],
            estimated=[bool(r.estimated) for r in chosen],
            signal=first.signal if first else None,
            basis=first.basis if first else None,
            units=first.units if first else None,
        )

    def record_refresh(
        self,
        provider: str,
        zone: str,
        kind: str,
        now: datetime,
        ok: bool,
        message: str,
        points: int = 0,
        horizon_end: datetime | None = None,
    ) -> None:
        """Remember the latest refresh outcome per provider, zone and kind."""
        values = {"at": now, "ok": ok, "message": message, "points": points,
                  "horizon_end": horizon_end}
        if ok:
            values["last_success_at"] = now
        statement = self._insert(ProviderRefresh).values(
            provider=provider, zone=zone, kind=kind, **values
        ).on_conflict_do_update(index_elements=["provider", "zone", "kind"], set_=values)
        with self.writing() as session:
            session.execute(statement)

    def refreshes(self) -> list[ProviderRefresh]:
        query = select(ProviderRefresh).order_by(ProviderRefresh.provider,
                                                 ProviderRefresh.zone, ProviderRefresh.kind)
        with self.reading() as session:
            return list(session.scalars(query))

    def prune_points(self, older_than: datetime, keep_vintages: Collection[datetime]) -> int:
        """Delete forecast vintages issued before ``older_than``, except ``keep_vintages``."""
        with self.writing() as session:
            statement = delete(ForecastPoint).where(ForecastPoint.vintage < older_than)
            if keep_vintages:
                statement = statement.where(ForecastPoint.vintage.not_in(list(keep_vintages)))
            result = session.execute(statement)
            return int(result.rowcount)  # type: ignore[attr-defined]

    def vintages_in_use(self) -> set[datetime]:
        """Every forecast vintage a job's plan was made from (kept by retention)."""
        query = select(Job.planned_vintage).distinct().where(Job.planned_vintage.is_not(None))
        with self.reading() as session:
            return {v for v in session.scalars(query) if v is not None}

    def oldest_pending_review(self) -> datetime | None:
        """Start of the oldest run whose emissions review still needs stored points."""
        query = select(func.min(Job.started_at)).where(
            Job.state.in_([s.value for s in FINISHED]), Job.started_at.is_not(None),
            or_(Job.actuals_state.is_(None), Job.actuals_state == "pending"),
        )
        with self.reading() as session:
            return session.scalar(query)

    def planned_holds(self, regions: Collection[str], after: datetime
                      ) -> list[tuple[str, float, float]]:
        """(region, start, end) in epoch seconds of the slots unstarted jobs placed in
        ``regions`` hold after ``after``. Read as plain text and parsed here: one submit
        reads every planned job's slot, and the ORM's per-row conversions would cost more
        than the placement itself."""
        jobs: Table = Job.__table__  # type: ignore[assignment]
        start = jobs.c.planned_start
        query = (select(jobs.c.planned_region, cast(start, String), jobs.c.duration_s)
                 .where(jobs.c.state.in_([s.value for s in UNSTARTED]),
                        start.is_not(None), jobs.c.planned_region.in_(list(regions)),
                        jobs.c.interruptible.is_(None)))
        # An interruptible job holds slots over its chunks only; a running one's current
        # chunk (seq 0) is held as a running job's.
        chunk = JobChunk.__table__.c
        chunks_query = (select(chunk.region, cast(chunk.start, String), cast(chunk.end, String))
                        .join(jobs, jobs.c.id == chunk.job_id)
                        .where(jobs.c.interruptible > "",
                               or_(jobs.c.state.in_([JobState.PLANNED.value,
                                                     JobState.PAUSED.value]),
                                   and_(jobs.c.state == JobState.RUNNING.value,
                                        chunk.seq > 0)),
                               chunk.region.in_(list(regions)), chunk.end > after))
        floor = after.timestamp()
        with self.reading() as session:
            rows = session.connection().execute(query).all()
            chunk_rows = session.connection().execute(chunks_query).all()
        holds = []
        for region, stored_start, duration in rows:
            begins = _stored_epoch(stored_start)
            if begins + duration > floor:
                holds.append((str(region), begins, begins + duration))
        holds.extend((str(region), _stored_epoch(begins), _stored_epoch(ends))
                     for region, begins, ends in chunk_rows)
        return holds

    def upcoming_launches(self, limit: int) -> list[Job]:
        """Planned jobs by planned start, soonest first."""
        query = (select(Job).where(Job.state == JobState.PLANNED.value)
                 .order_by(Job.planned_start, Job.id).limit(limit))
        with self.reading() as session:
            return list(session.scalars(query))

    # Daemon heartbeat ----------------------------------------------------------------------

    def beat(self, pid: int, hostname: str, started_at: datetime, now: datetime) -> None:
        values = {"pid": pid, "hostname": hostname, "started_at": started_at,
                  "heartbeat_at": now, "stopped_at": None}
        statement = self._insert(DaemonHeartbeat).values(id=1, **values)
        statement = statement.on_conflict_do_update(index_elements=["id"], set_=values)
        with self.writing() as session:
            session.execute(statement)

    def mark_stopped(self, pid: int, now: datetime) -> None:
        with self.writing() as session:
            session.execute(update(DaemonHeartbeat).where(DaemonHeartbeat.pid == pid)
                            .values(stopped_at=now))

    def heartbeat(self) -> DaemonHeartbeat | None:
        with self.reading() as session:
            return session.get(DaemonHeartbeat, 1)

    def jobs_needing_actuals(self) -> list[Job]:
        query = select(Job).where(
            Job.state.in_([JobState.SUCCEEDED.value, JobState.FAILED.value,
                           JobState.CANCELLED.value, JobState.LOST.value]),
            Job.started_at.is_not(None),
            or_(Job.actuals_state.is_(None), Job.actuals_state == "pending"),
        ).order_by(Job.id)
        with self.reading() as session:
            return list(session.scalars(query))

    # Emissions review (scheduler/accounting.py, scheduler/report/) --------------------------

    def forecast_known_at_slot_end(
        self, provider: str, zone: str, start: datetime, end: datetime
    ) -> Series:
        """For each slot overlapping [start, end), the newest forecast issued before that
        slot ended: the best estimate where a provider publishes no actuals.

        Like ``series``, a newer vintage wins where slots of different vintages overlap.
        """
        query = (
            select(ForecastPoint.start, ForecastPoint.end, ForecastPoint.value,
                   ForecastPoint.vintage, ForecastPoint.signal, ForecastPoint.basis,
                   ForecastPoint.units)
            .where(ForecastPoint.provider == provider, ForecastPoint.zone == zone,
                   ForecastPoint.kind == "forecast", ForecastPoint.start < end,
                   ForecastPoint.end > start, ForecastPoint.vintage < ForecastPoint.end)
            .order_by(ForecastPoint.vintage.desc(), ForecastPoint.id.desc())
        )
        with self.reading() as session:
            rows = session.execute(query).all()
        chosen: list[Any] = []
        for row in rows:  # newest vintage first: keep a slot unless a newer one covers it
            if not any(row.start < c.end and row.end > c.start for c in chosen):
                chosen.append(row)
        chosen.sort(key=lambda r: r.start)
        first = chosen[0] if chosen else None
        return Series(
            starts=[r.start for r in chosen], ends=[r.end for r in chosen],
            values=[r.value for r in chosen], vintages=[r.vintage for r in chosen],
            estimated=[True] * len(chosen),
            signal=first.signal if first else None, basis=first.basis if first else None,
            units=first.units if first else None,
        )

    # Runs and chunks as show and report read them (scheduler/jobs.py, scheduler/report/) --

    def record_run_actual(self, job_id: int, run: int, actual_intensity: float | None) -> None:
        """Store the actual intensity (or its estimate) over one run's window."""
        with self.writing() as session:
            result = session.execute(
                update(JobRun).where(JobRun.job_id == job_id, JobRun.run == run)
                .values(actual_intensity=actual_intensity)
                .execution_options(synchronize_session=False))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise UnknownJob(job_id)
            _touch(session, [job_id])

    def parts_of_jobs(self, job_ids: Sequence[int], snapshot: Session | None = None
                      ) -> tuple[dict[int, list[ChunkPlan]], dict[int, list[JobRun]]]:
        """The planned chunks and the runs of each of ``job_ids`` (the interruptible jobs of
        a report's page), in order; a job with none is left out."""
        chunks: dict[int, list[ChunkPlan]] = {}
        runs: dict[int, list[JobRun]] = {}
        with self._reading_in(snapshot) as session:
            for first in range(0, len(job_ids), _IDS_PER_QUERY):
                ids = job_ids[first:first + _IDS_PER_QUERY]
                for chunk in session.scalars(select(JobChunk).where(JobChunk.job_id.in_(ids))
                                             .order_by(JobChunk.job_id, JobChunk.seq)):
                    chunks.setdefault(chunk.job_id, []).append(
                        ChunkPlan(chunk.region, chunk.start, chunk.end, chunk.intensity))
                for run in session.scalars(select(JobRun).where(JobRun.job_id.in_(ids))
                                           .order_by(JobRun.job_id, JobRun.run)):
                    runs.setdefault(run.job_id, []).append(run)
        return chunks, runs

    def report_pages(
        self,
        names: Sequence[str],
        started_since: datetime | None,
        started_until: datetime | None,
        regions: Collection[str] = (),
        page_rows: int = REPORT_PAGE_ROWS,
        snapshot: Session | None = None,
    ) -> Iterator[Sequence[Any]]:
        """``names`` (jobs columns, or ``scheduled_emissions_g``) of the finished jobs that
        started in [since, until) (in ``regions`` where given), by start: pages of at most
        ``page_rows`` tuple-like rows, read in one transaction (``snapshot``'s where given:
        see ``reading``).

        Built for reports over 100,000 jobs, where a Python conversion per value costs
        seconds: values come unconverted, except that SQLite itself turns times into the
        ISO-8601 text of ``timespec.iso_utc``. Lists stay JSON text, booleans 0/1.
        """
        columns = [_report_column(name, self._sqlite) for name in names]
        yield from self._report_rows(columns, _jobs_in_report_order(self._sqlite),
                                     started_since, started_until, regions, page_rows,
                                     snapshot)

    def report_documents(
        self,
        formatted: str,
        names: Sequence[str],
        started_since: datetime | None,
        started_until: datetime | None,
        regions: Collection[str] = (),
        page_rows: int = REPORT_PAGE_ROWS,
        snapshot: Session | None = None,
    ) -> Iterator[Sequence[Any]]:
        """The jobs ``report_pages`` reads, in its order, as their stored documents: pages of
        rows (id, head, tail, *``names``), head and tail the stored texts of ``formatted``
        ("json" or "csv"; both NULL for a job without a stored document), ``names`` (jobs
        columns) as ``report_pages`` reads them."""
        head, tail = {"json": ("json_head", "json_tail"),
                      "csv": ("csv_head", "csv_tail")}[formatted]
        joined = text(f"{'jobs INDEXED BY ' + REPORT_ORDER_INDEX if self._sqlite else 'jobs'} "
                      "LEFT JOIN job_documents ON job_documents.job_id = jobs.id")
        columns = [column("id"), column(head), column(tail),
                   *(_report_column(name, self._sqlite) for name in names)]
        yield from self._report_rows(columns, joined, started_since, started_until, regions,
                                     page_rows, snapshot)

    def _report_rows(self, columns: Sequence[Any], source: Any,
                     started_since: datetime | None, started_until: datetime | None,
                     regions: Collection[str], page_rows: int, snapshot: Session | None
                     ) -> Iterator[Sequence[Any]]:
        """``columns`` of a report's jobs (from ``source``, which holds the jobs table), in
        report order, as pages of the driver's own rows."""
        query = (select(*columns).select_from(source)
                 .where(*_report_filter(started_since, started_until, regions))
                 .order_by(_job_column("started_at"), _job_column("id")))
        with self._reading_in(snapshot) as session:
            # The DBAPI cursor's own tuples: SQLAlchemy's Row wrapping would double the cost.
            cursor = session.connection().execute(query).cursor
            while cursor is not None and (page := cursor.fetchmany(page_rows)):
                yield page

    def job_pages(
        self,
        names: Sequence[str],
        states: Collection[JobState] = (),
        owner_uid: int | None = None,
        owner_name: str | None = None,
        limit: int | None = None,
        page_rows: int = REPORT_PAGE_ROWS,
    ) -> Iterator[Sequence[Any]]:
        """``names`` of the jobs in ``states`` (every job without), of one owner where
        given, newest first: pages of rows as ``report_pages`` reads them (`list`'s JSON
        over 100,000 jobs is written as it is read)."""
        query = (select(*(_report_column(name, self._sqlite) for name in names))
                 .select_from(Job.__table__).order_by(_job_column("id").desc()))
        if states:
            query = query.where(_job_column("state").in_([s.value for s in states]))
        if owner_uid is not None:
            query = query.where(_job_column("owner_uid") == owner_uid)
        if owner_name is not None:
            query = query.where(_job_column("owner_name") == owner_name)
        if limit is not None:
            query = query.limit(limit)
        with self.reading() as session:
            cursor = session.connection().execute(query).cursor
            while cursor is not None and (page := cursor.fetchmany(page_rows)):
                yield page

    def report_sums(
        self,
        started_since: datetime | None,
        started_until: datetime | None,
        regions: Collection[str] = (),
        snapshot: Session | None = None,
    ) -> list[ReportSums]:
        """The report's totals (see ``ReportSums``) over the same jobs as ``report_pages``,
        one row per planned signal and run region: SQL sums and counts, NULLs counted out."""
        jobs = {name: _job_column(name) for name in (
            "signal", "run_region", "energy_kwh", "actual_emissions_g", "run_now_emissions_g",
            "saved_g", "forecast_error", "deadline_missed", "actuals_state",
            "intensity_estimated")}
        scheduled = _report_column("scheduled_emissions_g", self._sqlite)

        def known(value: Any) -> list[Any]:
            return [func.sum(value), func.count(value)]

        def how_many(condition: Any) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        query = (
            select(jobs["signal"], jobs["run_region"], func.count(),
                   *known(jobs["energy_kwh"]), *known(scheduled),
                   *known(jobs["actual_emissions_g"]), *known(jobs["run_now_emissions_g"]),
                   *known(jobs["saved_g"]),
                   func.sum(case((jobs["saved_g"].is_not(None), jobs["run_now_emissions_g"]))),
                   func.sum(func.abs(jobs["forecast_error"])), func.count(jobs["forecast_error"]),
                   how_many(jobs["deadline_missed"]),
                   how_many(or_(jobs["actuals_state"].is_(None),
                                jobs["actuals_state"] == "pending")),
                   how_many(jobs["intensity_estimated"]),
                   func.min(_job_column("started_at")))
            .select_from(Job.__table__)
            .where(*_report_filter(started_since, started_until, regions))
            .group_by(jobs["signal"], jobs["run_region"]))
        with self._reading_in(snapshot) as session:
            return [ReportSums(*row) for row in session.execute(query).tuples()]

    def insert_job_rows(self, rows: Sequence[dict[str, Any]]) -> int:
        """Bulk-insert complete job rows (imports, benchmarks), with their review figures;
        no events are recorded."""
        if not rows:
            return 0
        with self.writing() as session:
            before = session.scalar(select(func.max(Job.id))) or 0
            session.connection().execute(insert(Job), list(rows))
            session.execute(update(Job).where(Job.id > before).values(review_figures())
                            .execution_options(synchronize_session=False))
            _touch(session, session.scalars(select(Job.id).where(Job.id > before)))
        return len(rows)


@dataclass(frozen=True)
class ReportSums:
    """Sums and counts over the finished jobs of one planned signal and run region: each
    ``*_known`` counts the jobs whose value is known (the sum's NULLs are counted out)."""

    signal: str | None
    run_region: str | None
    jobs: int
    energy_kwh: float | None
    energy_kwh_known: int
    scheduled_g: float | None
    scheduled_g_known: int
    actual_g: float | None
    actual_g_known: int
    run_now_g: float | None
    run_now_g_known: int
    saved_g: float | None
    saved_g_known: int
    saved_run_now_g: float | None  # run-now grams of the jobs in saved_g
    forecast_abs_error: float | None
    forecast_error_known: int
    deadline_misses: int
    awaiting_actuals: int
    estimated: int
    first_started: Any  # the earliest start (to order signals by their first job)


# Reports read jobs in the order of this partial index. SQLite would otherwise pick
# an index of state and sort every row (a fifth of a 100,000-job report's read time); its
# dialect in SQLAlchemy renders no index hints, so the FROM is text and the columns are
# unbound ones of the same types. PostgreSQL's planner needs no hint.
_JOBS_IN_REPORT_ORDER = text(f"jobs INDEXED BY {REPORT_ORDER_INDEX}")


def _jobs_in_report_order(sqlite: bool) -> Any:
    return _JOBS_IN_REPORT_ORDER if sqlite else text("jobs")


def _job_column(name: str) -> Any:
    return column(name, Job.__table__.columns[name].type)


# Job ids per IN (...) list: under SQLite's and PostgreSQL's bound-parameter limits.
_IDS_PER_STATEMENT = 10_000


def _interruptible_values(new: NewJob) -> dict[str, Any]:
    """A new job's interruptible columns (all NULL for a job run as one block)."""
    return {"interruptible": new.interruptible, "min_chunk_s": new.min_chunk_s,
            "max_pauses": new.max_pauses, "restart_overhead_s": new.restart_overhead_s,
            "checkpoint_signal": new.checkpoint_signal,
            "checkpoint_grace_s": new.checkpoint_grace_s}


def _transition_in(session: Session, job_id: int, expected: Collection[JobState],
                   new_state: JobState, now: datetime, reason: str,
                   fields: Mapping[str, Any]) -> None:
    """``Store.transition`` inside the caller's write transaction."""
    for state in expected:
        if new_state not in TRANSITIONS[state]:
            raise ValueError(f"illegal transition {state.value} -> {new_state.value}")
    # FOR UPDATE (PostgreSQL; SQLite's write lock is already held): the event's old state
    # is the one the update below replaces.
    old_state = session.scalar(select(Job.state).where(Job.id == job_id).with_for_update())
    if old_state is None:
        raise UnknownJob(job_id)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_([s.value for s in expected]))
        .values(state=new_state.value, **fields)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StateConflict(
            f"job {job_id} is {old_state}, not {'/'.join(s.value for s in expected)}")
    session.add(JobEvent(job_id=job_id, at=now, old_state=old_state,
                         new_state=new_state.value, reason=reason))
    _rewrite_review_figures(session, job_id, fields)
    if new_state in FINISHED or old_state in _FINISHED_VALUES:
        _touch(session, [job_id])


# session.info's key for the ids of the jobs a write transaction wrote whose stored
# document may change (see Store.writing).
_TOUCHED_JOBS = "gridshift_touched_jobs"
_FINISHED_VALUES = frozenset(s.value for s in FINISHED)


def _touch(session: Session, job_ids: Iterable[int]) -> None:
    """Mark jobs whose row or runs this write transaction changes: their stored documents
    are rewritten before it commits."""
    session.info.setdefault(_TOUCHED_JOBS, set()).update(job_ids)


def _load_scheduled_grams(session: Session, jobs: Sequence[Job]) -> None:
    """Load the SQL-computed ``scheduled_emissions_g`` of jobs just inserted, which the
    ORM leaves unloaded (and unloadable once the session closes)."""
    by_id = {job.id: job for job in jobs}
    ids = list(by_id)
    for first in range(0, len(ids), _IDS_PER_QUERY):
        query = select(Job.id, Job.scheduled_emissions_g).where(
            Job.id.in_(ids[first:first + _IDS_PER_QUERY]))
        for job_id, grams in session.execute(query).tuples():
            set_committed_value(by_id[job_id], "scheduled_emissions_g", grams)


def _rewrite_review_figures(session: Session, job_id: int, written: Mapping[str, Any]) -> None:
    """Store the review figures of a job some of whose inputs were just written."""
    if REVIEW_INPUTS.isdisjoint(written):
        return
    session.execute(update(Job).where(Job.id == job_id).values(review_figures())
                    .execution_options(synchronize_session=False))


def _report_column(name: str, sqlite: bool) -> Any:
    """A report's column as read (see ``report_pages``)."""
    if name == "scheduled_emissions_g":
        return scheduled_grams(*map(_job_column, ("planned_intensity", "power_watts",
                                                  "duration_s"))).label(name)
    if isinstance(Job.__table__.columns[name].type, UTCDateTime):
        return _stored_time_as_iso(name, sqlite)
    return column(name)  # untyped: no result processing


def _report_filter(started_since: datetime | None, started_until: datetime | None,
                   regions: Collection[str]) -> list[Any]:
    """The WHERE terms of a report (over ``_JOBS_IN_REPORT_ORDER``): finished jobs that
    started in [since, until), in ``regions`` where given."""
    started_at = _job_column("started_at")
    terms: list[Any] = [started_at.is_not(None),
                        _job_column("state").in_([s.value for s in FINISHED])]
    if started_since is not None:
        terms.append(started_at >= started_since)
    if started_until is not None:
        terms.append(started_at < started_until)
    if regions:
        terms.append(_job_column("run_region").in_(list(regions)))
    return terms


def _stored_time_as_iso(name: str, sqlite: bool) -> Any:
    """SQL turning a stored time ('YYYY-MM-DD HH:MM:SS.ffffff', naive UTC) into iso_utc's
    text: 'YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00', microseconds only when not zero.
    PostgreSQL stores a timestamp: to_char writes that text with every microsecond."""
    stored = (column(name, String) if sqlite
              else func.to_char(column(name), 'YYYY-MM-DD HH24:MI:SS.US'))
    # Two replace() calls cost less than substr and case over 100,000 rows; '.' and '.000000'
    # occur only in the fraction, and NULL stays NULL through replace and concatenation.
    # Labelled apart from the column: ORDER BY started_at would sort by the label, the
    # text made here, and SQLite would sort every row instead of reading the index in order.
    return (func.replace(func.replace(stored, " ", "T"), ".000000", "")
            .concat("+00:00").label(f"{name}_iso"))


def _stored_time_binder(dialect: Any) -> Callable[[datetime | None], Any]:
    """What the driver is given for a time, as the ORM would store it (for executemany)."""
    binder: Callable[[datetime | None], Any] | None = (
        UTCDateTime().dialect_impl(dialect).bind_processor(dialect))
    return binder or _unchanged_value


def _unchanged_value(value: datetime | None) -> Any:
    return value


def _same_stored_time(stored: str | None, value: datetime | None) -> bool:
    """Whether a time read as text (``cast(column, String)``) is ``value``."""
    if stored is None or value is None:
        return stored is None and value is None
    return abs(_stored_epoch(stored) - value.timestamp()) < 1e-6


def _stored_epoch(text: str) -> float:
    """A stored time (naive UTC text, see models.UTCDateTime) as epoch seconds."""
    return datetime.fromisoformat(text + "+00:00").timestamp()


@dataclass(frozen=True)
class UnstartedJobs:
    """Every job that has not started, as a re-plan reads them: one list per column (row i
    is one job), times in epoch seconds, None where a job has no plan yet."""

    ids: list[int]
    states: list[str]
    durations: list[int]
    not_before: list[float]
    deadlines: list[float]
    regions: list[tuple[str, ...]]
    planned_region: list[str | None]
    planned_start: list[float | None]
    planned_intensity: list[float | None]
    planned_vintage: list[float | None]
    plan_reason: list[int | None]
    plan_left_out: list[str | None]  # JSON text (PlanUpdate.stored_note)
    plan_replayed: list[bool | None]
    plan_note_cleared: list[bool]  # no words stored (planned since migration 0010)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class InterruptibleRow:
    """An interruptible job as a re-plan reads it: times in epoch seconds, its stored
    chunks as (region, start, end), and the start of its current run, if running."""

    id: int
    state: str
    duration_s: int
    not_before: float
    deadline: float
    regions: tuple[str, ...]
    interruptible: str
    min_chunk_s: int | None
    max_pauses: int | None
    restart_overhead_s: int | None
    work_done_s: float | None
    run_count: int | None
    run_region: str | None
    started_at: float | None
    planned_region: str | None
    planned_start: float | None
    planned_intensity: float | None
    planned_vintage: float | None
    plan_reason: int | None
    plan_left_out: str | None  # JSON text (PlanUpdate.stored_note)
    plan_replayed: bool | None
    plan_chunk_count: int | None
    plan_note_cleared: bool  # no words stored (planned since migration 0010)
    chunks: tuple[tuple[str, float, float], ...] = ()
    run_started: float | None = None


class _EpochSeconds(FunctionElement[float]):
    """A stored time (naive UTC) as epoch seconds, computed by the database."""

    type = Float()
    inherit_cache = True


@compiles(_EpochSeconds, "sqlite")
def _epoch_seconds_sqlite(element: _EpochSeconds, compiler: Any, **kw: Any) -> str:
    # Whole seconds from strftime, the stored fraction ('.ffffff', or '') added: exact,
    # where julianday() would keep only milliseconds. strftime is given the whole seconds
    # alone: it rounds a fraction to milliseconds first, so '...:47.9997' made 48.
    stored = compiler.process(element.clauses, **kw)
    return (f"(CAST(strftime('%s', substr({stored}, 1, 19)) AS REAL)"
            f" + CAST(substr({stored}, 20) AS REAL))")


@compiles(_EpochSeconds)
def _epoch_seconds_standard(element: _EpochSeconds, compiler: Any, **kw: Any) -> str:
    stored = compiler.process(element.clauses, **kw)
    return f"CAST(EXTRACT(EPOCH FROM {stored}) AS DOUBLE PRECISION)"


@dataclass(frozen=True)
class PlanUpdate:
    """A placement to store for one unstarted job."""

    job_id: int
    region: str
    start: datetime
    intensity: float | None
    vintage: datetime | None
    reason: int  # records.PlacementReason flags
    left_out: tuple[str, ...] = ()  # regions left out of the comparison
    replayed: bool = False  # the region's intensity is replayed from bundled data
    chunk_count: int | None = None  # an interruptible job's chunks; None for a whole job
    # An interruptible job's chunks, in order (the first is region/start above); add_jobs
    # stores them with the job. Empty for a job run as one block.
    chunks: tuple[ChunkPlan, ...] = ()

    @property
    def note(self) -> str:
        return plan_note(self.reason, self.left_out, self.replayed, self.chunk_count)

    def stored_note(self) -> tuple[Any, ...]:
        """The note's columns as a re-plan reads them back: plan_reason, plan_left_out
        (JSON text), plan_replayed, plan_chunk_count, and whether plan_note is NULL."""
        return (self.reason, json.dumps(list(self.left_out)) if self.left_out else None,
                self.replayed, self.chunk_count, True)

    def note_columns(self) -> dict[str, Any]:
        """The note's columns as an ORM write takes them."""
        return {"plan_reason": self.reason, "plan_left_out": list(self.left_out) or None,
                "plan_replayed": self.replayed, "plan_chunk_count": self.chunk_count,
                "plan_note": None}

    def describe(self) -> str:
        shown = "no forecast" if self.intensity is None else f"{self.intensity:.0f} g/kWh"
        return f"{self.region} at {self.start.isoformat()} ({shown}); {self.note}"


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a connection of its own, held until
    ``release`` or until that connection ends: the server releases it when the holding
    process dies, however it dies."""

    def __init__(self, url: str, key: int) -> None:
        self._engine = create_engine(url, poolclass=NullPool)
        self._key = key
        self._connection: Connection | None = None
        # The daemon checks the lock from a worker thread and releases it from the main one.
        self._mutex = threading.Lock()

    def try_acquire(self, holder: str) -> bool:
        """Take the lock unless another session holds it; ``holder`` names this process
        to the server (its application_name), so ``holder`` can be told to others."""
        connection = self._engine.connect()
        try:
            connection.execute(text("SELECT set_config('application_name', :name, false)"),
                               {"name": holder[:63]})
            taken = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"),
                                           {"key": self._key}))
            connection.commit()  # session-level: the lock outlives the transaction
        except BaseException:
            connection.close()
            raise
        if not taken:
            connection.close()
            return False
        with self._mutex:
            self._connection = connection
        return True

    def connection_alive(self) -> bool:
        """Whether the connection holding the lock still answers. A server restart, or an
        administrator's pg_terminate_backend, ends it, and the lock with it."""
        with self._mutex:
            if self._connection is None:
                return False
            try:
                self._connection.execute(text("SELECT 1"))
                self._connection.commit()
                return True
            except DBAPIError:
                self._connection.close()
                self._connection = None
                return False

    def holder(self) -> str | None:
        """The application_name of the session holding the lock, where visible."""
        query = text(
            "SELECT activity.application_name FROM pg_locks AS locks "
            "JOIN pg_stat_activity AS activity ON activity.pid = locks.pid "
            "WHERE locks.locktype = 'advisory' AND locks.granted "
            "AND locks.database = (SELECT oid FROM pg_database "
            "                      WHERE datname = current_database()) "
            "AND locks.classid::bigint = :high AND locks.objid::bigint = :low "
            "AND locks.objsubid = 1")
        with self._engine.connect() as connection:
            name = connection.scalar(query, {"high": self._key >> 32,
                                             "low": self._key & 0xFFFF_FFFF})
        return str(name) if name else None

    def release(self) -> None:
        with self._mutex:
            if self._connection is not None:
                try:
                    self._connection.execute(text("SELECT pg_advisory_unlock(:key)"),
                                             {"key": self._key})
                    self._connection.commit()
                except DBAPIError:
                    pass  # the connection is gone, and the lock went with it
                finally:
                    self._connection.close()
                    self._connection = None
        self._engine.dispose()


class StoreError(GridshiftError):
    pass
