"""Backfill of actual intensity from stored points (real SQLite), estimates where there are
no actuals, and the per-job emissions a user sees in ``show --json``."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from scheduler import accounting
from scheduler.daemon import Daemon
from scheduler.energy import EnergyMonitor, RaplMeter
from scheduler.models import JobRun, JobState
from scheduler.store import NewJob, PlanUpdate, PointRecord, Store
from scheduler.timespec import utc_now
from scheduler.units import JOULES_PER_KWH
from tests.conftest import Workspace, floor_hour, hourly, utc

T10 = utc(2026, 11, 20, 10)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def finished_job(store: Store, *, region: str = "north", submitted: datetime = T10,
                 planned_start: datetime, planned_intensity: float | None,
                 started: datetime, ended: datetime | None, energy_kwh: float | None,
                 duration: timedelta = HOUR, power_watts: float = 500.0,
                 state: JobState = JobState.SUCCEEDED) -> int:
    """A job taken through its real life cycle in the store: queued, planned, run, ended."""
    job = store.add_job(NewJob(name="train", argv=["true"], cwd="/", env={},
                               duration_s=int(duration.total_seconds()), not_before=submitted,
                               deadline=submitted + 12 * HOUR, regions=[region],
                               power_watts=power_watts, signal="average"), submitted)
    store.save_plans([PlanUpdate(job.id, region, planned_start, planned_intensity, submitted,
                                 1)], submitted)
    store.transition(job.id, (JobState.PLANNED,), JobState.RUNNING, started, "launched",
                     run_region=region, started_at=started)
    store.transition(job.id, (JobState.RUNNING,), state, ended or started, "ended",
                     ended_at=ended, energy_kwh=energy_kwh, energy_method="rapl")
    return job.id


def actuals(values: list[float], start: datetime = T10) -> list[PointRecord]:
    return [PointRecord(s, e, v, kind="actual")
            for s, e, v in hourly(start, values)]


@pytest.fixture
def workspace(csv_workspace: Callable[..., Workspace]) -> Workspace:
    # The csv file only has to exist: these tests store points directly, as fetches would.
    return csv_workspace({"north": hourly(T10, [1.0])}, daemon='actuals_give_up = "2d"')


def test_backfill_waits_for_actuals_then_fills_every_window(workspace: Workspace) -> None:
    store, config = workspace.store(), workspace.config()
    job_id = finished_job(store, planned_start=T10 + 2 * HOUR, planned_intensity=280.0,
                          started=T10 + timedelta(hours=2, minutes=30),
                          ended=T10 + timedelta(hours=3, minutes=30), energy_kwh=0.4)
    end = T10 + timedelta(hours=3, minutes=30)

    accounting.backfill_actuals(store, config, end + timedelta(minutes=5))
    job = store.get_job(job_id)
    assert (job.actuals_state, job.actual_intensity) == ("pending", None)

    # Published up to 13:00 only: the run (12:30-13:30) is not covered yet.
    store.add_points("north", "north", actuals([500, 450, 300]), end)
    accounting.backfill_actuals(store, config, end + HOUR)
    job = store.get_job(job_id)
    assert job.actuals_state == "pending" and job.actual_intensity is None
    assert job.run_now_actual_intensity == 500.0  # [10:00, 11:00) is covered already

    store.add_points("north", "north", actuals([200, 100, 50], T10 + 3 * HOUR), end + HOUR)
    assert accounting.backfill_actuals(store, config, end + 2 * HOUR) == 1
    job = store.get_job(job_id)
    assert job.actuals_state == "done" and job.intensity_estimated is False
    assert job.actual_intensity == pytest.approx((300 + 200) / 2)
    assert job.planned_window_actual_intensity == pytest.approx(300.0)
    assert store.jobs_needing_actuals() == []

    shown = workspace.cli("show", str(job_id), "--json")
    assert shown.returncode == 0, shown.stderr
    document = shown.json()
    # By hand: planned 280 g/kWh x 500 W x 1 h; measured 0.4 kWh at 250 and, run now, at 500.
    assert document["scheduled_emissions_g"] == pytest.approx(280 * 0.5)
    assert document["actual_emissions_g"] == pytest.approx(0.4 * 250)
    assert document["run_now_emissions_g"] == pytest.approx(0.4 * 500)
    assert document["saved_g"] == pytest.approx(0.4 * 500 - 0.4 * 250)
    assert document["energy_kwh"] == 0.4 and document["energy_method"] == "rapl"
    assert document["intensity_estimated"] is False


def test_estimate_uses_newest_forecast_issued_before_each_slot_ended(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    store, config = workspace.store(), workspace.config()
    start, end = T10 + timedelta(hours=2, minutes=30), T10 + timedelta(hours=3, minutes=30)
    job_id = finished_job(store, planned_start=start, planned_intensity=200.0, started=start,
                          ended=end, energy_kwh=1.0)

    def forecast(issued: datetime, first: datetime, values: list[float]) -> None:
        store.add_points("north", "north", [PointRecord(s, e, v, vintage=issued)
                                            for s, e, v in hourly(first, values)], issued)

    forecast(T10 - HOUR, T10, [900, 900, 900, 900, 900])  # 09:00, superseded below
    forecast(T10 + timedelta(hours=2, minutes=45), T10 + 2 * HOUR, [240, 999])  # 12:45
    forecast(T10 + timedelta(hours=3, minutes=15), T10 + 3 * HOUR, [160])  # 13:15
    forecast(T10 + 5 * HOUR, T10, [1, 1, 1, 1, 1])  # issued after both slots ended: ignored

    with caplog.at_level(logging.INFO, logger="gridshift.accounting"):
        accounting.backfill_actuals(store, config, end + HOUR)
    # The daemon's log line says the figure is an estimate, not an actual.
    assert caplog.messages == [
        f"job {job_id}: awaiting actuals; estimated 200 g/kWh from forecasts meanwhile"]
    job = store.get_job(job_id)
    # 12:00-13:00 from the 12:45 vintage (240), 13:00-14:00 from the 13:15 one (160).
    assert job.actual_intensity == pytest.approx((240 + 160) / 2)
    assert job.run_now_actual_intensity == pytest.approx(900.0)  # 10:00-11:00, 09:00 vintage
    assert job.intensity_estimated is True and job.actuals_state == "pending"
    shown = workspace.cli("show", str(job_id), "--json").json()
    assert shown["intensity_estimated"] is True
    assert shown["actual_emissions_g"] == pytest.approx(200.0)

    # Past actuals_give_up (2 days here) the estimate is final.
    accounting.backfill_actuals(store, config, end + timedelta(days=3))
    job = store.get_job(job_id)
    assert job.actuals_state == "estimated" and job.actual_intensity == pytest.approx(200.0)


def test_actuals_replace_an_estimate(workspace: Workspace) -> None:
    store, config = workspace.store(), workspace.config()
    job_id = finished_job(store, planned_start=T10, planned_intensity=100.0, started=T10,
                          ended=T10 + HOUR, energy_kwh=2.0)
    store.add_points("north", "north", [PointRecord(T10, T10 + HOUR, 120.0,
                                                    vintage=T10 - HOUR)], T10 - HOUR)
    accounting.backfill_actuals(store, config, T10 + 2 * HOUR)
    assert store.get_job(job_id).intensity_estimated is True
    store.add_points("north", "north", actuals([130.0]), T10 + 2 * HOUR)
    accounting.backfill_actuals(store, config, T10 + 3 * HOUR)
    job = store.get_job(job_id)
    assert (job.actual_intensity, job.intensity_estimated, job.actuals_state) == (
        130.0, False, "done")
    # The stored emissions follow the actual that replaced the estimate.
    assert job.actual_emissions_g == pytest.approx(2.0 * 130.0)
    assert job.forecast_error == pytest.approx(100.0 - 130.0)  # the figure stored with it


def test_give_up_without_any_data_and_lost_jobs(workspace: Workspace) -> None:
    store, config = workspace.store(), workspace.config()
    silent = finished_job(store, planned_start=T10, planned_intensity=None, started=T10,
                          ended=T10 + HOUR, energy_kwh=1.0)
    lost = finished_job(store, planned_start=T10, planned_intensity=None, started=T10,
                        ended=None, energy_kwh=None, state=JobState.LOST)
    accounting.backfill_actuals(store, config, T10 + timedelta(days=1))
    assert store.get_job(silent).actuals_state == "pending"
    assert store.get_job(lost).actuals_state == "no_interval"
    accounting.backfill_actuals(store, config, T10 + timedelta(days=3))
    job = store.get_job(silent)
    assert job.actuals_state == "gave_up" and job.actual_intensity is None
    assert job.actual_emissions_g is None and job.saved_g is None


def _csv_with_actuals(path: Path, forecast: list[tuple[datetime, datetime, float]],
                      actual: list[tuple[datetime, datetime, float]]) -> None:
    lines = ["start,end,gco2_per_kwh,kind"]
    lines += [f"{s.isoformat()},{e.isoformat()},{v},forecast" for s, e, v in forecast]
    lines += [f"{s.isoformat()},{e.isoformat()},{v},actual" for s, e, v in actual]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_real_job_through_the_daemon_gets_energy_then_emissions(
    csv_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """A real job, launched and reaped by Daemon.run_once, measured by RAPL (a fake powercap
    tree here), then reviewed once the csv provider publishes actuals."""
    hour = floor_hour(utc_now())
    rows = hourly(hour - HOUR, [50, 50, 50, 400, 400])  # cleanest now: the job starts at once
    workspace = csv_workspace({"north": rows})
    powercap = tmp_path / "powercap"
    (powercap / "intel-rapl:0").mkdir(parents=True)
    (powercap / "intel-rapl:0" / "name").write_text("package-0\n")
    (powercap / "intel-rapl:0" / "max_energy_range_uj").write_text("262143328850\n")
    counter = powercap / "intel-rapl:0" / "energy_uj"
    counter.write_text("1000000\n")

    submitted = workspace.cli("submit", "--duration", "1m", "--within", "3h", "--power", "90",
                              "--json", "--", sys.executable, "-c", "print('working')")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.json()["id"]
    store, config = workspace.store(), workspace.config()
    daemon = Daemon(config, store, energy=EnergyMonitor(rapl=lambda: RaplMeter(powercap)))
    daemon.run_once(utc_now())
    assert store.get_job(job_id).state == JobState.RUNNING
    counter.write_text("37000000\n")  # the host used 36 J while the job ran
    deadline = time.monotonic() + 30
    while store.get_job(job_id).state == JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
        daemon.tick(utc_now())
    job = store.get_job(job_id)
    assert job.state == JobState.SUCCEEDED
    assert job.energy_method == "rapl"
    assert job.energy_kwh == pytest.approx(36.0 / JOULES_PER_KWH)
    # Reviewed as it ended: no actuals yet, so an estimate from the forecast meanwhile.
    assert (job.actuals_state, job.intensity_estimated) == (accounting.PENDING, True)
    assert job.actual_intensity == pytest.approx(50.0)

    # The provider now publishes actuals for these hours: the fetch alone fills them in.
    assert config.providers["north"].path is not None
    _csv_with_actuals(config.providers["north"].path, rows,
                      hourly(hour - HOUR, [70, 70, 70, 300]))
    daemon.refresh_actuals(utc_now())
    shown = workspace.cli("show", str(job_id), "--json")
    assert shown.returncode == 0, shown.stderr
    document = shown.json()
    energy = 36.0 / JOULES_PER_KWH
    assert document["energy_method"] == "rapl"
    assert document["actual_intensity"] == pytest.approx(70.0)
    assert document["intensity_estimated"] is False
    assert document["actual_emissions_g"] == pytest.approx(energy * 70)
    assert document["run_now_emissions_g"] == pytest.approx(energy * 70)
    assert document["scheduled_emissions_g"] == pytest.approx(50 * 90 * 60 / JOULES_PER_KWH)


def test_a_job_whose_actuals_are_already_stored_gets_them_as_it_ends(
    csv_workspace: Callable[..., Workspace]
) -> None:
    """No wait for the next periodic review (daemon.actuals_every, an hour here): the tick
    that records the job's end also fills its actual intensity."""
    hour = floor_hour(utc_now())
    rows = hourly(hour - HOUR, [50, 50, 50, 400, 400])
    workspace = csv_workspace({"north": rows}, daemon='tick = "1s"\nactuals_every = "1h"')
    path = workspace.config().providers["north"].path
    assert path is not None
    _csv_with_actuals(path, rows, hourly(hour - HOUR, [70, 70, 70]))
    submitted = workspace.cli("submit", "--duration", "1m", "--within", "3h", "--power", "90",
                              "--json", "--", "true")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.json()["id"]
    store = workspace.store()
    daemon = Daemon(workspace.config(), store)
    daemon.refresh_actuals(utc_now())
    daemon.tick(utc_now())
    deadline = time.monotonic() + 30
    while store.get_job(job_id).state == JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
        daemon.tick(utc_now())
    shown = workspace.cli("show", str(job_id), "--json").json()
    assert shown["state"] == "succeeded"
    assert (shown["actual_intensity"], shown["intensity_estimated"]) == (70.0, False)
    assert shown["actual_emissions_g"] == pytest.approx(shown["energy_kwh"] * 70)
    store.close()


@pytest.mark.slow
def test_real_daemon_declares_energy_and_backfills_actuals(
    csv_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """The real daemon process: a job with no meter in sight gets declared energy, and the
    daemon's own actuals fetch and backfill then fill its emissions."""
    from tests.daemon_process import DaemonProcess, wait_for

    hour = floor_hour(utc_now())
    rows = hourly(hour - HOUR, [50, 50, 50, 400, 400])
    workspace = csv_workspace({"north": rows}, daemon=(
        'tick = "1s"\nkill_grace = "2s"\nactuals_every = "1s"\n'
        f'powercap_root = "{tmp_path / "no-rapl-here"}"'))
    path = workspace.config().providers["north"].path
    assert path is not None
    _csv_with_actuals(path, rows, hourly(hour - HOUR, [70, 70, 70]))
    submitted = workspace.cli("submit", "--duration", "1m", "--within", "3h", "--power", "90",
                              "--env", "CUDA_VISIBLE_DEVICES=", "--json", "--",
                              sys.executable, "-c", "import time; time.sleep(0.3)")
    assert submitted.returncode == 0, submitted.stderr
    job_id = str(submitted.json()["id"])
    daemon = DaemonProcess(workspace)
    try:
        def reviewed() -> dict[str, object] | None:
            document: dict[str, object] = workspace.cli("show", job_id, "--json").json()
            return document if document["actual_intensity"] is not None else None

        found = wait_for(reviewed, timeout=60, interval=0.5, what="the job's review")
    finally:
        assert daemon.stop() == 0
    assert found is not None
    document = found
    assert document["state"] == "succeeded"
    assert document["energy_method"] == "declared"
    assert "rapl" in str(document["energy_note"])
    started = datetime.fromisoformat(str(document["started_at"]))
    ended = datetime.fromisoformat(str(document["ended_at"]))
    energy = 90 * (ended - started).total_seconds() / JOULES_PER_KWH
    assert document["energy_kwh"] == pytest.approx(energy)
    assert document["actual_intensity"] == pytest.approx(70.0)
    assert document["actual_emissions_g"] == pytest.approx(energy * 70)


def interruptible_job(store: Store, runs: list[tuple[datetime, datetime, float | None]],
                      work_done: timedelta) -> int:
    """A finished interruptible job of 2 h with its runs (start, end, energy) recorded as
    the daemon records them; its energy is their sum where every run's is known."""
    energies = [energy for _, _, energy in runs]
    total = None if None in energies else sum(e for e in energies if e is not None)
    job_id = finished_job(store, planned_start=T10, planned_intensity=None,
                          started=runs[0][0], ended=runs[-1][1], energy_kwh=total,
                          duration=2 * HOUR)
    store.update_job_fields(job_id, interruptible="suspend", min_chunk_s=1800,
                            work_done_s=work_done.total_seconds(), run_count=len(runs))
    with store.writing() as session:
        session.add_all([JobRun(job_id=job_id, run=number, region="north", started_at=start,
                                ended_at=end, outcome="suspended", energy_kwh=energy)
                         for number, (start, end, energy) in enumerate(runs, start=1)])
    return job_id


def test_an_interruptible_jobs_actual_intensity_is_per_run_and_weighted_by_energy(
        workspace: Workspace) -> None:
    store, config = workspace.store(), workspace.config()
    job_id = interruptible_job(store, [(T10 + HOUR, T10 + 2 * HOUR, 0.3),
                                       (T10 + 4 * HOUR, T10 + 5 * HOUR, 0.1)], 2 * HOUR)
    # Actuals up to 13:00: the first run (11:00-12:00) is covered, the second is not.
    store.add_points("north", "north", actuals([500, 100, 400]), T10 + 6 * HOUR)
    accounting.backfill_actuals(store, config, T10 + 6 * HOUR)
    job = store.get_job(job_id)
    assert (job.actuals_state, job.actual_intensity) == ("pending", None)
    assert [run.actual_intensity for run in store.job_runs(job_id)] == [100.0, None]

    store.add_points("north", "north", actuals([400, 300], T10 + 3 * HOUR), T10 + 7 * HOUR)
    accounting.backfill_actuals(store, config, T10 + 7 * HOUR)
    job = store.get_job(job_id)
    assert [run.actual_intensity for run in store.job_runs(job_id)] == [100.0, 300.0]
    # (0.3 kWh x 100 + 0.1 kWh x 300) / 0.4 kWh; the pauses (12:00-14:00 at 400) count not.
    assert job.actual_intensity == pytest.approx(150.0)
    assert job.actuals_state == "done" and job.intensity_estimated is False
    # Run now: the same 2 h of work from submission (10:00-12:00).
    assert job.run_now_actual_intensity == pytest.approx(300.0)
    assert (job.actual_emissions_g, job.run_now_emissions_g, job.saved_g) == (
        pytest.approx(60.0), pytest.approx(120.0), pytest.approx(60.0))
    shown = workspace.cli("show", str(job_id), "--json").json()
    assert [run["actual_intensity"] for run in shown["runs"]] == [100.0, 300.0]
    assert shown["actual_emissions_g"] == pytest.approx(60.0)


def test_runs_of_unknown_energy_are_weighted_by_their_length(workspace: Workspace) -> None:
    store, config = workspace.store(), workspace.config()
    job_id = interruptible_job(store, [(T10 + HOUR, T10 + 2 * HOUR, None),
                                       (T10 + 4 * HOUR, T10 + 4.5 * HOUR, None)], 90 * MINUTE)
    store.add_points("north", "north", actuals([500, 100, 400, 400, 300]), T10 + 6 * HOUR)
    accounting.backfill_actuals(store, config, T10 + 6 * HOUR)
    job = store.get_job(job_id)
    assert job.actual_intensity == pytest.approx((100 * 60 + 300 * 30) / 90)
    assert job.run_now_actual_intensity == pytest.approx((500 * 60 + 100 * 30) / 90)
    assert job.actuals_state == "done" and job.actual_emissions_g is None  # energy unknown
