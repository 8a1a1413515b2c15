"""The real `gridshift` command as a subprocess, with a real config and a real database.

Forecasts come from csv files laid out around the current hour: region ``a`` is 300
g/kWh except a clear 50 g/kWh dip from +5h to +7h; region ``b`` is a flat 200.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler import forecasting
from scheduler.models import JobRun, JobState
from scheduler.records import ChunkPlan
from scheduler.timespec import format_local
from tests.conftest import Workspace, create_csv_workspace, floor_hour, hourly

HOUR = timedelta(hours=1)
JOB_KEYS = {
    "id", "name", "state", "argv", "duration_s", "not_before", "deadline", "regions",
    "planned_region", "planned_start", "planned_intensity", "run_now_intensity",
    "submitted_at", "started_at", "ended_at", "exit_code", "log_path",
}
TABLES = ("jobs", "job_events", "forecast_points", "provider_refreshes")


def layout(now: datetime) -> tuple[datetime, dict[str, list[tuple[datetime, datetime, float]]]]:
    """The dip's start and the csv series of both regions."""
    first = floor_hour(now) - 2 * HOUR
    dip_start = floor_hour(now) + 5 * HOUR
    values_a = [50.0 if first + i * HOUR in (dip_start, dip_start + HOUR) else 300.0
                for i in range(34)]
    return dip_start, {"a": hourly(first, values_a), "b": hourly(first, [200.0] * 34)}


def build(root: Path) -> tuple[Workspace, datetime]:
    """A workspace whose forecasts are already stored (as a running daemon would have)."""
    dip_start, series = layout(datetime.now(UTC))
    workspace = create_csv_workspace(root, series)
    store = workspace.store()
    try:
        results = forecasting.refresh_all(workspace.config(), store, datetime.now(UTC))
    finally:
        store.close()
    assert all(r.ok for r in results)
    return workspace, dip_start


@pytest.fixture
def ws(tmp_path: Path) -> tuple[Workspace, datetime]:
    return build(tmp_path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """One workspace with a job in it, for commands that must change nothing."""
    workspace, _ = build(tmp_path_factory.mktemp("shared"))
    assert workspace.cli("submit", "--duration", "1h", "--", "true").returncode == 0
    yield workspace


def row_counts(workspace: Workspace) -> dict[str, int]:
    with sqlite3.connect(workspace.db_path) as connection:
        return {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def parse_utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.utcoffset() == timedelta(0), text
    return value


def submit_json(workspace: Workspace, *args: str) -> dict[str, Any]:
    result = workspace.cli("submit", "--json", *args)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = result.json()
    return document


# submit ---------------------------------------------------------------------------------


def test_submit_prints_the_id_and_the_plan(ws: tuple[Workspace, datetime]) -> None:
    workspace, dip_start = ws
    result = workspace.cli("submit", "--duration", "2h", "--region", "a", "--", "true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("job 1 ")
    assert f"a at {format_local(dip_start)}" in result.stdout  # TZ=UTC in the workspace
    assert "50 g/kWh" in result.stdout and "run now: 300 g/kWh" in result.stdout


def test_submit_json_is_one_job_document_planned_into_the_dip(
    ws: tuple[Workspace, datetime]
) -> None:
    workspace, dip_start = ws
    before = datetime.now(UTC)
    job = submit_json(workspace, "--duration", "2h", "--name", "nightly",
                      "--", "python", "train.py", "--lr", "3")
    assert JOB_KEYS <= set(job)
    assert job["name"] == "nightly"
    assert job["argv"] == ["python", "train.py", "--lr", "3"]
    assert job["state"] == "planned"
    assert job["duration_s"] == 7200
    assert job["regions"] == ["a", "b"]
    assert (job["planned_region"], parse_utc(job["planned_start"])) == ("a", dip_start)
    assert job["planned_intensity"] == 50.0
    assert job["run_now_intensity"] == 300.0
    submitted = parse_utc(job["submitted_at"])
    assert before - timedelta(seconds=1) <= submitted <= datetime.now(UTC)
    # --within counts from the moment the command ran (not_before), not from when the
    # daemon stored the job.
    assert parse_utc(job["deadline"]) == parse_utc(job["not_before"]) + 24 * HOUR
    assert job["started_at"] is None and job["exit_code"] is None and job["log_path"] is None


def test_submit_options_shape_the_job(ws: tuple[Workspace, datetime]) -> None:
    workspace, dip_start = ws
    deadline = (dip_start + 4 * HOUR).isoformat()
    job = submit_json(workspace, "--duration", "90m", "--deadline", deadline,
                      "--not-before", "+1h", "--region", "b", "--power", "450",
                      "--", "echo", "--json", "--duration", "5s")
    # Everything after `--` belongs to the command, even our own option names.
    assert job["argv"] == ["echo", "--json", "--duration", "5s"]
    assert job["regions"] == ["b"]
    assert job["planned_region"] == "b"
    assert parse_utc(job["deadline"]) == dip_start + 4 * HOUR
    not_before = parse_utc(job["not_before"])
    assert parse_utc(job["planned_start"]) >= not_before
    assert abs(not_before - parse_utc(job["submitted_at"]) - HOUR) < timedelta(seconds=10)
    assert job["power_watts"] == 450


def test_a_second_job_takes_the_next_cleanest_room_in_a_one_slot_region(
    ws: tuple[Workspace, datetime]
) -> None:
    workspace, dip_start = ws
    first = submit_json(workspace, "--duration", "1h", "--region", "a", "--", "true")
    second = submit_json(workspace, "--duration", "1h", "--region", "a", "--", "true")
    starts = {parse_utc(first["planned_start"]), parse_utc(second["planned_start"])}
    assert starts == {dip_start, dip_start + HOUR}


# list, show, cancel ---------------------------------------------------------------------


def test_list_show_and_cancel(ws: tuple[Workspace, datetime]) -> None:
    workspace, _ = ws
    first = submit_json(workspace, "--duration", "1h", "--name", "first", "--", "true")
    second = submit_json(workspace, "--duration", "1h", "--name", "second", "--", "true")

    listed = workspace.cli("list", "--json")
    assert listed.returncode == 0
    assert [j["id"] for j in listed.json()] == [second["id"], first["id"]]  # newest first
    assert all(JOB_KEYS <= set(j) for j in listed.json())
    table = workspace.cli("list")
    assert "first" in table.stdout and "second" in table.stdout and "planned" in table.stdout

    cancelled = workspace.cli("cancel", str(first["id"]))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {first['id']} cancelled" in cancelled.stdout

    only_cancelled = workspace.cli("list", "--state", "cancelled", "--json").json()
    assert [j["id"] for j in only_cancelled] == [first["id"]]
    both = workspace.cli("list", "--state", "cancelled", "--state", "planned", "--json").json()
    assert len(both) == 2

    shown = workspace.cli("show", str(first["id"]), "--json")
    assert shown.returncode == 0
    document = shown.json()
    assert JOB_KEYS <= set(document)
    assert document["state"] == "cancelled"
    assert [e["new_state"] for e in document["events"]] == ["queued", "planned", "cancelled"]
    human = workspace.cli("show", str(first["id"]))
    assert "cancelled by user" in human.stdout

    again = workspace.cli("cancel", str(first["id"]))
    assert again.returncode == 2
    assert "already ended" in again.stderr
    events = workspace.cli("show", str(first["id"]), "--json").json()["events"]
    assert len(events) == 3


# plan and forecast ----------------------------------------------------------------------


def test_plan_json_is_a_dry_run_best_option_first(ws: tuple[Workspace, datetime]) -> None:
    workspace, dip_start = ws
    before = row_counts(workspace)
    result = workspace.cli("plan", "--duration", "2h", "--json")
    assert result.returncode == 0, result.stderr
    document = result.json()
    assert {"now", "options", "run_now", "saving_pct"} <= set(document)
    parse_utc(document["now"])
    options = document["options"]
    assert [o["region"] for o in options] == ["a", "b"]
    assert {"region", "start", "end", "intensity"} <= set(options[0])
    # Every number says which signal it is (csv regions are average, basis not declared).
    assert [(o["signal"], o["basis"]) for o in options] == [("average", None)] * 2
    assert parse_utc(options[0]["start"]) == dip_start
    assert parse_utc(options[0]["end"]) == dip_start + 2 * HOUR
    assert [o["intensity"] for o in options] == [50.0, 200.0]
    assert document["run_now"] == {"region": "a", "intensity": 300.0}
    assert document["saving_pct"] == pytest.approx(100 * (300 - 50) / 300)
    assert row_counts(workspace) == before

    human = workspace.cli("plan", "--duration", "2h", "--region", "b")
    assert human.returncode == 0
    assert "run now in b: 200 g/kWh" in human.stdout


def test_forecast_json_shows_the_newest_points_from_now(ws: tuple[Workspace, datetime]) -> None:
    workspace, dip_start = ws
    before = datetime.now(UTC)
    result = workspace.cli("forecast", "--region", "a", "--json")
    after = datetime.now(UTC)
    assert result.returncode == 0, result.stderr
    regions = result.json()["regions"]
    assert [(r["region"], r["provider"], r["zone"]) for r in regions] == [("a", "a", "a")]
    points = regions[0]["points"]
    assert {"start", "end", "intensity", "vintage"} <= set(points[0])
    # The first point is the slot holding the command's own "now".
    assert parse_utc(points[0]["start"]) <= after and parse_utc(points[0]["end"]) > before
    assert parse_utc(points[0]["start"]) > before - HOUR
    by_start = {parse_utc(p["start"]): p["intensity"] for p in points}
    assert by_start[dip_start] == 50.0 and by_start[dip_start - HOUR] == 300.0


def test_forecast_refresh_stores_each_point_once(ws: tuple[Workspace, datetime]) -> None:
    workspace, _ = ws
    before = row_counts(workspace)
    result = workspace.cli("forecast", "--refresh")
    assert result.returncode == 0, result.stderr
    assert "0 new" in result.stderr  # unchanged files: every point is already stored
    assert row_counts(workspace)["forecast_points"] == before["forecast_points"]


# bad input: exit 2, one message, nothing written ----------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("submit", "--duration", "1h", "--region", "mars", "--", "true"), "unknown region"),
        (("submit", "--duration", "2h", "--within", "1h", "--", "true"), "deadline too early"),
        (("submit", "--duration", "1h", "--deadline", "2001-01-01T00:00Z", "--", "true"),
         "deadline too early"),
        (("submit", "--duration", "1h"), "no command"),
        (("submit", "--duration", "1h", "--", ""), "no command"),
        (("submit", "--duration", "1 hour", "--", "true"), "bad duration"),
        (("submit", "--", "true"), "--duration"),
        (("submit", "--duration", "1h", "--deadline", "friday", "--", "true"), "bad time"),
        (("submit", "--duration", "1h", "--not-before", "soon", "--", "true"), "bad time"),
        (("submit", "--duration", "1h", "--deadline", "+3h", "--within", "3h", "--", "true"),
         "not both"),
        (("submit", "--duration", "1h", "--power", "-5", "--", "true"), "--power"),
        (("submit", "--duration", "1h", "--power", "inf", "--", "true"), "--power"),
        (("submit", "--duration", "1h", "--env", "NOEQUALS", "--", "true"), "--env"),
        (("plan", "--duration", "1h", "--region", "mars"), "unknown region"),
        (("plan", "--duration", "5h", "--within", "2h"), "deadline too early"),
        (("show", "999"), "no job with id 999"),
        (("cancel", "999"), "no job with id 999"),
        (("list", "--state", "sleeping"), "unknown state"),
        (("forecast", "--region", "mars"), "unknown region"),
    ],
)
def test_bad_input_exits_2_with_one_message_and_writes_nothing(
    shared: Workspace, args: tuple[str, ...], message: str
) -> None:
    before = row_counts(shared)
    result = shared.cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert row_counts(shared) == before


def test_unknown_option_is_bad_input(shared: Workspace) -> None:
    before = row_counts(shared)
    result = shared.cli("submit", "--duraton", "1h", "--", "true")
    assert result.returncode == 2
    assert "--duraton" in result.stderr
    assert row_counts(shared) == before


def test_an_unusable_database_is_one_message_and_exit_1(tmp_path: Path) -> None:
    workspace, _ = build(tmp_path)
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    text = workspace.config_path.read_text(encoding="utf-8")
    workspace.config_path.write_text(text.replace(str(workspace.db_path), str(directory)),
                                     encoding="utf-8")
    result = workspace.cli("list")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gridshift: database error: unable to open database file"]


def test_a_config_option_after_the_command_says_where_it_goes(shared: Workspace) -> None:
    before = row_counts(shared)
    result = subprocess.run(
        [sys.executable, "-m", "scheduler", "submit", "--config", str(shared.config_path),
         "--duration", "1h", "--", "true"],
        env=shared.env, cwd=shared.root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "gridshift: --config goes before the command: gridshift --config FILE submit ..."]
    assert row_counts(shared) == before
    # After `--` it belongs to the job's command.
    job = submit_json(shared, "--duration", "1h", "--", "echo", "--config", "x")
    assert job["argv"] == ["echo", "--config", "x"]


# output form ----------------------------------------------------------------------------


HELP_PAGES = [(), ("submit",), ("list",), ("show",), ("cancel",), ("plan",), ("forecast",),
              ("report",), ("status",), ("daemon",), ("db", "upgrade"), ("service", "install"),
              ("simulate",), ("simulate", "convert", "uk-fw48h"),
              ("simulate", "convert", "watttime")]


@pytest.mark.parametrize("command", HELP_PAGES, ids=lambda c: " ".join(c) or "gridshift")
def test_help_pages_name_values_not_python_types(shared: Workspace,
                                                 command: tuple[str, ...]) -> None:
    result = shared.cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert re.findall(r"<[a-z][a-z\[\], ]*>", result.stdout) == []


def test_help_names_job_ids_and_the_command_after_the_separator(shared: Workspace) -> None:
    usage = shared.cli("submit", "--help").stdout
    assert re.search(r"submit --duration DUR \[OPTIONS\] -- COMMAND \[ARG\]\.\.\. *\n", usage)
    for command in ("show", "cancel"):
        assert "JOB_ID" in shared.cli(command, "--help").stdout


def test_every_json_output_is_one_compact_line(shared: Workspace) -> None:
    commands = [("list",), ("show", "1"), ("plan", "--duration", "1h"), ("forecast",),
                ("report",), ("submit", "--duration", "1h", "--array", "0", "--", "true")]
    for command in commands:
        result = shared.cli(command[0], "--json", *command[1:])
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("\n") == 1 and ", " not in result.stdout, command
        json.loads(result.stdout)


def test_an_array_of_one_is_one_job(shared: Workspace) -> None:
    result = shared.cli("submit", "--duration", "1h", "--array", "7", "--", "true")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"array \d+: 1 job queued \(ids \d+\)\n", result.stdout)


# interruptible jobs -----------------------------------------------------------------------


def test_an_interruptible_job_through_submit_list_show_and_report(
    ws: tuple[Workspace, datetime]
) -> None:
    """Two runs (the second ended the job) and a plan of three chunks, as the daemon and the
    planner write them, seen through every output."""
    workspace, dip_start = ws
    job = submit_json(workspace, "--duration", "3h", "--region", "a", "--interruptible",
                      "checkpoint", "--max-pauses", "4", "--restart-overhead", "5m",
                      "--checkpoint-signal", "usr1", "--", "python3", "train.py")
    assert {key: job[key] for key in (
        "interruptible", "min_chunk_s", "max_pauses", "restart_overhead_s",
        "checkpoint_signal", "checkpoint_grace_s", "work_done_s", "run_count")} == {
        "interruptible": "checkpoint", "min_chunk_s": 1800, "max_pauses": 4,
        "restart_overhead_s": 300, "checkpoint_signal": "SIGUSR1", "checkpoint_grace_s": 120,
        "work_done_s": None, "run_count": None}
    job_id = job["id"]
    hour = floor_hour(datetime.now(UTC))
    chunks = [ChunkPlan("a", dip_start + i * HOUR, dip_start + (i + 1) * HOUR, 50.0 + i)
              for i in (0, 2, 4)]
    first_run = JobRun(job_id=job_id, run=1, region="a", started_at=hour - 3 * HOUR,
                       ended_at=hour - 2 * HOUR, outcome="checkpointed", work_s=3600.0,
                       energy_kwh=0.25)
    store = workspace.store()
    try:
        store.save_chunks({job_id: chunks})
        store.transition(job_id, [JobState.PLANNED], JobState.RUNNING, hour - 3 * HOUR,
                         "launched", started_at=hour - 3 * HOUR, run_region="a", run_count=1)
        with store.writing() as session:
            session.add(first_run)
        store.transition(job_id, [JobState.RUNNING], JobState.PAUSED, hour - 2 * HOUR,
                         "paused at the end of its chunk (checkpointed)", work_done_s=3600.0)
    finally:
        store.close()

    listed = workspace.cli("list")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(f"{job_id} ")]
    assert "paused" in row and "1h/3h, 1 run " in row
    shown = workspace.cli("show", str(job_id))
    assert shown.returncode == 0, shown.stderr
    assert ("checkpoint: chunks of at least 30m, at most 4 pauses, restart overhead 5m, "
            "signal SIGUSR1, grace 2m") in shown.stdout
    chunk_table = shown.stdout.split("planned chunks\n")[1].split("\n\n")[0].splitlines()
    assert chunk_table[2:] == [
        f"{format_local(c.start)}  {format_local(c.end)}  a       {c.intensity:.0f}"
        for c in chunks]
    run_table = shown.stdout.split("\nruns\n")[1].split("\n\n")[0].splitlines()
    assert len(run_table) == 3 and run_table[2].split()[0] == "1"
    assert run_table[2].endswith("0.25  -      checkpointed")

    store = workspace.store()
    try:
        store.transition(job_id, [JobState.PAUSED], JobState.RUNNING, hour - HOUR,
                         "relaunched from its checkpoint (run 2)", run_count=2)
        with store.writing() as session:
            session.add(JobRun(job_id=job_id, run=2, region="a", started_at=hour - HOUR,
                               ended_at=hour, outcome="succeeded", work_s=3600.0,
                               energy_kwh=0.5))
        store.transition(job_id, [JobState.RUNNING], JobState.SUCCEEDED, hour, "exited 0",
                         ended_at=hour, exit_code=0, work_done_s=7200.0, energy_kwh=0.75)
    finally:
        store.close()

    document = workspace.cli("show", str(job_id), "--json").json()
    assert document["chunks"] == [
        {"start": c.start.isoformat(), "end": c.end.isoformat(), "region": "a",
         "intensity": c.intensity} for c in chunks]
    assert document["runs"] == [
        {"run": 1, "start": (hour - 3 * HOUR).isoformat(), "end": (hour - 2 * HOUR).isoformat(),
         "region": "a", "outcome": "checkpointed", "work_s": 3600.0, "energy_kwh": 0.25,
         "actual_intensity": None},
        {"run": 2, "start": (hour - HOUR).isoformat(), "end": hour.isoformat(), "region": "a",
         "outcome": "succeeded", "work_s": 3600.0, "energy_kwh": 0.5,
         "actual_intensity": None}]
    assert (document["work_done_s"], document["run_count"]) == (7200.0, 2)
    everything = workspace.cli("list", "--all")
    assert "2h/3h, 2 runs" in everything.stdout

    reported = workspace.cli("report", "--json").json()
    [in_report] = [j for j in reported["jobs"] if j["id"] == job_id]
    del document["events"], document["environment_names"]  # show's own keys
    assert in_report == document
    assert reported["totals"]["average"]["energy_kwh"] == pytest.approx(0.75)
    rows = list(csv.DictReader(io.StringIO(workspace.cli("report", "--csv").stdout)))
    [row] = [r for r in rows if r["id"] == str(job_id)]
    assert json.loads(row["runs"]) == document["runs"]
    assert json.loads(row["chunks"]) == document["chunks"]
    assert row["interruptible"] == "checkpoint" and row["run_count"] == "2"
    text = workspace.cli("report")
    assert text.returncode == 0 and f"\n{job_id} " in text.stdout
