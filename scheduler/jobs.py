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

from scheduler import launcher, slurm
from scheduler.config import MAX_POWER_WATTS, SECRET_ENV, Config
from scheduler.errors import BadInput, PermissionDenied, StateConflict
from scheduler.models import FINISHED, MAX_NAME_CHARS, UNSTARTED, Job, JobEvent, JobState
from scheduler.records import NewJob, SubmitRequest
from scheduler.store import Store
from scheduler.timespec import check_fits, format_duration

if TYPE_CHECKING:  # numpy, which planning loads, is for submit only
    from scheduler import planning

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


def submit(store: Store, config: Config, caller: Caller, request: SubmitRequest,
           now: datetime, cache: planning.PlanCache | None = None) -> list[Job]:
    """Validate against the config, store and place the job (or one job per array index)
    in one transaction, and return them as stored. BadInput (nothing written) for a
    region not configured, a deadline that cannot be met, a bad array."""
    from scheduler import planning

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
    run_now = planning.run_now_intensity(store, config, spec.regions[0], start,
                                         timedelta(seconds=spec.duration_s), cache)
    specs = [replace(spec, run_now_intensity=run_now)] * count
    plans = planning.place_new(store, config, specs, now, cache)
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
    )


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
        states = [*UNSTARTED, JobState.RUNNING]
    return states


def show(store: Store, job_id: int) -> tuple[Job, list[JobEvent]]:
    return store.get_job(job_id), store.job_events(job_id)


def preview_regions(config: Config, names: Sequence[str] | None) -> list[str]:
    """The regions named (checked against the config), or every configured one."""
    chosen = list(dict.fromkeys(names)) if names else list(config.regions)
    for name in chosen:
        config.region(name)
    return chosen
