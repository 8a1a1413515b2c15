"""Report benchmark: ``gridshift report`` over 100,000 finished jobs (target: under 2 s).

Run with ``.venv/bin/python benchmarks/report.py [--jobs N] [--keep DIR]``. The database
is built in a temporary directory with bulk inserts (seeded, so every run is the same):
jobs across 4 regions (one marginal), a year of runs, 90% already reviewed, the rest
awaiting actuals, a few estimated, 3% past their deadline. The store encodes each job's
stored document (``models.JobDocument``) as it inserts the rows, as it does when a job
finishes, so the build takes longer than the insert alone.

Timed, each as a whole ``gridshift report`` command (a subprocess, so start-up, config,
query, rendering and output all count; one process) writing to a file: the text table,
``--json`` and ``--csv``. Each figure is the median of ``--repeat`` runs, wall time and
CPU time (user + system: the steadier figure when other work shares the machine).
``--plot`` and ``--html`` are timed once each and reported, but they are not under the
2 s target: they draw charts.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.store import PointRecord, Store

START = datetime(2025, 1, 1, tzinfo=UTC)
REGIONS = ("north", "south", "east", "west")
TARGET_S = 2.0


def write_config(root: Path) -> Path:
    body = [f'[database]\nurl = "sqlite:///{root / "bench.db"}"\n',
            f'[daemon]\nlog_dir = "{root / "logs"}"\n']
    for region in REGIONS:
        csv_path = root / f"{region}.csv"
        csv_path.write_text("start,end,gco2_per_kwh\n2025-01-01T00:00:00+00:00,"
                            "2025-01-01T01:00:00+00:00,100\n", encoding="utf-8")
        signal = "marginal" if region == "west" else "average"
        body.append(f'[providers.{region}]\nkind = "csv"\npath = "{csv_path}"\n'
                    f'signal = "{signal}"\n[regions.{region}]\nprovider = "{region}"\n'
                    f'zone = "{region}"\n')
    config = root / "gridshift.toml"
    config.write_text("\n".join(body), encoding="utf-8")
    return config


def job_rows(count: int, rng: random.Random) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number in range(count):
        region = REGIONS[number % len(REGIONS)]
        submitted = START + timedelta(minutes=5 * number)
        duration = rng.choice((900, 1800, 3600, 7200, 14400))
        planned = submitted + timedelta(minutes=rng.randrange(0, 600))
        started = planned + timedelta(seconds=rng.randrange(0, 30))
        ended = started + timedelta(seconds=int(duration * rng.uniform(0.6, 1.1)))
        reviewed = rng.random() < 0.9
        estimated = reviewed and rng.random() < 0.05
        rows.append({
            "name": f"train-{number}", "state": "succeeded" if rng.random() < 0.95 else "failed",
            "argv": ["python", "train.py", f"--seed={number}"], "cwd": "/srv/work", "env": {},
            "duration_s": duration, "not_before": submitted,
            "deadline": submitted + timedelta(hours=24), "regions": [region],
            "power_watts": rng.choice((150.0, 300.0, 700.0)), "submitted_at": submitted,
            "planned_region": region, "planned_start": planned,
            "planned_intensity": rng.uniform(50, 400), "planned_vintage": submitted,
            "plan_reason": 1, "plan_replayed": False,
            "signal": "marginal" if region == "west" else "average",
            "run_now_intensity": rng.uniform(100, 500), "run_region": region,
            "started_at": started, "ended_at": ended, "exit_code": 0, "pid": 10_000 + number,
            "pid_started_at": started.timestamp(),
            "log_path": f"/var/log/gridshift/job-{number}.log",
            "deadline_missed": rng.random() < 0.03, "end_reason": "exit status 0",
            "energy_kwh": rng.uniform(0.05, 3.0), "energy_method": "rapl",
            "energy_note": "RAPL CPU package+DRAM of the whole host",
            "actual_intensity": rng.uniform(50, 450) if reviewed else None,
            "run_now_actual_intensity": rng.uniform(100, 500) if reviewed else None,
            "planned_window_actual_intensity": rng.uniform(50, 450) if reviewed else None,
            "intensity_estimated": estimated if reviewed else None,
            "actuals_state": ("estimated" if estimated else "done") if reviewed else "pending",
            "actuals_checked_at": ended + timedelta(hours=1),
        })
    return rows


def build_database(root: Path, count: int) -> Path:
    config = write_config(root)
    (root / "logs").mkdir(exist_ok=True)
    store = Store.open(f"sqlite:///{root / 'bench.db'}")
    rng = random.Random(20261126)
    begun = time.perf_counter()
    batch = 20_000
    for first in range(0, count, batch):
        store.insert_job_rows(job_rows(min(batch, count - first), rng))
    end = START + timedelta(minutes=5 * count + 1440)
    for region in REGIONS:
        hours = int((end - START).total_seconds() // 3600)
        for kind in ("forecast", "actual"):
            store.add_points(region, region, [
                PointRecord(START + timedelta(hours=h), START + timedelta(hours=h + 1),
                            rng.uniform(50, 450), kind=kind) for h in range(hours)], START)
    store.close()
    sys.stdout.write(f"built {count} jobs in {time.perf_counter() - begun:.1f} s\n")
    return config


def time_report(config: Path, root: Path, args: list[str], repeat: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of the report command."""
    walls, cpus = [], []
    for _ in range(repeat):
        with open(root / "out.txt", "w", encoding="utf-8") as out:
            cpu_before = _children_cpu()
            begun = time.perf_counter()
            subprocess.run([sys.executable, "-m", "scheduler", "--config", str(config),
                            "report", *args], stdout=out, stderr=subprocess.DEVNULL,
                           check=True)
            walls.append(time.perf_counter() - begun)
            cpus.append(_children_cpu() - cpu_before)
    return statistics.median(walls), statistics.median(cpus)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path,
                        help="build the database here and keep it (reused when present)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = options.keep or Path(temporary)
        root.mkdir(parents=True, exist_ok=True)
        config = root / "gridshift.toml"
        if not (root / "bench.db").exists():
            config = build_database(root, options.jobs)
        load = os.getloadavg()[0]
        sys.stdout.write(f"load average {load:.1f} on {os.cpu_count()} CPUs: wall times "
                         f"are only meaningful on an idle machine\n")
        slow = False
        for label, args in (("table", []), ("--json", ["--json"]), ("--csv", ["--csv"])):
            wall, cpu = time_report(config, root, args, options.repeat)
            slow = slow or wall >= TARGET_S
            sys.stdout.write(f"report {label}: {options.jobs} jobs in {wall:.2f} s wall, "
                             f"{cpu:.2f} s CPU (median of {options.repeat}; "
                             f"target < {TARGET_S:.0f} s)\n")
        for label, args in (("--plot", ["--plot", str(root / "r.png")]),
                            ("--html", ["--html", str(root / "r.html")])):
            wall, cpu = time_report(config, root, args, 1)
            sys.stdout.write(f"report {label}: {options.jobs} jobs in {wall:.2f} s wall, "
                             f"{cpu:.2f} s CPU (charts; no target)\n")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
