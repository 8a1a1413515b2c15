"""Crash safety with the real daemon: kill -9, reboots, reused pids, downtime, SIGTERM.

Every job appends its id to a launches file when it starts, so "nothing launched twice"
is counted, not assumed.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psutil
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from scheduler.executors import launcher
from scheduler.executors.jobwrapper import STARTED_SUFFIX, STARTING_SUFFIX, write_record
from scheduler.executors.local import RETURNED_TO_QUEUE
from scheduler.models import JobState
from scheduler.store import NewJob
from tests.conftest import Workspace, floor_hour, hourly
from tests.daemon_process import (
    DaemonProcess,
    carbon_intensity_payload,
    job,
    launches,
    reap_daemons,  # noqa: F401 (autouse: kills leftovers)
    submitted_id,
    wait_finished,
    wait_for,
    wait_state,
)

pytestmark = pytest.mark.slow


def rising_forecast() -> dict[str, list[tuple[datetime, datetime, float]]]:
    """Cleanest now, dirtier every hour: the planner places every job at its earliest."""
    start = floor_hour(datetime.now(UTC)) - timedelta(hours=2)
    return {"a": hourly(start, [100.0 + 10 * i for i in range(60)])}


def recording_job(workspace: Workspace, seconds: float, exit_code: int = 0) -> list[str]:
    """A command that records its launch, runs ``seconds`` and exits with ``exit_code``."""
    record = workspace.root / "launches"
    return ["sh", "-c", f'echo "$GRIDSHIFT_JOB_ID" >> {record}; sleep {seconds}; '
            f"exit {exit_code}"]


def events_to(workspace: Workspace, job_id: int, state: JobState) -> int:
    store = workspace.store()
    try:
        return sum(1 for e in store.job_events(job_id) if e.new_state == state.value)
    finally:
        store.close()


def test_kill_9_while_jobs_run_then_restart_loses_and_repeats_nothing(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(rising_forecast(), slots=4)
    ends_in_downtime = submitted_id(ws.cli("submit", "--duration", "1m", "--",
                                           *recording_job(ws, 1.5, exit_code=3)).stdout)
    outlives_restart = submitted_id(ws.cli("submit", "--duration", "1m", "--",
                                           *recording_job(ws, 6)).stdout)
    due_after_restart = submitted_id(ws.cli("submit", "--duration", "1m", "--not-before", "+5s",
                                            "--", *recording_job(ws, 0.2)).stdout)
    first = DaemonProcess(ws)
    for job_id in (ends_in_downtime, outlives_restart):
        wait_for(lambda j=job_id: job(ws, j).pid, what=f"job {job_id} to have a pid")
    running = job(ws, outlives_restart)
    first.kill()

    # During the downtime: one job ends, the other keeps running.
    status_file = launcher.status_path_for(ws.log_dir, ends_in_downtime)
    wait_for(status_file.exists, timeout=20, what="the short job to end while no daemon runs")
    assert job(ws, ends_in_downtime).state == JobState.RUNNING
    assert running.pid is not None and psutil.pid_exists(running.pid)

    restarted_at = datetime.now(UTC)
    second = DaemonProcess(ws)
    ended = wait_finished(ws, [ends_in_downtime, outlives_restart, due_after_restart], 60)
    assert second.stop() == 0
    by_id = {j.id: j for j in ended}
    assert by_id[ends_in_downtime].state == JobState.FAILED
    assert by_id[ends_in_downtime].exit_code == 3
    assert by_id[outlives_restart].state == JobState.SUCCEEDED
    assert by_id[outlives_restart].exit_code == 0
    assert by_id[due_after_restart].state == JobState.SUCCEEDED
    # The downtime job's end time is when it ended, not when the daemon noticed.
    ended_at = by_id[ends_in_downtime].ended_at
    assert ended_at is not None
    assert ended_at < restarted_at
    assert sorted(launches(ws.root / "launches")) == sorted(
        str(i) for i in (ends_in_downtime, outlives_restart, due_after_restart))
    for job_id in by_id:
        assert events_to(ws, job_id, JobState.RUNNING) == 1


def _stored_running_job(ws: Workspace, pid: int | None, pid_started_at: float | None) -> int:
    """A job the database says is running (as a daemon that died would have left it)."""
    store = ws.store()
    now = datetime.now(UTC)
    try:
        created = store.add_job(NewJob(
            name="left-behind", argv=["sleep", "1"], cwd=str(ws.root), env={}, duration_s=60,
            not_before=now, deadline=now + timedelta(hours=1), regions=["a"],
            power_watts=100.0), now)
        store.transition(created.id, (JobState.QUEUED,), JobState.PLANNED, now, "test setup",
                         planned_region="a", planned_start=now)
        store.transition(created.id, (JobState.PLANNED,), JobState.RUNNING, now, "test setup",
                         run_region="a", started_at=now, pid=pid, pid_started_at=pid_started_at)
        # What its wrapper recorded before the crash: it started the command.
        records = launcher.records_prefix(ws.log_dir, created.id)
        launcher.records_dir(ws.log_dir).mkdir(mode=0o700, exist_ok=True)
        write_record(records + STARTING_SUFFIX, {"wrapper_pid": pid})
        write_record(records + STARTED_SUFFIX, {"pid": pid, "started_at": pid_started_at})
        return created.id
    finally:
        store.close()


def test_vanished_process_becomes_lost_and_a_reused_pid_is_not_the_job(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(rising_forecast())
    finished = subprocess.Popen(["true"])
    dead_started_at = psutil.Process(finished.pid).create_time()
    finished.wait()
    rebooted = _stored_running_job(ws, finished.pid, dead_started_at)
    # This pytest process is alive, but it started at another time than the job did.
    reused = _stored_running_job(ws, os.getpid(), psutil.Process().create_time() - 3600)
    daemon = DaemonProcess(ws)
    for job_id in (rebooted, reused):
        lost = wait_state(ws, job_id, (JobState.LOST, JobState.SUCCEEDED, JobState.FAILED))
        assert lost.state == JobState.LOST
        assert "no exit status was recorded" in (lost.end_reason or "")
        assert lost.exit_code is None
    assert daemon.stop() == 0


LAUNCH_GAPS = ("after-claim", "before-spec", "after-spawn", "after-start-record")


@pytest.mark.parametrize("gap", LAUNCH_GAPS)
def test_kill_9_in_each_launch_gap_runs_the_job_exactly_once(
    csv_workspace: Callable[..., Workspace], gap: str,
) -> None:
    """The daemon is killed with SIGKILL exactly in one gap of a launch (a test hook holds
    the launch there): after claiming the job; after starting the wrapper, before handing
    it the job; after the wrapper spawned the command, before it recorded that; after it
    recorded it. The restarted daemon runs the job exactly once, with its real outcome."""
    ws = csv_workspace(rising_forecast())
    pauses = ws.root / "pauses"
    pauses.mkdir()
    job_id = submitted_id(ws.cli("submit", "--duration", "1m", "--",
                                 *recording_job(ws, 0.2, exit_code=5)).stdout)
    first = DaemonProcess(ws, extra_env={"GRIDSHIFT_TEST_PAUSE_AT": gap,
                                         "GRIDSHIFT_TEST_PAUSE_DIR": str(pauses)})
    wait_for((pauses / f"{gap}-job-{job_id}.reached").exists, what=f"the launch to reach {gap}")
    first.kill()
    command_ran = gap in ("after-spawn", "after-start-record")
    second = DaemonProcess(ws)
    if command_ran:
        second.wait_started()
        wait_for(lambda: launches(ws.root / "launches"), what="the command to run")
        # Its wrapper is alive and held: the job is watched, neither relaunched nor lost.
        assert job(ws, job_id).state == JobState.RUNNING
        (pauses / f"{gap}-job-{job_id}.release").touch()
    ended = wait_finished(ws, [job_id], 60)[0]
    assert second.stop() == 0
    assert (ended.state, ended.exit_code) == (JobState.FAILED, 5)
    assert launches(ws.root / "launches") == [str(job_id)]
    store = ws.store()
    try:
        history = [(e.new_state, e.reason) for e in store.job_events(job_id)]
    finally:
        store.close()
    shown = ws.cli("show", str(job_id)).stdout
    if command_ran:
        assert [state for state, _ in history].count("running") == 1
        assert f"job {job_id}: re-adopted" in second.output()
    else:
        assert [state for state, _ in history].count("running") == 2, history
        assert ("planned", RETURNED_TO_QUEUE) in history
        assert RETURNED_TO_QUEUE in shown
        assert f"job {job_id}: {RETURNED_TO_QUEUE}" in second.output()


def test_a_wrapper_killed_while_no_daemon_runs_takes_its_job_down_with_it(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """kill -9 of the wrapper while no daemon watches: its command, and what the command
    left in the background, are killed instead of running on untracked; the job is lost."""
    ws = csv_workspace(rising_forecast())
    job_id = submitted_id(ws.cli("submit", "--duration", "1m", "--", "sh", "-c",
                                 "sleep 120 & echo $! > leftover.pid; echo $$ > shell.pid; "
                                 "sleep 60").stdout)
    first = DaemonProcess(ws)
    running = wait_for(lambda: (j := job(ws, job_id)).pid and j, what="the job to start")
    wait_for(lambda: (ws.root / "shell.pid").exists() and (ws.root / "shell.pid").read_text(),
             what="the job's shell to record its pid")
    first.kill()
    assert running.pid is not None
    os.kill(running.pid, 9)
    second = DaemonProcess(ws)
    lost = wait_state(ws, job_id, (JobState.LOST, JobState.FAILED, JobState.SUCCEEDED))
    assert second.stop() == 0
    assert lost.state == JobState.LOST
    assert "remaining process(es) were killed" in (lost.end_reason or "")
    for name in ("shell.pid", "leftover.pid"):
        pid = int((ws.root / name).read_text())
        wait_for(lambda p=pid: not _alive(p), what=f"the job's process in {name} to be gone")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_job_due_during_downtime_starts_at_once_and_a_late_one_records_the_miss(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(rising_forecast())
    on_time = submitted_id(ws.cli("submit", "--duration", "10s", "--not-before", "+1s",
                                  "--within", "1h", "--", *recording_job(ws, 0.1)).stdout)
    too_late = submitted_id(ws.cli("submit", "--duration", "5s", "--within", "9s", "--",
                                   *recording_job(ws, 0.1)).stdout)
    latest_start = job(ws, too_late).deadline - timedelta(seconds=5)
    wait_for(lambda: datetime.now(UTC) > latest_start + timedelta(seconds=0.5), timeout=15,
             what="the late job's latest start to pass with no daemon")
    restarted_at = datetime.now(UTC)
    daemon = DaemonProcess(ws)
    ended = {j.id: j for j in wait_finished(ws, [on_time, too_late], 30)}
    assert daemon.stop() == 0
    for job_id in (on_time, too_late):
        started = ended[job_id].started_at
        assert started is not None and started - restarted_at < timedelta(seconds=15)
        assert ended[job_id].state == JobState.SUCCEEDED
    assert not ended[on_time].deadline_missed
    assert ended[too_late].deadline_missed
    store = ws.store()
    reasons = [e.reason for e in store.job_events(too_late) if e.new_state == "running"]
    store.close()
    assert len(reasons) == 1 and "will miss its deadline" in reasons[0]
    assert sorted(launches(ws.root / "launches")) == sorted([str(on_time), str(too_late)])


def test_sigterm_during_a_launch_burst_launches_each_job_exactly_once(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(rising_forecast(), slots=20)
    ids = [submitted_id(ws.cli("submit", "--duration", "1m", "--",
                               *recording_job(ws, 1)).stdout) for _ in range(12)]
    first = DaemonProcess(ws)
    wait_for(lambda: any(j.state == JobState.RUNNING for j in (job(ws, i) for i in ids)),
             interval=0.01, what="the first launch")
    assert first.stop() == 0
    states_at_stop = {i: job(ws, i) for i in ids}
    for stopped in states_at_stop.values():
        # Every job is either untouched or launched with its pid recorded.
        assert stopped.state in (JobState.PLANNED, JobState.RUNNING, JobState.SUCCEEDED)
        if stopped.state == JobState.RUNNING:
            assert stopped.pid is not None
    second = DaemonProcess(ws)
    ended = wait_finished(ws, ids, 60)
    assert second.stop() == 0
    assert [j.state for j in ended] == [JobState.SUCCEEDED] * len(ids)
    assert sorted(launches(ws.root / "launches")) == sorted(str(i) for i in ids)


def test_sigterm_during_a_forecast_refresh_leaves_a_consistent_database(
    make_workspace: Callable[..., Workspace], httpserver: HTTPServer,
) -> None:
    request_arrived = threading.Event()

    def slow_forecast(_request: Request) -> Response:
        request_arrived.set()
        time.sleep(4)
        start = floor_hour(datetime.now(UTC))
        return Response(json.dumps(carbon_intensity_payload(start, 96)),
                        content_type="application/json")

    httpserver.expect_request(re.compile(r"^/intensity/.*")).respond_with_handler(slow_forecast)
    ws = make_workspace(
        f'[providers.uk]\nkind = "carbonintensity_uk"\nbase_url = "{httpserver.url_for("")}"\n'
        f'timeout = "30s"\n\n[regions.gb]\nprovider = "uk"\nzone = "national"\n')
    daemon = DaemonProcess(ws)
    assert request_arrived.wait(30), daemon.output()
    began = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - began < 10  # it does not wait for the fetch to finish
    with sqlite3.connect(ws.db_path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        points = connection.execute("SELECT count(*) FROM forecast_points").fetchone()[0]
    assert points in (0, 96)  # all of a fetch or nothing
    stopped = ws.cli("status", "--json")
    assert stopped.returncode == 1 and stopped.json()["daemon"]["running"] is False
    # The next daemon starts cleanly on what was left behind.
    again = DaemonProcess(ws)
    again.wait_started()
    assert ws.cli("status").returncode == 0
    assert again.stop() == 0


RANDOM_CYCLES = 50
RANDOM_JOBS = 240
RANDOM_SPREAD_S = 60.0


@pytest.mark.timeout(600)  # each cycle starts a real daemon: slow on a loaded machine
def test_kill_9_at_random_moments_over_hundreds_of_jobs_loses_and_repeats_nothing(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """50 kill -9 of the real daemon at random moments while 300 short real jobs become due:
    at the end every job ran exactly once and has its real state and exit status."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    ws = csv_workspace(rising_forecast(), slots=12)
    record = ws.root / "ran.txt"
    expected: dict[int, int] = {}
    store = ws.store()
    now = datetime.now(UTC)
    try:
        for _ in range(RANDOM_JOBS):
            exit_code = rng.choice((0, 0, 1, 3, 7))
            start = now + timedelta(seconds=rng.uniform(0, RANDOM_SPREAD_S))
            created = store.add_job(NewJob(
                name="random", argv=["sh", "-c", f'echo "$GRIDSHIFT_JOB_ID" >> {record}; '
                                     f"sleep {rng.choice(('0', '0.1', '0.5', '1.5'))}; "
                                     f"exit {exit_code}"],
                cwd=str(ws.root), env={}, duration_s=1, not_before=start,
                deadline=start + timedelta(hours=1), regions=["a"], power_watts=10.0), now)
            store.transition(created.id, (JobState.QUEUED,), JobState.PLANNED, now, "setup",
                             planned_region="a", planned_start=start)
            expected[created.id] = exit_code
    finally:
        store.close()
    for _ in range(RANDOM_CYCLES):
        daemon = DaemonProcess(ws)
        daemon.wait_started()
        time.sleep(rng.uniform(0, 1.2))  # the random moment of the crash
        daemon.kill()
    last = DaemonProcess(ws)
    ended = wait_finished(ws, list(expected), 180)
    assert last.stop() == 0
    ran = Counter(launches(record))
    context = f"seed {seed}"
    assert [i for i in expected if ran[str(i)] != 1] == [], context
    for finished in ended:
        want = JobState.SUCCEEDED if expected[finished.id] == 0 else JobState.FAILED
        assert (finished.state, finished.exit_code) == (want, expected[finished.id]), (
            context, finished.id, finished.end_reason)
