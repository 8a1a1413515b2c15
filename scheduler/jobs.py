"""The use cases: submit (one job or an array), cancel, plan, and the queries behind list,
show, status, forecast and report.

Both ways in call these functions: the daemon's local API (``api.py``, the caller's uid
from the socket's peer credentials) and, with no daemon listening, the CLI in-process
(``api.handle_local``, the caller's own uid). Each takes ``now``; none prints.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from scheduler.config import Config
from scheduler.models import Job, JobEvent, JobState
from scheduler.records import SubmitRequest
from scheduler.store import Store


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
    state: str  # the job's state after the cancel request (cancelled, or running)
    message: str


@dataclass(frozen=True)
class JobQuery:
    """What `list` asks for. Unfinished jobs unless ``include_finished``; newest first."""

    states: Collection[JobState] = ()
    user: str | None = None  # owner name
    uid: int | None = None  # owner uid (--mine)
    include_finished: bool = True
    limit: int | None = None


def submit(store: Store, config: Config, caller: Caller, request: SubmitRequest,
           now: datetime) -> list[Job]:
    """Validate against the config, store and place the job (or one job per array index)
    in one transaction, and return them as stored. BadInput (nothing written) for a
    region not configured, a deadline that cannot be met, a bad array."""
    raise NotImplementedError


def cancel(store: Store, config: Config, caller: Caller, job_id: int,
           now: datetime) -> Cancelled:
    """Cancel one job. PermissionDenied (exit 1) for another user's job unless the caller
    is an admin; BadInput when it already ended."""
    raise NotImplementedError


def cancel_array(store: Store, config: Config, caller: Caller, array_id: int,
                 now: datetime) -> list[Cancelled]:
    """Cancel every unfinished task of an array."""
    raise NotImplementedError


def list_jobs(store: Store, query: JobQuery) -> list[Job]:
    raise NotImplementedError


def show(store: Store, job_id: int) -> tuple[Job, list[JobEvent]]:
    return store.get_job(job_id), store.job_events(job_id)


def preview_regions(config: Config, names: Sequence[str] | None) -> list[str]:
    """The regions named (checked against the config), or every configured one."""
    chosen = list(dict.fromkeys(names)) if names else list(config.regions)
    for name in chosen:
        config.region(name)
    return chosen
