"""`gridshift list --all --json` over 100,000 jobs (issue 11's target: under 3 s, streamed).

Builds the installation of ``daemon_once.py`` (16 regions, a week of five-minute
forecasts, 100,000 jobs, planned by one ``daemon --once``), then times the whole command
writing to a file, median of ``--repeat`` runs: without a daemon (the command reads the
database itself), and through a running daemon's socket. Prints the peak memory of the
command too (ru_maxrss of the child): the list is streamed, never held whole.

    .venv/bin/python benchmarks/list_json.py [--jobs N] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import signal
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from daemon_once import gridshift_command, job_rows, write_config

from scheduler import client
from scheduler.records import ApiRequest
from scheduler.store import Store

TARGET_S = 3.0


def timed(command: list[str], cwd: Path, output: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the children so far) of one run."""
    started = time.perf_counter()
    with open(output, "wb") as out:
        subprocess.run(command, cwd=cwd, check=True, stdout=out)
    wall = time.perf_counter() - started
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gridshift-list-") as temporary:
        root = Path(temporary)
        now = datetime.now(UTC)
        config = write_config(root, now)
        base = [*gridshift_command(), "--config", str(config)]
        subprocess.run([*base, "db", "upgrade"], cwd=root, check=True,
                       stdout=subprocess.DEVNULL)
        store = Store.open(f"sqlite:///{root / 'gridshift.db'}")
        rng = random.Random(20261130)
        for first in range(0, args.jobs, 20_000):
            store.insert_job_rows(job_rows(min(20_000, args.jobs - first), now, rng))
        store.close()
        subprocess.run([*base, "daemon", "--once"], cwd=root, check=True,
                       stderr=subprocess.DEVNULL)
        output = root / "jobs.json"
        command = [*base, "list", "--all", "--json"]
        for label in ("no daemon", "through the daemon"):
            daemon = None
            if label == "through the daemon":
                daemon = subprocess.Popen([*base, "daemon"], cwd=root,
                                          stderr=subprocess.DEVNULL)
                socket_path = root / "gs.sock"
                deadline = time.monotonic() + 120
                while client.send(socket_path, ApiRequest("GET", "/status")) is None:
                    if time.monotonic() > deadline:
                        raise SystemExit("the daemon never answered")
                    time.sleep(0.2)
            try:
                runs = [timed(command, root, output) for _ in range(args.repeat)]
            finally:
                if daemon is not None:
                    daemon.send_signal(signal.SIGTERM)
                    daemon.wait(60)
            walls = [wall for wall, _ in runs]
            listed = json.loads(output.read_bytes())
            assert len(listed) == args.jobs, len(listed)
            print(f"list --all --json, {label}: median {statistics.median(walls):.2f} s wall "
                  f"(min {min(walls):.2f}, max {max(walls):.2f}) over {args.repeat}, "
                  f"{output.stat().st_size / 1e6:.0f} MB, {len(listed)} jobs, peak RSS of "
                  f"any command so far {runs[-1][1]:.0f} MB (target < {TARGET_S:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
