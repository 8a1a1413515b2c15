"""How long reading one region's forecast takes once many vintages are stored.

`submit` reads two windows and the daemon one per region at every re-plan, so this must
stay fast as the daemon keeps every vintage: here three days of half-hourly refreshes of
a 48-hour forecast (13,824 points), read over [now - 1 day, now + 1 day).

    .venv/bin/python benchmarks/store_series.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.store import PointRecord, Store

HALF_HOUR = timedelta(minutes=30)


def main() -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="gridshift-bench-") as directory:
        store = Store.open(f"sqlite:///{Path(directory) / 'gridshift.db'}")
        vintages = 144
        for number in range(vintages):
            issued = now - timedelta(days=2) + number * HALF_HOUR
            store.add_points("uk", "national", [
                PointRecord(issued + i * HALF_HOUR, issued + (i + 1) * HALF_HOUR,
                            100.0 + (number * 7 + i) % 50, vintage=issued)
                for i in range(96)], issued)
        times = []
        for _ in range(10):
            started = time.perf_counter()
            series = store.series("uk", "national", now - timedelta(days=1),
                                  now + timedelta(days=1))
            times.append(time.perf_counter() - started)
        store.close()
    print(f"series() over {vintages} vintages x 96 points: {len(series)} slots, "
          f"median {statistics.median(times) * 1000:.1f} ms over {len(times)} reads")


if __name__ == "__main__":
    main()
