"""Which jobs a report holds, read a page at a time, and their totals per signal.

Totals are kept per signal (``average`` or ``marginal``) and never mix the two: grams of
average intensity and grams of marginal emissions answer different questions. They are
SQL sums and counts over the store's emissions figures (``Store.report_sums``): a sum
skips the jobs whose value is still unknown and says how many it covers, and a sum of no
known value is None, never 0. ``saved_g`` and ``saved_pct`` use only jobs with both actual
and run-now emissions, so they compare like with like. The embodied share of SCI needs the
regions' hardware from the config, so it is summed here, over the jobs of the regions
that state it.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from scheduler import accounting, documents, render
from scheduler.config import Config
from scheduler.store import ReportSums, Store

TOTAL_KEYS = ("jobs", "energy_kwh", "scheduled_emissions_g", "actual_emissions_g",
              "run_now_emissions_g", "saved_g", "saved_pct", "forecast_mae",
              "deadline_misses", "awaiting_actuals", "embodied_g", "sci_jobs", "sci_per_job_g",
              "energy_jobs", "scheduled_jobs", "actual_jobs", "run_now_jobs", "saved_jobs",
              "estimated_intensity_jobs")


@dataclass(frozen=True)
class SignalTotals:
    """Totals over the jobs of one signal; each ``*_jobs`` counts the jobs its sum covers."""

    bases: frozenset[str]  # the bases its regions' providers state
    jobs: int
    energy_kwh: float | None
    energy_jobs: int
    scheduled_emissions_g: float | None
    scheduled_jobs: int
    actual_emissions_g: float | None
    actual_jobs: int
    run_now_emissions_g: float | None
    run_now_jobs: int
    saved_g: float | None
    saved_jobs: int
    saved_pct: float | None
    forecast_mae: float | None
    deadline_misses: int
    awaiting_actuals: int
    estimated_intensity_jobs: int
    embodied_g: float | None  # None where no job's embodied share is known
    sci_jobs: int  # the jobs whose every SCI term is known
    sci_per_job_g: float | None

    @property
    def basis(self) -> str:
        return ", ".join(sorted(self.bases)) or "not stated"

    def as_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in TOTAL_KEYS}


@dataclass
class _Sums:
    """``ReportSums`` rows of one signal added up, and its embodied shares."""

    regions: set[str] = field(default_factory=set)
    rows: list[ReportSums] = field(default_factory=list)
    embodied: list[float] = field(default_factory=list)
    sci: list[float] = field(default_factory=list)

    def total(self, name: str) -> tuple[float | None, int]:
        """The sum of one figure over the rows, None where no job's value is known, and
        how many jobs it covers."""
        known = sum(getattr(row, f"{name}_known") for row in self.rows)
        values = [value for row in self.rows if (value := getattr(row, name)) is not None]
        return (math.fsum(values) if known else None), known

    def count(self, name: str) -> int:
        return sum(getattr(row, name) for row in self.rows)

    def totals(self, config: Config) -> SignalTotals:
        energy, energy_jobs = self.total("energy_kwh")
        scheduled, scheduled_jobs = self.total("scheduled_g")
        actual, actual_jobs = self.total("actual_g")
        run_now, run_now_jobs = self.total("run_now_g")
        saved, saved_jobs = self.total("saved_g")
        saved_run_now = math.fsum(row.saved_run_now_g or 0.0 for row in self.rows)
        errors = self.count("forecast_error_known")
        absolute_errors = math.fsum(row.forecast_abs_error or 0.0 for row in self.rows)
        return SignalTotals(
            bases=frozenset(config.provider_for(region).basis or "not stated"
                            for region in self.regions if region in config.regions),
            jobs=self.count("jobs"),
            energy_kwh=energy, energy_jobs=energy_jobs,
            scheduled_emissions_g=scheduled, scheduled_jobs=scheduled_jobs,
            actual_emissions_g=actual, actual_jobs=actual_jobs,
            run_now_emissions_g=run_now, run_now_jobs=run_now_jobs,
            saved_g=saved, saved_jobs=saved_jobs,
            saved_pct=(100.0 * saved / saved_run_now
                       if saved is not None and saved_run_now else None),
            forecast_mae=absolute_errors / errors if errors else None,
            deadline_misses=self.count("deadline_misses"),
            awaiting_actuals=self.count("awaiting_actuals"),
            estimated_intensity_jobs=self.count("estimated"),
            embodied_g=math.fsum(self.embodied) if self.embodied else None,
            sci_jobs=len(self.sci),
            sci_per_job_g=math.fsum(self.sci) / len(self.sci) if self.sci else None,
        )


# What the embodied totals read of each job, besides its signal.
_EMBODIED_READS = ("signal", "run_region", "started_at", "ended_at", "actual_emissions_g",
                   *accounting.HELD_READS)


@dataclass(frozen=True)
class Report:
    """The finished jobs that started in [since, until) in ``regions`` (default all), by
    start time: read from the store a page at a time, as often as asked (see ``build``)."""

    store: Store
    config: Config
    since: datetime | None
    until: datetime | None
    regions: list[str]
    snapshot: Session  # one read transaction: rows and totals see the same jobs

    def signal_of(self, planned_signal: str | None, region: str | None) -> str:
        """A job's signal: the one it was planned with, else its region's, else average."""
        if planned_signal:
            return planned_signal
        if region is None or region not in self.config.regions:
            return "average"
        return self.config.signal_of(region)

    def pages(self, names: Sequence[str]) -> Iterator[dict[str, Sequence[Any]]]:
        """Pages of ``names`` (jobs columns, as ``Store.report_pages`` reads them): each
        name -> one value per job of the page."""
        for rows in self.store.report_pages(names, self.since, self.until, self.regions,
                                            snapshot=self.snapshot):
            yield dict(zip(names, zip(*rows, strict=True), strict=True))

    def stored_pages(self, formatted: str) -> Iterator[str]:
        """The jobs' objects ("json": comma-separated JSON objects) or rows ("csv": CSV
        rows, each ending with a newline), a page at a time: the stored documents
        (``models.JobDocument``) with the keys derived from the config; a job without one
        is encoded from its row."""
        names = render.CONFIG_READS if self._config_keys_known() else ()
        joined = documents.joined_json if formatted == "json" else documents.joined_csv
        at = 0 if formatted == "json" else 2  # in documents.stored_texts
        for rows in self.store.report_documents(formatted, names, self.since, self.until,
                                                self.regions, snapshot=self.snapshot):
            ids, heads, tails, *columns = zip(*rows, strict=True)
            if None in heads:
                missing = [job_id for job_id, head in zip(ids, heads, strict=True)
                           if head is None]
                encoded = self.store.documents_of_jobs(missing, snapshot=self.snapshot)
                heads = tuple(head if head is not None else encoded[job_id][at]
                              for job_id, head in zip(ids, heads, strict=True))
                tails = tuple(tail if tail is not None else encoded[job_id][at + 1]
                              for job_id, tail in zip(ids, tails, strict=True))
            if names:
                config_values = render.config_columns(
                    dict(zip(names, columns, strict=True)), self.config)
            else:
                config_values = {key: [None] * len(ids) for key in render.CONFIG_KEYS}
            yield joined(heads, tails, config_values)

    def _config_keys_known(self) -> bool:
        """Whether any region states what the config's keys need (its hardware's embodied
        emissions): else they are null for every job."""
        return any(settings.embodied_gco2 is not None
                   for settings in self.config.regions.values())

    def totals(self) -> dict[str, SignalTotals]:
        """Totals per signal, signals in the order of their first job."""
        sums: dict[str, _Sums] = {}
        for row in self.store.report_sums(self.since, self.until, self.regions,
                                          snapshot=self.snapshot):
            group = sums.setdefault(self.signal_of(row.signal, row.run_region), _Sums())
            group.rows.append(row)
            if row.run_region is not None:
                group.regions.add(row.run_region)
        self._add_embodied(sums)
        return {signal: group.totals(self.config) for signal, group in
                sorted(sums.items(), key=lambda item: min(r.first_started
                                                           for r in item[1].rows))}

    def _add_embodied(self, sums: dict[str, _Sums]) -> None:
        stated = [name for name, settings in self.config.regions.items()
                  if settings.embodied_gco2 is not None
                  and (not self.regions or name in self.regions)]
        if not stated:
            return
        within = Report(self.store, self.config, self.since, self.until, stated, self.snapshot)
        for page in within.pages(_EMBODIED_READS):
            held = accounting.held_column(*(page[name] for name in accounting.HELD_READS))
            embodied = accounting.embodied_column(self.config, page["run_region"],
                                                  page["started_at"], page["ended_at"], held)
            for planned, region, share, actual in zip(page["signal"], page["run_region"],
                                                      embodied, page["actual_emissions_g"],
                                                      strict=True):
                if share is None:
                    continue
                group = sums[self.signal_of(planned, region)]
                group.embodied.append(share)
                if (sci := accounting.sci_from(actual, share)) is not None:
                    group.sci.append(sci)


@contextmanager
def build(store: Store, config: Config, since: datetime | None, until: datetime | None,
          regions: Sequence[str]) -> Iterator[Report]:
    """The report of every finished job that started in [since, until) in ``regions``
    (default all), over one read transaction held until the block ends; nothing is read
    until its pages or totals are asked for."""
    # A report allocates millions of objects and no cycles: the cyclic collector's passes
    # over them would cost a fifth of its time. It resumes (where it was on) at the end.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with store.reading() as snapshot:
            yield Report(store, config, since, until, list(regions), snapshot)
    finally:
        if collecting:
            gc.enable()
