"""Plain records shared by every layer: the store, the use cases, the local API's client.

Their own module, free of SQLAlchemy, so that the client can use them without importing it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntFlag
from typing import Any

from scheduler.units import GRAMS_PER_KWH

# Interruptible jobs' modes (Job.interruptible): suspend stops and continues the process
# group; checkpoint signals the job, which saves, exits 75 and is relaunched.
SUSPEND = "suspend"
CHECKPOINT = "checkpoint"
INTERRUPTIBLE_MODES = (SUSPEND, CHECKPOINT)
# An interruptible job's shortest chunk when its submitter does not say (submit, the
# planner for jobs stored without one, the simulator's workloads).
DEFAULT_MIN_CHUNK_S = 30 * 60
# How long a checkpoint-mode job may take to exit after its checkpoint signal, when its
# submitter does not say (submit stores it; the executor reads it for jobs stored without).
DEFAULT_CHECKPOINT_GRACE_S = 2 * 60


class PlacementReason(IntFlag):
    """Why a job was placed where it was. A placement carries one of COVERED_WINDOW,
    NO_COVERAGE or neither (every covered window was full, so it runs uncovered), plus
    any of the flags after them; ``describe`` turns it into words, only when printed."""

    COVERED_WINDOW = 1  # the cleanest fully covered window (with a free slot, if MOVED)
    NO_COVERAGE = 2  # no region has forecasts covering a feasible window
    MOVED_FOR_SLOT = 4  # its cleanest window was full: the best one with a free slot
    WAITING_FOR_SLOT = 8  # no window had room anywhere: it waits at its cleanest window
    CANNOT_MEET_DEADLINE = 16  # it cannot finish by its deadline: starts as early as it may


def describe(reason: PlacementReason) -> str:
    """The words for a placement's reason, as ``show`` prints them."""
    moved = PlacementReason.MOVED_FOR_SLOT in reason
    parts = []
    if PlacementReason.CANNOT_MEET_DEADLINE in reason:
        parts.append("cannot finish by its deadline: starts as early as possible")
    if PlacementReason.COVERED_WINDOW in reason:
        parts.append("cleanest covered window with a free slot" if moved
                     else "cleanest covered window")
    elif PlacementReason.NO_COVERAGE in reason:
        parts.append("no region has forecasts covering a feasible window: earliest feasible "
                     "start" + (" with a free slot" if moved else ""))
    elif moved:
        parts.append("every covered window is full: earliest window with a free slot")
    if PlacementReason.WAITING_FOR_SLOT in reason:
        parts.append("every feasible window is full: waits for a free slot")
    return "; ".join(parts)


def plan_note(reason: int, left_out: Sequence[str] = (), replayed: bool = False,
              chunk_count: int | None = None) -> str:
    """A plan's note, the words ``show`` prints for how a job was placed: its reason, how
    many chunks an interruptible job's plan has, the regions left out of the comparison
    (``placement.comparable_regions``: a percentile index ranks times within its own region
    only) and whether the region's intensity is replayed from bundled data (the demo)."""
    return _plan_note(reason, tuple(left_out), replayed, chunk_count)


@functools.lru_cache(maxsize=1024)  # a re-plan words the same few notes for 100,000 jobs
def _plan_note(reason: int, left_out: tuple[str, ...], replayed: bool,
               chunk_count: int | None) -> str:
    words = describe(PlacementReason(reason))
    if chunk_count is not None and chunk_count > 1:
        words += f"; in {chunk_count} chunks"
    if left_out:
        words += (f"; left out {', '.join(left_out)}: a percentile index ranks times within "
                  f"its own region only")
    if replayed:
        words += "; intensity replayed from bundled data"
    return words


@dataclass(frozen=True)
class NewJob:
    """What `submit` knows about a job before it is stored."""

    name: str
    argv: list[str]
    cwd: str
    env: dict[str, str]
    duration_s: int
    not_before: datetime
    deadline: datetime
    regions: list[str]
    power_watts: float
    signal: str | None = None
    # Filled by whichever path stores the job, from the forecasts it reads then.
    run_now_intensity: float | None = None
    # The submitter (None: stored by an older gridshift; runs as the daemon's user) and
    # what the job runs with: the captured environment (None: the daemon's) and umask.
    owner_uid: int | None = None
    owner_gid: int | None = None
    owner_name: str | None = None
    environment: dict[str, str] | None = None
    umask: int | None = None
    array_id: int | None = None
    array_index: int | None = None
    # Interruptible jobs (see models.Job): None runs the job as one block; min_chunk_s is
    # DEFAULT_MIN_CHUNK_S where the submitter gave none.
    interruptible: str | None = None  # 'suspend' | 'checkpoint'
    min_chunk_s: int | None = None
    max_pauses: int | None = None  # None: no limit
    restart_overhead_s: int | None = None
    checkpoint_signal: str | None = None  # a signal name, 'SIGTERM'
    checkpoint_grace_s: int | None = None


@dataclass(frozen=True)
class ChunkPlan:
    """One planned chunk of an interruptible job: it runs in ``region`` over [start, end);
    ``intensity`` is the mean forecast over it (None where not fully covered)."""

    region: str
    start: datetime
    end: datetime
    intensity: float | None = None


@dataclass(frozen=True)
class RunEnd:
    """How one run of an interruptible job ended: ``outcome`` is 'suspended',
    'checkpointed' or the job's final state; ``work_s`` the job's work done in it (restart
    overhead not counted); energy as the meters measured it (None: unknown)."""

    ended_at: datetime | None
    outcome: str
    work_s: float
    energy_kwh: float | None
    energy_method: str | None


@dataclass(frozen=True)
class Series:
    """A step function: value i holds over [starts[i], ends[i]); sorted, non-overlapping."""

    starts: list[datetime]
    ends: list[datetime]
    values: list[float]
    vintages: list[datetime]
    estimated: list[bool] = field(default_factory=list)
    signal: str | None = None
    basis: str | None = None
    units: str | None = None

    def __len__(self) -> int:
        return len(self.starts)


# The local API's wire types: the CLI builds an ApiRequest and either sends it to the daemon
# over its Unix socket (client.py) or hands it to api.handle in-process; both give back an
# ApiResponse. Bodies are JSON documents, except a report's text, CSV, PNG or HTML.


@dataclass(frozen=True)
class ApiRequest:
    method: str  # GET | POST
    path: str  # e.g. /jobs, /jobs/12, /jobs/12/cancel
    query: dict[str, list[str]] = field(default_factory=dict)
    body: Any = None  # a JSON-able document, or None


@dataclass(frozen=True)
class ApiResponse:
    status: int  # HTTP status: 2xx ok; 4xx/5xx carry {"error": ..., "exit_code": ...}
    content_type: str = "application/json"
    body: bytes = b""
    # A body made (or read) a piece at a time, in place of ``body``: a list of 100,000
    # jobs is written as it is read, never held whole. Iterated once.
    chunks: Iterator[bytes] | None = None

    def content(self) -> bytes:
        return self.body if self.chunks is None else b"".join(self.chunks)

    def document(self) -> Any:
        import json

        content = self.content()
        return json.loads(content) if content else None


@dataclass(frozen=True)
class SubmitRequest:
    """What `gridshift submit` sends: everything parsed and made absolute by the client
    (times in UTC), nothing that depends on the daemon's config (regions are checked, the
    default power filled in, by the side that holds the config)."""

    argv: list[str]
    duration_s: int
    not_before: datetime
    deadline: datetime
    cwd: str
    umask: int
    environment: dict[str, str]  # the caller's environment after --export
    env: dict[str, str] = field(default_factory=dict)  # --env values, applied on top
    regions: list[str] | None = None  # None = every configured region
    name: str | None = None
    power_watts: float | None = None
    array: list[int] | None = None  # --array indices; None = one job
    # --interruptible and its settings as given (None: not given); the use case checks
    # them and fills the defaults.
    interruptible: str | None = None
    min_chunk_s: int | None = None
    max_pauses: int | None = None
    restart_overhead_s: int | None = None
    checkpoint_signal: str | None = None
    checkpoint_grace_s: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv), "duration_s": self.duration_s,
            "not_before": self.not_before.isoformat(), "deadline": self.deadline.isoformat(),
            "cwd": self.cwd, "umask": self.umask, "environment": dict(self.environment),
            "env": dict(self.env), "regions": self.regions, "name": self.name,
            "power_watts": self.power_watts, "array": self.array,
            **{name: getattr(self, name) for name in INTERRUPTIBLE_REQUEST_KEYS},
        }

    @classmethod
    def from_json(cls, document: Any) -> SubmitRequest:
        """Parse a request body; ValueError (with what is wrong) when it is malformed."""
        if not isinstance(document, dict):
            raise ValueError("the body must be a JSON object")

        def strings(value: Any, what: str) -> list[str]:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{what} must be a list of strings")
            return list(value)

        def mapping(value: Any, what: str) -> dict[str, str]:
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ValueError(f"{what} must be an object of strings")
            return dict(value)

        def when(value: Any, what: str) -> datetime:
            try:
                parsed = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise ValueError(f"{what} must be an ISO-8601 time") from None
            if parsed.tzinfo is None:
                raise ValueError(f"{what} must carry a UTC offset")
            return parsed.astimezone(UTC)

        def whole(value: Any, what: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{what} must be a whole number")
            return value

        regions = document.get("regions")
        array = document.get("array")
        power = document.get("power_watts")
        name = document.get("name")
        if power is not None and (isinstance(power, bool) or not isinstance(power, int | float)):
            raise ValueError("power_watts must be a number")
        if name is not None and not isinstance(name, str):
            raise ValueError("name must be a string")
        if array is not None and (not isinstance(array, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in array)):
            raise ValueError("array must be a list of whole numbers")
        cwd = document.get("cwd")
        if not isinstance(cwd, str):
            raise ValueError("cwd must be a string")
        texts = {key: document.get(key) for key in ("interruptible", "checkpoint_signal")}
        for key, value in texts.items():
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
        numbers = {key: document.get(key) for key in INTERRUPTIBLE_REQUEST_KEYS
                   if key not in texts}
        for key, value in numbers.items():
            if value is not None:
                whole(value, key)
        return cls(
            argv=strings(document.get("argv"), "argv"),
            duration_s=whole(document.get("duration_s"), "duration_s"),
            not_before=when(document.get("not_before"), "not_before"),
            deadline=when(document.get("deadline"), "deadline"),
            cwd=cwd,
            umask=whole(document.get("umask"), "umask"),
            environment=mapping(document.get("environment"), "environment"),
            env=mapping(document.get("env", {}), "env"),
            regions=None if regions is None else strings(regions, "regions"),
            name=name,
            power_watts=None if power is None else float(power),
            array=array,
            **texts,
            **numbers,
        )


# The interruptible settings of a submit request, in its JSON form (None: not given).
INTERRUPTIBLE_REQUEST_KEYS = ("interruptible", "min_chunk_s", "max_pauses",
                              "restart_overhead_s", "checkpoint_signal", "checkpoint_grace_s")


@dataclass(frozen=True)
class PointRecord:
    """One forecast or actual value, as a provider returns it (before storage)."""

    start: datetime
    end: datetime
    value: float
    kind: str = "forecast"  # forecast | actual
    units: str = GRAMS_PER_KWH  # or PERCENTILE (a relative index, never emissions)
    signal: str = "average"  # average | marginal
    basis: str | None = None  # lifecycle | direct, where the provider says
    estimated: bool = False
    vintage: datetime | None = None  # provider's issue time; None = fetch time
