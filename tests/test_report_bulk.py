"""``gridshift report`` (table, ``--json``, ``--csv``) over many jobs, written by two
processes: the same bytes as one process writes, whatever the split, the filters or the
output stream, and the same when the child fails."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler import bulk, report
from scheduler.config import Config
from scheduler.report import SignalTotals
from scheduler.store import Store
from tests.conftest import Workspace

START = datetime(2026, 3, 1, tzinfo=UTC)
REGIONS = ("north", "south")
# Any report this long is written by two processes from the CLI.
MANY = bulk.PARALLEL_MIN_JOBS


def job_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Finished jobs in both regions; every third pair starts at the same second (the
    split must break ties by id), some awaiting actuals, some with text to escape."""
    rng = random.Random(seed)
    rows = []
    for number in range(count):
        region = REGIONS[number % 2]
        started = START + timedelta(minutes=7 * (number // 2 if number % 3 == 0 else number))
        reviewed = number % 5 != 0
        rows.append({
            "name": f'fit "ñ{number}", v2' if number % 11 == 0 else f"train-{number}",
            "state": "failed" if number % 13 == 0 else "succeeded",
            "argv": ["python", "train.py", f"--seed={number}"], "cwd": "/srv", "env": {},
            "duration_s": 3600, "not_before": started, "deadline": started + timedelta(days=1),
            "regions": [region], "power_watts": 300.0, "submitted_at": started,
            "planned_region": region, "planned_start": started,
            "planned_intensity": rng.uniform(50, 400) if number % 7 else None,
            "planned_vintage": started, "plan_note": "cleanest covered window",
            "signal": "marginal" if region == "south" else "average",
            "run_now_intensity": rng.uniform(100, 500), "run_region": region,
            "started_at": started, "ended_at": started + timedelta(minutes=50),
            "exit_code": 1 if number % 13 == 0 else 0, "pid": 1000 + number,
            "log_path": f"/logs/job-{number}.log", "deadline_missed": number % 17 == 0,
            "end_reason": "exit status 0", "energy_kwh": rng.uniform(0.01, 3.0) * 1e-4
            if number % 19 == 0 else rng.uniform(0.01, 3.0),
            "energy_method": "rapl", "energy_note": "whole host",
            "actual_intensity": rng.uniform(50, 450) if reviewed else None,
            "run_now_actual_intensity": rng.uniform(100, 500) if reviewed else None,
            "planned_window_actual_intensity": rng.uniform(50, 450) if reviewed else None,
            "intensity_estimated": (number % 23 == 0) if reviewed else None,
            "actuals_state": "done" if reviewed else "pending",
        })
    return rows


@pytest.fixture
def workspace(make_workspace: Callable[..., Workspace], tmp_path: Path) -> Workspace:
    body = []
    for region in REGIONS:
        path = tmp_path / f"{region}.csv"
        path.write_text("start,end,gco2_per_kwh\n", encoding="utf-8")
        signal = "marginal" if region == "south" else "average"
        body.append(f'[providers.{region}]\nkind = "csv"\npath = "{path}"\n'
                    f'signal = "{signal}"\n[regions.{region}]\nprovider = "{region}"\n'
                    f'zone = "{region}"\n')
    return make_workspace("\n".join(body))


@pytest.fixture
def store(workspace: Workspace) -> Iterator[Store]:
    opened = workspace.store()
    opened.insert_job_rows(job_rows(301, seed=7))
    yield opened
    opened.close()


def one_process(store: Store, config: Config, form: bulk.Form, **filters: Any) -> str:
    out = io.StringIO()
    bulk.write(store, config, form=form, out=out, min_jobs=10**9, **_filters(filters))
    return out.getvalue()


def two_processes(store: Store, config: Config, form: bulk.Form, out: Any = None,
                  **filters: Any) -> str:
    out = out if out is not None else io.StringIO()
    bulk.write(store, config, form=form, out=out, min_jobs=2, **_filters(filters))
    return out.getvalue() if isinstance(out, io.StringIO) else ""


def _filters(given: dict[str, Any]) -> dict[str, Any]:
    return {"since": given.get("since"), "until": given.get("until"),
            "regions": given.get("regions", [])}


@pytest.fixture(autouse=True)
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the two-process path on a one-CPU machine too (it only runs slower there)."""
    monkeypatch.setattr(bulk, "_can_fork", lambda: True)


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the children bulk.write forks (the real fork, counted)."""
    children: list[int] = []
    real_fork = os.fork

    def counted_fork() -> int:
        child = real_fork()
        if child:
            children.append(child)
        return child

    monkeypatch.setattr(bulk.os, "fork", counted_fork)
    return children


@pytest.mark.parametrize("form", ["json", "csv", "text"])
@pytest.mark.parametrize("filters", [
    {},
    {"regions": ["south"]},
    {"since": START + timedelta(hours=5), "until": START + timedelta(hours=20)},
], ids=["all", "region", "period"])
def test_two_processes_write_the_bytes_one_process_writes(
        workspace: Workspace, store: Store, forks: list[int], form: bulk.Form,
        filters: dict[str, Any]) -> None:
    config = workspace.config()
    expected = one_process(store, config, form, **filters)
    assert not forks
    assert two_processes(store, config, form, **filters) == expected
    assert len(forks) == 1
    if form == "json":
        document = json.loads(expected)
        assert len(document["jobs"]) > 10
        assert [job["id"] for job in document["jobs"]] == [
            job["id"] for job in sorted(document["jobs"],
                                        key=lambda job: (job["started_at"], job["id"]))]


def test_two_processes_copy_utf8_bytes_into_a_byte_stream(
        workspace: Workspace, store: Store, tmp_path: Path) -> None:
    config = workspace.config()
    expected = one_process(store, config, "csv")
    assert "ñ" in expected
    path = tmp_path / "out.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        two_processes(store, config, "csv", out=out)
    assert path.read_text(encoding="utf-8") == expected


def test_totals_of_the_halves_equal_those_of_the_whole(workspace: Workspace,
                                                       store: Store) -> None:
    config = workspace.config()
    whole = report.build(store, config, None, None, [])
    middle = store.report_middle(None, None, [])
    assert middle is not None
    halves = [report.build(store, config, None, None, [], part=(side, middle))
              for side in ("before", "from")]
    assert [h.job_count for h in halves] == [150, 151]
    assert [*halves[0].columns["id"], *halves[1].columns["id"]] == list(whole.columns["id"])
    merged = report.merged_totals(halves[0].totals, halves[1].totals)
    assert {s: t.as_json() for s, t in merged.items()} == {
        s: t.as_json() for s, t in whole.totals.items()}


@pytest.mark.parametrize("form", ["json", "text"])
def test_a_failed_child_leaves_its_half_to_the_parent(
        workspace: Workspace, store: Store, monkeypatch: pytest.MonkeyPatch,
        form: bulk.Form) -> None:
    config = workspace.config()
    expected = one_process(store, config, form)
    parent = os.getpid()
    real_build = report.build

    def build_failing_in_the_child(*args: Any, **kwargs: Any) -> report.Report:
        if os.getpid() != parent:
            raise OSError("disk full")
        return real_build(*args, **kwargs)

    monkeypatch.setattr(report, "build", build_failing_in_the_child)
    assert two_processes(store, config, form) == expected


def test_short_reports_stay_in_one_process(workspace: Workspace, store: Store) -> None:
    assert store.report_middle(None, None, [], min_jobs=302) is None
    assert store.report_middle(None, None, [], min_jobs=301) is not None


def test_merged_totals_sum_exactly_whatever_the_split() -> None:
    values = [0.1] * 10 + [1e16, 1.0, -1e16]
    whole = SignalTotals(energy_values=values, compared=[(v, 2 * v) for v in values])
    for cut in range(len(values) + 1):
        parts = (SignalTotals(energy_values=values[:cut],
                              compared=[(v, 2 * v) for v in values[:cut]]),
                 SignalTotals(energy_values=values[cut:],
                              compared=[(v, 2 * v) for v in values[cut:]]))
        merged = parts[0].merged(parts[1])
        assert (merged.energy_kwh, merged.saved_g) == (whole.energy_kwh, whole.saved_g) == (
            2.0, 2.0)


def test_cli_report_over_many_jobs_equals_one_process(workspace: Workspace) -> None:
    """The CLI forks from MANY jobs on, and its stdout is the one-process document."""
    store = workspace.store()
    store.insert_job_rows(job_rows(MANY + 1, seed=11))
    expected = {form: one_process(store, workspace.config(), form)
                for form in ("json", "text")}
    assert store.report_middle(None, None, [], min_jobs=MANY) is not None
    store.close()
    for form, args in (("json", ["--json"]), ("text", [])):
        result = workspace.cli("report", *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected[form]


def test_a_reader_that_leaves_early_gets_no_error_message(workspace: Workspace,
                                                          store: Store) -> None:
    """`gridshift report --json | head -c 100`: the command stops without a traceback or
    a message about the broken pipe."""
    command = [sys.executable, "-m", "scheduler", "--config", str(workspace.config_path),
               "report", "--json"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=workspace.env) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.read(100).startswith(b'{"jobs":[{')
        process.stdout.close()
        stderr = process.stderr.read()
        # 1 when the pipe broke under a write; 0 when the rest had fit in the pipe already.
        assert process.wait(timeout=60) in (0, 1)
    assert stderr == b""
