"""Many writers at once: 8 submitting processes and the daemon; cancel racing a launch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.models import FINISHED, JobState
from tests.conftest import Workspace, floor_hour, hourly
from tests.daemon_process import (
    DaemonProcess,
    job,
    jobs,
    launches,
    reap_daemons,  # noqa: F401 (autouse: kills leftovers)
    submitted_id,
    wait_finished,
)

pytestmark = pytest.mark.slow

SUBMITTERS = 8
JOBS_EACH = 250

# Each submitter runs the real `gridshift submit` command JOBS_EACH times in one process
# (starting 2,000 interpreters would measure Python's start-up, not the database).
SUBMITTER = """
import contextlib, io, json, sys
import typer.main
from scheduler.cli import app
command = typer.main.get_command(app)
config, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(out, "w", encoding="utf-8") as results:
    for _ in range(count):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = command.main(["--config", config, "submit", "--duration", "1h",
                                     "--not-before", "+1d", "--within", "3d", "--", "true"],
                                    standalone_mode=False)
            except BaseException as error:
                code = f"{type(error).__name__}: {error}"
        results.write(json.dumps({"code": code or 0, "stdout": stdout.getvalue(),
                                  "stderr": stderr.getvalue()}) + "\\n")
"""


def forecast() -> dict[str, list[tuple[datetime, datetime, float]]]:
    start = floor_hour(datetime.now(UTC)) - timedelta(hours=1)
    return {"a": hourly(start, [150.0 + (i % 7) * 10 for i in range(100)])}


@pytest.mark.timeout(900)
def test_eight_processes_submit_2000_jobs_while_the_daemon_runs(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(forecast(), slots=4, daemon='tick = "1s"')
    daemon = DaemonProcess(ws)
    daemon.wait_started()
    outputs = [ws.root / f"submitter-{n}.jsonl" for n in range(SUBMITTERS)]
    submitters = [
        subprocess.Popen([sys.executable, "-c", SUBMITTER, str(ws.config_path), str(JOBS_EACH),
                          str(out)], env=ws.env, cwd=ws.root)
        for out in outputs
    ]
    for submitter in submitters:
        assert submitter.wait(600) == 0
    assert daemon.process.poll() is None, daemon.output()
    assert daemon.stop() == 0

    results = [json.loads(line) for out in outputs
               for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(results) == SUBMITTERS * JOBS_EACH
    failures = [r for r in results if r["code"] != 0]
    assert failures == []
    assert not any("locked" in r["stderr"] for r in results)
    ids = [submitted_id(r["stdout"]) for r in results]
    assert len(set(ids)) == len(ids) == SUBMITTERS * JOBS_EACH
    stored = jobs(ws)
    assert sorted(j.id for j in stored) == sorted(ids)
    assert {j.state for j in stored} == {JobState.PLANNED}
    assert "locked" not in daemon.output()


def test_cancel_racing_a_launch_has_exactly_one_outcome(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """Jobs become due together while `cancel` runs for each of them around that moment."""
    ws = csv_workspace(forecast(), slots=10, daemon='tick = "1s"\nkill_grace = "2s"')
    record = ws.root / "launches"
    command = ["sh", "-c", f'echo "$GRIDSHIFT_JOB_ID" >> {record}; sleep 20']
    ids = [submitted_id(ws.cli("submit", "--duration", "1m", "--not-before", "+4s", "--",
                               *command).stdout) for _ in range(8)]
    due = min(job(ws, i).planned_start or datetime.max.replace(tzinfo=UTC) for i in ids)
    daemon = DaemonProcess(ws)
    daemon.wait_started()
    outcomes: dict[int, int] = {}

    def cancel_at(job_id: int, offset_s: float) -> None:
        delay = (due - datetime.now(UTC)).total_seconds() + offset_s
        time.sleep(max(delay, 0))
        outcomes[job_id] = ws.cli("cancel", str(job_id)).returncode

    # Spread the cancels from just before the launch tick to just after it.
    threads = [threading.Thread(target=cancel_at, args=(job_id, -0.6 + 0.25 * n))
               for n, job_id in enumerate(ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ended = wait_finished(ws, ids, 60)
    assert daemon.stop() == 0
    assert outcomes == dict.fromkeys(ids, 0)
    launched = Counter(launches(record))
    store = ws.store()
    for finished in ended:
        assert finished.state == JobState.CANCELLED, (finished.id, finished.end_reason)
        events = Counter(e.new_state for e in store.job_events(finished.id))
        assert events[JobState.CANCELLED.value] == 1
        assert sum(events[s.value] for s in FINISHED) == 1
        assert events[JobState.RUNNING.value] <= 1
        # A job the cancel beat never started; one it did not beat started at most once
        # (SIGTERM may kill it before its first line).
        assert launched[str(finished.id)] <= events[JobState.RUNNING.value]
    store.close()
