"""The daemon at 100,000 queued jobs (issue 11's targets).

Builds a throw-away installation: 16 regions (csv providers, a week of five-minute
forecasts each: 2,016 steps), and 100,000 queued jobs (seeded), each allowed in 1 to 3
regions, 5 minutes to 6 hours long, not before an hour from now (so nothing is due),
deadlines up to a week ahead. Then times, as the user's shell runs them:

- ``gridshift daemon --once`` on that queue: start-up, the forecast refresh (16 csv
  files), the first re-plan (every job gets a placement and an event), dispatch;
- ``gridshift daemon --once`` again: forecasts fresh, the same placements (nothing
  written);

and, in this process, an idle tick (``Daemon.tick`` with nothing changed and nothing
due: what the long-running daemon does every ``daemon.tick``), median of 20.

    .venv/bin/python benchmarks/daemon_once.py [--jobs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.config import load_config
from scheduler.daemon import Daemon
from scheduler.store import Store

REGIONS = [f"r{number:02d}" for number in range(16)]
STEPS = 2016  # a week of five-minute steps
ONCE_TARGET_S = 10.0
IDLE_TARGET_S = 0.05


def write_config(root: Path, now: datetime) -> Path:
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5 + 60)
    body = [f'[database]\nurl = "sqlite:///{root / "gridshift.db"}"\n',
            f'[daemon]\nlog_dir = "{root / "logs"}"\nsocket = "{root / "gs.sock"}"\n']
    for number, region in enumerate(REGIONS):
        rows = ["start,end,gco2_per_kwh"]
        for step in range(STEPS + 12):
            slot = start + timedelta(minutes=5 * step)
            value = 250 + 150 * math.sin(2 * math.pi * (step / 288 + number / 16))
            rows.append(f"{slot.isoformat()},{(slot + timedelta(minutes=5)).isoformat()},"
                        f"{value:.1f}")
        path = root / f"{region}.csv"
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        body.append(f'[providers.{region}]\nkind = "csv"\npath = "{path}"\n'
                    f'[regions.{region}]\nprovider = "{region}"\nzone = "{region}"\n'
                    f"slots = 100000\n")
    config = root / "gridshift.toml"
    config.write_text("\n".join(body), encoding="utf-8")
    return config


def job_rows(count: int, now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for number in range(count):
        not_before = now + timedelta(hours=1, minutes=rng.randrange(0, 24 * 60))
        duration = rng.choice((300, 1800, 3600, 7200, 21600))
        slack = timedelta(hours=rng.uniform(2, 120))
        rows.append({
            "name": f"sweep-{number}", "state": "queued", "argv": ["true"], "cwd": "/tmp",
            "env": {}, "duration_s": duration, "not_before": not_before,
            "deadline": not_before + timedelta(seconds=duration) + slack,
            "regions": rng.sample(REGIONS, rng.randint(1, 3)), "power_watts": 300.0,
            "submitted_at": now, "owner_uid": os.getuid(), "owner_name": "bench",
        })
    return rows


def gridshift_command() -> list[str]:
    script = Path(sys.executable).parent / "gridshift"
    return [str(script)] if script.exists() else [sys.executable, "-m", "scheduler"]


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU of the child) of one run of ``command``."""
    before = os.times()
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user - before.children_user
           + after.children_system - before.children_system)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gridshift-once-") as temporary:
        root = args.keep or Path(temporary)
        root.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        config_path = write_config(root, now)
        base = [*gridshift_command(), "--config", str(config_path)]
        subprocess.run([*base, "db", "upgrade"], cwd=root, check=True,
                       stdout=subprocess.DEVNULL)
        store = Store.open(f"sqlite:///{root / 'gridshift.db'}")
        rng = random.Random(20261130)
        for first in range(0, args.jobs, 20_000):
            store.insert_job_rows(job_rows(min(20_000, args.jobs - first), now, rng))
        store.close()
        print(f"{args.jobs} queued jobs, {len(REGIONS)} regions x {STEPS} five-minute steps")

        for label in ("first (plans every job)", "second (nothing changed)"):
            wall, cpu = timed([*base, "daemon", "--once"], root)
            print(f"gridshift daemon --once, {label}: {wall:.2f} s wall, {cpu:.2f} s CPU "
                  f"(target < {ONCE_TARGET_S:.0f} s)")

        config = load_config(config_path)
        store = Store.open(config.database_url)
        counts = store.count_by_state()
        print("jobs by state:", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        daemon = Daemon(config, store)
        clock = datetime.now(UTC)
        daemon.tick(clock)  # the first tick of a process re-plans; the rest are idle
        walls = []
        for _ in range(20):
            started = time.perf_counter()
            daemon.tick(clock)
            walls.append(time.perf_counter() - started)
        print(f"idle tick: median {1000 * statistics.median(walls):.1f} ms "
              f"(min {1000 * min(walls):.1f}, max {1000 * max(walls):.1f}) over 20 "
              f"(target < {1000 * IDLE_TARGET_S:.0f} ms)")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
