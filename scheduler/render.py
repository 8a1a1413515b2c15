"""Turn gridshift's objects into output: JSON documents and human tables.

JSON times are ISO-8601 UTC and intensities gCO2eq/kWh; human output shows local time
with its zone. One object renders both ways (data on stdout, messages on stderr).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from scheduler import accounting
from scheduler.timespec import format_duration, format_local, iso_utc

if TYPE_CHECKING:  # models imports SQLAlchemy, which the fast submit path never loads
    from scheduler.config import Config
    from scheduler.models import Job, JobEvent
    from scheduler.submitpath import JobRow

JOB_FIELDS = (
    "id", "name", "state", "argv", "cwd", "duration_s", "not_before", "deadline", "regions",
    "power_watts", "signal", "planned_region", "planned_start", "planned_intensity",
    "planned_vintage", "plan_note", "run_now_intensity", "submitted_at", "run_region",
    "started_at", "ended_at", "exit_code", "pid", "log_path", "deadline_missed", "end_reason",
)


def job_json(job: Job | JobRow, config: Config | None = None) -> dict[str, Any]:
    """The job object of every ``--json`` output (keys fixed by the CLI contract), from an
    ORM Job or the fast submit path's row (submitpath.JobRow).

    ``gridshift report`` builds the same objects from plain rows (report.job_columns).
    """
    document: dict[str, Any] = {}
    for name in JOB_FIELDS:
        value = getattr(job, name)
        document[name] = iso_utc(value) if hasattr(value, "tzinfo") else value
    document["argv"] = list(job.argv)
    document["regions"] = list(job.regions)
    document["planned_end"] = (
        iso_utc(job.planned_start + _seconds(job.duration_s)) if job.planned_start else None
    )
    # Emissions review: measured energy, backfilled intensity, and emissions derived from them.
    emissions = accounting.job_emissions(job)
    document.update({
        "energy_kwh": job.energy_kwh,
        "energy_method": job.energy_method,
        "energy_note": job.energy_note,
        "actual_intensity": job.actual_intensity,
        "intensity_estimated": job.intensity_estimated,
        "actuals_state": job.actuals_state,
        "scheduled_emissions_g": emissions.scheduled_g,
        "actual_emissions_g": emissions.actual_g,
        "run_now_emissions_g": emissions.run_now_g,
        "saved_g": emissions.saved_g,
    })
    sci = accounting.job_sci(job, config, emissions.actual_g)  # embodied: needs the config
    document.update({"embodied_g": sci.embodied_g, "sci_g": sci.sci_g})
    return document


def _seconds(value: int) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


def event_json(event: JobEvent) -> dict[str, Any]:
    return {"at": iso_utc(event.at), "old_state": event.old_state,
            "new_state": event.new_state, "reason": event.reason}


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")


def error(message: str) -> None:
    sys.stderr.write(f"gridshift: {message}\n")


def message(text: str) -> None:
    """A human message on stderr (data goes to stdout)."""
    sys.stderr.write(text + "\n")


def intensity(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _console() -> Any:
    from rich.console import Console

    # Piped output (grep, files) is not wrapped at rich's default 80 columns.
    return Console(highlight=False, soft_wrap=False,
                   width=None if sys.stdout.isatty() else 160)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.table import Table

    grid = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    _console().print(grid)


def jobs_table(jobs: Sequence[Job]) -> None:
    rows = []
    for job in jobs:
        started = job.started_at or job.planned_start
        region = job.run_region or job.planned_region or "-"
        rows.append((job.id, job.name, job.state, region, format_local(started),
                     format_duration(_seconds(job.duration_s)),
                     intensity(job.planned_intensity), format_local(job.deadline)))
    table(None, ("id", "name", "state", "region", "start", "duration", "g/kWh", "deadline"),
          rows)


def job_detail(job: Job, events: Sequence[JobEvent]) -> None:
    fields: Mapping[str, Any] = {
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "command": " ".join(job.argv),
        "cwd": job.cwd,
        "duration": format_duration(_seconds(job.duration_s)),
        "not before": format_local(job.not_before),
        "deadline": format_local(job.deadline) + (" (missed)" if job.deadline_missed else ""),
        "regions": ", ".join(job.regions),
        "power": f"{job.power_watts:.0f} W",
        "planned": (f"{job.planned_region} at {format_local(job.planned_start)}, "
                    f"{intensity(job.planned_intensity)} g/kWh ({job.signal or '-'} signal)"
                    if job.planned_start else "-"),
        "plan note": job.plan_note or "-",
        "run now": f"{intensity(job.run_now_intensity)} g/kWh",
        "started": format_local(job.started_at),
        "ended": format_local(job.ended_at),
        "exit code": "-" if job.exit_code is None else job.exit_code,
        "log": job.log_path or "-",
        "energy": ("-" if job.energy_kwh is None else
                   f"{job.energy_kwh:.4g} kWh ({job.energy_method}: {job.energy_note or '-'})"),
        "emissions": _emissions_line(job),
    }
    table(None, ("field", "value"), fields.items())
    table("history", ("time", "from", "to", "reason"),
          [(format_local(e.at), e.old_state or "-", e.new_state, e.reason) for e in events])


def _emissions_line(job: Job) -> str:
    """Scheduled, actual and run-now gCO2eq of a finished job, in one line."""
    numbers = accounting.job_emissions(job)
    if job.started_at is None:
        return "-"

    def grams(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} g"

    estimated = " (actual intensity estimated from forecasts)" if job.intensity_estimated else ""
    waiting = " (awaiting actuals)" if job.actuals_state in accounting.AWAITING else ""
    return (f"scheduled {grams(numbers.scheduled_g)}, actual {grams(numbers.actual_g)}, "
            f"run now {grams(numbers.run_now_g)}, saved {grams(numbers.saved_g)}"
            f"{estimated}{waiting}")
