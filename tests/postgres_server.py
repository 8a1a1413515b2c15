"""A throwaway PostgreSQL server for the test session: Debian's ``postgresql`` binaries,
``initdb`` and ``pg_ctl`` on a temporary directory, listening only on a Unix socket there.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user the
package creates (the directory is handed to it), and every client connects as the database
superuser ``postgres`` over that socket with trust authentication.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

SERVER_USER = "postgres"
# Tests must never wait on fsync: a crash of the test machine loses nothing worth keeping.
FAST_SETTINGS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                 "-c listen_addresses=''")


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: ``pg_config --bindir``, else the newest
    /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                               check=False)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                         key=lambda path: int(path.parent.name)
                         if path.parent.name.isdigit() else 0, reverse=True)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def unavailable_reason() -> str | None:
    """Why no server can be started here, or None."""
    if find_bindir() is None:
        return ("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
                "postgresql package")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[test]'"
    return None


class PostgresServer:
    """One server in its own directory; ``create_database`` gives each test a fresh one."""

    def __init__(self) -> None:
        bindir = find_bindir()
        assert bindir is not None
        self.bindir = bindir
        # Under /tmp, not pytest's tmp_path (nor $TMPDIR): the server user must reach it
        # and a socket's path must stay under about 100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="gs-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self._user = SERVER_USER if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._names = itertools.count(1)

    def _run(self, *args: str) -> None:
        completed = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True,
            user=self._user, group=None if self._user is None else self._user,
            extra_groups=None if self._user is None else [], cwd=self.root, check=False)
        if completed.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(f"{args[0]} failed: {completed.stderr}\n"
                               f"{log.read_text() if log.exists() else ''}")

    def start(self) -> None:
        self._run("initdb", "--pgdata", str(self.data), "--username", "postgres",
                  "--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync")
        self._run("pg_ctl", "--pgdata", str(self.data), "--log", str(self.root / "server.log"),
                  "--wait", "--options", f"-k {self.root} {FAST_SETTINGS}", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "--pgdata", str(self.data), "--mode", "immediate", "--wait",
                  "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.root}"

    def admin(self) -> psycopg.Connection[Any]:
        """A superuser connection to the server's own ``postgres`` database."""
        import psycopg

        return psycopg.connect(host=str(self.root), user="postgres", dbname="postgres",
                               autocommit=True)

    def create_database(self) -> str:
        """A new empty database; returns its gridshift URL."""
        name = f"test_{next(self._names)}"
        with self.admin() as connection:
            connection.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)
