"""The use cases: submit (one job or an array), cancel, plan, and the queries behind list,
show, status, forecast and report.

Both ways in call these functions: the daemon's local API (``api.py``, the caller's uid
from the socket's peer credentials) and, with no daemon listening, the CLI in-process
(``api.handle_local``, the caller's own uid). Each takes ``now``; none prints.
"""

from __future__ import annotations

import grp
import logging
import math
import os
import pwd
import signal
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.config import MAX_POWER_WATTS, SECRET_ENV, Config
from scheduler.errors import BadInput, PermissionDenied, StateConflict
from scheduler.executors import launcher, slurm
from scheduler.models import (
    FINISHED,
    MAX_NAME_CHARS,
    UNSTARTED,
    Job,
    JobEvent,
    JobRun,
    JobState,
)
from scheduler.records import (
    CHECKPOINT,
    DEFAULT_CHECKPOINT_GRACE_S,
    DEFAULT_MIN_CHUNK_S,
    INTERRUPTIBLE_MODES,
    SUSPEND,
    ChunkPlan,
    NewJob,
    SubmitRequest,
)
from scheduler.store import Store
from scheduler.timespec import MAX_DURATION, check_fits, format_duration

if TYPE_CHECKING:  # numpy, which replanning loads, is for submit only
    from scheduler import replanning

log = logging.getLogger("gridshift.jobs")

SECRET_NAMES = frozenset(SECRET_ENV.values())
UNSTARTED_STATES = frozenset(s.value for s in UNSTARTED)
FINISHED_STATES = frozenset(s.value for s in FINISHED)


@dataclass(frozen=True)
class Caller:
    """Who asks: from the socket's peer credentials, never from the request."""

    uid: int
    gid: int
    name: str
    admin: bool  # root, or a member of [daemon] admin_group: may cancel others' jobs

    @classmethod
    def from_ids(cls, uid: int, gid: int, config: Config) -> Caller:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(uid, gid, name, uid == 0 or _in_group(name, gid, config.daemon.admin_group))


def _in_group(user: str, gid: int, group: str | None) -> bool:
    if group is None:
        return False
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    return entry.gr_gid == gid or user in entry.gr_mem


@dataclass(frozen=True)
class Cancelled:
    """The outcome of one cancel: what state the job was in and what was done."""

    job_id: int
    state: str  # the job's state after the cancel request (cancelled, running or paused)
    message: str


@dataclass(frozen=True)
class JobQuery:
    """What `list` asks for. Unfinished jobs unless ``include_finished``; newest first."""

    states: Collection[JobState] = ()
    user: str | None = None  # owner name (--user)
    uid: int | None = None  # owner uid (--mine)
    include_finished: bool = False  # --all; a --state list is taken as given
    limit: int | None = None


# At most this many tasks in one array (Slurm's default MaxArraySize is 1001).
MAX_ARRAY_TASKS = 10_000

# Interruptible jobs: the modes, and the settings a job gets where --interruptible is given
# without them (no --max-pauses: no limit).
DEFAULT_RESTART_OVERHEAD_S = 0
DEFAULT_CHECKPOINT_SIGNAL = "SIGTERM"
# Far more pauses than any job has room for; it keeps the number a database integer.
MAX_PAUSES = 1_000_000
# Signals a process cannot catch: it could not save its state on them.
UNCATCHABLE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGSTOP})


def submit(store: Store, config: Config, caller: Caller, request: SubmitRequest,
           now: datetime, cache: replanning.PlanCache | None = None) -> list[Job]:
    """Validate against the config, store and place the job (or one job per array index)
    in one transaction, and return them as stored. BadInput (nothing written) for a
    region not configured, a deadline that cannot be met, a bad array."""
    from scheduler import replanning

    spec = _new_job(config, caller, request, now)
    indices = request.array
    if indices is not None:
        if not indices:
            raise BadInput("--array gives no index")
        if len(indices) > MAX_ARRAY_TASKS:
            raise BadInput(f"--array gives {len(indices)} tasks; at most {MAX_ARRAY_TASKS}")
        if len(set(indices)) != len(indices) or min(indices) < 0:
            raise BadInput("--array indices must be distinct whole numbers >= 0")
    count = 1 if indices is None else len(indices)
    start = max(now, spec.not_before)
    run_now = replanning.run_now_intensity(store, config, spec.regions[0], start,
                                         timedelta(seconds=spec.duration_s), cache)
    specs = [replace(spec, run_now_intensity=run_now)] * count
    plans = replanning.place_new(store, config, specs, now, cache)
    return store.add_jobs(specs, plans, now, indices)


def _new_job(config: Config, caller: Caller, request: SubmitRequest, now: datetime) -> NewJob:
    argv = request.argv
    if not argv or not argv[0]:
        raise BadInput("no command given: gridshift submit --duration 1h -- COMMAND [ARG]...")
    texts = [*argv, request.cwd, *request.env, *request.env.values(),
             *request.environment, *request.environment.values(), request.name or ""]
    if any("\0" in text for text in texts):
        raise BadInput("a NUL byte in the command, its name, directory or environment")
    if any(not key or "=" in key for key in (*request.env, *request.environment)):
        raise BadInput("an environment variable name is empty or holds '='")
    if len(request.name or "") > MAX_NAME_CHARS:
        raise BadInput(f"--name must be at most {MAX_NAME_CHARS} characters")
    if request.duration_s <= 0:
        raise BadInput("--duration must be above zero")
    if not 0 <= request.umask <= 0o777:
        raise BadInput("umask must be between 000 and 777")
    if not request.cwd.startswith("/"):
        raise BadInput(f"the working directory must be absolute, not {request.cwd!r}")
    regions = preview_regions(config, request.regions)
    settings, regions = _interruptible_settings(config, request, regions)
    length = timedelta(seconds=request.duration_s)
    check_fits(max(now, request.not_before), length, request.deadline)
    power = request.power_watts
    if power is not None and not (0 < power <= MAX_POWER_WATTS and math.isfinite(power)):
        raise BadInput(f"--power must be above 0 and at most {MAX_POWER_WATTS:.0f} W")
    return NewJob(
        name=request.name or Path(argv[0]).name[:MAX_NAME_CHARS],
        argv=list(argv),
        cwd=request.cwd,
        env=dict(request.env),
        duration_s=request.duration_s,
        not_before=request.not_before,
        deadline=request.deadline,
        regions=regions,
        power_watts=power or config.daemon.default_power_watts,
        signal=config.shared_signal(regions),
        owner_uid=caller.uid,
        owner_gid=caller.gid,
        owner_name=caller.name,
        # gridshift's own provider credentials are never a job's business.
        environment={k: v for k, v in request.environment.items() if k not in SECRET_NAMES},
        umask=request.umask,
        **settings,
    )


def _interruptible_settings(config: Config, request: SubmitRequest, regions: list[str]
                            ) -> tuple[dict[str, Any], list[str]]:
    """The interruptible columns of a new job (none for a job run as one block), defaults
    filled, and the regions it may run in: an interruptible job never goes to a Slurm
    region (not wired yet), so the default of every region leaves those out."""
    mode = request.interruptible
    given = [option for option, value in (
        ("--min-chunk", request.min_chunk_s), ("--max-pauses", request.max_pauses),
        ("--restart-overhead", request.restart_overhead_s),
        ("--checkpoint-signal", request.checkpoint_signal),
        ("--checkpoint-grace", request.checkpoint_grace_s)) if value is not None]
    if mode is None:
        if given:
            raise BadInput(f"{given[0]} is for interruptible jobs: add --interruptible "
                           f"suspend or --interruptible checkpoint")
        return {}, regions
    if mode not in INTERRUPTIBLE_MODES:
        raise BadInput(f"unknown --interruptible mode {mode!r}: use suspend or checkpoint")
    checkpoint_only = [option for option in given if option in (
        "--restart-overhead", "--checkpoint-signal", "--checkpoint-grace")]
    if mode == SUSPEND and checkpoint_only:
        raise BadInput(f"{checkpoint_only[0]} is for --interruptible checkpoint: a suspended "
                       f"job is stopped and continued, never restarted")
    min_chunk = DEFAULT_MIN_CHUNK_S if request.min_chunk_s is None else request.min_chunk_s
    if min_chunk <= 0:
        raise BadInput("--min-chunk must be above zero")
    if min_chunk > request.duration_s:
        raise BadInput(f"--min-chunk {_shown(min_chunk)} is longer than the job "
                       f"(--duration {_shown(request.duration_s)})")
    pauses = request.max_pauses
    if pauses is not None and not 0 <= pauses <= MAX_PAUSES:
        raise BadInput(f"--max-pauses must be a whole number from 0 to {MAX_PAUSES}")
    settings: dict[str, Any] = {"interruptible": mode, "min_chunk_s": min_chunk,
                                "max_pauses": pauses,
                                "restart_overhead_s": DEFAULT_RESTART_OVERHEAD_S}
    if mode == CHECKPOINT:
        overhead = request.restart_overhead_s
        if overhead is not None and not 0 <= overhead <= MAX_DURATION.total_seconds():
            raise BadInput(f"--restart-overhead must be from 0 to {MAX_DURATION.days} days")
        grace = request.checkpoint_grace_s
        if grace is not None and not 0 < grace <= MAX_DURATION.total_seconds():
            raise BadInput(f"--checkpoint-grace must be above zero and at most "
                           f"{MAX_DURATION.days} days")
        settings.update(
            restart_overhead_s=DEFAULT_RESTART_OVERHEAD_S if overhead is None else overhead,
            checkpoint_signal=checkpoint_signal_name(request.checkpoint_signal
                                                     or DEFAULT_CHECKPOINT_SIGNAL),
            checkpoint_grace_s=DEFAULT_CHECKPOINT_GRACE_S if grace is None else grace)
    slurm_regions = [name for name in regions if config.regions[name].executor == "slurm"]
    if request.regions is None:
        regions = [name for name in regions if name not in slurm_regions]
        if not regions:
            raise BadInput("interruptible jobs cannot run in Slurm regions yet, and every "
                           "configured region is one (see docs/slurm.md)")
    elif slurm_regions:
        raise BadInput(f"interruptible jobs cannot run in Slurm region {slurm_regions[0]!r} "
                       f"yet (see docs/slurm.md)")
    return settings, regions


def checkpoint_signal_name(text: str) -> str:
    """A catchable signal's name from ``SIGUSR1``, ``USR1`` or ``usr1``; BadInput for an
    unknown signal or one a process cannot catch (SIGKILL, SIGSTOP)."""
    name = text.strip().upper()
    try:
        number = signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except KeyError:
        raise BadInput(f"unknown --checkpoint-signal {text!r}: give a signal name such as "
                       f"SIGTERM or SIGUSR1") from None
    if number in UNCATCHABLE_SIGNALS:
        raise BadInput(f"--checkpoint-signal {number.name} cannot be caught, so the job "
                       f"could not save its state: use SIGTERM, SIGINT, SIGUSR1 or SIGUSR2")
    return number.name


def _shown(seconds: int) -> str:
    return format_duration(timedelta(seconds=seconds))


def cancel(store: Store, config: Config, caller: Caller, job_id: int,
           now: datetime) -> Cancelled:
    """Cancel one job: an unstarted job never starts; a running one gets SIGTERM (through
    its wrapper), then SIGKILL after kill_grace from the daemon. PermissionDenied (exit 1)
    for another user's job unless the caller is an admin; BadInput when it already ended."""
    job = store.get_job(job_id)
    _check_may_cancel(config, caller, job)
    if job.state in UNSTARTED_STATES:
        try:
            store.transition(job_id, UNSTARTED, JobState.CANCELLED, now,
                             f"cancelled by user {caller.name} before it started")
            log.info("job %d: cancelled by %s before it started", job_id, caller.name)
            slurm.cancel_now(store, config, job, release=True)
            return Cancelled(job_id, JobState.CANCELLED.value, f"job {job_id} cancelled")
        except StateConflict:
            job = store.get_job(job_id)  # launched meanwhile
    if job.state == JobState.PAUSED.value:
        # The daemon ends it: at once if checkpointed; a suspended one is signalled first.
        if job.cancel_requested_at is None:
            store.update_job_fields(job_id, cancel_requested_at=now)
        log.info("job %d: cancel requested by %s while it is paused", job_id, caller.name)
        return Cancelled(job_id, JobState.PAUSED.value,
                         f"job {job_id} is being cancelled: it is paused; the daemon ends it "
                         f"at its next tick")
    if job.state != JobState.RUNNING.value:
        raise BadInput(f"job {job_id} already ended ({job.state}); nothing to cancel")
    if job.cancel_requested_at is None:
        store.update_job_fields(job_id, cancel_requested_at=now)
    if job.slurm_job_id is not None:
        log.info("job %d: cancel requested by %s: cancelling Slurm job %s", job_id,
                 caller.name, job.slurm_job_id)
        slurm.cancel_now(store, config, job, release=False)
        return Cancelled(job_id, JobState.RUNNING.value,
                         f"job {job_id} is being cancelled: its Slurm job {job.slurm_job_id} "
                         f"was asked to stop (scancel)")
    if job.pid is not None:
        launcher.signal_job(job.pid, job.pid_started_at, signal.SIGTERM)
    log.info("job %d: cancel requested by %s: sent SIGTERM", job_id, caller.name)
    return Cancelled(
        job_id, JobState.RUNNING.value,
        f"job {job_id} is being cancelled: sent SIGTERM, SIGKILL follows after "
        f"{format_duration(config.daemon.kill_grace)} if it is still running")


def cancel_array(store: Store, config: Config, caller: Caller, array_id: int,
                 now: datetime) -> list[Cancelled]:
    """Cancel every unfinished task of an array (refused whole if one is not the caller's)."""
    tasks = store.list_jobs(array_id=array_id)
    if not tasks:
        raise BadInput(f"no array with id {array_id}")
    for task in tasks:
        _check_may_cancel(config, caller, task)
    unfinished = [t for t in tasks if t.state not in FINISHED_STATES]
    if not unfinished:
        raise BadInput(f"every task of array {array_id} already ended; nothing to cancel")
    outcomes = []
    for task in unfinished:
        try:
            outcomes.append(cancel(store, config, caller, task.id, now))
        except BadInput:
            continue  # it ended meanwhile
    return outcomes


def _check_may_cancel(config: Config, caller: Caller, job: Job) -> None:
    # Jobs stored before owners were recorded belong to the daemon's user.
    owner = os.getuid() if job.owner_uid is None else job.owner_uid
    if caller.admin or caller.uid == owner:
        return
    name = job.owner_name or str(owner)
    admins = (f", root or members of {config.daemon.admin_group}"
              if config.daemon.admin_group else " or root")
    raise PermissionDenied(f"job {job.id} belongs to {name}; only {name}{admins} may "
                           f"cancel it")


def list_jobs(store: Store, query: JobQuery) -> list[Job]:
    """The jobs ``query`` asks for, newest first."""
    return store.list_jobs(_states(query), owner_uid=query.uid, owner_name=query.user,
                           newest_first=True, limit=query.limit)


def list_pages(store: Store, query: JobQuery, names: Sequence[str]
               ) -> Iterator[dict[str, Sequence[Any]]]:
    """The jobs ``query`` asks for, newest first, as pages of columns: ``names`` (jobs
    columns) -> one value per job of the page, as ``Store.report_pages`` reads them."""
    for rows in store.job_pages(names, _states(query), owner_uid=query.uid,
                                owner_name=query.user, limit=query.limit):
        yield dict(zip(names, zip(*rows, strict=True), strict=True))


def _states(query: JobQuery) -> list[JobState]:
    states = list(query.states)
    if not states and not query.include_finished:
        states = [*UNSTARTED, JobState.RUNNING, JobState.PAUSED]
    return states


@dataclass(frozen=True)
class JobDetail:
    """What `show` tells of one job: the job, its history and, for an interruptible job,
    its planned chunks and its runs (both empty for any other job)."""

    job: Job
    events: list[JobEvent]
    chunks: list[ChunkPlan]
    runs: list[JobRun]


def show(store: Store, job_id: int) -> JobDetail:
    job = store.get_job(job_id)
    if job.interruptible is None:
        return JobDetail(job, store.job_events(job_id), [], [])
    return JobDetail(job, store.job_events(job_id), store.job_chunks(job_id),
                     store.job_runs(job_id))


def preview_regions(config: Config, names: Sequence[str] | None) -> list[str]:
    """The regions named (checked against the config), or every configured one."""
    chosen = list(dict.fromkeys(names)) if names else list(config.regions)
    for name in chosen:
        config.region(name)
    return chosen
