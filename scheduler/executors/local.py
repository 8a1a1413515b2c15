"""The local executor: run jobs on this machine, each under its own job wrapper.

It starts a planned job (claim, spawn the wrapper, store its pid, then hand it the job:
see ``launcher``), follows it to its end (``reap``), re-adopts what an earlier daemon left
running, enforces a cancel's kill grace, and carries interruptible jobs through their
chunks: at a chunk's end a suspend-mode job's process group is stopped (SIGSTOP) and a
checkpoint-mode job is signalled to save and exit ``requeue_exit_code``; at the next
chunk the first is continued (SIGCONT) and the second relaunched with
``GRIDSHIFT_RESUME=1``. Every change is stored before the signal that makes it, so a
daemon killed between the two finds the job in the state it was going to.

The daemon decides what is due and calls in here; ``slurm.SlurmExecutor`` does the same
for Slurm regions.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.config import Config
from scheduler.energy import METHOD_DECLARED, EnergyMonitor, Measurement
from scheduler.errors import StateConflict
from scheduler.executors import launcher
from scheduler.executors.jobwrapper import COULD_NOT_START, PAUSE_POLL_S
from scheduler.metrics import DaemonMetrics
from scheduler.models import Job, JobRun, JobState
from scheduler.records import (
    CHECKPOINT,
    DEFAULT_CHECKPOINT_GRACE_S,
    SUSPEND,
    ChunkPlan,
    RunEnd,
)
from scheduler.store import Store

log = logging.getLogger("gridshift.daemon")

# Tests only: make a launch block at one point (after-claim and before-spec, here;
# after-spawn and after-start-record, in the wrapper), or a suspend-mode pause or resume
# between storing it and signalling the job (after-pause-stored, after-resume-stored), or
# a reap (before-reap), until PAUSE_DIR/<point>-job-<id>.release exists.
PAUSE_AT_ENV = "GRIDSHIFT_TEST_PAUSE_AT"
PAUSE_DIR_ENV = "GRIDSHIFT_TEST_PAUSE_DIR"
RETURNED_TO_QUEUE = "returned to the queue: the daemon stopped before its command started"
RETURNED_TO_PAUSE = ("paused again: the daemon stopped before its relaunch started the "
                     "command; relaunched at once")
KILLED_AFTER_GRACE = "killed after its checkpoint grace"
# job_runs.outcome of a run that ended in a pause (else the job's final state).
SUSPENDED = "suspended"
CHECKPOINTED = "checkpointed"
# A job whose runs' energy was obtained in different ways.
METHOD_MIXED = "mixed"


def checkpoint_grace(job: Job) -> timedelta:
    """How long a checkpoint-mode job may take to exit after its checkpoint signal."""
    seconds = job.checkpoint_grace_s
    return timedelta(seconds=DEFAULT_CHECKPOINT_GRACE_S if seconds is None else seconds)


def checkpoint_signal(job: Job) -> signal.Signals:
    """The signal a checkpoint-mode job gets at its chunk's end (SIGTERM by default, and
    for a name this machine does not know or that cannot be caught)."""
    try:
        chosen = signal.Signals[job.checkpoint_signal or "SIGTERM"]
    except KeyError:
        return signal.SIGTERM
    return signal.SIGTERM if chosen in launcher.GROUP_SIGNALS else chosen


@dataclass
class LocalExecutor:
    """Starts, follows, pauses, resumes and re-adopts the jobs of local regions."""

    config: Config
    store: Store
    metrics: DaemonMetrics
    meters: EnergyMonitor  # the daemon's: per-job energy, sampled by its tick
    # Wrappers this process started, kept until their job's end is committed.
    children: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Set when a job went back to the queue: the daemon re-plans at once.
    requeued: bool = False
    _pause_at: str | None = field(default=None, init=False)
    _pause_dir: str | None = field(default=None, init=False)
    # Paused (suspended) jobs being cancelled that this process sent SIGTERM and SIGCONT.
    _cancels_continued: set[int] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._pause_at = os.environ.get(PAUSE_AT_ENV) or None
        self._pause_dir = os.environ.get(PAUSE_DIR_ENV) or None

    def take_requeued(self) -> bool:
        """Whether a job went back to the queue since the last call."""
        requeued, self.requeued = self.requeued, False
        return requeued

    def restore_suspension(self, job: Job) -> None:
        """Make a suspend-mode job's processes match its stored state: a pause or resume
        is stored before its signal is sent, so a daemon killed between the two left the
        process running while paused, or stopped while running. SIGSTOP and SIGCONT are
        idempotent. A paused job being cancelled is left to the cancel."""
        if job.interruptible != SUSPEND or job.pid is None or job.slurm_job_id is not None:
            return
        if job.state == JobState.PAUSED.value and job.cancel_requested_at is None:
            launcher.signal_job(job.pid, job.pid_started_at, signal.SIGSTOP)
        elif job.state == JobState.RUNNING.value:
            launcher.signal_job(job.pid, job.pid_started_at, signal.SIGCONT)

    def launch(self, job: Job, region: str, now: datetime, latest_start: datetime) -> bool:
        """Claim the job, start its wrapper, store the wrapper's pid, then hand it the job.

        That order is what crash recovery relies on: a job whose pid is not stored never
        got its spec, so its command provably never started (see launcher.check)."""
        late = now > latest_start
        reason = f"launched in {region}" + (" after its latest start: will miss its deadline"
                                            if late else "")
        claimed = {"run_region": region, "started_at": now, "deadline_missed": late}
        try:  # Claim first: a cancel that lands before this wins, and nothing starts.
            if job.interruptible is None:
                self.store.transition(job.id, (JobState.PLANNED,), JobState.RUNNING, now,
                                      reason, **claimed)
                run = None
            else:
                run = self.store.begin_run(job.id, (JobState.PLANNED,), now, reason, region,
                                           **claimed)
        except StateConflict:
            return False
        return self._start_wrapper(job, region, now, late, run)

    def _start_wrapper(self, job: Job, region: str, now: datetime, late: bool,
                       run: int | None) -> bool:
        """Start the claimed job's wrapper, store its pid, then hand it the job (run
        ``run`` of an interruptible job: GRIDSHIFT_RUN, and GRIDSHIFT_RESUME after the
        first). False when it could not start (the job is then failed)."""
        self._pause("after-claim", job.id)
        settings = self.config.regions[region]
        log_dir = self.config.daemon.log_dir
        try:
            owner = launcher.run_as(job)
            identity = owner.identity
            env = launcher.job_environment(job, region, owner.home, self.config.secrets())
            if run is not None:
                env["GRIDSHIFT_RUN"] = str(run)
                if run > 1:
                    env["GRIDSHIFT_RESUME"] = "1"
            launched, process = launcher.spawn_wrapper(job.id, log_dir, owner.user_dir,
                                                       identity)
        except (OSError, launcher.LaunchRefused) as error:
            detail = error.strerror if isinstance(error, OSError) and error.strerror else error
            log.error("job %d: could not start: %s", job.id, detail)
            ended = {"ended_at": now, "exit_code": None,
                     "end_reason": f"could not start: {detail}"}
            if run is None:
                self.store.transition(job.id, (JobState.RUNNING,), JobState.FAILED, now,
                                      f"could not start: {detail}", **ended)
            else:
                self.store.end_run(job.id, (JobState.RUNNING,), JobState.FAILED, now,
                                   f"could not start: {detail}",
                                   RunEnd(now, JobState.FAILED.value, 0.0, None, None),
                                   **ended, **self._energy_over_runs(job.id, None))
            self.metrics.record_finished(region, JobState.FAILED, late, None, None)
            return False
        self.children[job.id] = process
        self.metrics.record_launch(job, now)
        try:
            self.store.update_job_fields(job.id, pid=launched.pid,
                                         pid_started_at=launched.pid_started_at,
                                         log_path=str(launched.log_path))
        except Exception:
            # Without its pid stored, the job must not start: the wrapper never gets its
            # spec, and the next tick puts the job back in the queue.
            process.kill()
            process.wait()
            del self.children[job.id]
            raise
        self._pause("before-spec", job.id)
        launcher.send_spec(process, launcher.wrapper_spec(
            log_dir, job.id, [*settings.launcher, *job.argv], env, job.cwd, identity,
            job.umask, self.config.daemon.max_log_bytes, self._pause_at, self._pause_dir,
            None if job.interruptible != CHECKPOINT else checkpoint_signal(job)))
        remote = (f"runs through region {region}'s launcher {settings.launcher[0]!r}, "
                  f"out of sight of this machine's meters" if settings.launcher else None)
        self.meters.start(job.id, launched.pid, env, now, remote)
        log.info("job %d: launched in %s (pid %d): %s", job.id, region, launched.pid,
                 " ".join(job.argv))
        if self.store.get_job(job.id).cancel_requested_at is not None:
            launcher.signal_job(launched.pid, launched.pid_started_at, signal.SIGTERM)
        return True

    def _pause(self, point: str, job_id: int) -> None:
        """The test hook of PAUSE_AT_ENV; does nothing unless a test set it."""
        if self._pause_at != point or self._pause_dir is None:
            return
        name = Path(self._pause_dir) / f"{point}-job-{job_id}"
        Path(f"{name}.reached").touch()
        while not Path(f"{name}.release").exists():
            time.sleep(PAUSE_POLL_S)

    # Reaping -----------------------------------------------------------------------------

    def reap(self, job: Job, now: datetime) -> bool:
        """Record the job's end if it has ended; True while it still runs.

        The wrapper's status is read first, so a job ends when its command exits even
        while a leftover background process keeps its wrapper alive. A wrapper this
        process started is kept until the job's end is committed: a failed commit (a full
        disk) is retried on the next tick with nothing forgotten."""
        if job.slurm_job_id is not None:
            return True  # a Slurm job: the Slurm executor follows it
        self._pause("before-reap", job.id)
        log_dir = self.config.daemon.log_dir
        process = self.children.get(job.id)
        wrapper_exit = None if process is None else process.poll()
        if job.pid is None and launcher.command_started(log_dir, job.id):
            job = self._adopt(job)
        outcome = launcher.check(log_dir, job.id, job.pid, job.pid_started_at, wrapper_exit)
        if outcome is None:
            return True
        if job.cancel_requested_at is None:
            # Read before this tick's cancels: a cancel stores its request before it sends
            # SIGTERM, so a job that has ended since shows the request when read again (it
            # ended cancelled, not failed).
            job = self.store.get_job(job.id)
        if outcome.never_started and process is not None and job.cancel_requested_at is None:
            # Its own wrapper stopped before starting the command: no crash to recover
            # from, so no second try (a broken install would relaunch it every tick).
            outcome = launcher.Outcome(None, now, reason=(
                f"the job wrapper stopped before starting the command (exit status "
                f"{wrapper_exit}; see its log)"))
        self._record_end(job, outcome, now)
        self._forget_child(job.id)
        return False

    def _adopt(self, job: Job) -> Job:
        """A wrapper that recorded it was starting the command while the stored pid is
        missing (not something this daemon's launch order leaves): watch it by its pid file
        instead of calling the job lost."""
        written = launcher.read_pid_file(self.config.daemon.log_dir, job.id)
        if written is None:
            return job
        pid, pid_started_at = written
        self.store.update_job_fields(job.id, pid=pid, pid_started_at=pid_started_at)
        log.info("job %d: adopted its process (pid %d) from the wrapper's pid file", job.id, pid)
        return self.store.get_job(job.id)

    def _record_end(self, job: Job, outcome: launcher.Outcome, now: datetime) -> None:
        if outcome.never_started:
            self._return_to_queue(job, outcome, now)
            return
        cancelled = job.cancel_requested_at is not None
        if (job.interruptible == CHECKPOINT and not cancelled
                and job.state == JobState.RUNNING.value
                and outcome.exit_code == self.config.daemon.requeue_exit_code):
            self._checkpointed(job, outcome, now)
            return
        ended_at = outcome.ended_at or now
        missed = job.deadline_missed or ended_at > job.deadline
        cancelled = job.cancel_requested_at is not None
        # Cancelled only if the cancel is what ended it: a command that exited on its own
        # before the signal reached it keeps its real outcome.
        ended_by_cancel = cancelled and (
            outcome.lost or outcome.signalled or (outcome.exit_code or 0) < 0)
        if outcome.lost and cancelled:
            state, reason = JobState.CANCELLED, "cancelled; killed, no exit status recorded"
        elif outcome.lost:
            state, reason = JobState.LOST, outcome.reason
        elif ended_by_cancel:
            state, reason = JobState.CANCELLED, f"cancelled; exit status {outcome.exit_code}"
        elif outcome.exit_code is None:
            state, reason = JobState.FAILED, outcome.reason
        elif outcome.exit_code == 0:
            state, reason = JobState.SUCCEEDED, "exit status 0"
        elif outcome.exit_code == COULD_NOT_START:
            state, reason = JobState.FAILED, "the command could not be started (see its log)"
        else:
            state, reason = JobState.FAILED, f"exit status {outcome.exit_code}"
        if cancelled and not ended_by_cancel:
            reason += " (it ended before the cancel reached it)"
        if job.interruptible is not None:
            if not cancelled and self._killed_after_grace(job, outcome, now):
                state, reason = JobState.FAILED, KILLED_AFTER_GRACE
            self._end_interruptible(job, outcome, state, reason, missed, now)
            return
        energy = self.meters.stop(job.id, now, job.power_watts, job.started_at,
                                   None if outcome.lost else ended_at)
        try:
            self.store.transition(job.id, (JobState.RUNNING,), state, now, reason,
                                  ended_at=None if outcome.lost else ended_at,
                                  exit_code=outcome.exit_code, deadline_missed=missed,
                                  end_reason=reason, energy_kwh=energy.energy_kwh,
                                  energy_method=energy.method, energy_note=energy.note)
        except StateConflict:
            return
        self.metrics.record_finished(job.run_region, state, missed, energy.energy_kwh,
                                     energy.method)
        log.info("job %d: %s (%s)", job.id, state.value, reason)

    def _return_to_queue(self, job: Job, outcome: launcher.Outcome, now: datetime) -> None:
        """A crash left the job claimed but its command provably never started: it goes
        back to the queue (or ends cancelled, if that was asked meanwhile)."""
        self.meters.stop(job.id, now, job.power_watts, job.started_at, None)
        relaunch = (job.run_count or 0) > 1
        if job.cancel_requested_at is not None:
            state, reason = JobState.CANCELLED, "cancelled before its command started"
            fields: dict[str, object] = {"ended_at": now, "end_reason": reason}
            if job.interruptible is not None:
                fields.update(self._energy_over_runs(job.id, None))
        elif relaunch:  # a checkpointed job's relaunch: it is paused again, due at once
            state, reason = JobState.PAUSED, RETURNED_TO_PAUSE
            fields = {"pid": None, "pid_started_at": None}
        else:
            state, reason = JobState.PLANNED, RETURNED_TO_QUEUE
            fields = {"run_region": None, "started_at": None, "deadline_missed": False,
                      "pid": None, "pid_started_at": None}
        try:
            if job.interruptible is None:
                self.store.transition(job.id, (JobState.RUNNING,), state, now, reason,
                                      **fields)
            else:
                self.store.undo_run(job.id, state, now, reason, **fields)
        except StateConflict:
            return
        self.requeued = True  # the daemon re-plans it on this tick
        if state == JobState.PLANNED:
            log.warning("job %d: %s; it will run when re-planned", job.id, RETURNED_TO_QUEUE)
        elif state == JobState.PAUSED:
            log.warning("job %d: %s", job.id, RETURNED_TO_PAUSE)
        else:
            log.info("job %d: %s (%s)", job.id, state.value, reason)

    def enforce_cancel(self, job: Job, now: datetime) -> None:
        if job.cancel_requested_at is None or job.pid is None:
            return
        if now - job.cancel_requested_at >= self.config.daemon.kill_grace and (
            launcher.signal_job(job.pid, job.pid_started_at, signal.SIGKILL)
        ):
            log.warning("job %d: still running %s after SIGTERM: sent SIGKILL", job.id,
                        self.config.daemon.kill_grace)

    # Interruptible jobs: pause, resume, relaunch ----------------------------------------

    def pause_due(self, now: datetime) -> None:
        """Pause every running interruptible job whose chunk has ended and that may pause:
        suspend mode stops its process group; checkpoint mode sends its checkpoint signal
        and pauses it when it exits with requeue_exit_code (``_record_end``)."""
        for job in self.store.running_jobs():
            if (job.interruptible is None or job.chunk_end is None or job.chunk_end > now
                    or job.pid is None or job.slurm_job_id is not None
                    or job.cancel_requested_at is not None
                    or job.checkpoint_sent_at is not None):
                continue
            run = self._open_run(job.id)
            if run is None or not self._may_pause(job, run, now):
                continue
            if job.interruptible == SUSPEND:
                self._suspend(job, run, now)
            else:
                self._send_checkpoint(job, now)

    def _open_run(self, job_id: int) -> JobRun | None:
        runs = self.store.job_runs(job_id)
        return runs[-1] if runs and runs[-1].ended_at is None else None

    def _run_work(self, job: Job, run: JobRun, ended_at: datetime) -> float:
        """The job's work done by ``run`` up to ``ended_at``: its wall time, less the
        restart overhead a relaunch spends re-loading its checkpoint."""
        seconds = (ended_at - run.started_at).total_seconds()
        if job.interruptible == CHECKPOINT and run.run > 1:
            seconds -= job.restart_overhead_s or 0
        return max(seconds, 0.0)

    def _latest_resume(self, job: Job, remaining_s: float) -> datetime:
        """The last moment the job can resume and still meet its deadline."""
        overhead = (job.restart_overhead_s or 0) if job.interruptible == CHECKPOINT else 0
        return job.deadline - timedelta(seconds=remaining_s + overhead)

    def _may_pause(self, job: Job, run: JobRun, now: datetime) -> bool:
        """Whether pausing now keeps the deadline guarantee, leaves work to resume, and
        stays within max_pauses."""
        remaining = job.duration_s - (job.work_done_s or 0) - self._run_work(job, run, now)
        if remaining <= 0:
            return False  # its declared work is done: it runs on until it ends
        if job.max_pauses is not None and (job.run_count or 0) - 1 >= job.max_pauses:
            return False
        return now < self._latest_resume(job, remaining)

    def _next_chunks(self, job: Job, now: datetime) -> list[ChunkPlan]:
        """The job's chunks still ahead at a pause: those starting at or after ``now``."""
        return [chunk for chunk in self.store.job_chunks(job.id) if chunk.start >= now]

    @staticmethod
    def _plan_of(job: Job, chunks: list[ChunkPlan], now: datetime) -> dict[str, object]:
        """A paused job's plan columns: its next chunk's; with none left, now in its region,
        to run to its end."""
        if not chunks:
            return {"planned_start": now, "planned_region": job.run_region, "chunk_end": None}
        return {"planned_start": chunks[0].start, "planned_region": chunks[0].region,
                "chunk_end": chunks[0].end}

    def _suspend(self, job: Job, run: JobRun, now: datetime) -> None:
        """Stored first, then SIGSTOP: a daemon killed between the two finds the job
        paused and stops it at start (``restore_suspension``)."""
        assert job.pid is not None
        energy = self.meters.stop(job.id, now, job.power_watts, run.started_at, now)
        ahead = self._next_chunks(job, now)
        try:
            self.store.end_run(job.id, (JobState.RUNNING,), JobState.PAUSED, now,
                               "paused at the end of its chunk (suspended)",
                               RunEnd(now, SUSPENDED, self._run_work(job, run, now),
                                      energy.energy_kwh, energy.method),
                               **self._plan_of(job, ahead, now))
        except StateConflict:
            return
        self.store.save_chunks({job.id: ahead})  # seq 0 is now the chunk it resumes in
        self._pause("after-pause-stored", job.id)
        launcher.signal_job(job.pid, job.pid_started_at, signal.SIGSTOP)
        log.info("job %d: paused at the end of its chunk (suspended)", job.id)

    def _send_checkpoint(self, job: Job, now: datetime) -> None:
        """Signal first, then store when: a daemon killed between the two sends it again
        after its restart (a job exiting meanwhile is paused from its exit status)."""
        assert job.pid is not None
        chosen = checkpoint_signal(job)
        if not launcher.signal_job(job.pid, job.pid_started_at, chosen):
            return  # it ended meanwhile: the next reap records how
        self.store.update_job_fields(job.id, checkpoint_sent_at=now)
        log.info("job %d: end of its chunk: sent %s to checkpoint", job.id, chosen.name)

    def enforce_checkpoint_grace(self, job: Job, now: datetime) -> None:
        if job.checkpoint_sent_at is None or job.pid is None:
            return
        grace = checkpoint_grace(job)
        if now - job.checkpoint_sent_at >= grace and (
            launcher.signal_job(job.pid, job.pid_started_at, signal.SIGKILL)
        ):
            log.warning("job %d: still running %s after its checkpoint signal: sent SIGKILL",
                        job.id, grace)

    def _killed_after_grace(self, job: Job, outcome: launcher.Outcome, now: datetime) -> bool:
        """Whether the job ended by the SIGKILL that follows its checkpoint grace."""
        if job.checkpoint_sent_at is None:
            return False
        grace = checkpoint_grace(job)
        killed = outcome.lost or outcome.exit_code == -signal.SIGKILL
        return killed and now - job.checkpoint_sent_at >= grace

    def _checkpointed(self, job: Job, outcome: launcher.Outcome, now: datetime) -> None:
        """The job saved its state and exited with requeue_exit_code: paused until its
        next chunk, when it is relaunched."""
        run = self._open_run(job.id)
        ended_at = outcome.ended_at or now
        started_at = run.started_at if run is not None else job.started_at
        energy = self.meters.stop(job.id, now, job.power_watts, started_at, ended_at)
        # The work counts until the checkpoint signal: saving it is not the job's work.
        worked_until = min(job.checkpoint_sent_at or ended_at, ended_at)
        work = 0.0 if run is None else self._run_work(job, run, worked_until)
        ahead = self._next_chunks(job, now)
        try:
            self.store.end_run(job.id, (JobState.RUNNING,), JobState.PAUSED, now,
                               "paused at the end of its chunk (checkpointed)",
                               RunEnd(ended_at, CHECKPOINTED, work, energy.energy_kwh,
                                      energy.method),
                               pid=None, pid_started_at=None, checkpoint_sent_at=None,
                               **self._plan_of(job, ahead, now))
        except StateConflict:
            return
        self.store.save_chunks({job.id: ahead})
        log.info("job %d: paused at the end of its chunk (checkpointed)", job.id)

    def _end_interruptible(self, job: Job, outcome: launcher.Outcome, state: JobState,
                           reason: str, missed: bool, now: datetime) -> None:
        """The job's end: its open run (if running) closes with ``state``; the job's
        energy is the sum over its runs."""
        ended_at = None if outcome.lost else (outcome.ended_at or now)
        run = self._open_run(job.id) if job.state == JobState.RUNNING.value else None
        run_end = None
        energy = None
        if run is not None:
            energy = self.meters.stop(job.id, now, job.power_watts, run.started_at, ended_at)
            run_end = RunEnd(ended_at, state.value,
                             self._run_work(job, run, ended_at or now),
                             energy.energy_kwh, energy.method)
        totals = self._energy_over_runs(job.id, energy)
        try:
            self.store.end_run(job.id, (JobState(job.state),), state, now, reason, run_end,
                               ended_at=ended_at, exit_code=outcome.exit_code,
                               deadline_missed=missed, end_reason=reason, **totals)
        except StateConflict:
            return
        self.metrics.record_finished(job.run_region, state, missed, totals["energy_kwh"],
                                     totals["energy_method"])
        log.info("job %d: %s (%s)", job.id, state.value, reason)

    def _energy_over_runs(self, job_id: int, last: Measurement | None) -> dict[str, Any]:
        """The job's energy columns: the sum over its ended runs and ``last`` (the run
        ending now), unknown when one run's energy is."""
        runs = [(r.energy_kwh, r.energy_method) for r in self.store.job_runs(job_id)
                if r.ended_at is not None]
        if last is not None:
            runs.append((last.energy_kwh, last.method))
        if not runs:
            return {"energy_kwh": None, "energy_method": None, "energy_note": None}
        amounts = [kwh for kwh, _ in runs]
        methods = sorted({method or METHOD_DECLARED for _, method in runs})
        total = None if any(kwh is None for kwh in amounts) else sum(
            kwh for kwh in amounts if kwh is not None)
        return {"energy_kwh": total,
                "energy_method": methods[0] if len(methods) == 1 else METHOD_MIXED,
                "energy_note": f"the sum over its {len(runs)} run(s) ({', '.join(methods)})"}

    def _forget_child(self, job_id: int) -> None:
        """Drop the wrapper of a job whose end is recorded; one still copying a leftover's
        output to the log is waited for in the background."""
        process = self.children.pop(job_id, None)
        if process is not None and process.poll() is None:
            threading.Thread(target=process.wait, daemon=True,
                             name=f"reap-wrapper-{job_id}").start()

    def resume_due(self, now: datetime, in_use: dict[str, int],
                   stopping: Callable[[], bool]) -> None:
        """Resume paused jobs whose next chunk has started, or whose latest resume point
        has come (forecast or not); a resumed job takes a slot of its region. Stops early
        once ``stopping()`` is true."""
        for job in sorted(self.store.paused_jobs(),
                          key=lambda j: (j.planned_start or now, j.id)):
            if stopping():
                return
            if job.cancel_requested_at is not None:
                continue  # ended by reap_paused
            remaining = max(job.duration_s - (job.work_done_s or 0), 0.0)
            forced = now >= self._latest_resume(job, remaining)
            if not forced and (job.planned_start is None or job.planned_start > now):
                continue
            region = job.run_region or job.regions[0]
            if region not in self.config.regions:
                if not forced:
                    continue
                log.warning("job %d: its region %s left the config; resuming it anyway to "
                            "keep its deadline", job.id, region)
            else:
                free = self.config.regions[region].slots - in_use.get(region, 0)
                if free <= 0 and not forced:
                    continue
            if forced and job.planned_start is not None and job.planned_start > now:
                log.warning("job %d: resumed at its latest resume point to keep its "
                            "deadline", job.id)
            resumed = (self._resume(job, region, now) if job.interruptible == SUSPEND
                       else self._relaunch(job, region, now))
            if resumed:
                in_use[region] = in_use.get(region, 0) + 1

    def _resume(self, job: Job, region: str, now: datetime) -> bool:
        """SIGCONT a suspended job, after storing it running (see ``restore_suspension``)."""
        assert job.pid is not None
        run = (job.run_count or 0) + 1
        try:
            self.store.begin_run(job.id, (JobState.PAUSED,), now, f"resumed (run {run})",
                                 region, **self._current_chunk(job, now))
        except StateConflict:
            return False
        self._pause("after-resume-stored", job.id)
        launcher.signal_job(job.pid, job.pid_started_at, signal.SIGCONT)
        try:
            home = launcher.run_as(job).home
        except launcher.LaunchRefused:
            home = None  # only the meters' view of its GPUs depends on the environment
        self.meters.start(job.id, job.pid,
                           launcher.job_environment(job, region, home, self.config.secrets()),
                           now)
        log.info("job %d: resumed (run %d)", job.id, run)
        return True

    def _relaunch(self, job: Job, region: str, now: datetime) -> bool:
        """Relaunch a checkpointed job as a new wrapper, with GRIDSHIFT_RESUME=1. Its last
        run's records go first: the relaunch's records then tell crash recovery whether
        this run's command started."""
        run = (job.run_count or 0) + 1
        launcher.clear_records(self.config.daemon.log_dir, job.id)
        try:
            self.store.begin_run(job.id, (JobState.PAUSED,), now,
                                 f"relaunched from its checkpoint (run {run})", region,
                                 pid=None, pid_started_at=None, checkpoint_sent_at=None,
                                 **self._current_chunk(job, now))
        except StateConflict:
            return False
        return self._start_wrapper(job, region, now, job.deadline_missed, run)

    @staticmethod
    def _current_chunk(job: Job, now: datetime) -> dict[str, object]:
        """A resumed job runs until the chunk_end its plan holds, unless that has passed
        (resumed late: the daemon was down, or at its latest resume point): then until the
        next re-plan cuts it, or to its end."""
        return {"chunk_end": None} if job.chunk_end is not None and job.chunk_end <= now \
            else {}

    def reap_paused(self, job: Job, now: datetime) -> bool:
        """Follow a paused job: end it if its suspended process is gone, or if it is being
        cancelled (a suspended one gets SIGTERM, then SIGCONT to act on it, then SIGKILL
        after kill_grace). True while it stays paused."""
        cancelled = job.cancel_requested_at is not None
        if job.interruptible != SUSPEND or job.pid is None:
            if not cancelled:
                return True
            reason = "cancelled while paused between runs"
            try:
                self.store.end_run(job.id, (JobState.PAUSED,), JobState.CANCELLED, now, reason,
                                   None, ended_at=now, end_reason=reason,
                                   **self._energy_over_runs(job.id, None))
            except StateConflict:
                return True
            log.info("job %d: cancelled (%s)", job.id, reason)
            return False
        if cancelled and job.id not in self._cancels_continued:
            self._cancels_continued.add(job.id)
            launcher.signal_job(job.pid, job.pid_started_at, signal.SIGTERM)
            launcher.signal_job(job.pid, job.pid_started_at, signal.SIGCONT)
        elif cancelled:
            self.enforce_cancel(job, now)
        process = self.children.get(job.id)
        outcome = launcher.check(self.config.daemon.log_dir, job.id, job.pid,
                                 job.pid_started_at,
                                 None if process is None else process.poll())
        if outcome is None or outcome.never_started:
            return True
        self._record_end(job, outcome, now)
        self._forget_child(job.id)
        return False
