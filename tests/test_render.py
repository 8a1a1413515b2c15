"""Every text output rendered from its JSON document, as inert text.

The renderers get the documents the commands print with ``--json`` (built here, or from a
real SQLite store for the job documents) and their output is read back from stdout and
stderr. Hostile strings (rich markup, terminal escapes) must come out as literal text.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler import render
from scheduler.records import ChunkPlan, NewJob
from scheduler.store import Store
from scheduler.timespec import format_local
from tests.conftest import Workspace, create_csv_workspace, floor_hour, hourly

NOW = datetime(2026, 11, 30, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
ESC_CLEAR = "\x1b[2J"
ESC_TITLE = "\x1b]0;title\x07"
# (what a user typed, how every output must show it)
HOSTILE = [
    ("[red]x[/red]", "[red]x[/red]"),
    ("[link=https://example.com]click[/link]", "[link=https://example.com]click[/link]"),
    ("x[/]", "x[/]"),
    ("sweep[lr]", "sweep[lr]"),
    ("data.paths=[/data/a,/data/b]", "data.paths=[/data/a,/data/b]"),
    (f"a{ESC_CLEAR}b", "a\\x1b[2Jb"),
    (f"t{ESC_TITLE}", "t\\x1b]0;title\\x07"),
    ("cr\rtab\tnl\nend", "cr\\x0dtab\\x09nl\\x0aend"),
    ("c1\x9bdel\x7f", "c1\\x9bdel\\x7f"),
    ("bidi\u202eevil", "bidi\\u202eevil"),
]
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\x9b", "\x7f", "\u202e")


def job_document(**changes: Any) -> dict[str, Any]:
    """A planned job's document as ``render.job_json`` builds it."""
    document: dict[str, Any] = {
        "id": 1, "name": "train", "state": "planned", "argv": ["python", "train.py"],
        "cwd": "/home/alice/project", "duration_s": 3600,
        "not_before": NOW.isoformat(), "deadline": (NOW + 24 * HOUR).isoformat(),
        "regions": ["north", "south"], "power_watts": 300.0, "signal": "average",
        "planned_region": "north", "planned_start": (NOW + 5 * HOUR).isoformat(),
        "planned_intensity": 50.0, "planned_vintage": NOW.isoformat(),
        "plan_note": "cleanest covered window", "run_now_intensity": 300.0,
        "submitted_at": NOW.isoformat(), "run_region": None, "started_at": None,
        "ended_at": None, "exit_code": None, "pid": None, "log_path": None,
        "deadline_missed": False, "end_reason": None,
        "planned_end": (NOW + 6 * HOUR).isoformat(), "energy_kwh": None,
        "energy_method": None, "energy_note": None, "actual_intensity": None,
        "intensity_estimated": None, "actuals_state": None, "scheduled_emissions_g": None,
        "actual_emissions_g": None, "run_now_emissions_g": None, "saved_g": None,
        "user": "alice", "uid": 1000, "array_id": None, "array_index": None,
        "plan_reason": render.USUAL_PLAN_REASON, "plan_left_out": None,
        "plan_replayed": False,
    }
    document.update(changes)
    return document


def show_document(**changes: Any) -> dict[str, Any]:
    document = job_document(**changes)
    document.setdefault("events", [{"at": NOW.isoformat(), "old_state": None,
                                    "new_state": "queued", "reason": "submitted"}])
    document.setdefault("environment_names", ["HOME", "PATH"])
    return document


def array_tasks(array_id: int, indices: list[int], state_of: Callable[[int], str]
                ) -> list[dict[str, Any]]:
    return [job_document(id=array_id + position, name="sweep", array_id=array_id,
                         array_index=index, state=state_of(index),
                         planned_start=(NOW + (5 + position % 3) * HOUR).isoformat())
            for position, index in enumerate(indices)]


def assert_no_raw_controls(text: str) -> None:
    for control in RAW_CONTROLS:
        assert control not in text, repr(text)


# inert text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("typed", "shown"), HOSTILE)
def test_inert_shows_markup_as_text_and_escapes_controls(typed: str, shown: str) -> None:
    assert render.inert(typed) == shown


def test_inert_keeps_printable_unicode_and_undecodable_bytes() -> None:
    text = "café 東京 🙂 caf\udce9"  # the last: a non-UTF-8 byte of an argv, as Python keeps it
    assert render.inert(text) == text


@pytest.mark.parametrize(("typed", "shown"), HOSTILE)
def test_list_shows_names_and_users_literally(typed: str, shown: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    render.print_jobs([job_document(name=typed, user=typed, planned_region=typed)])
    out = capsys.readouterr().out
    assert_no_raw_controls(out)
    header, _rule, row = out.splitlines()
    assert row.count(shown) == 3
    assert len(header.split()) == len(render.LIST_COLUMNS)


@pytest.mark.parametrize(("typed", "shown"), HOSTILE)
def test_show_prints_hostile_names_argv_and_reasons_literally(
        typed: str, shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    events = [{"at": NOW.isoformat(), "old_state": None, "new_state": "queued",
               "reason": typed}]
    render.print_job_detail(show_document(name=typed, cwd=typed, plan_note=typed,
                                          argv=["python", "train.py", typed], events=events))
    out = capsys.readouterr().out
    assert_no_raw_controls(out)
    fields = dict(line.split(None, 1) for line in out.splitlines()[:5])
    assert fields["name"] == shown
    assert out.count(shown) >= 4  # name, cwd, plan note, history reason (and the command)


def test_show_prints_the_command_so_it_can_be_pasted(
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["python", "train.py", "data.paths=[/data/a,/data/b]", "it's here", "sweep[lr]",
            "$HOME", "a b"]
    render.print_job_detail(show_document(argv=argv))
    command = _field(capsys.readouterr().out, "command")
    assert shlex.split(command) == argv
    pasted = subprocess.run(["sh", "-c", f"printf '%s\\n' {command}"], capture_output=True,
                            text=True, check=True)
    assert pasted.stdout.splitlines() == argv


def test_show_command_with_escapes_pastes_into_bash_as_the_same_bytes(
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["echo", ESC_CLEAR, ESC_TITLE, "back\\slash 'q'"]
    render.print_job_detail(show_document(argv=argv))
    out = capsys.readouterr().out
    assert_no_raw_controls(out)
    command = _field(out, "command")
    assert "$'\\x1b[2J'" in command
    pasted = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], capture_output=True,
                            text=True, check=True)
    assert pasted.stdout.split("\0")[:-1] == argv


def _field(page: str, label: str) -> str:
    for line in page.splitlines():
        name, _, value = line.partition("  ")
        if name.strip() == label:
            return value.strip()
    raise AssertionError(f"no {label} line in {page!r}")


def test_show_energy_names_its_method_once(capsys: pytest.CaptureFixture[str]) -> None:
    declared = "declared 300 W x 1 s wall time (no energy meter on this machine)"
    render.print_job_detail(show_document(energy_kwh=300 / 3.6e6, energy_method="declared",
                                          energy_note=declared))
    render.print_job_detail(show_document(energy_kwh=0.5, energy_method="nvml",
                                          energy_note="GPU 0 counter"))
    first, second = (_field(page, "energy")
                     for page in capsys.readouterr().out.split("\n\nhistory\n")[:2])
    assert first == f"8.333e-05 kWh ({declared})"
    assert "declared: declared" not in first
    assert second == "0.5 kWh (nvml: GPU 0 counter)"


def test_show_names_user_and_array(capsys: pytest.CaptureFixture[str]) -> None:
    render.print_job_detail(show_document(array_id=40, array_index=7))
    render.print_job_detail(show_document(user=None, uid=None))
    first, old = capsys.readouterr().out.split("\n\nhistory\n")[:2]
    assert _field(first, "user") == "alice (uid 1000)"
    assert _field(first, "array").startswith("40_7 ")
    assert _field(old, "user").startswith("- ")


# the job documents, from a real store -------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'gridshift.db'}")


def new_job(**changes: Any) -> NewJob:
    fields: dict[str, Any] = {
        "name": "train", "argv": ["python", "train.py"], "cwd": "/work",
        "env": {"WANDB_API_KEY": "wandb-value-9f3c"}, "duration_s": 3600,
        "not_before": NOW, "deadline": NOW + 24 * HOUR, "regions": ["north"],
        "power_watts": 300.0, "owner_uid": 1000, "owner_gid": 1000, "owner_name": "alice",
        "environment": {"PATH": "/usr/bin", "HF_TOKEN": "hf-secret-7a1e", "HOME": "/home/a"},
        "umask": 0o022,
    }
    fields.update(changes)
    return NewJob(**fields)


def test_show_lists_environment_names_and_never_values(
        store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    job = store.add_job(new_job(), NOW)
    document = render.show_json(store.get_job(job.id), store.job_events(job.id))
    assert document["environment_names"] == ["HF_TOKEN", "HOME", "PATH", "WANDB_API_KEY"]
    assert (document["user"], document["uid"]) == ("alice", 1000)
    render.print_job_detail(document)
    render.print_json(document)
    render.print_jobs([render.job_json(store.get_job(job.id))])
    printed = capsys.readouterr()
    assert "HF_TOKEN, HOME, PATH, WANDB_API_KEY" in printed.out
    for secret in ("hf-secret-7a1e", "wandb-value-9f3c", "/usr/bin", "/home/a"):
        assert secret not in printed.out + printed.err


def test_job_document_has_owner_and_array_keys_null_for_old_jobs(store: Store) -> None:
    task = render.job_json(store.add_job(new_job(array_id=5, array_index=3), NOW))
    old = render.job_json(store.add_job(new_job(owner_uid=None, owner_gid=None,
                                                owner_name=None, environment=None), NOW))
    assert {k: task[k] for k in ("user", "uid", "array_id", "array_index")} == {
        "user": "alice", "uid": 1000, "array_id": 5, "array_index": 3}
    assert {k: old[k] for k in ("user", "uid", "array_id", "array_index")} == dict.fromkeys(
        ("user", "uid", "array_id", "array_index"))
    assert "environment" not in task and "env" not in task


# list ---------------------------------------------------------------------------------------


def list_rows(out: str) -> list[list[str]]:
    """The cells of each row (columns are separated by two or more spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[2:]]


def test_list_collapses_an_array_to_one_row(capsys: pytest.CaptureFixture[str]) -> None:
    tasks = array_tasks(12, list(range(100)),
                        lambda index: "running" if index < 3 else "planned")
    render.print_jobs([job_document(id=1, name="alone"), *tasks, job_document(id=200)])
    rows = list_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["1", "12_[0-99]", "200"]
    array_row = rows[1]
    assert array_row[1:5] == ["alice", "sweep", "planned 97, running 3", "north"]
    assert array_row[5] == format_local(NOW + 5 * HOUR)  # the earliest start of its tasks


def test_list_writes_gaps_in_array_indices_as_slurm_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    render.print_jobs(array_tasks(7, [1, 3, 5, 6, 7, 8, 9], lambda _: "queued"))
    assert list_rows(capsys.readouterr().out)[0][0] == "7_[1,3,5-9]"


def test_list_expand_shows_every_task_with_its_own_id(
        capsys: pytest.CaptureFixture[str]) -> None:
    tasks = array_tasks(12, list(range(5)), lambda _: "planned")
    render.print_jobs(tasks, expand=True)
    rows = list_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == [f"{12 + i} (12_{i})" for i in range(5)]


def test_list_of_100000_documents_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    documents = [job_document(id=i, name=f"job{i}") for i in range(1, 100_001)]
    render.print_jobs(documents)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 100_000
    assert lines[-1].split()[:3] == ["100000", "alice", "job100000"]


# submit -------------------------------------------------------------------------------------


def test_submit_line_and_note_are_inert(capsys: pytest.CaptureFixture[str]) -> None:
    render.print_submitted(job_document(id=9, plan_note=f"moved {ESC_CLEAR}[b]",
                                        plan_reason="covered_window|moved_for_slot"))
    printed = capsys.readouterr()
    assert printed.out == (f"job 9 queued: runs in north at {format_local(NOW + 5 * HOUR)}, "
                           "50 g/kWh (run now: 300 g/kWh)\n")
    assert printed.err == "note: moved \\x1b[2J[b]\n"


def test_submit_of_an_array_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    render.print_submitted({"array_id": 30, "jobs": list(range(30, 130))})
    render.print_submitted({"array_id": 5, "jobs": [job_document(id=i) for i in (5, 6, 8)]})
    assert capsys.readouterr().out.splitlines() == [
        "array 30: 100 jobs queued (ids 30-129)", "array 5: 3 jobs queued (ids 5-6,8)"]


@pytest.mark.parametrize(("typed", "shown"), HOSTILE)
def test_errors_and_messages_are_one_inert_line(typed: str, shown: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    render.error(f"no such region {typed}")
    render.message(f"wrote {typed}")
    assert capsys.readouterr().err.splitlines() == [f"gridshift: no such region {shown}",
                                                    f"wrote {shown}"]


# status, forecast, plan ---------------------------------------------------------------------


def status_document(text: str) -> dict[str, Any]:
    return {
        "now": NOW.isoformat(), "healthy": False,
        "daemon": {"running": True, "healthy": False, "problem": f"heartbeat is stale {text}",
                   "pid": 4242, "hostname": text, "started_at": NOW.isoformat(),
                   "heartbeat_at": NOW.isoformat(), "heartbeat_age_s": 125.0,
                   "stopped_at": None},
        "refreshes": [{"provider": text, "zone": text, "kind": "forecast",
                       "at": NOW.isoformat(), "ok": False, "message": text, "points": 0,
                       "horizon_end": None, "last_success_at": None}],
        "queue": {"queued": 0, "planned": 2, "running": 1},
        "next_launches": [{"id": 3, "name": text, "region": "north",
                           "planned_start": NOW.isoformat(),
                           "deadline": (NOW + HOUR).isoformat(),
                           "latest_start": NOW.isoformat()}],
    }


@pytest.mark.parametrize(("typed", "shown"), HOSTILE)
def test_status_shows_provider_text_and_names_literally(
        typed: str, shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    render.print_status(status_document(typed))
    out = capsys.readouterr().out
    assert_no_raw_controls(out)
    lines = out.splitlines()
    assert lines[0] == (f"daemon: running, pid 4242 on {shown} since {format_local(NOW)}; "
                        f"last heartbeat 2m5s ago - heartbeat is stale {shown}")
    assert f"FAILING: {shown}" in out
    assert "queue: queued 0, planned 2, running 1" in lines
    assert lines[-1].startswith(f"3   {shown}")


def forecast_document(refreshed: bool) -> dict[str, Any]:
    first = floor_hour(NOW)
    values = [300.0, 250.0, 50.0, 120.0]
    document: dict[str, Any] = {"regions": [{
        "region": "north", "provider": "em", "zone": "DE", "signal": "average",
        "units": "gco2_per_kwh",
        "points": [{"start": (first + i * HOUR).isoformat(),
                    "end": (first + (i + 1) * HOUR).isoformat(), "intensity": v,
                    "vintage": NOW.isoformat(), "signal": "average", "basis": "lifecycle",
                    "estimated": False} for i, v in enumerate(values)],
    }]}
    if refreshed:
        document["refresh"] = [{
            "provider": "em", "zone": "DE", "kind": "forecast", "ok": True, "points": 4,
            "stored": 4, "horizon_end": (first + 4 * HOUR).isoformat(),
            "vintage": NOW.isoformat(), "error": None, "note": None}]
    return document


def test_forecast_prints_its_points_with_bars(capsys: pytest.CaptureFixture[str]) -> None:
    render.print_forecast(forecast_document(refreshed=False))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "north (em zone DE; average intensity (lifecycle), gCO2eq/kWh)"
    assert len(lines) == 3 + 4
    assert lines[3].split("  ")[0] == format_local(floor_hour(NOW))
    assert "#" * 20 in lines[3] and "300" in lines[3]


def test_forecast_after_refresh_prints_a_summary_not_every_point(
        capsys: pytest.CaptureFixture[str]) -> None:
    render.print_forecast(forecast_document(refreshed=True))
    printed = capsys.readouterr()
    assert printed.err.startswith("em zone DE: 4 points (4 new), horizon to ")
    assert printed.out.splitlines() == [
        "north (em zone DE; average intensity (lifecycle), gCO2eq/kWh): 4 points up to "
        f"{format_local(floor_hour(NOW) + 4 * HOUR)}; now 300, lowest 50 at "
        f"{format_local(floor_hour(NOW) + 2 * HOUR)}"]
    render.print_forecast(forecast_document(refreshed=True), points=True)
    assert len(capsys.readouterr().out.splitlines()) == 3 + 4


def test_forecast_refresh_failure_is_one_inert_line(capsys: pytest.CaptureFixture[str]) -> None:
    document = {"regions": [], "refresh": [{
        "provider": "em", "zone": "DE", "kind": "forecast", "ok": False, "points": 0,
        "stored": 0, "horizon_end": None, "vintage": None,
        "error": f"HTTP 401 from api.example: [red]{ESC_TITLE}", "note": None}]}
    render.print_forecast(document)
    assert capsys.readouterr().err == (
        "em zone DE: FAILED: HTTP 401 from api.example: [red]\\x1b]0;title\\x07\n")


def test_plan_prints_options_run_now_and_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    start = NOW + 5 * HOUR
    render.print_plan({
        "now": NOW.isoformat(), "signal": "average",
        "options": [{"region": "a", "start": start.isoformat(),
                     "end": (start + 2 * HOUR).isoformat(), "intensity": 50.0,
                     "covered": True, "signal": "average", "basis": None},
                    {"region": "b[x]", "start": start.isoformat(),
                     "end": (start + 2 * HOUR).isoformat(), "intensity": 200.0,
                     "covered": False, "signal": "average", "basis": "lifecycle"}],
        "run_now": {"region": "a", "intensity": 300.0}, "saving_pct": 100 * 250 / 300,
        "left_out": ["index"]})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "cleanest window per region (average intensity, gCO2eq/kWh)"
    assert lines[3].split() == ["a", *format_local(start).split(),
                                *format_local(start + 2 * HOUR).split(), "50", "unknown",
                                "covered"]
    assert lines[4].split()[0] == "b[x]" and lines[4].endswith("lifecycle  missing")
    assert lines[-2] == "run now in a: 300 g/kWh; best option saves 83%"
    assert lines[-1].startswith("not ranked: index (a percentile index")


# the real CLI -------------------------------------------------------------------------------


def test_hostile_names_and_argv_never_break_list_show_or_status(tmp_path: Path) -> None:
    """The newcomer's crash: ``x[/]`` as a name made every later ``list`` die."""
    first = floor_hour(datetime.now(UTC)) - 2 * HOUR
    workspace: Workspace = create_csv_workspace(tmp_path, {"a": hourly(first, [200.0] * 34)})
    names = [typed for typed, _ in HOSTILE]
    ids = []
    for typed in names:
        submitted = workspace.cli("submit", "--duration", "1h", "--name", typed, "--",
                                  "python", "train.py", typed)
        assert submitted.returncode == 0, submitted.stderr
        assert_no_raw_controls(submitted.stdout + submitted.stderr)
        ids.append(int(submitted.stdout.split()[1]))
    listed = workspace.cli("list")
    assert listed.returncode == 0, listed.stderr
    assert_no_raw_controls(listed.stdout)
    for _, shown in HOSTILE:
        assert shown in listed.stdout
    for job_id, (typed, shown) in zip(ids, HOSTILE, strict=True):
        page = workspace.cli("show", str(job_id))
        assert page.returncode == 0, page.stderr
        assert_no_raw_controls(page.stdout)
        assert _field(page.stdout, "name") == shown
        as_json = workspace.cli("show", str(job_id), "--json").json()
        assert as_json["name"] == typed and as_json["argv"][-1] == typed
    status = workspace.cli("status")
    assert status.returncode == 1  # no daemon ran: still prints its page
    assert_no_raw_controls(status.stdout)


def test_importing_render_loads_no_heavy_library() -> None:
    code = ("import sys, scheduler.render\n"
            "print([m for m in ('sqlalchemy', 'numpy', 'pandas', 'rich') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parent.parent)
    assert json.loads(result.stdout.replace("'", '"')) == []


def test_json_is_one_compact_ascii_line(capsys: pytest.CaptureFixture[str]) -> None:
    render.print_json({"a": [1, "é"]})
    assert capsys.readouterr().out == '{"a":[1,"\\u00e9"]}\n'



def test_report_table_shows_names_and_regions_inert() -> None:
    from scheduler.report import table

    started = NOW.isoformat()
    one: dict[str, list[Any]] = {
        "id": [1], "name": [f"x[/]{ESC_TITLE}"], "state": ["succeeded"],
        "run_region": [f"r{ESC_CLEAR}"], "started_at": [started],
        "ended_at": [(NOW + HOUR).isoformat()], "energy_kwh": [0.3],
        "energy_method": ["declared"], "planned_intensity": [50.0],
        "actual_intensity": [60.0], "intensity_estimated": [False],
        "scheduled_emissions_g": [15.0], "actual_emissions_g": [18.0],
        "run_now_emissions_g": [90.0], "saved_g": [72.0],
        "interruptible": [None], "work_done_s": [None], "restart_overhead_s": [None],
        "run_count": [None],
    }
    assert set(one) == set(table.TABLE_READS)  # a page holds every column the table reads
    cells = table.page_cells(one)
    assert cells[1] == ["x[/]\\x1b]0;title\\x07"]
    assert cells[3] == ["r\\x1b[2J"]


def test_list_aligns_wide_characters_by_terminal_columns(
        capsys: pytest.CaptureFixture[str]) -> None:
    import unicodedata

    render.print_jobs([job_document(id=1, name="東京の学習"), job_document(id=2, name="ab")])
    lines = capsys.readouterr().out.splitlines()

    def columns_before(line: str, text: str) -> int:
        head = line[:line.index(text)]
        return sum(2 if unicodedata.east_asian_width(c) == "W" else 1 for c in head)

    assert columns_before(lines[2], "planned") == columns_before(lines[3], "planned")


# interruptible jobs -------------------------------------------------------------------------


def interruptible_document(**changes: Any) -> dict[str, Any]:
    document = show_document(duration_s=6 * 3600, interruptible="suspend", min_chunk_s=1800,
                             max_pauses=None, restart_overhead_s=0, checkpoint_signal=None,
                             checkpoint_grace_s=None, work_done_s=None, run_count=None,
                             chunks=[], runs=[])
    document.update(changes)
    return document


def test_list_shows_an_interruptible_jobs_progress_where_its_duration_goes(
        capsys: pytest.CaptureFixture[str]) -> None:
    render.print_jobs([
        job_document(id=1),
        interruptible_document(id=2),
        interruptible_document(id=3, state="paused", work_done_s=7800.0, run_count=1),
        interruptible_document(id=4, state="running", work_done_s=7800.0, run_count=3),
    ])
    rows = list_rows(capsys.readouterr().out)
    assert [(row[0], row[3], row[6]) for row in rows] == [
        ("1", "planned", "1h"), ("2", "planned", "0s/6h, 0 runs"),
        ("3", "paused", "2h10m/6h, 1 run"), ("4", "running", "2h10m/6h, 3 runs")]


def test_an_arrays_paused_tasks_are_counted_after_its_running_ones(
        capsys: pytest.CaptureFixture[str]) -> None:
    states = {0: "paused", 1: "running", 2: "planned"}
    render.print_jobs(array_tasks(7, [0, 1, 2], states.__getitem__))
    assert list_rows(capsys.readouterr().out)[0][3] == "planned 1, running 1, paused 1"


def test_show_of_a_suspend_job_names_its_settings_and_its_run_in_progress(
        capsys: pytest.CaptureFixture[str]) -> None:
    run = {"run": 1, "start": NOW.isoformat(), "end": None, "region": "north\x1b[2J",
           "outcome": None, "work_s": None, "energy_kwh": None, "actual_intensity": None}
    render.print_job_detail(interruptible_document(state="running", max_pauses=1,
                                                   run_count=1, runs=[run]))
    page = capsys.readouterr().out
    assert _field(page, "interruptible") == ("suspend: chunks of at least 30m, "
                                             "at most 1 pause")
    assert _field(page, "progress") == "0s/6h, 1 run"
    chunks = page.split("planned chunks\n")[1].split("\n\n")[0].splitlines()
    assert chunks == ["start  end  region  g/kWh", "-----  ---  ------  -----"]
    runs = page.split("\nruns\n")[1].split("\n\n")[0].splitlines()
    assert re.split(r"\s{2,}", runs[2]) == ["1", format_local(NOW), "-", "north\\x1b[2J", "-",
                                            "-", "running"]
    assert_no_raw_controls(page)


def test_a_job_run_as_one_block_shows_no_interruptible_lines(
        capsys: pytest.CaptureFixture[str]) -> None:
    render.print_job_detail(show_document(interruptible=None, chunks=[], runs=[]))
    page = capsys.readouterr().out
    assert "interruptible" not in page and "planned chunks" not in page


def test_an_interruptible_jobs_planned_end_is_its_chunks_end(store: Store) -> None:
    job = store.add_job(new_job(duration_s=6 * 3600, interruptible="suspend",
                                min_chunk_s=1800), NOW)
    store.update_job_fields(job.id, planned_region="north", planned_start=NOW + HOUR)
    store.save_chunks({job.id: [ChunkPlan("north", NOW + HOUR, NOW + 3 * HOUR, 80.0),
                                ChunkPlan("north", NOW + 5 * HOUR, NOW + 9 * HOUR, 90.0)]})
    document = render.job_json(store.get_job(job.id))
    assert (document["planned_end"], document["chunk_end"]) == (
        (NOW + 3 * HOUR).isoformat(), (NOW + 3 * HOUR).isoformat())
    whole = render.job_json(store.add_job(new_job(), NOW))
    store.update_job_fields(whole["id"], planned_region="north", planned_start=NOW)
    assert render.job_json(store.get_job(whole["id"]))["planned_end"] == (
        NOW + HOUR).isoformat()


def test_submit_of_an_interruptible_job_says_where_its_first_chunk_ends(
        capsys: pytest.CaptureFixture[str]) -> None:
    render.print_submitted(interruptible_document(id=9, chunk_end=(NOW + 7 * HOUR).isoformat()))
    assert capsys.readouterr().out == (
        f"job 9 queued: runs in north at {format_local(NOW + 5 * HOUR)} (first chunk, until "
        f"{format_local(NOW + 7 * HOUR)}), 50 g/kWh (run now: 300 g/kWh)\n")
