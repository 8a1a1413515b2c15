"""Wall time of a submit through the running daemon's local API (targets: median under
0.2 s, with 10,000 jobs queued within 10% of the empty queue; a 1,000-task array under
2 s).

Sets up throw-away installations (csv provider, two regions, a week of hourly data),
starts the real daemon on each, and times, each as a new process the way a shell runs it:

- ``gridshift submit`` (the real CLI, however it is wired at the time of the run);
- the thin client alone: a Python process that imports ``scheduler.client`` and sends
  one ``POST /jobs`` (what the CLI's submit costs once it goes through the client);
- a 1,000-task array: ``gridshift submit --array 0-999``, and the client's
  ``POST /jobs`` with ``array``;

against two installations, each with its own daemon: one with an empty queue, one with
10,000 jobs queued (one array request). The two are timed in turns, run by run, so the
machine's drift over the minutes the script takes reaches both alike. The daemon re-plans
the whole queue on its tick, not inside a request; the figures are taken once the re-plan
the bulk insert caused has settled.

    .venv/bin/python benchmarks/submit_daemon.py [RUNS] [QUEUED]
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler import client
from scheduler.records import ApiRequest, SubmitRequest

REPO = Path(__file__).resolve().parent.parent
QUEUED = 10_000
ARRAY_LIMIT = 10_000  # tasks per array request (jobs.MAX_ARRAY_TASKS)
ARRAY_TASKS = 1_000
# The client's request, built and sent the way the CLI sends it.
CLIENT_SUBMIT = """
import os, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from scheduler import client
from scheduler.records import ApiRequest, SubmitRequest
now = datetime.now(UTC)
tasks = int(sys.argv[2])
request = SubmitRequest(["true"], 3600, now, now + timedelta(hours=24), os.getcwd(),
                        0o022, dict(os.environ), array=list(range(tasks)) or None)
response = client.send(Path(sys.argv[1]), ApiRequest("POST", "/jobs", {}, request.as_json()))
assert response is not None and response.status == 201, response
"""


def setup(root: Path, socket_dir: Path) -> tuple[list[str], dict[str, str], Path]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    body = []
    for region, base in (("north", 120), ("south", 260)):
        rows = ["start,end,gco2_per_kwh"]
        for hour in range(7 * 24):
            slot = start + timedelta(hours=hour)
            rows.append(f"{slot.isoformat()},{(slot + timedelta(hours=1)).isoformat()},"
                        f"{base + 80 * ((hour * 7) % 5)}")
        path = root / f"{region}.csv"
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        body.append(f'[providers.{region}]\nkind = "csv"\npath = "{path}"\n'
                    f'[regions.{region}]\nprovider = "{region}"\nzone = "{region}"\n'
                    f"slots = 8\n")
    socket_path = socket_dir / "gs.sock"
    config = root / "gridshift.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{root / "gridshift.db"}"\n'
        f'[daemon]\nlog_dir = "{root / "logs"}"\nsocket = "{socket_path}"\n' + "".join(body),
        encoding="utf-8")
    script = Path(sys.executable).parent / "gridshift"
    gridshift = [str(script)] if script.exists() else [sys.executable, "-m", "scheduler"]
    env = {**os.environ, "XDG_CONFIG_HOME": str(root / "xdg"),
           "PYTHONPYCACHEPREFIX": str(root / "pycache"), "PYTHONPATH": str(REPO)}
    env.pop("GRIDSHIFT_CONFIG", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    base = [*gridshift, "--config", str(config)]
    for warm_up in (["db", "upgrade"], ["forecast", "--refresh"]):
        subprocess.run([*base, *warm_up], env=env, cwd=root, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return base, env, socket_path


def interleaved_walls(commands: dict[str, list[str]], runs: int, env: dict[str, str],
                      cwd: Path) -> dict[str, list[float]]:
    """Wall times of each command, run in turns (the order alternating), so the machine's
    drift over the minutes a run takes reaches every command alike."""
    walls: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for run in range(runs):
        for name in names if run % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            subprocess.run(commands[name], env=env, cwd=cwd, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls[name].append(time.perf_counter() - started)
    return walls


def wait_answering(socket_path: Path, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert daemon.poll() is None, "the daemon exited"
        if client.send(socket_path, ApiRequest("GET", "/status")) is not None:
            return
        time.sleep(0.1)
    raise SystemExit("the daemon's socket never answered")


def queue_jobs(socket_path: Path, count: int) -> float:
    now = datetime.now(UTC)
    request = SubmitRequest(["true"], 3600, now, now + timedelta(days=6), "/tmp", 0o022,
                            {"PATH": "/usr/bin:/bin"}, array=list(range(count)))
    started = time.perf_counter()
    response = client.send(socket_path, ApiRequest("POST", "/jobs", {}, request.as_json()))
    assert response is not None and response.status == 201, response
    return time.perf_counter() - started


def settle(socket_path: Path, seconds: float) -> None:
    """Let the daemon's tick re-plan the queue the bulk insert changed."""
    time.sleep(seconds)
    status = client.send(socket_path, ApiRequest("GET", "/status"))
    assert status is not None and status.status == 200


def commands_for(base: list[str], socket_path: Path) -> dict[str, list[str]]:
    """What is timed against one installation, by name."""
    thin = [sys.executable, "-c", CLIENT_SUBMIT, str(socket_path)]
    return {
        "gridshift submit": [*base, "submit", "--duration", "1h", "--within", "24h", "--",
                             "true"],
        "client POST /jobs": [*thin, "0"],
        f"gridshift submit --array 0-{ARRAY_TASKS - 1}": [
            *base, "submit", "--array", f"0-{ARRAY_TASKS - 1}", "--duration", "1h",
            "--within", "24h", "--", "true"],
        f"client POST /jobs array 0-{ARRAY_TASKS - 1}": [*thin, str(ARRAY_TASKS)],
    }


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    queued = int(sys.argv[2]) if len(sys.argv) > 2 else QUEUED
    with tempfile.TemporaryDirectory(prefix="gridshift-bench-") as directory, \
            tempfile.TemporaryDirectory(prefix="gs-") as socket_dir:
        installs, daemons, logs = {}, [], []
        for label in ("empty queue", f"+{queued} queued"):
            root = Path(directory) / str(len(installs))
            (Path(socket_dir) / str(len(installs))).mkdir()
            root.mkdir()
            base, env, socket_path = setup(root, Path(socket_dir) / str(len(installs)))
            installs[label] = (base, env, root, socket_path)
            logs.append(open(root / "daemon.log", "wb"))
            daemons.append(subprocess.Popen([*base, "daemon"], env=env, cwd=root,
                                            stdout=logs[-1], stderr=subprocess.STDOUT))
        empty_label, full_label = installs
        try:
            for daemon, (_, _, _, socket_path) in zip(daemons, installs.values(), strict=True):
                wait_answering(socket_path, daemon)
            full_socket = installs[full_label][3]
            took = sum(queue_jobs(full_socket, min(ARRAY_LIMIT, queued - first))
                       for first in range(0, queued, ARRAY_LIMIT))
            print(f"queued {queued} jobs in {-(-queued // ARRAY_LIMIT)} request(s) on the "
                  f"second daemon: {took:.2f} s")
            settle(full_socket, 12.0 + queued / 10_000)
            medians: dict[tuple[str, str], float] = {}
            for name in commands_for([], Path()):
                timed_runs = runs if "array" not in name else max(3, runs // 4)
                walls = interleaved_walls(
                    {label: commands_for(base, socket_path)[name]
                     for label, (base, _, _, socket_path) in installs.items()},
                    timed_runs, installs[empty_label][1], installs[empty_label][2])
                for label, times in walls.items():
                    medians[label, name] = statistics.median(times)
                    print(f"{label:<14} {name:<34} median {medians[label, name]:.3f} s wall "
                          f"over {timed_runs} runs (min {min(times):.3f}, "
                          f"max {max(times):.3f})")
            counts = client.send(full_socket, ApiRequest("GET", "/status"))
            assert counts is not None
            print("second daemon's queue at the end:",
                  json.dumps(counts.document()["queue"]))
        finally:
            for daemon in daemons:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(30)
            for log in logs:
                log.close()
        for name in commands_for([], Path()):
            before, after = medians[empty_label, name], medians[full_label, name]
            print(f"{name}: {before:.3f} s empty, {after:.3f} s with {queued} queued "
                  f"({100 * (after - before) / before:+.0f}%)")


if __name__ == "__main__":
    main()
