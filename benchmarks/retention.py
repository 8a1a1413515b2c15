"""Database size and query time over two simulated months of forecast refreshes.

Stores what refreshing one zone every 30 minutes with a 48-hour horizon of 30-minute
slots stores (96 points a refresh, 48 refreshes a day), prunes with the daemon's own
``Daemon.prune`` once a simulated day (retention 30 days, or never with --no-prune), and
prints per simulated week: points stored, file size, and the median time of the planner's
forecast read (``Store.series`` over the next 24 hours). Nothing waits: ``now`` is
injected. Times are CPU-bound and depend on the machine and its load.

    .venv/bin/python benchmarks/retention.py [DAYS] [--no-prune]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.config import load_config
from scheduler.daemon import Daemon
from scheduler.store import PointRecord, Store

START = datetime(2026, 1, 1, tzinfo=UTC)
SLOT = timedelta(minutes=30)


def main(days: int, prune: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "a.csv").write_text("start,end,gco2_per_kwh\n"
                                    "2026-01-01T00:00Z,2026-01-01T01:00Z,100\n")
        config_path = root / "gridshift.toml"
        config_path.write_text(
            f'[database]\nurl = "sqlite:///{root}/gridshift.db"\n[daemon]\n'
            f'log_dir = "{root}/logs"\nretention = "30d"\n'
            f'[providers.uk]\nkind = "csv"\npath = "{root}/a.csv"\n'
            f'[regions.gb]\nprovider = "uk"\nzone = "national"\n')
        config = load_config(str(config_path), {})
        store = Store.open(config.database_url)
        daemon = Daemon(config, store)
        sys.stdout.write(f"{'day':>4} {'points':>9} {'MiB':>7} {'series ms':>10}\n")
        for day in range(days):
            for refresh in range(48):
                at = START + timedelta(days=day) + refresh * SLOT
                store.add_points("uk", "national", [
                    PointRecord(at + i * SLOT, at + (i + 1) * SLOT, 100.0 + (i * 7) % 50)
                    for i in range(96)], at)
            now = START + timedelta(days=day + 1)
            if prune:
                daemon.prune(now)
            if (day + 1) % 7 == 0 or day + 1 == days:
                timings = []
                for _ in range(5):
                    began = time.perf_counter()
                    store.series("uk", "national", now, now + timedelta(hours=24))
                    timings.append(time.perf_counter() - began)
                with store.engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                    points = connection.exec_driver_sql(
                        "SELECT count(*) FROM forecast_points").scalar()
                size = (root / "gridshift.db").stat().st_size / 2**20
                sys.stdout.write(f"{day + 1:>4} {points:>9} {size:>7.1f} "
                                 f"{statistics.median(timings) * 1000:>10.1f}\n")
        store.close()


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(int(arguments[0]) if arguments else 60, "--no-prune" not in sys.argv)
