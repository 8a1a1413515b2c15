"""Interruptible jobs with real processes: pause at a chunk's end, resume at the next one,
relaunch from a checkpoint, and all of it across a daemon killed with -9 (issue 12).

The jobs' chunks are set by hand (Store.save_chunks) a second or two apart; the forecast
is flat, so the re-plan of a job not yet started keeps it at its earliest start.
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

from scheduler.daemon import KILLED_AFTER_GRACE, RETURNED_TO_PAUSE, Daemon
from scheduler.energy import EnergyMonitor
from scheduler.models import FINISHED, Job, JobRun, JobState
from scheduler.records import ChunkPlan, NewJob, RunEnd
from tests.conftest import Workspace, floor_hour, hourly
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


def flat_forecast() -> dict[str, list[tuple[datetime, datetime, float]]]:
    return {"a": hourly(floor_hour(datetime.now(UTC)) - timedelta(hours=2), [200.0] * 60)}


def add_chunked_job(ws: Workspace, argv: list[str], mode: str, duration_s: int,
                    chunks: list[tuple[float, float]], **options: object) -> tuple[int, datetime]:
    """A job planned in ``chunks`` (seconds from now): due at once, as planning leaves an
    interruptible job. Returns its id and the time the chunks count from."""
    store = ws.store()
    origin = datetime.now(UTC)
    try:
        created = store.add_job(NewJob(
            name=f"{mode}-job", argv=argv, cwd=str(ws.root), env={}, duration_s=duration_s,
            not_before=origin, deadline=origin + timedelta(hours=1), regions=["a"],
            power_watts=POWER_W, interruptible=mode, min_chunk_s=1,
            **options), origin)  # type: ignore[arg-type]
        store.transition(created.id, (JobState.QUEUED,), JobState.PLANNED, origin,
                         "test setup", planned_region="a", planned_start=origin)
        store.save_chunks({created.id: [
            ChunkPlan("a", origin + timedelta(seconds=start), origin + timedelta(seconds=end))
            for start, end in chunks]})
        return created.id, origin
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
    ws = csv_workspace(flat_forecast())
    work = ws.root / "work"
    job_id, origin = add_chunked_job(
        ws, checkpoint_worker(work, units=15, unit_s=0.2), "checkpoint", duration_s=3,
        chunks=[(0, 1), (2, 3), (4, 30)])
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
    ws = csv_workspace(flat_forecast())
    work = ws.root / "work"
    job_id, origin = add_chunked_job(
        ws, checkpoint_worker(work, units=200, unit_s=0.1, ignore=True), "checkpoint",
        duration_s=20, chunks=[(0, 1), (3, 30)], checkpoint_grace_s=1)
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
    ws = csv_workspace(flat_forecast(),
                       daemon='tick = "1s"\nkill_grace = "2s"\nrequeue_exit_code = 76')
    work = ws.root / "work"
    job_id, _ = add_chunked_job(ws, checkpoint_worker(work, units=20, unit_s=0.1),
                                "checkpoint", duration_s=2, chunks=[(0, 0.5), (1, 30)])
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
    ws = csv_workspace(flat_forecast())
    work = ws.root / "work"
    job_id, _ = add_chunked_job(
        ws, checkpoint_worker(work, units=8, unit_s=0.2), "checkpoint", duration_s=2,
        chunks=[(0, 0.8), (1.5, 30)], checkpoint_signal="SIGUSR1")
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
    ws = csv_workspace(flat_forecast())
    argv, stamps = stamp_command(ws, steps=25)
    chunks = [(0, 1.5), (2.5, 3.5), (4.5, 30)]
    job_id, origin = add_chunked_job(ws, argv, "suspend", duration_s=3, chunks=chunks)
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
    assert len(lines(stamps)) == 25
    pauses = [(origin.timestamp() + end, origin.timestamp() + start)
              for (_, end), (start, _) in itertools.pairwise(chunks)]
    seen = gaps(stamps, longer_than=0.5)
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
    """Its next chunk lies past the deadline's reach (a plan gone stale, no forecast): it
    resumes when the remaining work just fits before the deadline, and is not paused
    again."""
    ws = csv_workspace(flat_forecast())
    argv, _stamps = stamp_command(ws, steps=15)
    job_id, origin = add_chunked_job(ws, argv, "suspend", duration_s=3,
                                     chunks=[(0, 1), (600, 700)])
    store = ws.store()
    try:  # the deadline leaves 2 s of slack: the job must resume by origin + 3
        store.update_job_fields(job_id, deadline=origin + timedelta(seconds=5))
    finally:
        store.close()
    daemon = in_process_daemon(ws)
    ended = drive(daemon, lambda: daemon.store.get_job(job_id))

    assert ended.state == JobState.SUCCEEDED
    runs = runs_of(ws, job_id)
    assert [r.outcome for r in runs] == ["suspended", "succeeded"]
    latest_resume = origin + timedelta(seconds=5) - timedelta(
        seconds=3 - (runs[0].work_s or 0))
    assert runs[1].started_at >= latest_resume
    assert runs[1].started_at <= latest_resume + timedelta(seconds=SLACK_S)
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
    ws = csv_workspace(flat_forecast())
    work = ws.root / "work"
    job_id, origin = add_chunked_job(
        ws, checkpoint_worker(work, units=30, unit_s=0.2), "checkpoint", duration_s=6,
        chunks=[(0, 2), (6, 8), (12, 60)])
    first = DaemonProcess(ws)
    wait_run(ws, job_id, JobState.PAUSED, 1)
    first.kill()  # between chunks

    second = DaemonProcess(ws)
    wait_run(ws, job_id, JobState.RUNNING, 2)
    wait_for(lambda: len(lines(work / "units")) > 11, what="run 2 to do some units")
    second.kill()  # during a chunk: its command keeps running

    third = DaemonProcess(ws)
    ended = wait_finished(ws, [job_id], 60)[0]
    assert third.stop() == 0
    assert (ended.state, ended.exit_code) == (JobState.SUCCEEDED, 0)
    assert lines(work / "units") == [str(unit) for unit in range(30)]
    assert lines(work / "runs") == ["1 -", "2 1", "3 1"]
    assert not (work / "overlaps").exists()
    runs = runs_of(ws, job_id)
    assert [(r.run, r.outcome) for r in runs] == [
        (1, "checkpointed"), (2, "checkpointed"), (3, "succeeded")]
    assert runs[1].started_at >= origin + timedelta(seconds=6)
    assert runs[2].started_at >= origin + timedelta(seconds=12)
    assert f"job {job_id}: re-adopted" in third.output()


@pytest.mark.parametrize("gap", ["after-pause-stored", "after-resume-stored"])
def test_a_suspend_job_survives_a_daemon_kill_between_storing_and_signalling(
    csv_workspace: Callable[..., Workspace], gap: str,
) -> None:
    """The daemon is killed with -9 after storing a pause (or resume) and before sending
    SIGSTOP (or SIGCONT), and again during the next chunk: the restarted daemon makes the
    process match the stored state, and the job ends once, resumed on schedule."""
    ws = csv_workspace(flat_forecast())
    # 8 s of work: whatever runs while the killed daemon is down still leaves some for
    # the third chunk.
    argv, stamps = stamp_command(ws, steps=80)
    chunks = [(0, 2), (6, 8), (12, 60)]
    job_id, origin = add_chunked_job(ws, argv, "suspend", duration_s=8, chunks=chunks)
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
    ended = wait_finished(ws, [job_id], 60)[0]
    assert third.stop() == 0
    assert (ended.state, ended.exit_code) == (JobState.SUCCEEDED, 0)
    assert len(lines(stamps)) == 80
    runs = runs_of(ws, job_id)
    assert [r.outcome for r in runs] == ["suspended", "suspended", "succeeded"]
    assert runs[1].started_at >= origin + timedelta(seconds=6)
    assert runs[2].started_at >= origin + timedelta(seconds=12)
    # Nothing ran while it was paused: no stamp inside a pause, beyond a daemon tick
    # (1 s here) and the restart after the kill.
    first_pause_end = origin.timestamp() + 6
    late_stamps = [t for t in map(float, lines(stamps))
                   if origin.timestamp() + 2 + 1 + SLACK_S < t < first_pause_end - SLACK_S]
    assert gap == "after-pause-stored" or not late_stamps
    second_pause = [t for t in map(float, lines(stamps))
                    if origin.timestamp() + 8 + 1 + SLACK_S < t
                    < origin.timestamp() + 12 - SLACK_S]
    assert not second_pause


# Cancel while paused ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["suspend", "checkpoint"])
def test_a_paused_job_cancelled_ends_cancelled_and_never_resumes(
    csv_workspace: Callable[..., Workspace], mode: str,
) -> None:
    ws = csv_workspace(flat_forecast())
    work = ws.root / "work"
    argv = (stamp_command(ws, steps=100)[0] if mode == "suspend"
            else checkpoint_worker(work, units=100, unit_s=0.1))
    job_id, origin = add_chunked_job(ws, argv, mode, duration_s=10,
                                     chunks=[(0, 1), (3, 30)])
    daemon = in_process_daemon(ws)
    wait_for(lambda: (daemon.tick(datetime.now(UTC)), time.sleep(TICK_S),
                      daemon.store.get_job(job_id).state == JobState.PAUSED)[-1],
             timeout=30, what="the job to pause")
    paused = daemon.store.get_job(job_id)

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

def checkpointed_job(ws: Workspace, argv: list[str], position: int, work: Path) -> int:
    """A checkpoint-mode job whose first run saved ``position`` and exited 75: paused, its
    next chunk due now (as the daemon leaves it)."""
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
                      RunEnd(now, "checkpointed", 1.0, None, None), planned_start=now,
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
    ws = csv_workspace(flat_forecast())
    work = ws.root / "work"
    job_id = checkpointed_job(ws, checkpoint_worker(work, units=10, unit_s=0.1), 4, work)
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
