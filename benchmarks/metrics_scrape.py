"""Metrics benchmark: the daemon's ``/metrics`` with 100,000 jobs stored (target: a scrape
under 100 ms).

Run with ``.venv/bin/python benchmarks/metrics_scrape.py [--jobs N] [--keep DIR]``. The
database is the report benchmark's (benchmarks/report.py: seeded bulk inserts over four
regions, 90% of the jobs reviewed). Timed: the metrics' start (the SQL sums of the stored
facts, the job counts and each region's forecast, then the HTTP server), once; then a
scrape over HTTP on loopback, the median of ``--repeat``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from report import build_database  # benchmarks/report.py, run from this folder

from scheduler.config import load_config
from scheduler.metrics import DaemonMetrics
from scheduler.store import Store
from scheduler.timespec import utc_now

TARGET_S = 0.1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", type=Path,
                        help="build the database here and keep it (reused when present)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = options.keep or Path(temporary)
        root.mkdir(parents=True, exist_ok=True)
        config_path = root / "gridshift.toml"
        if not (root / "bench.db").exists():
            config_path = build_database(root, options.jobs)
        port = free_port()
        with_metrics = root / "metrics.toml"
        with_metrics.write_text(config_path.read_text(encoding="utf-8")
                                + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n',
                                encoding="utf-8")
        config = load_config(str(with_metrics), {})
        store = Store.open(config.database_url)
        sys.stdout.write(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: "
                         "wall times are only meaningful on an idle machine\n")
        metrics = DaemonMetrics(config, utc_now)
        begun = time.perf_counter()
        metrics.start(store, utc_now())
        started_s = time.perf_counter() - begun
        try:
            times, size = [], 0
            for _ in range(options.repeat):
                begun = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                    size = len(response.read())
                times.append(time.perf_counter() - begun)
        finally:
            metrics.stop()
            store.close()
        scrape_s = statistics.median(times)
        sys.stdout.write(f"metrics start (stored-fact sums, job counts, forecasts, server) "
                         f"with {options.jobs} jobs: {started_s * 1000:.0f} ms\n")
        sys.stdout.write(f"scrape over HTTP: {scrape_s * 1000:.1f} ms (median of "
                         f"{options.repeat}; slowest {max(times) * 1000:.1f} ms; {size} bytes; "
                         f"target < {TARGET_S * 1000:.0f} ms)\n")
    return 0 if scrape_s < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
