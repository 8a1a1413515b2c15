"""Wall time of a submit through the running daemon's local API (targets: median under
0.2 s, with 10,000 jobs queued within 10% of the empty queue; a 1,000-task array under
2 s).

Sets up a throw-away installation (csv provider, two regions, a week of hourly data),
starts the real daemon, and times, each as a new process the way a user's shell runs it:

- ``gridshift submit`` (the real CLI, however it is wired at the time of the run);
- the thin client alone: a Python process that imports ``scheduler.client`` and sends
  one ``POST /jobs`` (what the CLI's submit costs once it goes through the client);
- a 1,000-task array: ``gridshift submit --array 0-999`` where the CLI has the flag,
  and the client's ``POST /jobs`` with ``array`` in any case;

first with an empty queue, then with 10,000 more jobs queued (one array request). The
daemon re-plans the whole queue on its tick, not inside a request; the figures after
the bulk insert are taken once that re-plan has settled.

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


def median_wall(command: list[str], runs: int, env: dict[str, str], cwd: Path
                ) -> tuple[float, float, float]:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls), min(walls), max(walls)


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


def measure(label: str, base: list[str], env: dict[str, str], root: Path,
            socket_path: Path, runs: int, has_array_flag: bool) -> dict[str, float]:
    cli = [*base, "submit", "--duration", "1h", "--within", "24h", "--", "true"]
    thin = [sys.executable, "-c", CLIENT_SUBMIT, str(socket_path)]
    figures = {}
    for name, command in (("gridshift submit", cli), ("client POST /jobs", [*thin, "0"])):
        median, low, high = median_wall(command, runs, env, root)
        figures[name] = median
        print(f"{label:<12} {name:<34} median {median:.3f} s wall over {runs} runs "
              f"(min {low:.3f}, max {high:.3f})")
    array_runs = max(3, runs // 4)
    arrays = [("client POST /jobs array 0-999", [*thin, str(ARRAY_TASKS)])]
    if has_array_flag:
        arrays.insert(0, ("gridshift submit --array 0-999",
                          [*base, "submit", "--array", f"0-{ARRAY_TASKS - 1}", "--duration",
                           "1h", "--within", "24h", "--", "true"]))
    for name, command in arrays:
        median, low, high = median_wall(command, array_runs, env, root)
        figures[name] = median
        print(f"{label:<12} {name:<34} median {median:.3f} s wall over {array_runs} runs "
              f"(min {low:.3f}, max {high:.3f})")
    return figures


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    queued = int(sys.argv[2]) if len(sys.argv) > 2 else QUEUED
    with tempfile.TemporaryDirectory(prefix="gridshift-bench-") as directory, \
            tempfile.TemporaryDirectory(prefix="gs-") as socket_dir:
        root = Path(directory)
        base, env, socket_path = setup(root, Path(socket_dir))
        help_text = subprocess.run([*base, "submit", "--help"], env=env, cwd=root,
                                   capture_output=True, text=True).stdout
        has_array_flag = "--array" in help_text
        log_file = open(root / "daemon.log", "wb")
        daemon = subprocess.Popen([*base, "daemon"], env=env, cwd=root, stdout=log_file,
                                  stderr=subprocess.STDOUT)
        try:
            wait_answering(socket_path, daemon)
            empty = measure("empty queue", base, env, root, socket_path, runs,
                            has_array_flag)
            took = sum(queue_jobs(socket_path, min(ARRAY_LIMIT, queued - first))
                       for first in range(0, queued, ARRAY_LIMIT))
            print(f"queued {queued} more jobs in {-(-queued // ARRAY_LIMIT)} request(s): "
                  f"{took:.2f} s")
            settle(socket_path, 12.0 + queued / 10_000)
            full = measure(f"+{queued} queued", base, env, root, socket_path, runs,
                           has_array_flag)
            counts = client.send(socket_path, ApiRequest("GET", "/status"))
            assert counts is not None
            print("queue at the end:", json.dumps(counts.document()["queue"]))
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            log_file.close()
        for name, before in empty.items():
            after = full[name]
            print(f"{name}: {before:.3f} s empty, {after:.3f} s with {queued} queued "
                  f"({100 * (after - before) / before:+.0f}%)")
        if not has_array_flag:
            print("note: this CLI has no submit --array yet; the array figure is the "
                  "client's POST /jobs")


if __name__ == "__main__":
    main()
