"""What `submit` knows about a job before it is stored.

Its own module, free of SQLAlchemy, because both the ORM store and the fast submit path
(``submitpath``) take it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class NewJob:
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
