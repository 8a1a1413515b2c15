"""Seconds to render `gridshift list`'s table from N job documents (default 100,000).

Only the text rendering (``render.print_jobs``), into an in-memory buffer: the documents
are built here, so the figure excludes the database and the JSON transport. Prints the
median wall and CPU time of a few runs, for plain jobs, for the same jobs as arrays of 100
tasks collapsed (one row per array), and expanded. Names include markup and an escape
sequence, so the inert-text escaping is part of what is timed.

    .venv/bin/python benchmarks/list_render.py [N]
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler import render

RUNS = 5


def documents(count: int, array_size: int | None) -> list[dict[str, Any]]:
    start = datetime(2026, 11, 30, 12, tzinfo=UTC)
    made = []
    for index in range(count):
        array_id = None if array_size is None else 1 + index - index % array_size
        made.append({
            "id": index + 1, "user": "alice", "state": "planned" if index % 7 else "running",
            "name": f"sweep[lr={index % 13}]" if index % 10 else "x\x1b[2J[/]",
            "planned_region": ("north", "south")[index % 2], "run_region": None,
            "planned_start": (start + timedelta(minutes=5 * (index % 500))).isoformat(),
            "started_at": None, "duration_s": 3600 * (1 + index % 3),
            "planned_intensity": 40.0 + index % 200,
            "deadline": (start + timedelta(days=1)).isoformat(),
            "array_id": array_id,
            "array_index": None if array_size is None else index % array_size,
        })
    return made


def median_seconds(render_once: Callable[[], None]) -> tuple[float, float]:
    """Median wall and CPU seconds (CPU time suffers less from a busy machine)."""
    walls, cpus = [], []
    for _ in range(RUNS):
        started, started_cpu = time.perf_counter(), time.process_time()
        render_once()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - started_cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    plain = documents(count, None)
    arrays = documents(count, 100)
    cases = {
        "plain jobs": lambda: render.print_jobs(plain, out=io.StringIO()),
        "arrays of 100, collapsed": lambda: render.print_jobs(arrays, out=io.StringIO()),
        "arrays of 100, expanded": lambda: render.print_jobs(arrays, expand=True,
                                                             out=io.StringIO()),
    }
    for label, render_once in cases.items():
        wall, cpu = median_seconds(render_once)
        sys.stdout.write(f"list table, {count} documents, {label}: {wall:.3f} s wall, "
                         f"{cpu:.3f} s CPU (medians of {RUNS})\n")


if __name__ == "__main__":
    main()
