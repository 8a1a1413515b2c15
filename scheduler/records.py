"""Plain records that both the ORM store and the fast submit path (``submitpath``) use.

Their own module, free of SQLAlchemy, so that ``submit`` can use them without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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
