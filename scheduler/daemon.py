"""The daemon: refresh forecasts, plan, launch due jobs, reap finished ones.

The database is the only source of truth; APScheduler (3.11, BackgroundScheduler in UTC)
only decides when each piece of periodic work runs and keeps its jobs in memory. Every
piece of work reads the clock once and passes ``now`` down; ``run_once`` runs one full
iteration without threads or sleeping, for tests and the simulator.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any

from scheduler import accounting, forecasting, launcher, replanning, slurm, stopflag
from scheduler.config import Config
from scheduler.energy import METHOD_DECLARED, EnergyMonitor, Measurement
from scheduler.errors import GridshiftError, StateConflict
from scheduler.jobwrapper import COULD_NOT_START, PAUSE_POLL_S
from scheduler.metrics import DaemonMetrics
from scheduler.models import Job, JobRun, JobState
from scheduler.providers import Provider, build_provider
from scheduler.records import CHECKPOINT, SUSPEND, ChunkPlan, RunEnd
from scheduler.service import notify, watchdog_interval
from scheduler.store import (
    DAEMON_LOCK_KEY,
    AdvisoryLock,
    Store,
    is_sqlite,
    shown_url,
    sqlite_path,
)
from scheduler.timespec import utc_now

log = logging.getLogger("gridshift.daemon")

# How long SIGTERM waits for in-flight work before the process exits anyway.
STOP_WAIT_S = 3.0
# The first actuals fetch waits this long after start (or actuals_every if shorter).
ACTUALS_FIRST_DELAY = timedelta(minutes=2)
# How often the main thread looks at the stop flag a signal handler set.
STOP_POLL_S = 0.2
# New jobs wait at most this long for the re-plan of the whole queue while more arrive.
REPLAN_SETTLE = timedelta(seconds=30)
# How often forecast vintages older than daemon.retention are pruned.
PRUNE_EVERY = timedelta(hours=1)
# Tests only: make a launch block at one point (after-claim and before-spec, here;
# after-spawn and after-start-record, in the wrapper), or a suspend-mode pause or resume
# between storing it and signalling the job (after-pause-stored, after-resume-stored),
# until PAUSE_DIR/<point>-job-<id>.release exists.
PAUSE_AT_ENV = "GRIDSHIFT_TEST_PAUSE_AT"
PAUSE_DIR_ENV = "GRIDSHIFT_TEST_PAUSE_DIR"
# PostgreSQL's read_only_sql_transaction: a hot standby, or default_transaction_read_only.
READ_ONLY_SQLSTATE = "25006"
RETURNED_TO_QUEUE = "returned to the queue: the daemon stopped before its command started"
RETURNED_TO_PAUSE = ("paused again: the daemon stopped before its relaunch started the "
                     "command; relaunched at once")
KILLED_AFTER_GRACE = "killed after its checkpoint grace"
# A job whose checkpoint_grace_s is not set (submit stores the default).
DEFAULT_CHECKPOINT_GRACE_S = 120
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


class AlreadyRunning(GridshiftError):
    pass


class DaemonLock:
    """One daemon per database: on SQLite an exclusive flock on ``<db>.daemon.lock``; on
    PostgreSQL an advisory lock (``pg_try_advisory_lock``) on a connection of its own held
    for the daemon's life, so daemons on different machines sharing one database exclude
    each other too."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._handle: IO[str] | None = None
        self._advisory: AdvisoryLock | None = None

    def acquire(self) -> None:
        if is_sqlite(self.database_url):
            self._acquire_file(Path(f"{sqlite_path(self.database_url)}.daemon.lock"))
        else:
            self._acquire_advisory()

    def _acquire_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600)
        os.fchmod(descriptor, 0o600)
        handle = os.fdopen(descriptor, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise AlreadyRunning(
                f"another gridshift daemon (pid {holder}) is already running for "
                f"{path.name.removesuffix('.daemon.lock')}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def _acquire_advisory(self) -> None:
        lock = AdvisoryLock(self.database_url, DAEMON_LOCK_KEY)
        if not lock.try_acquire(self._holder()):
            holder = (lock.holder() or "unknown").removeprefix("gridshift daemon ")
            lock.release()
            raise AlreadyRunning(f"another gridshift daemon ({holder}) is already running "
                                 f"for {shown_url(self.database_url)}")
        self._advisory = lock

    @staticmethod
    def _holder() -> str:
        return f"gridshift daemon pid {os.getpid()} on {socket.gethostname()}"

    def still_held(self) -> bool:
        """Whether this daemon still holds the lock. A flock lasts as long as the process;
        an advisory lock ends with its connection, and is then taken again on a new one
        unless another daemon took it meanwhile (False)."""
        if self._advisory is None or self._advisory.connection_alive():
            return True
        log.warning("the database connection holding the daemon lock ended; taking the "
                    "lock again")
        return self._advisory.try_acquire(self._holder())

    def release(self) -> None:
        if self._advisory is not None:
            self._advisory.release()
            self._advisory = None
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


@dataclass
class Daemon:
    config: Config
    store: Store
    providers: dict[str, Provider] = field(default_factory=dict)
    clock: Callable[[], datetime] = utc_now
    # Per-job energy meters, in memory: a job re-adopted after a restart gets declared power.
    energy: EnergyMonitor | None = None
    _meters: EnergyMonitor = field(init=False, repr=False)
    metrics: DaemonMetrics = field(init=False, repr=False)
    # Wrappers this process started, kept until their job's end is committed.
    _children: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _pause_at: str | None = None
    _pause_dir: str | None = None
    _last_marker: tuple[int, int, int] | None = None
    _stopping: bool = False
    _exit_code: int = 0
    _started_at: datetime | None = None
    _work_lock: threading.Lock = field(default_factory=threading.Lock)
    # One emissions review at a time: a settling job must add its emissions to the metrics once.
    _review_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_tick_done: float | None = None  # time.monotonic() when a tick last completed
    _last_status: str = ""
    _counted_at: tuple[int, int, int] | None = None  # change marker of the last job count
    # Since when new jobs wait for a re-plan, and the change marker the last tick saw.
    _submits_since: datetime | None = None
    _seen_marker: tuple[int, int, int] | None = None
    # Forecasts and planned slots between re-plans, for the API's submits (replanning.py).
    plan_cache: replanning.PlanCache = field(default_factory=replanning.PlanCache)
    # The single-daemon lock run_daemon holds, checked every tick (None in tests).
    lock: DaemonLock | None = None
    _slurm: slurm.SlurmExecutor = field(init=False, repr=False)
    # Paused (suspended) jobs being cancelled that this process sent SIGTERM and SIGCONT.
    _cancels_continued: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._meters = self.energy or EnergyMonitor.for_host(self.config.daemon.powercap_root)
        self.metrics = DaemonMetrics(self.config, self.clock)
        self._slurm = slurm.SlurmExecutor(self.config, self.store, self.metrics)
        if not self.providers:
            self.providers = {name: build_provider(p) for name, p in self.config.providers.items()}
        self._pause_at = os.environ.get(PAUSE_AT_ENV) or None
        self._pause_dir = os.environ.get(PAUSE_DIR_ENV) or None

    # One iteration --------------------------------------------------------------------

    def run_once(self, now: datetime) -> None:
        """Reconcile, refresh, plan and dispatch once: what the scheduler does over time."""
        self.reconcile(now)
        self.refresh(now)
        self.tick(now)
        self.backfill_actuals(now)

    def run_burst(self) -> int:
        """`daemon --once`: reap, refresh what is due, re-plan, launch what is due, record
        the emissions reviews that can be, then return the exit code (rq's burst mode).
        Jobs launched keep running; the next run (or daemon) records how they ended."""
        if stopflag.requested():
            return 0
        now = self.clock()
        self._started_at = now
        log.info("daemon --once (pid %d), database %s, %d region(s)", os.getpid(),
                 self.config.database_url, len(self.config.regions))
        self.reconcile(now)
        for step in (self.refresh_due, self.refresh_actuals_due, self.tick,
                     self.backfill_actuals):
            self._stopping = self._stopping or stopflag.requested()
            self._guarded(step)()
        if not self._exit_code:
            self.store.mark_stopped(os.getpid(), self.clock())
        return self._exit_code

    def reconcile(self, now: datetime) -> None:
        """At start: record the outcome of jobs that ended while no daemon watched them,
        put back in the queue those whose command never started, re-adopt the rest."""
        self._meters.sample(now)
        for job in self.store.running_jobs():
            if self._reap(job, now) and job.id not in self._children:
                log.info("job %d: re-adopted (%s)", job.id,
                         f"Slurm job {job.slurm_job_id}" if job.slurm_job_id else f"pid {job.pid}")
                self._restore_suspension(job)
        for job in self.store.paused_jobs():
            self._restore_suspension(job)

    def _restore_suspension(self, job: Job) -> None:
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

    def refresh(self, now: datetime, only_due: bool = False) -> None:
        """Fetch forecasts for every configured (provider, zone); failures keep old data.

        ``only_due``: skip the zones refreshed less than ``refresh_every`` ago (`--once`).
        """
        recent = self._refreshed_since(now - self.config.daemon.refresh_every, "forecast") \
            if only_due else set()
        for provider_name, zone in forecasting.zones_of(self.config):
            if self._stopping:
                return
            if (provider_name, zone) in recent:
                continue
            result = forecasting.refresh_zone(self.store, self.providers[provider_name], zone,
                                              now)
            self.metrics.record_refresh(self.store, result, now)
        self.backfill_actuals(now)  # a provider such as csv stores actuals with its forecast

    def refresh_actuals(self, now: datetime, only_due: bool = False) -> None:
        """Fetch recent actual intensity for every (provider, zone), for emissions review."""
        if only_due and set(forecasting.zones_of(self.config)) <= self._refreshed_since(
                now - self.config.daemon.actuals_every, "actual"):
            return
        for result in forecasting.refresh_actuals(self.config, self.store, now, self.providers):
            self.metrics.record_refresh(self.store, result, now)
        self.backfill_actuals(now)

    def refresh_due(self, now: datetime) -> None:
        self.refresh(now, only_due=True)

    def refresh_actuals_due(self, now: datetime) -> None:
        self.refresh_actuals(now, only_due=True)

    def _refreshed_since(self, since: datetime, kind: str) -> set[tuple[str, str]]:
        """(provider, zone) pairs whose ``kind`` refresh was last tried at ``since`` or later."""
        return {(r.provider, r.zone) for r in self.store.refreshes()
                if r.kind == kind and r.at >= since}

    def backfill_actuals(self, now: datetime) -> None:
        """Fill actual intensity (emissions review) for finished jobs still awaiting it.

        Run after every refresh and whenever a job ends, so a job whose actuals are
        already stored gets them at once; the periodic run covers the rest."""
        with self._review_lock:
            accounting.backfill_actuals(self.store, self.config, now, self.providers,
                                        self.metrics.record_review)

    def tick(self, now: datetime) -> None:
        """Reap finished jobs, enforce kill grace, pause jobs whose chunk ended, re-plan on
        change, resume and launch due jobs."""
        ended = False
        with self._work_lock:
            begun = time.perf_counter()
            # Before reaping: a job that just ended still has its CPU times readable.
            self._meters.sample(now)
            for job in self.store.running_jobs():
                if self._reap(job, now):
                    self._enforce_cancel(job, now)
                    self._enforce_checkpoint_grace(job, now)
                else:
                    ended = True
            for job in self.store.paused_jobs():
                if not self._reap_paused(job, now):
                    ended = True
            if not self._stopping:
                # Before re-planning: a chunk that has ended ends as planned (after a restart
                # too), and the re-plan then places what is left from there.
                self._pause_due(now)
            marker = self.store.change_marker()
            if marker != self._last_marker and self._replan_due(marker, now):
                with self.metrics.replan_duration.time():
                    replanning.replan(self.store, self.config, now, self.plan_cache)
                # The forecast part as read before re-planning: points a refresh stored
                # while it ran trigger the next one (its own writes are jobs and events).
                self._last_marker = (marker[0], *self.store.change_marker()[1:])
                self._submits_since = None
            self._slurm.sync(now, submit=not self._stopping)
            if not self._stopping:
                self._dispatch(now)
            self.store.beat(os.getpid(), socket.gethostname(), self._started_at or now, now)
            self._last_tick_done = time.monotonic()
            self._report_status()
            self.metrics.tick_duration.observe(time.perf_counter() - begun)
        if ended:
            self.backfill_actuals(now)

    def _replan_due(self, marker: tuple[int, int, int], now: datetime) -> bool:
        """Whether this tick re-plans the queue, given that something changed.

        New forecasts, ends, launches and cancels re-plan at once. New jobs alone wait
        until submissions pause for a tick (or for REPLAN_SETTLE at most): each was placed
        around the others when it was submitted, and a sweep of thousands of submissions
        should cost one re-plan of a large queue, not one per tick while it arrives.
        """
        last = self._last_marker
        if last is None or marker[1] == last[1]:
            return True  # the first tick, or no new job
        if self._submits_since is None:
            self._submits_since, self._seen_marker = now, marker
            return False
        settled = marker == self._seen_marker
        self._seen_marker = marker
        return settled or now - self._submits_since >= REPLAN_SETTLE

    def _report_status(self) -> None:
        """A one-line STATUS= for `systemctl status`, sent when it changes."""
        # Every state change records an event, so the counts change only with the marker:
        # an idle tick need not count 100,000 jobs.
        marker = self.store.change_marker()
        if marker == self._counted_at:
            return
        self._counted_at = marker
        counts = self.store.count_by_state()
        self.metrics.set_job_counts(counts)
        line = ", ".join(f"{counts.get(s.value, 0)} {s.value}"
                         for s in (JobState.RUNNING, JobState.PAUSED, JobState.PLANNED,
                                   JobState.QUEUED))
        if line != self._last_status:
            self._last_status = line
            notify(f"STATUS={line}")

    def watchdog(self, interval: timedelta) -> None:
        """WATCHDOG=1 only while ticks complete: a hung loop gets restarted by systemd."""
        limit = max(2 * interval, 3 * self.config.daemon.tick).total_seconds()
        if self._last_tick_done is not None and time.monotonic() - self._last_tick_done < limit:
            notify("WATCHDOG=1")

    def prune(self, now: datetime) -> int:
        """Delete forecast vintages older than daemon.retention that no job's plan used.

        Points a pending emissions review may still read (from a day before the oldest
        unreviewed run) are kept too. Returns how many points were deleted.
        """
        cutoff = now - self.config.daemon.retention
        pending = self.store.oldest_pending_review()
        if pending is not None:
            cutoff = min(cutoff, pending - replanning.LOOKBACK)
        deleted = self.store.prune_points(cutoff, self.store.vintages_in_use())
        if deleted:
            log.info("retention: pruned %d forecast points issued before %s", deleted,
                     cutoff.isoformat())
        return deleted

    # Launching ---------------------------------------------------------------------------

    def _dispatch(self, now: datetime) -> None:
        running = self.store.running_jobs()
        in_use: dict[str, int] = {}
        for job in running:
            region = job.run_region or ""
            in_use[region] = in_use.get(region, 0) + 1
        # Paused jobs first: they have started, and their deadline counts from less work.
        self._resume_due(now, in_use)
        for job in self.store.due_jobs(now):
            if self._stopping:
                return  # SIGTERM: launch nothing more; the next daemon picks these up
            region = job.planned_region or job.regions[0]
            if region not in self.config.regions:
                continue  # its region left the config; replanning logs it and moves it
            if self._slurm.handles(region):
                continue  # submitted to Slurm when planned; Slurm starts it
            latest_start = job.deadline - timedelta(seconds=job.duration_s)
            free = self.config.regions[region].slots - in_use.get(region, 0)
            if free <= 0 and now < latest_start:
                continue  # waits for a slot; the planner moves it, the deadline forces it
            if free <= 0:
                log.warning("job %d: region %s is full but the job reached its latest start; "
                            "launching over capacity to keep its deadline", job.id, region)
            if self._launch(job, region, now, latest_start):
                in_use[region] = in_use.get(region, 0) + 1

    def _launch(self, job: Job, region: str, now: datetime, latest_start: datetime) -> bool:
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
        self._children[job.id] = process
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
            del self._children[job.id]
            raise
        self._pause("before-spec", job.id)
        launcher.send_spec(process, launcher.wrapper_spec(
            log_dir, job.id, [*settings.launcher, *job.argv], env, job.cwd, identity,
            job.umask, self.config.daemon.max_log_bytes, self._pause_at, self._pause_dir,
            None if job.interruptible != CHECKPOINT else checkpoint_signal(job)))
        remote = (f"runs through region {region}'s launcher {settings.launcher[0]!r}, "
                  f"out of sight of this machine's meters" if settings.launcher else None)
        self._meters.start(job.id, launched.pid, env, now, remote)
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

    def _reap(self, job: Job, now: datetime) -> bool:
        """Record the job's end if it has ended; True while it still runs.

        The wrapper's status is read first, so a job ends when its command exits even
        while a leftover background process keeps its wrapper alive. A wrapper this
        process started is kept until the job's end is committed: a failed commit (a full
        disk) is retried on the next tick with nothing forgotten."""
        if job.slurm_job_id is not None:
            return True  # a Slurm job: the Slurm executor follows it
        self._pause("before-reap", job.id)
        log_dir = self.config.daemon.log_dir
        process = self._children.get(job.id)
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
        energy = self._meters.stop(job.id, now, job.power_watts, job.started_at,
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
        self._meters.stop(job.id, now, job.power_watts, job.started_at, None)
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
        self._last_marker = None  # re-plan it on this tick
        if state == JobState.PLANNED:
            log.warning("job %d: %s; it will run when re-planned", job.id, RETURNED_TO_QUEUE)
        elif state == JobState.PAUSED:
            log.warning("job %d: %s", job.id, RETURNED_TO_PAUSE)
        else:
            log.info("job %d: %s (%s)", job.id, state.value, reason)

    def _enforce_cancel(self, job: Job, now: datetime) -> None:
        if job.cancel_requested_at is None or job.pid is None:
            return
        if now - job.cancel_requested_at >= self.config.daemon.kill_grace and (
            launcher.signal_job(job.pid, job.pid_started_at, signal.SIGKILL)
        ):
            log.warning("job %d: still running %s after SIGTERM: sent SIGKILL", job.id,
                        self.config.daemon.kill_grace)

    # Interruptible jobs: pause, resume, relaunch ----------------------------------------

    def _pause_due(self, now: datetime) -> None:
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
        paused and stops it at start (``_restore_suspension``)."""
        assert job.pid is not None
        energy = self._meters.stop(job.id, now, job.power_watts, run.started_at, now)
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

    def _enforce_checkpoint_grace(self, job: Job, now: datetime) -> None:
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
        energy = self._meters.stop(job.id, now, job.power_watts, started_at, ended_at)
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
            energy = self._meters.stop(job.id, now, job.power_watts, run.started_at, ended_at)
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
        process = self._children.pop(job_id, None)
        if process is not None and process.poll() is None:
            threading.Thread(target=process.wait, daemon=True,
                             name=f"reap-wrapper-{job_id}").start()

    def _resume_due(self, now: datetime, in_use: dict[str, int]) -> None:
        """Resume paused jobs whose next chunk has started, or whose latest resume point
        has come (forecast or not); a resumed job takes a slot of its region."""
        for job in sorted(self.store.paused_jobs(),
                          key=lambda j: (j.planned_start or now, j.id)):
            if self._stopping:
                return
            if job.cancel_requested_at is not None:
                continue  # ended by _reap_paused
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
        """SIGCONT a suspended job, after storing it running (see ``_restore_suspension``)."""
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
        self._meters.start(job.id, job.pid,
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

    def _reap_paused(self, job: Job, now: datetime) -> bool:
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
            self._enforce_cancel(job, now)
        process = self._children.get(job.id)
        outcome = launcher.check(self.config.daemon.log_dir, job.id, job.pid,
                                 job.pid_started_at,
                                 None if process is None else process.poll())
        if outcome is None or outcome.never_started:
            return True
        self._record_end(job, outcome, now)
        self._forget_child(job.id)
        return False

    # Serving -----------------------------------------------------------------------------

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code. The caller holds the lock."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        def stop(signum: int, _frame: FrameType | None) -> None:
            # Only a flag: the handler may run while the main thread holds any lock (a
            # scheduler.shutdown() here deadlocked against the executor's own lock).
            self._stopping = True

        # Stored facts first (reconcile records ends on top of them); a taken port stops here.
        self.metrics.start(self.store, self.clock())
        # Installed before reconciling, so an early SIGTERM is a clean stop, not a kill;
        # one that came even earlier (during start-up, see stopflag) counts too.
        previous = {s: signal.signal(s, stop) for s in stopflag.STOP_SIGNALS}
        if stopflag.requested():
            self._stopping = True
        now = self.clock()
        self._started_at = now
        if os.geteuid() == 0:
            log.info("running as root: each job runs as the user who submitted it")
        log.info("daemon started (pid %d), database %s, %d region(s)", os.getpid(),
                 shown_url(self.config.database_url), len(self.config.regions))
        self.reconcile(now)
        # One thread per periodic job (each runs at most once at a time): a hung fetch
        # never starves the tick or the watchdog.
        scheduler = BackgroundScheduler(timezone="UTC",
                                        executors={"default": ThreadPoolExecutor(10)},
                                        job_defaults={"coalesce": True, "max_instances": 1,
                                                      "misfire_grace_time": None})
        daemon_settings = self.config.daemon
        scheduler.add_job(self._guarded(self.refresh), "interval",
                          seconds=daemon_settings.refresh_every.total_seconds(),
                          next_run_time=now, id="refresh")
        # Actuals: first soon after start (not at once: the forecast refresh goes first).
        scheduler.add_job(self._guarded(self.refresh_actuals), "interval",
                          seconds=daemon_settings.actuals_every.total_seconds(),
                          next_run_time=now + min(daemon_settings.actuals_every,
                                                  ACTUALS_FIRST_DELAY),
                          id="actuals")
        scheduler.add_job(self._guarded(self.tick), "interval",
                          seconds=daemon_settings.tick.total_seconds(),
                          next_run_time=now, id="tick")
        # Emissions review: estimates at once for jobs that ended while no daemon ran,
        # then actual intensities as the actuals fetch stores them.
        scheduler.add_job(self._guarded(self.backfill_actuals), "interval",
                          seconds=daemon_settings.actuals_every.total_seconds(),
                          next_run_time=now, id="backfill_actuals")
        scheduler.add_job(self._guarded(self.prune), "interval",
                          seconds=PRUNE_EVERY.total_seconds(), next_run_time=now, id="prune")
        scheduler.add_job(self._guarded(self.check_lock), "interval",
                          seconds=daemon_settings.tick.total_seconds(), id="lock")
        watchdog_every = watchdog_interval()
        if watchdog_every is not None:
            scheduler.add_job(self.watchdog, "interval", args=[watchdog_every],
                              seconds=watchdog_every.total_seconds(), id="watchdog")

        # The local API (api.py): before the loop, so submits are answered from the start.
        from scheduler.api import ApiServer

        api_server = ApiServer(daemon_settings.socket_path(), self.store, self.config,
                               clock=self.clock, plan_cache=self.plan_cache)
        try:
            api_server.start()
            notify("READY=1\nSTATUS=scheduling")
            scheduler.start()
            while not self._stopping:
                time.sleep(STOP_POLL_S)
        finally:
            api_server.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        notify("STOPPING=1")
        scheduler.shutdown(wait=False)
        finished = self._work_lock.acquire(timeout=STOP_WAIT_S)
        self.metrics.stop()
        if not self._exit_code:  # a read-only database cannot record the stop
            self.store.mark_stopped(os.getpid(), self.clock())
        log.info("daemon stopping; %d running job(s) keep running", len(self._children))
        if not finished:
            log.warning("daemon stopping while work is in flight; the database stays "
                        "consistent (every change is one transaction)")
        return self._exit_code

    def check_lock(self, _now: datetime) -> None:
        """Stop (exit 1) once another daemon holds the database lock."""
        if self.lock is not None and not self.lock.still_held():
            log.error("another daemon took the database lock; stopping")
            self._exit_code, self._stopping = 1, True

    def _guarded(self, work: Callable[[datetime], object]) -> Callable[[], None]:
        def run() -> None:
            if self._stopping:
                return
            try:
                work(self.clock())
            except Exception as error:  # a failing iteration must never stop the daemon...
                cause = getattr(error, "orig", None) or error
                if (getattr(cause, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_READONLY
                        or getattr(cause, "sqlstate", None) == READ_ONLY_SQLSTATE):
                    # ...unless it can never succeed: stop with one line and exit 1.
                    if not self._exit_code:
                        log.error("database %s is read-only; stopping",
                                  shown_url(self.config.database_url))
                    self._exit_code, self._stopping = 1, True
                    return
                summary = " ".join(f"{type(cause).__name__}: {cause}".split())
                log.error("%s failed; will try again: %s", work.__name__, summary)
                log.debug("%s failed", work.__name__, exc_info=True)

        return run


def configure_logging(level: int = logging.INFO) -> None:
    """One plain, grep-able line per event, with UTC time."""
    formatter = logging.Formatter("%(asctime)sZ %(levelname)s %(message)s",
                                  datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # alembic's per-plugin set-up lines; migrate.py logs the migration itself in one line.
    for noisy in ("apscheduler", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # "skipped: maximum number of running instances" every tick while a refresh runs.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    # urllib3 warns once per retry; forecasting logs the fetch's outcome in one line.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def check_directories(config: Config) -> None:
    """Refuse to start on a log or database directory other users can write: they could
    plant symlinks or files there that the daemon would then write through."""
    log_dir = config.daemon.log_dir
    try:
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o711 if os.geteuid() == 0 else 0o700)
    except OSError as error:
        raise GridshiftError(f"cannot create the log directory {log_dir}: "
                             f"{error.strerror or error}") from None
    directories = [("log directory", log_dir)]
    if config.database_url.startswith("sqlite:///"):
        directories.append(("database directory", sqlite_path(config.database_url).parent))
    for what, directory in directories:
        problem = launcher.unsafe_directory(directory)
        if problem is not None:
            raise GridshiftError(f"refusing to start: the {what} {directory} is not safe: "
                                 f"{problem}")


def run_daemon(config: Config, store: Store, once: bool = False) -> int:
    check_directories(config)
    lock = DaemonLock(config.database_url)
    lock.acquire()
    try:
        daemon = Daemon(config, store, lock=lock)
        code = daemon.run_burst() if once else daemon.serve()
    finally:
        lock.release()
    # Worker threads may still wait on a slow fetch; nothing is lost by not waiting for them.
    logging.shutdown()
    os._exit(code)
