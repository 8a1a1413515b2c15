"""What `gridshift status` reports: is the daemon alive, what is failing, what runs next.

``gather`` reads the store once and returns a ``Status`` that renders both as JSON and as
text. ``Status.healthy`` is the health check: a daemon is running (its heartbeat row is
not marked stopped and, on this host, its pid is alive) and its heartbeat is fresh.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from scheduler.config import Config
from scheduler.models import DaemonHeartbeat, Job, JobState, ProviderRefresh
from scheduler.store import Store
from scheduler.timespec import format_duration, format_local, iso_utc

# A heartbeat older than this many ticks (and at least MIN_STALE) means a hung daemon.
STALE_TICKS = 3
MIN_STALE = timedelta(seconds=10)
NEXT_LAUNCHES = 10


def stale_after(config: Config) -> timedelta:
    return max(STALE_TICKS * config.daemon.tick, MIN_STALE)


@dataclass(frozen=True)
class DaemonStatus:
    running: bool
    healthy: bool
    problem: str | None
    pid: int | None = None
    hostname: str | None = None
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    heartbeat_age: timedelta | None = None
    stopped_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "running": self.running, "healthy": self.healthy, "problem": self.problem,
            "pid": self.pid, "hostname": self.hostname, "started_at": iso_utc(self.started_at),
            "heartbeat_at": iso_utc(self.heartbeat_at),
            "heartbeat_age_s": (None if self.heartbeat_age is None
                                else round(self.heartbeat_age.total_seconds(), 1)),
            "stopped_at": iso_utc(self.stopped_at),
        }


@dataclass(frozen=True)
class Status:
    now: datetime
    daemon: DaemonStatus
    refreshes: list[ProviderRefresh]
    queue: dict[str, int]
    next_launches: list[Job]

    @property
    def healthy(self) -> bool:
        return self.daemon.healthy

    def as_json(self) -> dict[str, Any]:
        return {
            "now": iso_utc(self.now),
            "healthy": self.healthy,
            "daemon": self.daemon.as_json(),
            "refreshes": [
                {"provider": r.provider, "zone": r.zone, "kind": r.kind, "at": iso_utc(r.at),
                 "ok": r.ok, "message": r.message, "points": r.points,
                 "horizon_end": iso_utc(r.horizon_end),
                 "last_success_at": iso_utc(r.last_success_at)}
                for r in self.refreshes
            ],
            "queue": self.queue,
            "next_launches": [
                {"id": j.id, "name": j.name, "region": j.planned_region,
                 "planned_start": iso_utc(j.planned_start), "deadline": iso_utc(j.deadline),
                 "latest_start": iso_utc(j.deadline - timedelta(seconds=j.duration_s))}
                for j in self.next_launches
            ],
        }


def daemon_status(heartbeat: DaemonHeartbeat | None, now: datetime, stale: timedelta
                  ) -> DaemonStatus:
    """Judge the heartbeat row: never started, stopped, gone (pid dead here), stale, or ok."""
    if heartbeat is None:
        return DaemonStatus(False, False, "no daemon has ever run on this database")
    seen = DaemonStatus(True, True, None, pid=heartbeat.pid, hostname=heartbeat.hostname,
                        started_at=heartbeat.started_at, heartbeat_at=heartbeat.heartbeat_at,
                        heartbeat_age=now - heartbeat.heartbeat_at,
                        stopped_at=heartbeat.stopped_at)
    if heartbeat.stopped_at is not None:
        return replace(seen, running=False, healthy=False,
                       problem=f"stopped at {format_local(heartbeat.stopped_at)}")
    if heartbeat.hostname == socket.gethostname() and not _alive(heartbeat.pid):
        return replace(seen, running=False, healthy=False,
                       problem=f"pid {heartbeat.pid} is gone without a clean stop "
                               "(killed or crashed)")
    age = now - heartbeat.heartbeat_at
    if age > stale:
        return replace(seen, healthy=False,
                       problem=f"heartbeat is stale ({format_duration(age)} old, limit "
                               f"{format_duration(stale)}): the daemon looks hung")
    return seen


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def gather(store: Store, config: Config, now: datetime) -> Status:
    queue = {state.value: 0 for state in JobState}
    queue.update(store.count_by_state())
    return Status(
        now=now,
        daemon=daemon_status(store.heartbeat(), now, stale_after(config)),
        refreshes=store.refreshes(),
        queue=queue,
        next_launches=store.upcoming_launches(NEXT_LAUNCHES),
    )
