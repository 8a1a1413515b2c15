"""``/metrics`` of the real daemon process over HTTP: values against ``report --json`` and
the database, counters of stored facts across a restart, bounded labels, a taken port, and
launches kept on time while something scrapes ten times a second. And, in-process with a
fixed clock, the forecast figures through a fetch that fails."""

from __future__ import annotations

import math
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler import accounting
from scheduler.daemon import Daemon
from scheduler.models import JobState
from scheduler.units import JOULES_PER_KWH
from tests.conftest import Workspace, floor_hour, hourly, write_csv
from tests.daemon_process import (
    DaemonProcess,
    jobs,
    reap_daemons,  # noqa: F401 - autouse fixture: kills daemons a failed test left
    submitted_id,
    wait_finished,
    wait_for,
)

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
JOB_NAME = "secret-label-check"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def metrics_workspace(make_workspace: Callable[..., Workspace], tmp_path: Path, port: int,
                      dip_in: timedelta, tick: str = "1s") -> Workspace:
    """Region "here" (3 slots): 400 g/kWh, a 50 g/kWh dip from now + ``dip_in`` for 20 s."""
    now = datetime.now(UTC).replace(microsecond=0)
    dip_start, dip_end = now + dip_in, now + dip_in + timedelta(seconds=20)
    csv_path = write_csv(tmp_path / "intensity.csv", [
        (now - timedelta(hours=1), dip_start, 400.0), (dip_start, dip_end, 50.0),
        (dip_end, now + timedelta(hours=3), 400.0)])
    return make_workspace(
        f'[providers.file]\nkind = "csv"\npath = "{csv_path}"\n\n'
        f'[regions.here]\nprovider = "file"\nzone = "local"\nslots = 3\n\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n',
        daemon=f'tick = "{tick}"\nkill_grace = "2s"\nactuals_every = "1s"\n'
               'actuals_give_up = "1s"')


def submit(workspace: Workspace, *command: str) -> int:
    result = workspace.cli("submit", "--duration", "2s", "--within", "1h", "--name", JOB_NAME,
                           "--", *command)
    assert result.returncode == 0, result.stderr
    return submitted_id(result.stdout)


def settled(workspace: Workspace, job_ids: list[int]) -> bool:
    return all(j.actuals_state not in accounting.AWAITING for j in jobs(workspace)
               if j.id in job_ids)


STORED_FACTS = ("gridshift_jobs_finished_total", "gridshift_deadline_misses_total",
                "gridshift_job_energy_joules_total", "gridshift_emissions_grams_total",
                "gridshift_emissions_saved_grams_total")


def test_scrape_matches_the_report_and_survives_a_restart(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    port = free_port()
    workspace = metrics_workspace(make_workspace, tmp_path, port, timedelta(seconds=20))
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    _, before = scrape(port)
    assert value(before, "gridshift_jobs_finished_total") == 0
    assert value(before, "gridshift_forecast_age_seconds", region="here") < 60
    assert value(before, "gridshift_grid_intensity", region="here", signal="average") == 400.0
    assert value(before, "gridshift_forecast_horizon_seconds", region="here") > 2 * 3600

    job_ids = [submit(workspace, "true"), submit(workspace, "true"),
               submit(workspace, "sh", "-c", "exit 3")]
    wait_finished(workspace, job_ids)
    wait_for(lambda: settled(workspace, job_ids), timeout=60, what="the emissions review")
    text, samples = scrape(port)

    report = workspace.cli("report", "--json").json()
    totals = report["totals"]["average"]
    assert total(samples, "gridshift_jobs_finished_total") == totals["jobs"] == 3
    assert value(samples, "gridshift_jobs_finished_total", region="here",
                 outcome="succeeded") == 2
    assert value(samples, "gridshift_jobs_finished_total", region="here", outcome="failed") == 1
    assert total(samples, "gridshift_deadline_misses_total") == totals["deadline_misses"]
    assert total(samples, "gridshift_job_energy_joules_total") == pytest.approx(
        totals["energy_kwh"] * JOULES_PER_KWH)
    for kind, key in (("scheduled", "scheduled_emissions_g"), ("actual", "actual_emissions_g"),
                      ("run_now", "run_now_emissions_g")):
        assert value(samples, "gridshift_emissions_grams_total", region="here",
                     kind=kind) == pytest.approx(totals[key])
    assert totals["actual_emissions_g"] > 0
    # Every job ran in the dip and saved against running at once (the report's net saving).
    assert totals["saved_g"] > 0
    assert value(samples, "gridshift_emissions_saved_grams_total",
                 region="here") == pytest.approx(totals["saved_g"])
    # Job states: what the database holds (the gauge follows each tick).
    def states_agree() -> bool:
        _, now_samples = scrape(port)
        stored = {state: sum(j.state == state for j in jobs(workspace)) for state in JobState}
        return all(value(now_samples, "gridshift_jobs", state=s.value) == n
                   for s, n in stored.items())
    wait_for(states_agree, timeout=30, what="the jobs gauge to match the database")
    assert value(samples, "gridshift_queue_wait_seconds_count") == 3
    assert value(samples, "gridshift_tick_duration_seconds_count") > 0
    assert value(samples, "gridshift_replan_duration_seconds_count") > 0

    # Bounded labels: names from the config and gridshift's own words, never a job's.
    assert JOB_NAME not in text
    allowed = {"here", "file", "average", "succeeded", "failed", "cancelled", "lost",
               "queued", "planned", "running", "paused", "scheduled", "actual", "run_now",
               "rapl", "nvml", "nvml+rapl", "declared", "unknown"}
    for (name, labels), _ in samples.items():
        for label, label_value in labels:
            if label != "le":
                assert label_value in allowed, (name, label, label_value)

    assert daemon.stop() == 0
    again = DaemonProcess(workspace)
    again.wait_started()
    _, restarted = scrape(port)
    for (name, labels), counted in samples.items():
        if name in STORED_FACTS:
            assert restarted.get((name, labels)) == pytest.approx(counted), (name, labels)
    assert value(restarted, "gridshift_forecast_age_seconds", region="here") < 60
    assert again.stop() == 0


def test_a_taken_port_is_one_line_and_exit_1(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        workspace = metrics_workspace(make_workspace, tmp_path, port, timedelta(hours=1))
        daemon = DaemonProcess(workspace)
        assert daemon.process.wait(60) == 1
    errors = [line for line in daemon.output().splitlines() if line.startswith("gridshift:")]
    assert len(errors) == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in errors[0]
    assert not any(j for j in jobs(workspace))  # nothing was done


def test_scraping_ten_times_a_second_keeps_launches_on_time(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Jobs planned a few seconds ahead, re-planned at every submission, while a loop
    scrapes /metrics ten times a second: each starts within its tick."""
    port = free_port()
    workspace = metrics_workspace(make_workspace, tmp_path, port, timedelta(seconds=10))
    tick = workspace.config().daemon.tick
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    stop = threading.Event()
    scrapes: list[int] = []

    def scrape_loop() -> None:
        while not stop.wait(0.1):
            scrape(port)
            scrapes.append(1)

    scraper = threading.Thread(target=scrape_loop)
    scraper.start()
    began = time.monotonic()
    try:
        # A minute of scraping, with jobs submitted (each submission re-plans the queue)
        # and launched throughout.
        while time.monotonic() - began < 60:
            batch = [submit(workspace, "true") for _ in range(3)]
            wait_finished(workspace, batch)
    finally:
        stop.set()
        scraper.join(15)
    assert len(scrapes) > 300
    for job in jobs(workspace):
        assert job.planned_start is not None and job.started_at is not None
        assert job.started_at >= job.planned_start
        # Launches happen at ticks: up to one tick after the planned start is the tick
        # grid itself; scraping may add no more than one more.
        assert job.started_at - job.planned_start <= 2 * tick, (job.id, job.started_at)
    assert daemon.stop() == 0


def test_a_failed_fetch_counts_for_its_provider_and_keeps_the_forecast(
    csv_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    hour = floor_hour(datetime.now(UTC))
    now = hour + timedelta(minutes=10)
    workspace = csv_workspace({"here": hourly(hour - timedelta(hours=1), [300, 200, 100])})
    store = workspace.store()
    clock = [now]
    daemon = Daemon(workspace.config(), store, clock=lambda: clock[0])
    registry = daemon.metrics.registry
    try:
        daemon.metrics.load(store, now)
        assert registry.get_sample_value("gridshift_forecast_age_seconds",
                                         {"region": "here"}) == math.inf  # never fetched
        assert registry.get_sample_value("gridshift_grid_intensity",
                                         {"region": "here", "signal": "average"}) is None
        daemon.refresh(now)
        assert registry.get_sample_value("gridshift_grid_intensity",
                                         {"region": "here", "signal": "average"}) == 200.0
        assert registry.get_sample_value("gridshift_forecast_horizon_seconds",
                                         {"region": "here"}) == 110 * 60

        (tmp_path / "here.csv").unlink()
        clock[0] = later = hour + timedelta(hours=1, minutes=5)
        daemon.refresh(later)
        assert registry.get_sample_value("gridshift_provider_failures_total",
                                         {"provider": "here"}) == 1
        # The stored forecast still holds: the next slot's value, an older age.
        assert registry.get_sample_value("gridshift_grid_intensity",
                                         {"region": "here", "signal": "average"}) == 100.0
        assert registry.get_sample_value("gridshift_forecast_age_seconds",
                                         {"region": "here"}) == 55 * 60
    finally:
        store.close()
