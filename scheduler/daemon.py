"""The daemon: refresh forecasts, plan, launch due jobs, reap finished ones.

Each tick decides what is due (which planned jobs start, in which region's free slots)
and hands it to an executor (``executors.local``, ``executors.slurm``), which starts,
follows, pauses and resumes the jobs.

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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO

from scheduler import accounting, forecasting, replanning, stopflag
from scheduler.config import Config
from scheduler.energy import EnergyMonitor
from scheduler.errors import GridshiftError
from scheduler.executors import launcher, slurm
from scheduler.executors.local import LocalExecutor
from scheduler.metrics import DaemonMetrics
from scheduler.models import JobState
from scheduler.providers import Provider, build_provider
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
# PostgreSQL's read_only_sql_transaction: a hot standby, or default_transaction_read_only.
READ_ONLY_SQLSTATE = "25006"


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
    local: LocalExecutor = field(init=False, repr=False)
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

    def __post_init__(self) -> None:
        self._meters = self.energy or EnergyMonitor.for_host(self.config.daemon.powercap_root)
        self.metrics = DaemonMetrics(self.config, self.clock)
        self.local = LocalExecutor(self.config, self.store, self.metrics, self._meters)
        self._slurm = slurm.SlurmExecutor(self.config, self.store, self.metrics)
        if not self.providers:
            self.providers = {name: build_provider(p) for name, p in self.config.providers.items()}

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
            if self.local.reap(job, now) and job.id not in self.local.children:
                log.info("job %d: re-adopted (%s)", job.id,
                         f"Slurm job {job.slurm_job_id}" if job.slurm_job_id else f"pid {job.pid}")
                self.local.restore_suspension(job)
        for job in self.store.paused_jobs():
            self.local.restore_suspension(job)

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
                if self.local.reap(job, now):
                    self.local.enforce_cancel(job, now)
                    self.local.enforce_checkpoint_grace(job, now)
                else:
                    ended = True
            for job in self.store.paused_jobs():
                if not self.local.reap_paused(job, now):
                    ended = True
            if not self._stopping:
                # Before re-planning: a chunk that has ended ends as planned (after a restart
                # too), and the re-plan then places what is left from there.
                self.local.pause_due(now)
            if self.local.take_requeued():
                self._last_marker = None  # re-plan the job that went back to the queue
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
        self.local.resume_due(now, in_use, lambda: self._stopping)
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
            if self.local.launch(job, region, now, latest_start):
                in_use[region] = in_use.get(region, 0) + 1

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
        log.info("daemon stopping; %d running job(s) keep running", len(self.local.children))
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
