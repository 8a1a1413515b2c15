"""Shared fixtures: a real config file, a real database (a SQLite file, or a database on a
PostgreSQL server this session starts) and the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.config import Config, load_config
from scheduler.store import Store
from tests.postgres_server import PostgresServer, unavailable_reason


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Workspace:
    """A gridshift installation in tmp_path: config, database, logs, and a CLI runner."""

    root: Path
    config_path: Path
    env: dict[str, str]
    database_url: str

    @property
    def db_path(self) -> Path:
        """The SQLite file (where the workspace's database is SQLite)."""
        return self.root / "gridshift.db"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def config(self) -> Config:
        return load_config(str(self.config_path), self.env)

    def store(self) -> Store:
        return Store.open(self.config().database_url)

    def cli(self, *args: str, input_text: str | None = None, timeout: float = 60) -> CliResult:
        completed = subprocess.run(
            [sys.executable, "-m", "scheduler", "--config", str(self.config_path), *args],
            capture_output=True, text=True, env=self.env, cwd=self.root, timeout=timeout,
            input=input_text,
        )
        return CliResult(completed.returncode, completed.stdout, completed.stderr)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "scheduler", "--config", str(self.config_path), *args],
            env=self.env, cwd=self.root, text=True, **kwargs,
        )


def write_csv(path: Path, rows: Sequence[tuple[datetime, datetime, float]],
              kind: str | None = None) -> Path:
    lines = ["start,end,gco2_per_kwh" + (",kind" if kind else "")]
    for start, end, value in rows:
        line = f"{start.isoformat()},{end.isoformat()},{value}"
        lines.append(line + (f",{kind}" if kind else ""))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def hourly(start: datetime, values: Sequence[float], step: timedelta = timedelta(hours=1)
           ) -> list[tuple[datetime, datetime, float]]:
    return [(start + i * step, start + (i + 1) * step, v) for i, v in enumerate(values)]


def floor_hour(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


DEFAULT_DAEMON = 'tick = "1s"\nkill_grace = "2s"'


def create_workspace(root: Path, body: str, daemon: str = DEFAULT_DAEMON,
                     database_url: str | None = None) -> Workspace:
    """A workspace in ``root`` whose config has the given provider and region tables, on
    ``database_url`` (default: a SQLite file in ``root``)."""
    (root / "logs").mkdir(exist_ok=True)
    config_path = root / "gridshift.toml"
    database_url = database_url or f"sqlite:///{root / 'gridshift.db'}"
    # A Unix socket's path must stay under about 100 bytes: pytest's tmp_path may not.
    socket_dir = Path(tempfile.mkdtemp(prefix="gs-"))
    config_path.write_text(
        f'[database]\nurl = "{database_url}"\n\n'
        f'[daemon]\nlog_dir = "{root / "logs"}"\nsocket = "{socket_dir / "gs.sock"}"\n'
        f'{daemon}\n\n{body}\n',
        encoding="utf-8",
    )
    config_path.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDSHIFT_")}
    env.update({
        "XDG_CONFIG_HOME": str(root / "xdg-config"),
        "XDG_DATA_HOME": str(root / "xdg-data"),
        "XDG_STATE_HOME": str(root / "xdg-state"),
        "PYTHONUNBUFFERED": "1",
        "TZ": "UTC",
    })
    return Workspace(root, config_path, env, database_url)


def create_csv_workspace(root: Path, series: dict[str, list[tuple[datetime, datetime, float]]],
                         slots: int = 1, daemon: str = DEFAULT_DAEMON) -> Workspace:
    """A workspace with one csv-backed region per name given (provider and zone = name)."""
    body = []
    for name, rows in series.items():
        path = write_csv(root / f"{name}.csv", rows)
        body.append(f'[providers.{name}]\nkind = "csv"\npath = "{path}"\n')
        body.append(f'[regions.{name}]\nprovider = "{name}"\nzone = "{name}"\n'
                    f"slots = {slots}\n")
    return create_workspace(root, "\n".join(body), daemon)


@pytest.fixture
def make_workspace(tmp_path: Path) -> Callable[..., Workspace]:
    """Build a workspace whose config has the given provider and region tables (TOML text),
    on a SQLite file unless a ``database_url`` is given."""

    def build(body: str, daemon: str = DEFAULT_DAEMON,
              database_url: str | None = None) -> Workspace:
        return create_workspace(tmp_path, body, daemon, database_url)

    return build


@pytest.fixture
def csv_workspace(make_workspace: Callable[..., Workspace], tmp_path: Path
                  ) -> Callable[..., Workspace]:
    """A workspace with one csv-backed region per name given, each with hourly values."""

    def build(series: dict[str, list[tuple[datetime, datetime, float]]],
              slots: int = 1, daemon: str = DEFAULT_DAEMON) -> Workspace:
        return create_csv_workspace(tmp_path, series, slots, daemon)

    return build


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (about a second to start)."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn: a SQLite file in tmp_path, or a fresh database on the
    session's PostgreSQL server (tests on it skip, with the reason, where it cannot run)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gridshift.db'}"
    server: PostgresServer = request.getfixturevalue("postgresql_server")
    return server.create_database()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc, arg-type]
