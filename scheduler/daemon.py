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
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO

from scheduler import accounting, forecasting, launcher, planning
from scheduler.config import Config
from scheduler.energy import EnergyMonitor
from scheduler.errors import GridshiftError, StateConflict
from scheduler.jobwrapper import COULD_NOT_START
from scheduler.metrics import DaemonMetrics
from scheduler.models import Job, JobState
from scheduler.providers import Provider, build_provider
from scheduler.service import notify, watchdog_interval
from scheduler.store import Store, sqlite_path
from scheduler.timespec import utc_now

log = logging.getLogger("gridshift.daemon")

# How long SIGTERM waits for in-flight work before the process exits anyway.
STOP_WAIT_S = 3.0
# The first actuals fetch waits this long after start (or actuals_every if shorter).
ACTUALS_FIRST_DELAY = timedelta(minutes=2)
# How often the main thread looks at the stop flag a signal handler set.
STOP_POLL_S = 0.2
# How often forecast vintages older than daemon.retention are pruned.
PRUNE_EVERY = timedelta(hours=1)


class AlreadyRunning(GridshiftError):
    pass


class DaemonLock:
    """One daemon per database: an exclusive flock on ``<db>.daemon.lock``."""

    def __init__(self, database_url: str) -> None:
        self.path = Path(f"{sqlite_path(database_url)}.daemon.lock")
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise AlreadyRunning(
                f"another gridshift daemon (pid {holder}) is already running for "
                f"{self.path.name.removesuffix('.daemon.lock')}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
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
    _children: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _last_marker: tuple[int, int, int] | None = None
    _stopping: bool = False
    _started_at: datetime | None = None
    _work_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_tick_done: float | None = None  # time.monotonic() when a tick last completed
    _last_status: str = ""

    def __post_init__(self) -> None:
        self._meters = self.energy or EnergyMonitor.for_host(self.config.daemon.powercap_root)
        self.metrics = DaemonMetrics(self.config, self.clock)
        if not self.providers:
            self.providers = {name: build_provider(p) for name, p in self.config.providers.items()}

    # One iteration --------------------------------------------------------------------

    def run_once(self, now: datetime) -> None:
        """Reconcile, refresh, plan and dispatch once: what the scheduler does over time."""
        self.reconcile(now)
        self.refresh(now)
        self.tick(now)
        self.backfill_actuals(now)

    def reconcile(self, now: datetime) -> None:
        """At start: record the outcome of jobs that ended while no daemon watched them."""
        self._meters.sample(now)
        for job in self.store.running_jobs():
            self._reap(job, now)

    def refresh(self, now: datetime) -> None:
        """Fetch forecasts for every configured (provider, zone); failures keep old data."""
        for provider_name, zone in forecasting.zones_of(self.config):
            if self._stopping:
                return
            result = forecasting.refresh_zone(self.store, self.providers[provider_name], zone,
                                              now)
            self.metrics.record_refresh(self.store, result, now)

    def refresh_actuals(self, now: datetime) -> None:
        """Fetch recent actual intensity for every (provider, zone), for emissions review."""
        for result in forecasting.refresh_actuals(self.config, self.store, now, self.providers):
            self.metrics.record_refresh(self.store, result, now)

    def backfill_actuals(self, now: datetime) -> None:
        """Fill actual intensity (emissions review) for finished jobs still awaiting it."""
        accounting.backfill_actuals(self.store, self.config, now, self.providers,
                                    self.metrics.record_review)

    def tick(self, now: datetime) -> None:
        """Reap finished jobs, enforce kill grace, re-plan on change, launch due jobs."""
        with self._work_lock:
            begun = time.perf_counter()
            # Before reaping: a job that just ended still has its CPU times readable.
            self._meters.sample(now)
            for job in self.store.running_jobs():
                self._reap(job, now)
                self._enforce_cancel(job, now)
            marker = self.store.change_marker()
            if marker != self._last_marker:
                with self.metrics.replan_duration.time():
                    planning.replan(self.store, self.config, now)
                self._last_marker = self.store.change_marker()
            if not self._stopping:
                self._dispatch(now)
            self.store.beat(os.getpid(), socket.gethostname(), self._started_at or now, now)
            self._last_tick_done = time.monotonic()
            self._report_status()
            self.metrics.tick_duration.observe(time.perf_counter() - begun)

    def _report_status(self) -> None:
        """A one-line STATUS= for `systemctl status`, sent when it changes."""
        counts = self.store.count_by_state()
        self.metrics.set_job_counts(counts)
        line = ", ".join(f"{counts.get(s.value, 0)} {s.value}"
                         for s in (JobState.RUNNING, JobState.PLANNED, JobState.QUEUED))
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
            cutoff = min(cutoff, pending - planning.LOOKBACK)
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
        due = [j for j in self.store.list_jobs((JobState.PLANNED,))
               if j.planned_start is not None and j.planned_start <= now]
        due.sort(key=lambda j: (j.planned_start, j.id))
        for job in due:
            if self._stopping:
                return  # SIGTERM: launch nothing more; the next daemon picks these up
            region = job.planned_region or job.regions[0]
            if region not in self.config.regions:
                continue  # its region left the config; planning logs it and moves it
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
        late = now > latest_start
        reason = f"launched in {region}" + (" after its latest start: will miss its deadline"
                                            if late else "")
        try:  # Claim first: a cancel that lands before this wins, and nothing starts.
            self.store.transition(job.id, (JobState.PLANNED,), JobState.RUNNING, now, reason,
                                  run_region=region, started_at=now, deadline_missed=late)
        except StateConflict:
            return False
        settings = self.config.regions[region]
        try:
            launched, process = launcher.launch(job.id, job.argv, job.cwd, job.env, region,
                                                settings.launcher, self.config.daemon.log_dir,
                                                self.config.daemon.max_log_bytes)
        except OSError as error:
            log.error("job %d: cannot start the job wrapper: %s", job.id, error)
            self.store.transition(job.id, (JobState.RUNNING,), JobState.FAILED, now,
                                  f"could not start: {error}", ended_at=now, exit_code=None)
            self.metrics.record_finished(region, JobState.FAILED, late, None, None)
            return False
        self._children[job.id] = process
        self.metrics.record_launch(job, now)
        self.store.update_job_fields(job.id, pid=launched.pid,
                                     pid_started_at=launched.pid_started_at,
                                     log_path=str(launched.log_path))
        remote = (f"runs through region {region}'s launcher {settings.launcher[0]!r}, "
                  f"out of sight of this machine's meters" if settings.launcher else None)
        self._meters.start(job.id, launched.pid, {**os.environ, **job.env}, now, remote)
        log.info("job %d: launched in %s (pid %d): %s", job.id, region, launched.pid,
                 " ".join(job.argv))
        if self.store.get_job(job.id).cancel_requested_at is not None:
            launcher.signal_job(launched.pid, launched.pid_started_at, signal.SIGTERM)
        return True

    # Reaping -----------------------------------------------------------------------------

    def _reap(self, job: Job, now: datetime) -> None:
        status_path = launcher.status_path_for(self.config.daemon.log_dir, job.id)
        process = self._children.get(job.id)
        if process is not None:
            return_code = process.poll()
            if return_code is None:
                return
            outcome = launcher.read_status(status_path) or launcher.Outcome(return_code, now)
            del self._children[job.id]
        else:
            if job.pid is None:
                job = self._adopt(job, status_path)
            checked = launcher.check(job.pid, job.pid_started_at, status_path)
            if checked is None:
                return
            outcome = checked
        self._record_end(job, outcome, now)

    def _adopt(self, job: Job, status_path: Path) -> Job:
        """A daemon killed between launching a job and storing its pid left the pid in the
        wrapper's pid file: record it, so the job is watched instead of called lost."""
        written = launcher.read_pid_file(status_path)
        if written is None:
            return job
        pid, pid_started_at = written
        self.store.update_job_fields(job.id, pid=pid, pid_started_at=pid_started_at,
                                     log_path=str(launcher.log_path_for(
                                         self.config.daemon.log_dir, job.id)))
        log.info("job %d: adopted its process (pid %d) from the wrapper's pid file", job.id, pid)
        return self.store.get_job(job.id)

    def _record_end(self, job: Job, outcome: launcher.Outcome, now: datetime) -> None:
        ended_at = outcome.ended_at or now
        missed = job.deadline_missed or ended_at > job.deadline
        if outcome.lost and job.cancel_requested_at is not None:
            state, reason = JobState.CANCELLED, "cancelled; killed, no exit status recorded"
        elif outcome.lost:
            state, reason = JobState.LOST, outcome.reason
        elif job.cancel_requested_at is not None:
            state, reason = JobState.CANCELLED, f"cancelled; exit status {outcome.exit_code}"
        elif outcome.exit_code == 0:
            state, reason = JobState.SUCCEEDED, "exit status 0"
        elif outcome.exit_code == COULD_NOT_START:
            state, reason = JobState.FAILED, "the command could not be started (see its log)"
        else:
            state, reason = JobState.FAILED, f"exit status {outcome.exit_code}"
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

    def _enforce_cancel(self, job: Job, now: datetime) -> None:
        if job.cancel_requested_at is None or job.pid is None:
            return
        if now - job.cancel_requested_at >= self.config.daemon.kill_grace and (
            launcher.signal_job(job.pid, job.pid_started_at, signal.SIGKILL)
        ):
            log.warning("job %d: still running %s after SIGTERM: sent SIGKILL", job.id,
                        self.config.daemon.kill_grace)

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
        # Installed before reconciling, so an early SIGTERM is a clean stop, not a kill.
        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        now = self.clock()
        self._started_at = now
        if os.geteuid() == 0:
            log.warning("running as root: every queued job will run as root; "
                        "run the daemon as a dedicated user (see config/gridshift.service)")
        log.info("daemon started (pid %d), database %s, %d region(s)", os.getpid(),
                 self.config.database_url, len(self.config.regions))
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
        watchdog_every = watchdog_interval()
        if watchdog_every is not None:
            scheduler.add_job(self.watchdog, "interval", args=[watchdog_every],
                              seconds=watchdog_every.total_seconds(), id="watchdog")

        try:
            notify("READY=1\nSTATUS=scheduling")
            scheduler.start()
            while not self._stopping:
                time.sleep(STOP_POLL_S)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        notify("STOPPING=1")
        scheduler.shutdown(wait=False)
        finished = self._work_lock.acquire(timeout=STOP_WAIT_S)
        self.metrics.stop()
        self.store.mark_stopped(os.getpid(), self.clock())
        log.info("daemon stopping; %d running job(s) keep running", len(self._children))
        if not finished:
            log.warning("daemon stopping while work is in flight; the database stays "
                        "consistent (every change is one transaction)")
        return 0

    def _guarded(self, work: Callable[[datetime], object]) -> Callable[[], None]:
        def run() -> None:
            if self._stopping:
                return
            try:
                work(self.clock())
            except Exception:  # a failing iteration must never stop the daemon
                log.exception("%s failed; will try again", work.__name__)

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
    # urllib3 warns once per retry; forecasting logs the fetch's outcome in one line.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def run_daemon(config: Config, store: Store) -> int:
    lock = DaemonLock(config.database_url)
    lock.acquire()
    try:
        code = Daemon(config, store).serve()
    finally:
        lock.release()
    # Worker threads may still wait on a slow fetch; nothing is lost by not waiting for them.
    logging.shutdown()
    os._exit(code)
