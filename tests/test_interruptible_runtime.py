"""Interruptible jobs with real processes: pause at a chunk's end, resume at the next one,
relaunch from a checkpoint, and all of it across a daemon killed with -9 (issue 12).

Each test's forecast is made for its chunks, a second or two apart: clean (100) in every
chunk but the last, less clean (150) in the last, dirty (1000) elsewhere. The re-plan's
cheapest chunks are then the test's: the clean chunks first, the rest from the last
chunk's start (which is long: planning places at least a minute of work). The jobs
declare more work than they do, so they end within their last chunk. The same chunks
are stored with the job, as planning would.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from scheduler.daemon import Daemon
from scheduler.energy import EnergyMonitor
from scheduler.executors.local import KILLED_AFTER_GRACE, RETURNED_TO_PAUSE
from scheduler.models import FINISHED, Job, JobRun, JobState
from scheduler.records import ChunkPlan, NewJob, RunEnd
from tests.conftest import DEFAULT_DAEMON, Workspace
from tests.daemon_process import (
    DaemonProcess,
    job,
    reap_daemons,  # noqa: F401 (autouse: kills leftovers)
    wait_finished,
    wait_for,
)

pytestmark = pytest.mark.slow
WORKERS = Path(__file__).parent / "fixtures" / "workers"
POWER_W = 100.0
# How often the in-process tests tick: the pauses they see are this precise.
TICK_S = 0.1
# A pause (or its end) is seen within a tick; this much more allows for a loaded machine.
SLACK_S = 0.6
# The chunks count from this long after the test starts: setting up takes time, and
# starting the daemon process longer.
LEAD_S = 1.5
DAEMON_LEAD_S = 5.0
CLEAN, TAIL, DIRTY = 100.0, 150.0, 1000.0

Chunks = list[tuple[float, float]]


def forecast_for(origin: datetime, chunks: Chunks) -> list[tuple[datetime, datetime, float]]:
    """Rows from two hours before ``origin`` to two hours after: CLEAN in each chunk but
    the last, TAIL in the last, DIRTY elsewhere."""
    at = [origin + timedelta(seconds=s) for s in sorted({x for c in chunks for x in c})]
    edges = [origin - timedelta(hours=2), *at, origin + timedelta(hours=2)]
    def value(start: datetime) -> float:
        offset = (start - origin).total_seconds()
        for index, (begin, end) in enumerate(chunks):
            if begin <= offset < end:
                return TAIL if index == len(chunks) - 1 else CLEAN
        return DIRTY
    return [(start, end, value(start)) for start, end in itertools.pairwise(edges)]


def chunked_workspace(csv_workspace: Callable[..., Workspace], chunks: Chunks,
                      daemon: str = DEFAULT_DAEMON, lead_s: float = LEAD_S
                      ) -> tuple[Workspace, datetime]:
    """A workspace whose region "a" has the forecast made for ``chunks``, and the time
    the chunks count from (``lead_s`` from now)."""
    origin = datetime.now(UTC) + timedelta(seconds=lead_s)
    return csv_workspace({"a": forecast_for(origin, chunks)}, daemon=daemon), origin


def add_chunked_job(ws: Workspace, origin: datetime, argv: list[str], mode: str,
                    duration_s: int, chunks: Chunks, **options: object) -> int:
    """A job planned in ``chunks`` (seconds from ``origin``, its earliest start)."""
    store = ws.store()
    try:
        created = store.add_job(NewJob(
            name=f"{mode}-job", argv=argv, cwd=str(ws.root), env={}, duration_s=duration_s,
            not_before=origin, deadline=origin + timedelta(hours=1), regions=["a"],
            power_watts=POWER_W, interruptible=mode, min_chunk_s=0,
            **options), origin)  # type: ignore[arg-type]
        store.transition(created.id, (JobState.QUEUED,), JobState.PLANNED, origin,
                         "test setup", planned_region="a", planned_start=origin)
        store.save_chunks({created.id: [
            ChunkPlan("a", origin + timedelta(seconds=start), origin + timedelta(seconds=end))
            for start, end in chunks]})
        return created.id
    finally:
        store.close()


def drive(daemon: Daemon, store_job: Callable[[], Job], timeout: float = 60.0) -> Job:
    """Tick the daemon on the real clock every TICK_S until the job has ended."""
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        daemon.tick(datetime.now(UTC))
        current = store_job()
        if current.state in FINISHED:
            return current
        time.sleep(TICK_S)
    raise AssertionError(f"the job did not end within {timeout:.0f}s")


def tick_until(daemon: Daemon, job_id: int, state: JobState, timeout: float = 30.0) -> Job:
    """Tick the daemon on the real clock every TICK_S until the job is in ``state``."""
    def reached() -> Job | None:
        daemon.tick(datetime.now(UTC))
        current = daemon.store.get_job(job_id)
        if current.state != state:
            time.sleep(TICK_S)
            return None
        return current

    return wait_for(reached, timeout, what=f"job {job_id} to be {state.value}")


def in_process_daemon(ws: Workspace) -> Daemon:
    daemon = Daemon(ws.config(), ws.store(), energy=EnergyMonitor(rapl=None, gpu=None))
    daemon.refresh(datetime.now(UTC))
    return daemon


def runs_of(ws: Workspace, job_id: int) -> list[JobRun]:
    store = ws.store()
    try:
        return store.job_runs(job_id)
    finally:
        store.close()


def reasons(ws: Workspace, job_id: int) -> list[str]:
    store = ws.store()
    try:
        return [event.reason for event in store.job_events(job_id)]
    finally:
        store.close()


def checkpoint_worker(directory: Path, units: int, unit_s: float,
                      ignore: bool = False) -> list[str]:
    directory.mkdir(exist_ok=True)
    return [sys.executable, str(WORKERS / "checkpoint_worker.py"), str(directory),
            str(units), str(unit_s), *(["ignore"] if ignore else [])]


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1] if path.exists() else []


def assert_energy_is_the_sum_over_runs(ended: Job, runs: list[JobRun]) -> None:
    """Declared power (no meter here) x each run's own time, summed: the pauses cost none."""
    for run in runs:
        assert run.ended_at is not None and run.energy_kwh is not None
        seconds = (run.ended_at - run.started_at).total_seconds()
        assert run.energy_kwh == pytest.approx(POWER_W * seconds / 3.6e6)
    assert ended.energy_kwh == pytest.approx(sum(run.energy_kwh or 0 for run in runs))


# Checkpoint mode ---------------------------------------------------------------------------

def test_a_checkpointed_job_in_three_chunks_does_every_unit_exactly_once(
    csv_workspace: Callable[..., Workspace],
) -> None:
    chunks = [(0, 1), (2, 3), (4, 200)]
    ws, origin = chunked_workspace(csv_workspace, chunks)
    work = ws.root / "work"
    job_id = add_chunked_job(ws, origin, checkpoint_worker(work, units=15, unit_s=0.2),
                             "checkpoint", duration_s=6, chunks=chunks)
    daemon = in_process_daemon(ws)
    ended = drive(daemon, lambda: daemon.store.get_job(job_id))

    assert (ended.state, ended.exit_code) == (JobState.SUCCEEDED, 0)
    assert lines(work / "units") == [str(unit) for unit in range(15)]
    assert lines(work / "runs") == ["1 -", "2 1", "3 1"]  # GRIDSHIFT_RUN, GRIDSHIFT_RESUME
    assert not (work / "overlaps").exists()
    runs = runs_of(ws, job_id)
    assert [(r.run, r.outcome) for r in runs] == [
        (1, "checkpointed"), (2, "checkpointed"), (3, "succeeded")]
    # Each relaunch waited for its chunk: never before its planned start.
    assert runs[1].started_at >= origin + timedelta(seconds=2)
    assert runs[2].started_at >= origin + timedelta(seconds=4)
    assert ended.run_count == 3
    assert ended.work_done_s == pytest.approx(sum(r.work_s or 0 for r in runs))
    assert_energy_is_the_sum_over_runs(ended, runs)
    history = reasons(ws, job_id)
    assert history.count("paused at the end of its chunk (checkpointed)") == 2
    assert "relaunched from its checkpoint (run 2)" in history
    assert "relaunched from its checkpoint (run 3)" in history
    daemon.store.close()


def test_a_job_still_running_after_its_checkpoint_grace_is_killed_and_failed(
    csv_workspace: Callable[..., Workspace],
) -> None:
    chunks = [(0, 1), (3, 200)]
    ws, origin = chunked_workspace(csv_workspace, chunks)
    work = ws.root / "work"
    job_id = add_chunked_job(
        ws, origin, checkpoint_worker(work, units=200, unit_s=0.1, ignore=True),
        "checkpoint", duration_s=20, chunks=chunks, checkpoint_grace_s=1)
    daemon = in_process_daemon(ws)
    ended = drive(daemon, lambda: daemon.store.get_job(job_id))
    # Past its next chunk's start: it is not relaunched.
    while datetime.now(UTC) < origin + timedelta(seconds=3.5):
        daemon.tick(datetime.now(UTC))
        time.sleep(TICK_S)

    assert daemon.store.get_job(job_id).state == JobState.FAILED
    assert ended.end_reason == KILLED_AFTER_GRACE
    assert lines(work / "runs") == ["1 -"]
    assert [(r.run, r.outcome) for r in runs_of(ws, job_id)] == [(1, "failed")]
    assert ended.checkpoint_sent_at is not None
    assert ended.ended_at is None or ended.ended_at >= (
        ended.checkpoint_sent_at + timedelta(seconds=1))
    daemon.store.close()


def test_an_exit_other_than_the_configured_requeue_code_is_a_failure(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """With [daemon] requeue_exit_code = 76, the worker's exit 75 after its checkpoint
    signal asks for nothing: the job fails with that status and is not relaunched."""
    chunks = [(0, 0.5), (1, 200)]
    ws, origin = chunked_workspace(
        csv_workspace, chunks, daemon=f"{DEFAULT_DAEMON}\nrequeue_exit_code = 76")
    work = ws.root / "work"
    job_id = add_chunked_job(ws, origin, checkpoint_worker(work, units=20, unit_s=0.1),
                             "checkpoint", duration_s=4, chunks=chunks)
    daemon = in_process_daemon(ws)
    ended = drive(daemon, lambda: daemon.store.get_job(job_id))

    assert (ended.state, ended.exit_code) == (JobState.FAILED, 75)
    assert lines(work / "runs") == ["1 -"]
    assert [r.outcome for r in runs_of(ws, job_id)] == ["failed"]
    daemon.store.close()


def test_a_checkpoint_job_gets_its_own_checkpoint_signal(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """SIGUSR1 (Slurm's --signal habit) reaches the job; the wrapper survives it."""
    chunks = [(0, 0.8), (1.5, 200)]
    ws, origin = chunked_workspace(csv_workspace, chunks)
    work = ws.root / "work"
    job_id = add_chunked_job(ws, origin, checkpoint_worker(work, units=8, unit_s=0.2),
                             "checkpoint", duration_s=4, chunks=chunks,
                             checkpoint_signal="SIGUSR1")
    daemon = in_process_daemon(ws)
    ended = drive(daemon, lambda: daemon.store.get_job(job_id))

    assert ended.state == JobState.SUCCEEDED
    assert lines(work / "units") == [str(unit) for unit in range(8)]
    assert [r.outcome for r in runs_of(ws, job_id)] == ["checkpointed", "succeeded"]
    daemon.store.close()


# Suspend mode ------------------------------------------------------------------------------

def stamp_command(ws: Workspace, steps: int) -> tuple[list[str], Path]:
    """The stamp worker under a shell: the stamps come from a child of the command, so
    they stop only if the whole process group is stopped."""
    stamps = ws.root / "stamps"
    return ["sh", "-c", f"{sys.executable} {WORKERS / 'stamp_worker.py'} {stamps} {steps}; "
            f"exit $?"], stamps


def gaps(stamps: Path, longer_than: float) -> list[tuple[float, float]]:
    times = [float(line) for line in lines(stamps)]
    return [(a, b) for a, b in itertools.pairwise(times) if b - a > longer_than]


def test_a_suspended_job_writes_nothing_during_its_planned_pauses(
    csv_workspace: Callable[..., Workspace],
) -> None:
    # The first chunk leaves a loaded machine time to start the worker; the worker's 60
    # steps (6 s) outlast the first two chunks; a pause is three times the slack.
    chunks = [(0, 3), (4.8, 6.3), (8.1, 200)]
    ws, origin = chunked_workspace(csv_workspace, chunks)
    argv, stamps = stamp_command(ws, steps=60)
    job_id = add_chunked_job(ws, origin, argv, "suspend", duration_s=8, chunks=chunks)
    daemon = in_process_daemon(ws)
    first_pid = None

    def current() -> Job:
        nonlocal first_pid
        state = daemon.store.get_job(job_id)
        first_pid = first_pid or state.pid
        return state

    ended = drive(daemon, current)

    assert (ended.state, ended.exit_code) == (JobState.SUCCEEDED, 0)
    assert ended.pid == first_pid  # one process throughout: resumed, never relaunched
    assert len(lines(stamps)) == 60
    pauses = [(origin.timestamp() + end, origin.timestamp() + start)
              for (_, end), (start, _) in itertools.pairwise(chunks)]
    seen = gaps(stamps, longer_than=1.0)
    assert len(seen) == len(pauses), seen
    for (stopped, resumed), (planned_stop, planned_resume) in zip(seen, pauses, strict=True):
        assert planned_stop - SLACK_S <= stopped <= planned_stop + SLACK_S
        assert planned_resume - SLACK_S <= resumed <= planned_resume + SLACK_S
    runs = runs_of(ws, job_id)
    assert [(r.run, r.outcome) for r in runs] == [
        (1, "suspended"), (2, "suspended"), (3, "succeeded")]
    assert_energy_is_the_sum_over_runs(ended, runs)
    history = reasons(ws, job_id)
    assert history.count("paused at the end of its chunk (suspended)") == 2
    assert "resumed (run 2)" in history and "resumed (run 3)" in history
    daemon.store.close()


def test_a_suspended_job_is_resumed_at_its_latest_resume_point_whatever_its_plan(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """A paused job whose stored plan has gone stale (its next chunk beyond what its
    deadline allows, and no re-plan to correct it, as in a forecast outage) resumes when
    its remaining work just fits before the deadline, and is not paused again."""
    chunks = [(0, 1), (3, 200)]
    ws, origin = chunked_workspace(csv_workspace, chunks)
    argv, _ = stamp_command(ws, steps=30)
    job_id = add_chunked_job(ws, origin, argv, "suspend", duration_s=4, chunks=chunks)
    daemon = in_process_daemon(ws)
    paused = tick_until(daemon, job_id, JobState.PAUSED)
    for _ in range(3):  # the re-plans that follow the pause settle
        daemon.tick(datetime.now(UTC))
    remaining = timedelta(seconds=4 - (paused.work_done_s or 0))
    deadline = datetime.now(UTC) + remaining + timedelta(seconds=1.5)
    daemon.store.update_job_fields(job_id, deadline=deadline,
                                   planned_start=origin + timedelta(seconds=600),
                                   chunk_end=origin + timedelta(seconds=700))
    ended = drive(daemon, lambda: daemon.store.get_job(job_id))

    assert ended.state == JobState.SUCCEEDED
    runs = runs_of(ws, job_id)
    assert [r.outcome for r in runs] == ["suspended", "succeeded"]
    assert deadline - remaining <= runs[1].started_at
    assert runs[1].started_at <= deadline - remaining + timedelta(seconds=SLACK_S)
    daemon.store.close()


def test_a_running_job_is_not_paused_when_the_pause_would_make_it_miss_its_deadline(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """Its chunk ends while the deadline leaves no room for a pause (a stale plan, as
    above): it runs on to its end in one run."""
    chunks = [(0, 1), (3, 200)]
    ws, origin = chunked_workspace(csv_workspace, chunks)
    argv, _ = stamp_command(ws, steps=20)
    job_id = add_chunked_job(ws, origin, argv, "suspend", duration_s=60, chunks=chunks)
    daemon = in_process_daemon(ws)
    running = tick_until(daemon, job_id, JobState.RUNNING)
    for _ in range(3):  # the re-plans that follow the launch settle
        daemon.tick(datetime.now(UTC))
    assert running.started_at is not None
    now = datetime.now(UTC)
    remaining = timedelta(seconds=60) - (now - running.started_at)
    # The deadline leaves no room for a pause: its remaining work just fits (less 0.1 s).
    daemon.store.update_job_fields(job_id, chunk_end=now + timedelta(seconds=0.3),
                                   deadline=now + remaining - timedelta(seconds=0.1))
    ended = drive(daemon, lambda: daemon.store.get_job(job_id))

    assert ended.state == JobState.SUCCEEDED
    assert [r.outcome for r in runs_of(ws, job_id)] == ["succeeded"]
    assert "paused at the end of its chunk (suspended)" not in reasons(ws, job_id)
    daemon.store.close()


# Crash safety: the real daemon process killed with -9 ----------------------------------------

def wait_run(ws: Workspace, job_id: int, state: JobState, run_count: int) -> Job:
    def reached() -> Job | None:
        current = job(ws, job_id)
        return current if (current.state, current.run_count) == (state, run_count) else None

    return wait_for(reached, timeout=30, what=f"job {job_id}: {state.value}, run {run_count}")


def test_a_checkpoint_job_survives_daemon_kills_between_and_during_chunks(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """Killed while the job is paused, then during its second run: the job's command
    runs on while no daemon runs (past its chunk's end, maybe), and the restarted daemon
    takes it from there. 12 s of work: more than a daemon restart leaves it."""
    chunks = [(0, 2), (8, 10), (20, 200)]
    ws, origin = chunked_workspace(csv_workspace, chunks, lead_s=DAEMON_LEAD_S)
    work = ws.root / "work"
    job_id = add_chunked_job(ws, origin, checkpoint_worker(work, units=60, unit_s=0.2),
                             "checkpoint", duration_s=20, chunks=chunks)
    first = DaemonProcess(ws)
    wait_run(ws, job_id, JobState.PAUSED, 1)
    first.kill()  # between chunks

    second = DaemonProcess(ws)
    wait_run(ws, job_id, JobState.RUNNING, 2)
    time.sleep(0.5)
    second.kill()  # during a chunk: its command keeps running

    third = DaemonProcess(ws)
    ended = wait_finished(ws, [job_id], 90)[0]
    assert third.stop() == 0
    assert (ended.state, ended.exit_code) == (JobState.SUCCEEDED, 0)
    assert lines(work / "units") == [str(unit) for unit in range(60)]
    assert lines(work / "runs") == ["1 -", "2 1", "3 1"]
    assert not (work / "overlaps").exists()
    runs = runs_of(ws, job_id)
    assert [(r.run, r.outcome) for r in runs] == [
        (1, "checkpointed"), (2, "checkpointed"), (3, "succeeded")]
    assert runs[1].started_at >= origin + timedelta(seconds=8)
    assert runs[2].started_at >= origin + timedelta(seconds=20)
    assert f"job {job_id}: re-adopted" in third.output()


@pytest.mark.parametrize("gap", ["after-pause-stored", "after-resume-stored"])
def test_a_suspend_job_survives_a_daemon_kill_between_storing_and_signalling(
    csv_workspace: Callable[..., Workspace], gap: str,
) -> None:
    """The daemon is killed with -9 after storing a pause (or resume) and before sending
    SIGSTOP (or SIGCONT), and again during the next run: each restarted daemon makes the
    process match the stored state, and the job ends once, resumed on schedule. 20 s of
    work: more than the daemon restarts leave it."""
    chunks = [(0, 2), (10, 12), (24, 200)]
    ws, origin = chunked_workspace(csv_workspace, chunks, lead_s=DAEMON_LEAD_S)
    argv, stamps = stamp_command(ws, steps=200)
    job_id = add_chunked_job(ws, origin, argv, "suspend", duration_s=30, chunks=chunks)
    pauses = ws.root / "pauses"
    pauses.mkdir()
    held = DaemonProcess(ws, extra_env={"GRIDSHIFT_TEST_PAUSE_AT": gap,
                                        "GRIDSHIFT_TEST_PAUSE_DIR": str(pauses)})
    wait_for((pauses / f"{gap}-job-{job_id}.reached").exists, what=f"the daemon to reach {gap}")
    held.kill()

    second = DaemonProcess(ws)
    wait_run(ws, job_id, JobState.RUNNING, 2)
    time.sleep(0.5)
    second.kill()  # during run 2

    third = DaemonProcess(ws)
    ended = wait_finished(ws, [job_id], 90)[0]
    assert third.stop() == 0
    assert (ended.state, ended.exit_code) == (JobState.SUCCEEDED, 0)
    assert len(lines(stamps)) == 200
    runs = runs_of(ws, job_id)
    assert [r.outcome for r in runs] == ["suspended", "suspended", "succeeded"]
    assert runs[1].started_at >= origin + timedelta(seconds=10)
    assert runs[2].started_at >= origin + timedelta(seconds=24)
    # Nothing ran while it was stored as paused, beyond SLACK_S of a pause's start (the
    # pause stored, then SIGSTOP): except where the daemon was killed in between, until
    # the next daemon stopped it.
    times = [float(line) for line in lines(stamps)]
    for index, (paused, resumed) in enumerate(itertools.pairwise(runs)):
        if gap == "after-pause-stored" and index == 0:
            continue
        assert paused.ended_at is not None
        inside = [t for t in times if paused.ended_at.timestamp() + SLACK_S < t
                  < resumed.started_at.timestamp() - SLACK_S]
        assert not inside, (index, inside)


# Cancel while paused ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["suspend", "checkpoint"])
def test_a_paused_job_cancelled_ends_cancelled_and_never_resumes(
    csv_workspace: Callable[..., Workspace], mode: str,
) -> None:
    chunks = [(0, 1), (3, 200)]
    ws, origin = chunked_workspace(csv_workspace, chunks)
    work = ws.root / "work"
    argv = (stamp_command(ws, steps=100)[0] if mode == "suspend"
            else checkpoint_worker(work, units=100, unit_s=0.1))
    job_id = add_chunked_job(ws, origin, argv, mode, duration_s=10, chunks=chunks)
    daemon = in_process_daemon(ws)
    paused = tick_until(daemon, job_id, JobState.PAUSED)

    cancelled = ws.cli("cancel", str(job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "is being cancelled" in cancelled.stdout
    ended = drive(daemon, lambda: daemon.store.get_job(job_id))
    # Past its next chunk's start: nothing resumed it.
    while datetime.now(UTC) < origin + timedelta(seconds=3.5):
        daemon.tick(datetime.now(UTC))
        time.sleep(TICK_S)

    assert ended.state == JobState.CANCELLED
    assert [r.outcome for r in runs_of(ws, job_id)] == [
        "suspended" if mode == "suspend" else "checkpointed"]
    if mode == "suspend":
        assert paused.pid is not None
        wait_for(lambda: not psutil.pid_exists(paused.pid or 0), timeout=10,
                 what="the suspended process to be gone")
    else:
        assert lines(work / "runs") == ["1 -"]
    daemon.store.close()


# Crash safety of a relaunch ------------------------------------------------------------------

def checkpointed_job(ws: Workspace, origin: datetime, argv: list[str], position: int,
                     work: Path) -> int:
    """A checkpoint-mode job whose first run saved ``position`` and exited 75: paused, its
    next chunk due at ``origin`` (as the daemon leaves it)."""
    (work / "position").write_text(str(position))
    store = ws.store()
    now = datetime.now(UTC)
    try:
        created = store.add_job(NewJob(
            name="checkpointed", argv=argv, cwd=str(ws.root), env={}, duration_s=4,
            not_before=now, deadline=now + timedelta(hours=1), regions=["a"],
            power_watts=POWER_W, interruptible="checkpoint", min_chunk_s=1), now)
        store.transition(created.id, (JobState.QUEUED,), JobState.PLANNED, now, "test setup",
                         planned_region="a", planned_start=now)
        store.begin_run(created.id, (JobState.PLANNED,), now, "test setup", "a",
                        run_region="a", started_at=now)
        store.end_run(created.id, (JobState.RUNNING,), JobState.PAUSED, now, "test setup",
                      RunEnd(now, "checkpointed", 1.0, None, None), planned_start=origin,
                      planned_region="a", chunk_end=None)
        return created.id
    finally:
        store.close()


@pytest.mark.parametrize("gap", ["after-claim", "before-spec", "after-spawn",
                                 "after-start-record"])
def test_a_relaunch_killed_in_each_launch_gap_runs_once(
    csv_workspace: Callable[..., Workspace], gap: str,
) -> None:
    """The daemon is killed with -9 in one gap of a relaunch: before its command provably
    started, the restarted daemon pauses the job again (the run forgotten) and relaunches
    it; after, it re-adopts the command. Either way run 2 runs once, from the checkpoint."""
    ws, origin = chunked_workspace(csv_workspace, [(0, 200)], lead_s=DAEMON_LEAD_S)
    work = ws.root / "work"
    job_id = checkpointed_job(ws, origin, checkpoint_worker(work, units=10, unit_s=0.1), 4,
                              work)
    pauses = ws.root / "pauses"
    pauses.mkdir()
    held = DaemonProcess(ws, extra_env={"GRIDSHIFT_TEST_PAUSE_AT": gap,
                                        "GRIDSHIFT_TEST_PAUSE_DIR": str(pauses)})
    wait_for((pauses / f"{gap}-job-{job_id}.reached").exists, what=f"the relaunch to reach {gap}")
    held.kill()
    command_ran = gap in ("after-spawn", "after-start-record")

    second = DaemonProcess(ws)
    if command_ran:
        second.wait_started()
        assert job(ws, job_id).state == JobState.RUNNING
        (pauses / f"{gap}-job-{job_id}.release").touch()
    ended = wait_finished(ws, [job_id], 60)[0]
    assert second.stop() == 0

    assert (ended.state, ended.exit_code) == (JobState.SUCCEEDED, 0)
    assert lines(work / "runs") == ["2 1"]
    assert lines(work / "units") == [str(unit) for unit in range(4, 10)]
    assert [(r.run, r.outcome) for r in runs_of(ws, job_id)] == [
        (1, "checkpointed"), (2, "succeeded")]
    history = reasons(ws, job_id)
    assert history.count("relaunched from its checkpoint (run 2)") == (1 if command_ran else 2)
    assert (RETURNED_TO_PAUSE in history) != command_ran
