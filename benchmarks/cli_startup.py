"""Wall time of `gridshift submit` with no daemon running (the in-process path).

Sets up a throw-away installation in a temporary directory (config, database, a 48-hour
csv forecast already stored), then runs the real console script N times and prints the
median. With no daemon listening, submit opens the database itself through the store
(SQLAlchemy) and places the job with the planner (numpy), so it is slower than a submit
through the daemon (benchmarks/submit_daemon.py); issue 10 sets no target for it. For
context it also times the interpreter alone and a few imports.

    .venv/bin/python benchmarks/cli_startup.py [N]
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def timed_runs(command: list[str], runs: int, env: dict[str, str], cwd: Path
               ) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each run; CPU time suffers less from a busy
    machine than wall time does."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def setup(root: Path) -> tuple[list[str], dict[str, str]]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    rows = ["start,end,gco2_per_kwh"]
    for hour in range(48):
        slot = start + timedelta(hours=hour)
        rows.append(f"{slot.isoformat()},{(slot + timedelta(hours=1)).isoformat()},"
                    f"{200 + 100 * ((hour * 7) % 5)}")
    (root / "intensity.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = root / "gridshift.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{root / "gridshift.db"}"\n'
        f'[daemon]\nlog_dir = "{root / "logs"}"\n'
        f'[providers.file]\nkind = "csv"\npath = "{root / "intensity.csv"}"\n'
        f'[regions.here]\nprovider = "file"\nzone = "local"\nslots = 4\n',
        encoding="utf-8",
    )
    script = Path(sys.executable).parent / "gridshift"
    gridshift = [str(script)] if script.exists() else [sys.executable, "-m", "scheduler"]
    env = {**os.environ, "XDG_CONFIG_HOME": str(root / "xdg"),
           # An installed gridshift runs from cached bytecode: let the warm-up write it
           # (outside the checkout) even where PYTHONDONTWRITEBYTECODE is set.
           "PYTHONPYCACHEPREFIX": str(root / "pycache")}
    env.pop("GRIDSHIFT_CONFIG", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    base = [*gridshift, "--config", str(config)]
    for warm_up in (["db", "upgrade"], ["forecast", "--refresh"], ["plan", "--duration", "1h"]):
        subprocess.run([*base, *warm_up], env=env, cwd=root, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return base, env


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory(prefix="gridshift-bench-") as directory:
        root = Path(directory)
        base, env = setup(root)
        submit = [*base, "submit", "--duration", "2h", "--within", "24h", "--", "true"]
        python = [sys.executable, "-c"]
        # typer parses options through pydantic, which it imports on first use; submit loads
        # numpy with one OpenBLAS thread (scheduler/submitpath.py).
        floor = ("import os; os.environ['OPENBLAS_NUM_THREADS'] = '1'; "
                 "import numpy, typer, typer._adapters, sqlite3, tomllib, json")
        context = {"python -c pass": [*python, "pass"],
                   "imports: numpy (1 BLAS thread), typer, pydantic": [*python, floor]}
        for label, command in context.items():
            walls, cpus = timed_runs(command, runs, env, root)
            print(f"{label:<62} median {statistics.median(walls):.3f} s wall, "
                  f"{statistics.median(cpus):.3f} s CPU")
        walls, cpus = timed_runs(submit, runs, env, root)
        print(f"{'gridshift submit':<62} median {statistics.median(walls):.3f} s wall, "
              f"{statistics.median(cpus):.3f} s CPU (wall min {min(walls):.3f}, "
              f"max {max(walls):.3f})")
        print(f"gridshift submit: median {statistics.median(walls):.3f} s wall over {runs} "
              f"runs (no target: the in-process path)")


if __name__ == "__main__":
    main()
