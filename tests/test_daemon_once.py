"""`gridshift daemon --once` as cron would run it, and the re-plan of a whole queue: what
it writes, what it logs, when it runs, and what a submit plans around between re-plans."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from scheduler import jobs, replanning
from scheduler.daemon import REPLAN_SETTLE, Daemon
from scheduler.models import JobState
from scheduler.records import SubmitRequest
from scheduler.store import NewJob, Store
from tests.conftest import Workspace, floor_hour, hourly, write_csv
from tests.daemon_process import wait_for

HOUR = timedelta(hours=1)


def _new_job(workspace: Workspace, not_before: datetime) -> NewJob:
    return NewJob(name="train", argv=["true"], cwd=str(workspace.root), env={},
                  duration_s=3600, not_before=not_before, deadline=not_before + 20 * HOUR,
                  regions=["here"], power_watts=100.0)


def test_once_launches_what_is_due_and_the_next_run_records_how_it_ended(
    csv_workspace: Callable[..., Workspace]
) -> None:
    now = datetime.now(UTC)
    workspace = csv_workspace({"here": hourly(floor_hour(now) - HOUR, [300.0] * 30)})
    marker = workspace.root / "ran"
    submitted = workspace.cli("submit", "--json", "--duration", "1m", "--within", "1h", "--",
                              "sh", "-c", f"echo ran > {marker}; exit 3")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.json()["id"]

    first = workspace.cli("daemon", "--once")
    assert first.returncode == 0, first.stderr
    assert f"job {job_id}: launched" in first.stderr
    store = workspace.store()
    assert store.get_job(job_id).state == JobState.RUNNING
    assert store.heartbeat() is not None and store.heartbeat().stopped_at is not None
    wait_for(lambda: marker.exists(), timeout=30, what="the job's command to run")

    def ended() -> bool:
        run = workspace.cli("daemon", "--once")
        assert run.returncode == 0, run.stderr
        return store.get_job(job_id).state != JobState.RUNNING

    wait_for(ended, timeout=30, what="a later --once to record the job's end")
    job = store.get_job(job_id)
    assert (job.state, job.exit_code) == (JobState.FAILED, 3)
    assert [e.new_state for e in store.job_events(job_id)].count("running") == 1
    store.close()


def test_once_fetches_only_the_forecasts_that_are_due(
    csv_workspace: Callable[..., Workspace]
) -> None:
    now = datetime.now(UTC)
    workspace = csv_workspace({"here": hourly(floor_hour(now) - HOUR, [300.0] * 30)},
                              daemon='tick = "1s"\nrefresh_every = "1h"')
    assert workspace.cli("daemon", "--once").returncode == 0
    store = workspace.store()
    (fetched,) = [r for r in store.refreshes() if r.kind == "forecast"]
    assert fetched.ok

    rerun = workspace.cli("daemon", "--once")
    assert rerun.returncode == 0, rerun.stderr
    (again,) = [r for r in store.refreshes() if r.kind == "forecast"]
    assert again.at == fetched.at, "a forecast fetched minutes ago was fetched again"
    store.close()


def test_once_refuses_to_run_beside_a_running_daemon(
    csv_workspace: Callable[..., Workspace]
) -> None:
    now = datetime.now(UTC)
    workspace = csv_workspace({"here": hourly(floor_hour(now) - HOUR, [300.0] * 30)})
    daemon = workspace.popen("daemon", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        store = workspace.store()
        wait_for(lambda: store.heartbeat() is not None, timeout=60, what="the daemon's tick")
        once = workspace.cli("daemon", "--once")
        assert once.returncode == 1
        assert "already running" in once.stderr
    finally:
        daemon.terminate()
        daemon.wait(30)


def test_a_replan_writes_only_what_changed_and_logs_each_move(
    csv_workspace: Callable[..., Workspace], caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    first_hour = floor_hour(now)
    dip_at_6 = [100.0 if hour == 6 else 300.0 for hour in range(30)]
    workspace = csv_workspace({"here": hourly(first_hour, dip_at_6)}, slots=50)
    store = workspace.store()
    daemon = Daemon(workspace.config(), store)
    daemon.refresh(now)
    ids = [store.add_job(_new_job(workspace, now), now).id for _ in range(30)]
    config = workspace.config()

    assert replanning.replan(store, config, now) == 30  # each planned, with its event
    assert {store.get_job(i).planned_start for i in ids} == {first_hour + 6 * HOUR}
    events = sum(len(store.job_events(i)) for i in ids)
    assert replanning.replan(store, config, now + timedelta(seconds=5)) == 0
    assert sum(len(store.job_events(i)) for i in ids) == events

    csv_path = config.providers["here"].path
    assert csv_path is not None
    write_csv(csv_path, hourly(first_hour, [50.0 if hour == 3 else 300.0 for hour in range(30)]))
    later = now + timedelta(minutes=1)
    os.utime(csv_path, (later.timestamp(), later.timestamp()))
    daemon.refresh(later)
    with caplog.at_level(logging.INFO, logger="gridshift.planning"):
        assert replanning.replan(store, config, later) == 30
    moves = [r.getMessage() for r in caplog.records if "re-planned from here" in r.getMessage()]
    assert len(moves) == replanning.MOVES_LOGGED
    assert (first_hour + 6 * HOUR).isoformat() in moves[0]
    assert (first_hour + 3 * HOUR).isoformat() in moves[0]
    assert any("moved 10 more jobs" in r.getMessage() for r in caplog.records)
    assert {store.get_job(i).planned_start for i in ids} == {first_hour + 3 * HOUR}
    # Written in bulk, stored exactly as the ORM stores times (SQL compares them as text).
    with sqlite3.connect(workspace.db_path) as raw:
        (stored,) = raw.execute("SELECT DISTINCT planned_start FROM jobs").fetchone()
    assert stored == (first_hour + 3 * HOUR).strftime("%Y-%m-%d %H:%M:%S.%f")
    store.close()


def test_new_jobs_wait_for_submissions_to_pause_but_other_changes_replan_at_once(
    csv_workspace: Callable[..., Workspace]
) -> None:
    now = datetime.now(UTC)
    workspace = csv_workspace({"here": hourly(floor_hour(now) - HOUR, [300.0] * 30)},
                              slots=100)
    store = workspace.store()
    daemon = Daemon(workspace.config(), store)
    daemon.refresh(now)
    daemon.tick(now)
    later = now + 2 * HOUR  # nothing launches during the test

    def queued(job_id: int) -> bool:
        return store.get_job(job_id).state == JobState.QUEUED

    first = store.add_job(_new_job(workspace, later), now).id
    daemon.tick(now + timedelta(seconds=1))
    assert queued(first), "re-planned while submissions may still be arriving"
    daemon.tick(now + timedelta(seconds=2))  # nothing new since the last tick
    assert not queued(first)

    # A sweep that keeps arriving is re-planned after REPLAN_SETTLE at the latest.
    moment = now + timedelta(seconds=3)
    arriving = []
    while moment < now + timedelta(seconds=3) + REPLAN_SETTLE:
        arriving.append(store.add_job(_new_job(workspace, later), now).id)
        daemon.tick(moment)
        assert queued(arriving[-1])
        moment += timedelta(seconds=5)
    arriving.append(store.add_job(_new_job(workspace, later), now).id)
    daemon.tick(moment)
    assert not any(queued(job_id) for job_id in arriving)

    # A cancel (no new job) re-plans on the next tick.
    store.transition(arriving[0], [JobState.PLANNED], JobState.CANCELLED, moment, "test")
    unplanned = store.add_job(_new_job(workspace, later), now).id
    daemon.tick(moment + timedelta(seconds=1))  # new job: waits
    daemon.tick(moment + timedelta(seconds=2))  # settled
    assert not queued(unplanned)
    store.close()


@dataclass
class OneSlotDaemon:
    """A daemon over one region with one slot and two clean hours (5 and 6 after
    ``first_hour``), one job already planned into one of them by a tick."""

    workspace: Workspace
    store: Store
    daemon: Daemon
    now: datetime
    first_hour: datetime

    @classmethod
    def start(cls, csv_workspace: Callable[..., Workspace]) -> OneSlotDaemon:
        now = datetime.now(UTC)
        first_hour = floor_hour(now)
        values = [100.0 if hour in (5, 6) else 300.0 for hour in range(30)]
        workspace = csv_workspace({"here": hourly(first_hour, values)}, slots=1)
        store = workspace.store()
        daemon = Daemon(workspace.config(), store)
        daemon.refresh(now)
        store.add_job(_new_job(workspace, now), now)
        daemon.tick(now)
        return cls(workspace, store, daemon, now, first_hour)

    @property
    def clean_hours(self) -> set[datetime]:
        return {self.first_hour + 5 * HOUR, self.first_hour + 6 * HOUR}

    def submit(self, cache: replanning.PlanCache | None) -> datetime | None:
        """Submit a 1-hour job as the API does; its planned start."""
        caller = jobs.Caller(os.getuid(), os.getgid(), "tester", admin=False)
        request = SubmitRequest(["true"], 3600, self.now, self.now + 20 * HOUR,
                                str(self.workspace.root), 0o022, {})
        (job,) = jobs.submit(self.store, self.workspace.config(), caller, request, self.now,
                             cache)
        return job.planned_start

    def clear_of_clean_hours(self, start: datetime | None) -> bool:
        """Whether a 1-hour job starting at ``start`` overlaps neither clean hour."""
        return start is not None and not (
            self.first_hour + 4 * HOUR < start < self.first_hour + 7 * HOUR)


def test_a_submit_between_replans_plans_around_the_daemons_slots(
    csv_workspace: Callable[..., Workspace]
) -> None:
    """With one slot, a job submitted through the daemon (its planned slots in memory)
    goes after the one planned into the dip, exactly as a submit that reads the store."""
    setup = OneSlotDaemon.start(csv_workspace)
    (planned,) = setup.store.list_jobs()
    second = setup.submit(setup.daemon.plan_cache)
    assert {planned.planned_start, second} == setup.clean_hours
    third = setup.submit(setup.daemon.plan_cache)  # both clean hours are taken, in memory
    assert setup.clear_of_clean_hours(third)
    setup.store.close()


def test_a_submit_during_a_replan_keeps_its_slot_in_the_daemons_memory(
    csv_workspace: Callable[..., Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-plan reads the queue, then places it: a job submitted in between is not in
    what it places, and its slot must not be forgotten when the re-plan sets the slots it
    found, or the next submit would be given the same slot (one slot, two jobs)."""
    setup = OneSlotDaemon.start(csv_workspace)
    submitted_during: list[datetime | None] = []
    place_queue = replanning._replan_whole

    def submit_then_place(*arguments: object, **keywords: object) -> object:
        submitted_during.append(setup.submit(setup.daemon.plan_cache))  # after the read
        return place_queue(*arguments, **keywords)  # type: ignore[arg-type]

    monkeypatch.setattr(replanning, "_replan_whole", submit_then_place)
    replanning.replan(setup.store, setup.workspace.config(),
                      setup.now + timedelta(seconds=1), setup.daemon.plan_cache)
    monkeypatch.undo()

    (planned,) = [job for job in setup.store.list_jobs()
                  if job.planned_start != submitted_during[0]]
    assert {planned.planned_start, submitted_during[0]} == setup.clean_hours
    third = setup.submit(setup.daemon.plan_cache)  # one clean hour each: re-plan, submit
    assert setup.clear_of_clean_hours(third)
    setup.store.close()
