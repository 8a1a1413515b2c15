"""Helpers for tests that drive the real daemon process: start, stop, kill, poll."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scheduler.models import FINISHED, Job, JobState
from tests.conftest import Workspace

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


_STARTED: list[DaemonProcess] = []


@pytest.fixture(autouse=True)
def reap_daemons() -> Iterator[None]:
    """Kill any daemon a failed test left running (a passing test stops its own)."""
    yield
    while _STARTED:
        daemon = _STARTED.pop()
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)
        daemon._output.close()


class DaemonProcess:
    """``gridshift daemon`` as a child process, its output in a file under the workspace."""

    def __init__(self, workspace: Workspace, extra_env: dict[str, str] | None = None,
                 name: str = "daemon") -> None:
        self.workspace = workspace
        index = len(list(workspace.root.glob(f"{name}-*.out")))
        self.output_path = workspace.root / f"{name}-{index}.out"
        env = dict(workspace.env)
        env.update(extra_env or {})
        self._output = open(self.output_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            [*workspace_command(workspace), "daemon"], env=env, cwd=workspace.root,
            stdout=self._output, stderr=subprocess.STDOUT,
        )
        _STARTED.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def wait_started(self, timeout: float = 30.0) -> None:
        """Until the first heartbeat of this process is in the database."""
        store = self.workspace.store()
        try:
            def beating() -> bool:
                assert self.process.poll() is None, f"daemon exited:\n{self.output()}"
                beat = store.heartbeat()
                return beat is not None and beat.pid == self.pid and beat.stopped_at is None
            wait_for(beating, timeout, what="the daemon's first heartbeat")
        finally:
            store.close()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._output.close()

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as after a crash."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)
        self._output.close()


def workspace_command(workspace: Workspace) -> list[str]:
    import sys

    return [sys.executable, "-m", "scheduler", "--config", str(workspace.config_path)]


def job(workspace: Workspace, job_id: int) -> Job:
    store = workspace.store()
    try:
        return store.get_job(job_id)
    finally:
        store.close()


def jobs(workspace: Workspace) -> list[Job]:
    store = workspace.store()
    try:
        return store.list_jobs()
    finally:
        store.close()


def wait_state(workspace: Workspace, job_id: int, states: tuple[JobState, ...],
               timeout: float = 30.0) -> Job:
    def reached() -> Job | None:
        current = job(workspace, job_id)
        return current if current.state in states else None

    return wait_for(reached, timeout, what=f"job {job_id} to reach {states}")


def wait_finished(workspace: Workspace, job_ids: list[int], timeout: float = 60.0
                  ) -> list[Job]:
    def done() -> list[Job] | None:
        current = [job(workspace, i) for i in job_ids]
        return current if all(j.state in FINISHED for j in current) else None

    return wait_for(done, timeout, interval=0.1, what=f"jobs {job_ids} to finish")


def submitted_id(stdout: str) -> int:
    """The id from `submit`'s 'job N queued: ...' line."""
    assert stdout.startswith("job "), stdout
    return int(stdout.split()[1])


def launches(path: Path) -> list[str]:
    """Lines each job appended when it started (one per launch)."""
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def carbon_intensity_payload(start: datetime, slots: int) -> dict[str, Any]:
    """The UK Carbon Intensity API's national fw48h response shape, 30-minute slots."""
    step = timedelta(minutes=30)
    return {"data": [
        {"from": (start + i * step).strftime("%Y-%m-%dT%H:%MZ"),
         "to": (start + (i + 1) * step).strftime("%Y-%m-%dT%H:%MZ"),
         "intensity": {"forecast": 150 + i, "actual": None, "index": "moderate"}}
        for i in range(slots)
    ]}
