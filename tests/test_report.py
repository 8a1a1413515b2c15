"""``gridshift report`` through the real CLI: totals checked against numbers worked out by
hand, per-signal totals that never mix, CSV, the PNG and the self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import delete, func, select

from scheduler.models import JobDocument, JobRun, JobState
from scheduler.records import ChunkPlan, NewJob, RunEnd
from scheduler.report import FIGURE_WIDTH_PX, PANEL_HEIGHT_PX
from scheduler.report.building import build
from scheduler.report.charts import ChartData, Span
from scheduler.store import PlanUpdate, PointRecord, Store
from tests.conftest import Workspace, hourly, write_csv
from tests.test_accounting import HOUR, T10, finished_job


@pytest.fixture
def workspace(make_workspace: Callable[..., Workspace], tmp_path: Path, database_url: str
              ) -> Workspace:
    """Region north (average signal, lifecycle basis) and south (marginal), four jobs; on
    each backend."""
    north = write_csv(tmp_path / "north.csv", hourly(T10 - HOUR, [300, 280, 290, 100, 120]))
    south = write_csv(tmp_path / "south.csv", hourly(T10 - HOUR, [700, 600, 650, 500, 550]))
    workspace = make_workspace(
        f'[providers.north]\nkind = "csv"\npath = "{north}"\nbasis = "lifecycle"\n'
        f'[providers.south]\nkind = "csv"\npath = "{south}"\nsignal = "marginal"\n'
        '[regions.north]\nprovider = "north"\nzone = "north"\n'
        '[regions.south]\nprovider = "south"\nzone = "south"\n', database_url=database_url)
    store = workspace.store()
    reviewed = {"actuals_state": "done", "intensity_estimated": False}
    a = finished_job(store, planned_start=T10 + HOUR, planned_intensity=280.0,
                     started=T10 + HOUR, ended=T10 + 2 * HOUR, energy_kwh=0.4)
    store.update_job_fields(a, actual_intensity=250.0, run_now_actual_intensity=500.0,
                            planned_window_actual_intensity=300.0, **reviewed)
    b = finished_job(store, planned_start=T10 + 2 * HOUR, planned_intensity=100.0,
                     started=T10 + 2 * HOUR, ended=T10 + 4 * HOUR, energy_kwh=1.5,
                     duration=2 * HOUR, power_watts=1000.0)
    store.update_job_fields(b, actual_intensity=120.0, run_now_actual_intensity=90.0,
                            planned_window_actual_intensity=110.0, deadline_missed=True,
                            **reviewed)
    finished_job(store, planned_start=T10 + 3 * HOUR, planned_intensity=150.0,
                 started=T10 + 3 * HOUR, ended=T10 + 4 * HOUR, energy_kwh=0.2,
                 power_watts=200.0)  # no actuals yet
    d = finished_job(store, region="south", planned_start=T10 + 2 * HOUR,
                     planned_intensity=600.0, started=T10 + 2 * HOUR, ended=T10 + 3 * HOUR,
                     energy_kwh=0.25, power_watts=300.0)
    store.update_job_fields(d, actual_intensity=500.0, run_now_actual_intensity=700.0,
                            planned_window_actual_intensity=650.0, signal="marginal",
                            **reviewed)
    for name, forecast, actual in (("north", [300, 280, 290, 100, 120], [310, 260, 300, 110]),
                                   ("south", [700, 600, 650, 500, 550], [690, 640, 650, 520])):
        store.add_points(name, name, [PointRecord(s, e, v) for s, e, v in
                                      hourly(T10 - HOUR, forecast)], T10 - HOUR)
        store.add_points(name, name, [PointRecord(s, e, v, kind="actual") for s, e, v in
                                      hourly(T10, actual)], T10 + 5 * HOUR)
    store.close()
    return workspace


def test_json_totals_match_hand_computed_numbers(workspace: Workspace) -> None:
    result = workspace.cli("report", "--json")
    assert result.returncode == 0, result.stderr
    document = result.json()
    assert [job["name"] for job in document["jobs"]] == ["train"] * 4
    north, south = document["totals"]["average"], document["totals"]["marginal"]
    assert set(north) == {"jobs", "energy_kwh", "scheduled_emissions_g", "actual_emissions_g",
                          "run_now_emissions_g", "saved_g", "saved_pct", "forecast_mae",
                          "deadline_misses", "awaiting_actuals", "embodied_g", "sci_jobs",
                          "sci_per_job_g", "energy_jobs", "scheduled_jobs", "actual_jobs",
                          "run_now_jobs", "saved_jobs", "estimated_intensity_jobs"}
    # average: A 0.4 kWh at 250 (run now 500), B 1.5 kWh at 120 (run now 90), C no actuals.
    assert north["jobs"] == 3
    assert north["energy_kwh"] == pytest.approx(0.4 + 1.5 + 0.2)
    assert north["scheduled_emissions_g"] == pytest.approx(280 * 0.5 + 100 * 2.0 + 150 * 0.2)
    assert north["actual_emissions_g"] == pytest.approx(100 + 180)
    assert north["run_now_emissions_g"] == pytest.approx(200 + 135)
    assert north["saved_g"] == pytest.approx((200 - 100) + (135 - 180))
    assert north["saved_pct"] == pytest.approx(100 * 55 / 335)
    assert north["forecast_mae"] == pytest.approx((20 + 10) / 2)
    assert (north["deadline_misses"], north["awaiting_actuals"]) == (1, 1)
    # C has no actuals yet: the actual, run-now and saved sums leave it out and say so.
    assert (north["energy_jobs"], north["scheduled_jobs"]) == (3, 3)
    assert (north["actual_jobs"], north["run_now_jobs"], north["saved_jobs"]) == (2, 2, 2)
    assert north["estimated_intensity_jobs"] == 0
    # No region states its hardware's embodied emissions: no SCI, and no guessed zero.
    assert (north["embodied_g"], north["sci_jobs"], north["sci_per_job_g"]) == (None, 0, None)
    # marginal, kept apart: D 0.25 kWh at 500 (run now 700).
    assert south["jobs"] == 1
    assert south["actual_emissions_g"] == pytest.approx(125)
    assert south["saved_g"] == pytest.approx(50)
    assert south["saved_pct"] == pytest.approx(100 * 50 / 175)
    assert south["forecast_mae"] == pytest.approx(50)


def test_filters_by_region_and_start_time(workspace: Workspace) -> None:
    only_south = workspace.cli("report", "--json", "--region", "south").json()
    assert list(only_south["totals"]) == ["marginal"]
    assert [j["run_region"] for j in only_south["jobs"]] == ["south"]
    window = workspace.cli("report", "--json", "--since", (T10 + 2 * HOUR).isoformat(),
                           "--until", (T10 + 3 * HOUR).isoformat()).json()
    assert sorted(j["started_at"] for j in window["jobs"]) == [(T10 + 2 * HOUR).isoformat()] * 2


def test_human_output_names_signal_and_basis(workspace: Workspace) -> None:
    result = workspace.cli("report")
    assert result.returncode == 0, result.stderr
    assert "Totals, average intensity signal (lifecycle basis)" in result.stdout
    assert "Totals, marginal intensity signal (not stated basis)" in result.stdout
    assert re.search(r"saved\s+55 g \(16\.4%\)", result.stdout)


def test_unknown_totals_are_unknown_never_zero(workspace: Workspace) -> None:
    """Only job C, which has no actuals yet: its actual, run-now and saved emissions are
    unknown, so their totals are too, in JSON and in text."""
    since = ["--since", (T10 + 3 * HOUR).isoformat()]
    totals = workspace.cli("report", "--json", *since).json()["totals"]
    assert list(totals) == ["average"]
    only_c = totals["average"]
    assert only_c["jobs"] == 1
    assert only_c["scheduled_emissions_g"] == pytest.approx(150 * 0.2)
    assert (only_c["actual_emissions_g"], only_c["run_now_emissions_g"], only_c["saved_g"],
            only_c["saved_pct"]) == (None, None, None, None)
    assert (only_c["actual_jobs"], only_c["run_now_jobs"], only_c["saved_jobs"]) == (0, 0, 0)
    text = workspace.cli("report", *since).stdout
    assert re.search(r"actual \(measured energy x actual intensity\)\s+-\n", text)
    assert re.search(r"run now \(same energy, started at submission\)\s+-\n", text)
    assert re.search(r"saved\s+-\n", text)
    assert " 0 g" not in text


def test_totals_over_some_jobs_say_how_many_they_leave_out(workspace: Workspace) -> None:
    text = workspace.cli("report").stdout
    average = text[text.index("Totals, average"):text.index("Totals, marginal")]
    assert re.search(r"actual \(measured energy x actual intensity\)\s+280 g over 2 of 3 jobs",
                     average)
    assert re.search(r"saved\s+55 g \(16\.4%\) over 2 of 3 jobs", average)
    assert re.search(r"scheduled \(plan's forecast x declared power\)\s+370 g\n", average)


def test_csv_has_one_row_per_job_with_the_json_columns(workspace: Workspace) -> None:
    as_json = workspace.cli("report", "--json").json()
    result = workspace.cli("report", "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 4
    assert list(rows[0]) == list(as_json["jobs"][0])
    assert [float(r["actual_emissions_g"] or "nan") for r in rows[:2]] == pytest.approx(
        [100.0, 180.0])
    empty = workspace.cli("report", "--csv", "--since", (T10 + 30 * HOUR).isoformat())
    assert empty.stdout.splitlines() == [",".join(rows[0])]


def test_plot_png_has_one_panel_per_region_and_the_bar_chart(
    workspace: Workspace, tmp_path: Path
) -> None:
    target = tmp_path / "emissions.png"
    result = workspace.cli("report", "--plot", str(target))
    assert result.returncode == 0, result.stderr
    assert f"wrote {target}" in result.stderr
    with Image.open(target) as image:
        assert image.format == "PNG"
        assert image.size == (FIGURE_WIDTH_PX, PANEL_HEIGHT_PX * 3)  # north, south, bars


def test_the_charts_draw_each_chunk_and_run_of_an_interruptible_job(
    workspace: Workspace,
) -> None:
    """Its bands are its chunks and its runs, not one band from its first start to its end
    over the pause between them, nor its first start plus its duration."""
    half = HOUR / 2
    chunks = [ChunkPlan("north", T10 + half, T10 + 3 * half),
              ChunkPlan("north", T10 + 5 * half, T10 + 7 * half)]
    store = workspace.store()
    try:
        job_id = finished_job(store, planned_start=chunks[0].start, planned_intensity=120.0,
                              started=chunks[0].start, ended=chunks[1].end, energy_kwh=0.5,
                              duration=2 * HOUR)
        store.update_job_fields(job_id, interruptible="checkpoint", run_count=2)
        store.save_chunks({job_id: chunks})
        with store.writing() as session:
            for run, chunk in enumerate(chunks, start=1):
                session.add(JobRun(job_id=job_id, run=run, region="north",
                                   started_at=chunk.start, ended_at=chunk.end,
                                   outcome="checkpointed" if run == 1 else "succeeded"))
        with build(store, workspace.config(), None, None, []) as report:
            data = ChartData.of(report)
    finally:
        store.close()
    parts = [Span("north", chunk.start, HOUR) for chunk in chunks]
    assert all(span in data.ran and span in data.planned for span in parts)
    assert Span("north", chunks[0].start, 3 * HOUR) not in data.ran  # over the pause
    assert Span("north", chunks[0].start, 2 * HOUR) not in data.planned
    assert len(data.ran) == 4 + 2  # the fixture's four jobs, then this job's two runs


def test_html_is_self_contained_with_table_and_images(
    workspace: Workspace, tmp_path: Path
) -> None:
    target = tmp_path / "report.html"
    result = workspace.cli("report", "--html", str(target))
    assert result.returncode == 0, result.stderr
    page = target.read_text(encoding="utf-8")
    assert "<table>" in page and "<th>actual g</th>" in page
    assert "average intensity signal" in page and "marginal intensity signal" in page
    # Totals labelled in words, as in the text report, with the estimated-intensity count.
    totals = page[page.index("Totals: average"):page.index("<h2>Jobs</h2>")]
    assert "actual (measured energy x actual intensity)" in totals
    assert "280 g over 2 of 3 jobs" in totals
    assert "with estimated intensity" in totals
    assert "actual_emissions_g" not in totals and "awaiting_actuals" not in totals
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3
    with Image.open(io.BytesIO(base64.b64decode(images[0]))) as image:
        assert image.size == (FIGURE_WIDTH_PX, PANEL_HEIGHT_PX)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere


def test_bad_input_exits_2_and_writes_nothing(workspace: Workspace, tmp_path: Path) -> None:
    both = workspace.cli("report", "--json", "--csv")
    assert both.returncode == 2 and "not both" in both.stderr and both.stdout == ""
    missing_dir = tmp_path / "nowhere" / "chart.png"
    nowhere = workspace.cli("report", "--plot", str(missing_dir))
    assert nowhere.returncode == 2 and not missing_dir.parent.exists()
    unknown = workspace.cli("report", "--region", "mars")
    assert unknown.returncode == 2 and "unknown region 'mars'" in unknown.stderr
    backwards = workspace.cli("report", "--since", "+1h", "--until", "+1m")
    assert backwards.returncode == 2


def test_period_bounds_are_start_times(workspace: Workspace) -> None:
    late = workspace.cli("report", "--json", "--since",
                         (T10 + timedelta(hours=2, minutes=1)).isoformat()).json()
    assert len(late["jobs"]) == 1  # only the job that started at 13:00


def test_report_job_objects_are_those_of_show_json(workspace: Workspace) -> None:
    jobs = workspace.cli("report", "--json").json()["jobs"]
    for job in jobs:
        shown = workspace.cli("show", str(job["id"]), "--json").json()
        del shown["events"], shown["environment_names"]  # show's own keys
        assert list(job.items()) == list(shown.items())


def test_text_needing_escapes_and_quotes_survives_json_and_csv(workspace: Workspace) -> None:
    """Report output is encoded a column at a time; text that JSON must escape and CSV must
    quote comes back as stored, and the job object still equals show --json's."""
    tricky = 'fit "large", naïve\tv2\nsecond line \\ end'
    first = workspace.cli("report", "--json").json()["jobs"][0]["id"]
    store = workspace.store()
    store.update_job_fields(first, name=tricky, energy_note=tricky, actual_intensity=None)
    store.close()
    jobs = workspace.cli("report", "--json").json()["jobs"]
    job = next(j for j in jobs if j["id"] == first)
    assert (job["name"], job["energy_note"], job["actual_emissions_g"]) == (tricky, tricky, None)
    shown = workspace.cli("show", str(first), "--json").json()
    del shown["events"], shown["environment_names"]  # show's own keys
    assert list(job.items()) == list(shown.items())
    rows = list(csv.DictReader(io.StringIO(workspace.cli("report", "--csv").stdout)))
    row = next(r for r in rows if r["id"] == str(first))
    assert (row["name"], row["energy_note"], row["actual_emissions_g"]) == (tricky, tricky, "")
    assert len(rows) == len(jobs)


def test_a_report_of_many_pages_keeps_every_job_and_its_totals(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """12,000 jobs (pages of 5,000): JSON, CSV and the table each hold every job once in
    start order, and the SQL totals equal the sums and counts of the jobs' own figures."""
    from datetime import UTC, datetime

    north = write_csv(tmp_path / "north.csv", hourly(T10, [300, 280]))
    workspace = make_workspace(f'[providers.north]\nkind = "csv"\npath = "{north}"\n'
                               '[regions.north]\nprovider = "north"\nzone = "north"\n')
    start = datetime(2026, 3, 1, tzinfo=UTC)
    rows = []
    for number in range(12_000):
        started = start + timedelta(minutes=number)
        reviewed = number % 7 != 0
        rows.append({
            "name": f"train-{number}", "state": "succeeded", "argv": ["true"], "cwd": "/",
            "env": {}, "duration_s": 3600, "not_before": started,
            "deadline": started + timedelta(days=1), "regions": ["north"],
            "power_watts": 300.0, "submitted_at": started, "planned_region": "north",
            "planned_start": started, "planned_intensity": 100.0 + number % 50,
            "signal": "average", "run_region": "north", "started_at": started,
            "ended_at": started + timedelta(minutes=50), "energy_kwh": 0.2 + number % 3,
            "actual_intensity": 90.0 + number % 11 if reviewed else None,
            "run_now_actual_intensity": 150.0 + number % 13 if reviewed else None,
            "actuals_state": "done" if reviewed else None,
        })
    store = workspace.store()
    store.insert_job_rows(rows)
    store.close()
    document = workspace.cli("report", "--json").json()
    jobs = document["jobs"]
    assert [job["name"] for job in jobs] == [f"train-{n}" for n in range(12_000)]
    totals = document["totals"]["average"]
    assert totals["jobs"] == 12_000
    for key, count in (("actual_emissions_g", "actual_jobs"),
                       ("run_now_emissions_g", "run_now_jobs"), ("saved_g", "saved_jobs"),
                       ("scheduled_emissions_g", "scheduled_jobs")):
        known = [job[key] for job in jobs if job[key] is not None]
        assert totals[count] == len(known)
        assert totals[key] == pytest.approx(sum(known), rel=1e-9)
    assert totals["actual_jobs"] == 12_000 - len(range(0, 12_000, 7))
    as_csv = list(csv.DictReader(io.StringIO(workspace.cli("report", "--csv").stdout)))
    assert [row["id"] for row in as_csv] == [str(job["id"]) for job in jobs]
    text = workspace.cli("report").stdout
    assert "Emissions report: 12000 finished job(s)" in text
    assert text.count("\ntrain-") == 0 and len(re.findall(r"\n\d+ +train-\d+ ", text)) == 12_000


def _run_in_two_chunks(store: Store) -> int:
    """An interruptible job taken through the store's run calls: two runs, then success."""
    job = store.add_job(NewJob(name="chunked", argv=["python", "fit.py", "--lr", "0.1"],
                               cwd="/", env={}, duration_s=7200, not_before=T10,
                               deadline=T10 + 12 * HOUR, regions=["north"], power_watts=400.0,
                               signal="average", interruptible="checkpoint",
                               min_chunk_s=1800), T10)
    store.save_plans([PlanUpdate(job.id, "north", T10, 200.0, T10, 1, chunk_count=2)], T10)
    store.begin_run(job.id, (JobState.PLANNED,), T10, "launched", "north", run_region="north",
                    started_at=T10)
    store.end_run(job.id, (JobState.RUNNING,), JobState.PAUSED, T10 + HOUR, "checkpointed",
                  RunEnd(T10 + HOUR, "checkpointed", 3600.0, 0.3, "rapl"))
    store.begin_run(job.id, (JobState.PAUSED,), T10 + 2 * HOUR, "resumed", "north")
    store.end_run(job.id, (JobState.RUNNING,), JobState.SUCCEEDED, T10 + 3 * HOUR, "ended",
                  RunEnd(T10 + 3 * HOUR, "succeeded", 3600.0, 0.4, "rapl"),
                  ended_at=T10 + 3 * HOUR, energy_kwh=0.7, energy_method="rapl")
    return job.id


def test_a_report_reads_each_finished_jobs_stored_document(workspace: Workspace) -> None:
    """Each finished job's object and CSV row are stored when it finishes, and again with
    every later write to it or its runs (its review). A report reads them and adds the
    config's keys; a job without one (finished before they were stored) is encoded from
    its row: the same bytes either way, equal to show --json's object."""
    store = workspace.store()
    chunked = _run_in_two_chunks(store)
    store.update_job_fields(chunked, name="chunked, \"reviewed\" naïvely")
    store.record_run_actual(chunked, 2, 123.5)  # reviewed after the job finished
    with store.reading() as session:
        assert session.scalar(select(func.count()).select_from(JobDocument)) == 5
    as_json = workspace.cli("report", "--json").stdout
    as_csv = workspace.cli("report", "--csv").stdout
    job = next(j for j in workspace.cli("report", "--json").json()["jobs"]
               if j["id"] == chunked)
    assert [run["actual_intensity"] for run in job["runs"]] == [None, 123.5]
    assert job["name"] == "chunked, \"reviewed\" naïvely"
    shown = workspace.cli("show", str(chunked), "--json").json()
    del shown["events"], shown["environment_names"]  # show's own keys
    assert list(job.items()) == list(shown.items())

    with store.writing() as session:
        session.execute(delete(JobDocument))  # as before migration 0011
    assert workspace.cli("report", "--json").stdout == as_json
    assert workspace.cli("report", "--csv").stdout == as_csv
    assert store.store_missing_documents() == 5  # what `db upgrade` runs after 0011
    assert workspace.cli("report", "--json").stdout == as_json
    store.close()
