"""The daemon's Prometheus metrics, served on ``/metrics`` where ``[metrics] listen`` is set.

Counters of stored facts (finished jobs, deadline misses, energy, emissions) start from
SQL sums over the database when the daemon starts and grow as the daemon records each
job's end and each emissions review, so a restart is not a reset of history. The other
figures are kept in memory as the daemon works (job counts from each tick, forecasts from
each refresh): a scrape reads memory only, never the database, and never waits for the
daemon's work lock (it shares only prometheus_client's per-value locks, each held for one
read or one add).

Label values are region, provider, state and method names from the config and from
gridshift's own words: never a job id or anything a user typed, so cardinality stays
bounded.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, select

from scheduler import accounting
from scheduler.config import Config
from scheduler.errors import GridshiftError
from scheduler.forecasting import RefreshResult
from scheduler.models import FINISHED, Job, JobState
from scheduler.store import Store
from scheduler.units import JOULES_PER_KWH

log = logging.getLogger("gridshift.metrics")

# Durations of a tick or a re-plan (seconds): milliseconds normally, seconds when slow.
WORK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Submit to start (seconds): jobs wait from seconds to days for a clean window.
QUEUE_WAIT_BUCKETS = (1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400,
                      172800, 604800)
EMISSION_KINDS = ("scheduled", "actual", "run_now")
# How far ahead of now a refresh's forecast is kept in memory for scrapes.
FORECAST_READ_AHEAD = timedelta(days=14)
# The method label of energy stored without one.
UNKNOWN_METHOD = "unknown"


@dataclass(frozen=True)
class ZoneForecast:
    """What a scrape shows of one (provider, zone): its newest forecast from now on, and
    when a refresh last succeeded (None: never)."""

    starts: list[datetime]
    ends: list[datetime]
    values: list[float]
    last_success_at: datetime | None

    def value_at(self, moment: datetime) -> float | None:
        index = bisect.bisect_right(self.starts, moment) - 1
        if index < 0 or self.ends[index] <= moment:
            return None
        return self.values[index]


class DaemonMetrics:
    """Every metric of the daemon in a private registry; see README "Metrics and SCI"."""

    def __init__(self, config: Config, clock: Callable[[], datetime]) -> None:
        # A *_created series per counter would show the daemon's start as the start of
        # counters that carry the database's history.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.config = config
        self.clock = clock
        self.registry = CollectorRegistry()
        registry = self.registry
        self.finished = Counter(
            "gridshift_jobs_finished", "Jobs that ran and ended, by run region and outcome",
            ["region", "outcome"], registry=registry)
        self.deadline_misses = Counter(
            "gridshift_deadline_misses", "Jobs that ran and ended after their deadline",
            ["region"], registry=registry)
        self.energy = Counter(
            "gridshift_job_energy_joules", "Energy of jobs that ran and ended, by how it "
            "was measured", ["region", "method"], registry=registry)
        self.emissions = Counter(
            "gridshift_emissions_grams", "gCO2eq of jobs whose emissions review is settled: "
            "scheduled (plan), actual (real run), run_now (had it started at submission)",
            ["region", "kind"], registry=registry)
        self.saved = Counter(
            "gridshift_emissions_saved_grams", "run_now minus actual gCO2eq of settled jobs "
            "with both known, where positive", ["region"], registry=registry)
        self.provider_failures = Counter(
            "gridshift_provider_failures", "Failed forecast or actuals fetches since the "
            "daemon started", ["provider"], registry=registry)
        self.replan_duration = Histogram(
            "gridshift_replan_duration_seconds", "Time one re-plan of every unstarted job took",
            buckets=WORK_BUCKETS, registry=registry)
        self.tick_duration = Histogram(
            "gridshift_tick_duration_seconds", "Time one tick (reap, re-plan, launch) took",
            buckets=WORK_BUCKETS, registry=registry)
        self.queue_wait = Histogram(
            "gridshift_queue_wait_seconds", "Time from a job's submission to its launch",
            buckets=QUEUE_WAIT_BUCKETS, registry=registry)
        self._job_counts: Mapping[str, int] = {}
        # Replaced whole, never changed in place: a scrape may iterate it meanwhile.
        self._forecasts: Mapping[tuple[str, str], ZoneForecast] = {}
        # Whether the live figures are kept: from ``load`` on, which ``start`` runs when
        # /metrics is served. Unserved, a refresh need not read its forecast back.
        self._loaded = False
        registry.register(_LiveFigures(self))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # Start and stop ---------------------------------------------------------------------

    def start(self, store: Store, now: datetime) -> None:
        """Load the stored facts and current figures, then serve /metrics if configured.

        Raise GridshiftError where the address cannot be bound (a port already taken).
        """
        listen = self.config.metrics.listen
        if listen is None:
            return  # nothing is served: no start-up sums to read
        self.load(store, now)
        host, port = listen
        try:
            self._server, self._thread = prometheus_client.start_http_server(
                port, host, registry=self.registry)
        except OSError as error:
            raise GridshiftError(f"cannot serve metrics on {host}:{port} ([metrics] listen): "
                                 f"{error.strerror or error}") from None
        log.info("serving Prometheus metrics on http://%s:%d/metrics", host, port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def load(self, store: Store, now: datetime) -> None:
        """Counters from the database's sums (one GROUP BY query), job counts and
        forecasts as stored; from now on each new forecast is kept too."""
        self._loaded = True
        for row in _stored_fact_sums(store):
            region, outcome, method = row.region, row.outcome, row.method or UNKNOWN_METHOD
            self.finished.labels(region, outcome).inc(row.jobs)
            if row.misses:
                self.deadline_misses.labels(region).inc(row.misses)
            if row.energied:
                self.energy.labels(region, method).inc(row.energy_kwh
                                                       * JOULES_PER_KWH)
            self._add_emissions(region, row.scheduled, row.actual, row.run_now, row.saved)
        self.set_job_counts(store.count_by_state())
        last_success = {(r.provider, r.zone): r.last_success_at for r in store.refreshes()
                        if r.kind == "forecast"}
        for provider, zone in {(s.provider, s.zone) for s in self.config.regions.values()}:
            self._load_forecast(store, provider, zone, now, last_success.get((provider, zone)))

    # What the daemon reports as it works -------------------------------------------------

    def set_job_counts(self, counts: Mapping[str, int]) -> None:
        """Jobs per state (``store.count_by_state``), as the tick counted them."""
        self._job_counts = dict(counts)

    def record_finished(self, region: str | None, outcome: str, deadline_missed: bool,
                        energy_kwh: float | None, energy_method: str | None) -> None:
        """A job that ran in ``region`` has ended (its end was just stored)."""
        if region is None:
            return
        self.finished.labels(region, outcome).inc()
        if deadline_missed:
            self.deadline_misses.labels(region).inc()
        if energy_kwh is not None:
            self.energy.labels(region, energy_method or UNKNOWN_METHOD).inc(
                energy_kwh * JOULES_PER_KWH)

    def record_review(self, job: Any, fields: Mapping[str, Any]) -> None:
        """An emissions review stored ``fields`` for ``job`` (as it was before), with the
        emissions figures the store wrote: a job whose review settles now adds its
        emissions, once."""
        if (job.actuals_state not in accounting.AWAITING
                or fields["actuals_state"] in accounting.AWAITING or job.run_region is None):
            return

        def grams(name: str) -> float:
            return float(fields.get(name) or 0.0)

        self._add_emissions(job.run_region, grams("scheduled_emissions_g"),
                            grams("actual_emissions_g"), grams("run_now_emissions_g"),
                            max(grams("saved_g"), 0.0))

    def record_launch(self, job: Any, now: datetime) -> None:
        self.queue_wait.observe(max((now - job.submitted_at).total_seconds(), 0.0))

    def record_refresh(self, store: Store, result: RefreshResult, now: datetime) -> None:
        """A forecast or actuals fetch ended: count a failure, keep a new forecast."""
        if not result.ok:
            self.provider_failures.labels(result.provider).inc()
        elif result.kind == "forecast" and self._loaded:
            self._load_forecast(store, result.provider, result.zone, now, now)

    # Inside -------------------------------------------------------------------------------

    def _add_emissions(self, region: str, scheduled: float, actual: float, run_now: float,
                       saved: float) -> None:
        for kind, grams in zip(EMISSION_KINDS, (scheduled, actual, run_now), strict=True):
            self.emissions.labels(region, kind).inc(grams)
        self.saved.labels(region).inc(saved)

    def _load_forecast(self, store: Store, provider: str, zone: str, now: datetime,
                       last_success_at: datetime | None) -> None:
        series = store.series(provider, zone, now, now + FORECAST_READ_AHEAD)
        forecast = ZoneForecast(list(series.starts), list(series.ends), list(series.values),
                                last_success_at)
        self._forecasts = {**self._forecasts, (provider, zone): forecast}

    def live_figures(self) -> Iterator[Metric]:
        """The gauges, from memory, at the clock's time."""
        now = self.clock()
        jobs = GaugeMetricFamily("gridshift_jobs", "Jobs per state", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], self._job_counts.get(state.value, 0))
        yield jobs
        intensity = GaugeMetricFamily(
            "gridshift_grid_intensity", "The current forecast value: gCO2eq/kWh, or the "
            "provider's index", labels=["region", "signal"])
        age = GaugeMetricFamily(
            "gridshift_forecast_age_seconds", "Time since the region's forecast was last "
            "fetched successfully (+Inf: never)", labels=["region"])
        horizon = GaugeMetricFamily(
            "gridshift_forecast_horizon_seconds", "How far ahead the stored forecast reaches",
            labels=["region"])
        forecasts = self._forecasts
        for name, settings in self.config.regions.items():
            forecast = forecasts.get((settings.provider, settings.zone))
            if forecast is None:
                continue
            current = forecast.value_at(now)
            if current is not None:
                intensity.add_metric([name, self.config.signal_of(name)], current)
            age.add_metric([name], float("inf") if forecast.last_success_at is None
                           else (now - forecast.last_success_at).total_seconds())
            if forecast.ends:
                horizon.add_metric([name], (forecast.ends[-1] - now).total_seconds())
        yield intensity
        yield age
        yield horizon


class _LiveFigures(Collector):
    def __init__(self, metrics: DaemonMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.live_figures()


# Start-up sums ------------------------------------------------------------------------------

def _stored_fact_sums(store: Store) -> list[Any]:
    """One pass over the jobs that ran and ended, per run region, outcome and energy
    method: jobs, deadline misses, energy, and over those whose review is settled the
    sums of their stored emissions figures."""
    settled = and_(Job.actuals_state.is_not(None),
                   Job.actuals_state.not_in([s for s in accounting.AWAITING if s]))

    def settled_total(term: Any) -> Any:
        return func.total(case((settled, term)))

    query = (select(Job.run_region.label("region"), Job.state.label("outcome"),
                    Job.energy_method.label("method"), func.count().label("jobs"),
                    func.total(Job.deadline_missed).label("misses"),
                    func.count(Job.energy_kwh).label("energied"),
                    func.total(Job.energy_kwh).label("energy_kwh"),
                    settled_total(Job.scheduled_emissions_g).label("scheduled"),
                    settled_total(Job.actual_emissions_g).label("actual"),
                    settled_total(Job.run_now_emissions_g).label("run_now"),
                    # A counter never falls: a job that ran dirtier than at once adds 0.
                    settled_total(func.max(Job.saved_g, 0.0)).label("saved"))
             .where(Job.state.in_([s.value for s in FINISHED]), Job.started_at.is_not(None),
                    Job.run_region.is_not(None))
             .group_by(Job.run_region, Job.state, Job.energy_method))
    with store.reading() as session:
        return list(session.execute(query))
