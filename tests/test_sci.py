"""The Software Carbon Intensity of each job: the formula, ``show --json`` and
``report --json`` through the real CLI, and the report's totals."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler import accounting, render, report
from scheduler.config import RegionConfig
from tests.conftest import Workspace, hourly, write_csv
from tests.test_accounting import HOUR, T10, finished_job

FOUR_YEARS = timedelta(days=4 * 365)
EMBODIED = 1_576_800.0  # gCO2eq: 1 g per 80 s of a 4-year life


def test_embodied_share_is_run_time_over_lifetime_over_slots() -> None:
    machine = RegionConfig("gpu", "file", "gpu", slots=4, embodied_gco2=EMBODIED,
                           lifetime=FOUR_YEARS)
    # One hour of a 4-year life, one of four slots: 1,576,800 x 3600 / 126,144,000 / 4.
    assert accounting.embodied_from(3600.0, machine) == pytest.approx(11.25)
    assert accounting.embodied_from(0.0, machine) == 0.0  # a run of no time holds nothing
    assert accounting.sci_from(100.0, 11.25) == pytest.approx(111.25)


def test_an_unknown_term_makes_the_sci_unknown_never_zero() -> None:
    machine = RegionConfig("gpu", "file", "gpu", embodied_gco2=EMBODIED, lifetime=FOUR_YEARS)
    unstated = RegionConfig("gpu", "file", "gpu")
    assert accounting.embodied_from(None, machine) is None  # no run interval (lost)
    assert accounting.embodied_from(3600.0, unstated) is None
    assert accounting.embodied_from(3600.0, None) is None  # region gone from the config
    assert accounting.sci_from(None, 45.0) is None  # no actual intensity yet
    assert accounting.sci_from(100.0, None) is None


@pytest.fixture
def workspace(make_workspace: Callable[..., Workspace], tmp_path: Path) -> Workspace:
    """Region north states its hardware (2 slots), south does not; three finished jobs."""
    north = write_csv(tmp_path / "north.csv", hourly(T10 - HOUR, [300, 280, 290, 100, 120]))
    south = write_csv(tmp_path / "south.csv", hourly(T10 - HOUR, [700, 600, 650, 500, 550]))
    workspace = make_workspace(
        f'[providers.north]\nkind = "csv"\npath = "{north}"\n'
        f'[providers.south]\nkind = "csv"\npath = "{south}"\n'
        f'[regions.north]\nprovider = "north"\nzone = "north"\nslots = 2\n'
        f'embodied_gco2 = {EMBODIED}\nlifetime = "4y"\n'
        '[regions.south]\nprovider = "south"\nzone = "south"\n')
    store = workspace.store()
    reviewed = {"actuals_state": "done", "intensity_estimated": False}
    a = finished_job(store, planned_start=T10 + HOUR, planned_intensity=280.0,
                     started=T10 + HOUR, ended=T10 + 2 * HOUR, energy_kwh=0.4)
    store.update_job_fields(a, actual_intensity=250.0, run_now_actual_intensity=500.0,
                            **reviewed)
    finished_job(store, planned_start=T10 + 2 * HOUR, planned_intensity=100.0,
                 started=T10 + 2 * HOUR, ended=T10 + 4 * HOUR, energy_kwh=1.5,
                 duration=2 * HOUR)  # no actuals yet
    c = finished_job(store, region="south", planned_start=T10 + 2 * HOUR,
                     planned_intensity=600.0, started=T10 + 2 * HOUR, ended=T10 + 3 * HOUR,
                     energy_kwh=0.25)
    store.update_job_fields(c, actual_intensity=500.0, run_now_actual_intensity=700.0,
                            **reviewed)
    store.close()
    return workspace


def shown(workspace: Workspace, job_id: int) -> dict[str, object]:
    result = workspace.cli("show", str(job_id), "--json")
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = result.json()
    return document


def test_show_and_report_json_give_each_jobs_sci(workspace: Workspace) -> None:
    # 1 h of north's 4-year life on one of its 2 slots: 1,576,800 x 1/35,040 / 2 = 22.5 g.
    a = shown(workspace, 1)
    assert a["embodied_g"] == pytest.approx(22.5)
    assert a["sci_g"] == pytest.approx(0.4 * 250.0 + 22.5)
    b = shown(workspace, 2)  # 2 h: embodied known, actual emissions not yet
    assert (b["embodied_g"], b["actual_emissions_g"], b["sci_g"]) == (pytest.approx(45.0),
                                                                      None, None)
    c = shown(workspace, 3)  # south states no hardware: neither figure is guessed
    assert (c["embodied_g"], c["sci_g"]) == (None, None)
    assert c["actual_emissions_g"] == pytest.approx(125.0)

    jobs = workspace.cli("report", "--json").json()["jobs"]
    by_id = {job["id"]: job for job in jobs}
    for job_id, expected in ((1, a), (2, b), (3, c)):
        del expected["events"], expected["environment_names"]  # show's own keys
        assert list(by_id[job_id].items()) == list(expected.items())


def test_report_totals_give_sci_per_job_for_each_signal(workspace: Workspace) -> None:
    totals = workspace.cli("report", "--json").json()["totals"]
    north = totals["average"]  # both signals are average here: one total over three jobs
    assert north["embodied_g"] == pytest.approx(22.5 + 45.0)
    assert north["sci_jobs"] == 1  # only job 1 has every term
    assert north["sci_per_job_g"] == pytest.approx(122.5)
    text = workspace.cli("report")
    assert text.returncode == 0, text.stderr
    assert "SCI per job (1 with every term known)" in text.stdout
    assert "122 g" in text.stdout or "123 g" in text.stdout


def test_the_column_path_equals_the_one_job_path(workspace: Workspace) -> None:
    """The report's stored documents (many jobs, the config's keys added when read) and
    render.job_json (one) give the same SCI figures."""
    config = workspace.config()
    store = workspace.store()
    try:
        with report.build(store, config, None, None, []) as built:
            jobs = json.loads("[" + ",".join(built.stored_pages("json")) + "]")
        one_by_one = {job.id: render.job_json(job, config) for job in store.list_jobs()}
    finally:
        store.close()
    for job in jobs:
        single = one_by_one[job["id"]]
        assert (job["embodied_g"], job["sci_g"]) == (single["embodied_g"], single["sci_g"])
    assert [job["embodied_g"] is None for job in jobs] == [False, False, True]


def test_an_interruptible_jobs_share_counts_its_runs_not_its_pauses(
        workspace: Workspace) -> None:
    """A checkpointed job that ran 1 h of work in each of two runs (the second reloading
    its state for 6 min), over a 4 h span with a pause: it held the hardware 2.1 h."""
    store = workspace.store()
    job_id = finished_job(store, planned_start=T10, planned_intensity=None, started=T10,
                          ended=T10 + 4 * HOUR, energy_kwh=None, duration=2 * HOUR)
    store.update_job_fields(job_id, interruptible="checkpoint", min_chunk_s=1800,
                            restart_overhead_s=360, work_done_s=7200.0, run_count=2)
    store.close()
    # 2.1 h of north's 4-year life on one of its 2 slots: 22.5 g an hour.
    assert shown(workspace, job_id)["embodied_g"] == pytest.approx(2.1 * 22.5)
    totals = workspace.cli("report", "--json").json()["totals"]["average"]
    assert totals["embodied_g"] == pytest.approx(22.5 + 45.0 + 2.1 * 22.5)
    table = workspace.cli("report").stdout
    [row] = [line for line in table.splitlines() if line.startswith(f"{job_id} ")]
    assert " 2.10 " in row  # the hours column
