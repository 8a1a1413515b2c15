"""End to end: the real `gridshift daemon` process, the real CLI and real job processes,
on each backend (a SQLite file, a database on the session's PostgreSQL server).

Timing-robust on a slow shared machine: every wait polls the database with short sleeps
and a generous deadline, and jobs that must outlive a daemon wait for a file the test
creates instead of sleeping for a guessed time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.executors import launcher
from scheduler.models import Job, JobState
from scheduler.store import Store
from tests.conftest import Workspace, create_workspace, write_csv
from tests.daemon_process import wait_for

pytestmark = pytest.mark.slow

WAIT_S = 60.0


class Harness:
    """Daemons and jobs started by one test; everything it started is stopped at the end."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.daemons: list[subprocess.Popen[str]] = []
        self.store: Store | None = None

    def db(self) -> Store:
        if self.store is None:
            self.store = self.workspace.store()
        return self.store

    def start_daemon(self) -> subprocess.Popen[str]:
        number = len(self.daemons) + 1
        with open(self.workspace.root / f"daemon-{number}.log", "w", encoding="utf-8") as log:
            process = self.workspace.popen("daemon", stdout=log, stderr=subprocess.STDOUT)
        self.daemons.append(process)
        return process

    def daemon_log(self, number: int) -> str:
        return (self.workspace.root / f"daemon-{number}.log").read_text(encoding="utf-8")

    def start_ready_daemon(self) -> subprocess.Popen[str]:
        """Start a daemon and wait until it has stored forecasts and done one tick."""
        started_at = datetime.now(UTC)
        process = self.start_daemon()

        def ready() -> bool:
            assert process.poll() is None, self.daemon_log(len(self.daemons))
            beat = self.db().heartbeat()
            return (beat is not None and beat.pid == process.pid
                    and beat.heartbeat_at >= started_at.replace(microsecond=0)
                    and len(self.db().refreshes()) > 0)

        wait_for(ready, timeout=WAIT_S, what="the daemon's first refresh and tick")
        return process

    def submit(self, *args: str) -> int:
        result = self.workspace.cli("submit", "--json", *args)
        assert result.returncode == 0, result.stderr
        job_id: int = result.json()["id"]
        return job_id

    def job(self, job_id: int) -> Job:
        return self.db().get_job(job_id)

    def wait_state(self, job_id: int, *states: JobState, timeout: float = WAIT_S) -> Job:
        def reached() -> Job | None:
            job = self.job(job_id)
            return job if job.state in states else None

        return wait_for(reached, timeout=timeout, what=f"job {job_id} to be {'/'.join(states)}")

    def cleanup(self) -> None:
        for process in self.daemons:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        for job in self.db().running_jobs():
            if job.pid is not None:
                launcher.signal_job(job.pid, job.pid_started_at, signal.SIGKILL)
        self.db().close()


@pytest.fixture
def harness(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(forecast: list[tuple[datetime, datetime, float]], slots: int = 1,
              launcher_prefix: str = "[]") -> Harness:
        csv_path = write_csv(tmp_path / "intensity.csv", forecast)
        workspace = create_workspace(
            tmp_path,
            f'[providers.file]\nkind = "csv"\npath = "{csv_path}"\n\n'
            f'[regions.here]\nprovider = "file"\nzone = "local"\nslots = {slots}\n'
            f"launcher = {launcher_prefix}\n",
            database_url=database_url,
        )
        made.append(Harness(workspace))
        return made[-1]

    yield build
    for harness_made in made:
        harness_made.cleanup()


def flat(now: datetime, value: float = 300.0) -> list[tuple[datetime, datetime, float]]:
    return [(now - timedelta(hours=1), now + timedelta(hours=3), value)]


def events_of(harness: Harness, job_id: int) -> list[str]:
    return [e.new_state for e in harness.db().job_events(job_id)]


def test_job_starts_inside_the_dip_succeeds_and_logs_its_output(
    harness: Callable[..., Harness], tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    dip_start, dip_end = now + timedelta(seconds=10), now + timedelta(seconds=22)
    run = harness([(now - timedelta(hours=1), dip_start, 400.0), (dip_start, dip_end, 50.0),
                   (dip_end, now + timedelta(hours=3), 400.0)],
                  launcher_prefix='["env", "FOO=bar"]')
    run.start_ready_daemon()
    job_id = run.submit("--duration", "3s", "--within", "1h", "--env", "GREETING=hello", "--",
                        "sh", "-c", 'echo "$GREETING from $GRIDSHIFT_JOB_ID in $GRIDSHIFT_REGION '
                        'FOO=$FOO cwd=$(pwd)"')
    submitted = run.job(job_id)
    assert submitted.submitted_at < dip_start, "the machine is too slow for this test's timing"
    assert (submitted.planned_region, submitted.planned_start) == ("here", dip_start)
    assert submitted.planned_intensity == 50.0

    second = run.start_daemon()  # one daemon per database
    assert second.wait(30) == 1
    assert "already running" in run.daemon_log(2)

    job = run.wait_state(job_id, JobState.SUCCEEDED, JobState.FAILED)
    assert job.state == JobState.SUCCEEDED
    assert job.started_at is not None and dip_start <= job.started_at < dip_end
    assert job.exit_code == 0 and job.run_region == "here"
    assert job.log_path is not None
    log = Path(job.log_path).read_text(encoding="utf-8")
    assert f"hello from {job_id} in here FOO=bar cwd={tmp_path}" in log
    assert events_of(run, job_id) == ["queued", "planned", "running", "succeeded"]
    assert f"job {job_id}: launched" in run.daemon_log(1)


def test_sigterm_leaves_jobs_running_and_a_new_daemon_adopts_them(
    harness: Callable[..., Harness], tmp_path: Path
) -> None:
    run = harness(flat(datetime.now(UTC).replace(microsecond=0)), slots=2)
    first = run.start_ready_daemon()
    wait_file = 'while [ ! -e "{}" ]; do sleep 0.1; done'
    ends_during_downtime = run.submit(
        "--duration", "1m", "--", "sh", "-c", wait_file.format(tmp_path / "release-a") + "; exit 3")
    outlives_downtime = run.submit(
        "--duration", "1m", "--", "sh", "-c",
        wait_file.format(tmp_path / "release-b") + "; echo finished; exit 0")
    for job_id in (ends_during_downtime, outlives_downtime):
        run.wait_state(job_id, JobState.RUNNING)
    wait_for(lambda: all(run.job(j).pid for j in (ends_during_downtime, outlives_downtime)),
             timeout=WAIT_S, what="pids to be recorded")

    sent = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(10) == 0
    assert time.monotonic() - sent < 5.0
    for job_id in (ends_during_downtime, outlives_downtime):
        job = run.job(job_id)
        assert job.state == JobState.RUNNING
        assert job.pid is not None and launcher.is_same_process(job.pid, job.pid_started_at)

    (tmp_path / "release-a").touch()  # this job ends while no daemon watches
    status = launcher.status_path_for(run.workspace.log_dir, ends_during_downtime)
    wait_for(status.exists, timeout=WAIT_S, what="the wrapper to record the exit status")
    ended_while_down = datetime.now(UTC)

    run.start_ready_daemon()
    failed = run.wait_state(ends_during_downtime, JobState.FAILED, JobState.SUCCEEDED,
                            JobState.LOST)
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    assert failed.ended_at is not None and failed.ended_at <= ended_while_down
    still_running = run.job(outlives_downtime)
    assert still_running.state == JobState.RUNNING

    (tmp_path / "release-b").touch()
    done = run.wait_state(outlives_downtime, JobState.SUCCEEDED, JobState.FAILED,
                          JobState.LOST)
    assert (done.state, done.exit_code) == (JobState.SUCCEEDED, 0)
    assert done.log_path is not None and "finished" in Path(done.log_path).read_text("utf-8")
    for job_id, end in ((ends_during_downtime, "failed"), (outlives_downtime, "succeeded")):
        history = events_of(run, job_id)
        assert history[-2:] == ["running", end]  # one launch, one end, recorded once
        assert history.count("running") == 1


def test_cancel_a_running_job_sigterm_then_sigkill_after_the_grace(
    harness: Callable[..., Harness]
) -> None:
    run = harness(flat(datetime.now(UTC).replace(microsecond=0)), slots=2)
    run.start_ready_daemon()
    polite = run.submit("--duration", "1m", "--", "sleep", "60")
    # It notes each SIGTERM it gets: the job must get one, not one from the daemon's
    # signal and another forwarded by the wrapper.
    stubborn = run.submit("--duration", "1m", "--", sys.executable, "-c", STUBBORN_JOB)
    for job_id in (polite, stubborn):
        run.wait_state(job_id, JobState.RUNNING)
    wait_for(lambda: "ignoring TERM" in _log_of(run.job(stubborn)), timeout=WAIT_S,
             what="the trap to be set")

    results: dict[int, Any] = {}
    for job_id in (polite, stubborn):
        results[job_id] = run.workspace.cli("cancel", str(job_id))
        assert results[job_id].returncode == 0, results[job_id].stderr
        assert "SIGTERM" in results[job_id].stdout

    cancelled = run.wait_state(polite, JobState.CANCELLED, JobState.FAILED, JobState.SUCCEEDED)
    assert cancelled.state == JobState.CANCELLED
    assert cancelled.exit_code == -signal.SIGTERM

    killed = run.wait_state(stubborn, JobState.CANCELLED, JobState.FAILED, JobState.SUCCEEDED)
    assert killed.state == JobState.CANCELLED
    assert killed.ended_at is not None and killed.cancel_requested_at is not None
    grace = run.workspace.config().daemon.kill_grace
    assert killed.ended_at - killed.cancel_requested_at >= grace

    assert _log_of(killed).count("got TERM") == 1, _log_of(killed)
    for job in (cancelled, killed):
        assert events_of(run, job.id).count("cancelled") == 1
        assert job.pid is not None and not launcher.is_same_process(job.pid, job.pid_started_at)


STUBBORN_JOB = """
import signal, time
signal.signal(signal.SIGTERM, lambda *_: print("got TERM", flush=True))
print("ignoring TERM", flush=True)
while True:
    time.sleep(0.05)
"""


def _log_of(job: Job) -> str:
    if job.log_path is None or not os.path.exists(job.log_path):
        return ""
    return Path(job.log_path).read_text(encoding="utf-8")
