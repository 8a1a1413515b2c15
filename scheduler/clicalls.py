"""What every command does around its parsing: find the config, send the request to the
daemon (or run it in-process when no daemon listens), and turn a failure into one line on
stderr and an exit code.

Shared by the typer commands (cli.py) and ``submit``'s own parser (submitcli.py), so it
imports neither typer nor, until a request runs in-process, SQLAlchemy.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from scheduler import render
from scheduler.config import Config, find_config_path, load_config
from scheduler.errors import EXIT_FAILURE, BadInput, GridshiftError
from scheduler.records import ApiRequest, ApiResponse
from scheduler.timespec import parse_duration, parse_when, utc_now

if TYPE_CHECKING:  # the commands that talk to a daemon never import SQLAlchemy
    from scheduler.store import Store


class State:
    """What the command line gave before the command: ``--config FILE``."""

    config_path: str | None = None


def current_config() -> Config:
    return load_config(State.config_path)


def config_if_readable() -> Config | None:
    path = find_config_path(State.config_path, os.environ)
    if path is not None and path.exists() and not os.access(path, os.R_OK):
        return None
    return current_config()


def open_store(settings: Config) -> Store:
    from scheduler.store import Store

    return Store.open(settings.database_url)


def call(request: ApiRequest, existing_database: bool = False, check: bool = True,
         stream: bool = False) -> ApiResponse:
    """Ask the daemon over its socket; with no daemon listening, run the same request
    in-process on the database (only if it exists, with ``existing_database``). With
    ``check``, an error answer becomes a GridshiftError with its code; with ``stream``, a
    body the daemon streams comes as ``chunks``."""
    from scheduler import client

    # A config this user may read is checked first: a broken one is bad input here, not a
    # request sent to whichever daemon a default socket leads to. One they may not read
    # (a system config at 0600) is the daemon's business: only its socket is looked up.
    settings = config_if_readable()
    response = client.send_first(client.candidate_sockets(State.config_path), request,
                                 stream=stream)
    if response is None:
        from scheduler import api
        from scheduler.store import is_sqlite, sqlite_path

        settings = settings or current_config()
        database = sqlite_path(settings.database_url)
        # A PostgreSQL database exists before gridshift does: only a file can be missing.
        if existing_database and is_sqlite(settings.database_url) and not database.exists():
            raise GridshiftError(f"no database at {database}: no daemon has run with this "
                                 f"config")
        # What the use cases log reaches the daemon's log when a daemon runs them; here,
        # the answer says it, and Python's last-resort handler would repeat it on stderr.
        logging.getLogger("gridshift").addHandler(logging.NullHandler())
        response = api.handle_local(settings, request, utc_now())
    if check and response.status >= 400:
        raise answered_error(response)
    return response


def answered_error(response: ApiResponse) -> GridshiftError:
    """The error an answer carries: its one line, and the exit code the daemon chose."""
    try:
        document = response.document()
        message, code = str(document["error"]), int(document["exit_code"])
    except (ValueError, KeyError, TypeError):
        message = f"the daemon answered {response.status}: {response.body[:200]!r}"
        code = EXIT_FAILURE
    error = GridshiftError(message)
    error.exit_code = code
    return error


def report_failure(error: Exception) -> int | None:
    """Say a failure the user should see as one line on stderr and return its exit code: a
    GridshiftError, a file system or database failure (unwritable database path, disk
    full). None for anything else, which is a bug and keeps its traceback."""
    if isinstance(error, GridshiftError):
        render.error(str(error))
        return error.exit_code
    if isinstance(error, BrokenPipeError):
        # The reader left (`report --json | head`): nothing to say. Point stdout at
        # /dev/null so the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    if isinstance(error, OSError):
        render.error(str(error))
        return EXIT_FAILURE
    cause = _database_error(error)
    if cause is None:
        return None
    render.error(f"database error: {cause}")
    return EXIT_FAILURE


def _database_error(error: Exception) -> object | None:
    """The driver's error behind a database failure, else None. SQLAlchemy's wrapper is
    looked for only where SQLAlchemy is loaded: a submit through the daemon never imports
    it."""
    sqlite3 = sys.modules.get("sqlite3")  # loaded only where a database was opened
    if sqlite3 is not None and isinstance(error, sqlite3.Error):
        driver_error: object = error
        return driver_error
    exc = sys.modules.get("sqlalchemy.exc")
    if exc is not None and isinstance(error, exc.DBAPIError):
        return error.orig  # type: ignore[no-any-return]
    return None


def misplaced_config(args: Sequence[str]) -> str | None:
    """The command a ``--config`` was given after (``gridshift list --config FILE``), where
    the parser would only say it knows no such option; None when every --config is in
    place. Words after ``--`` are the job's command."""
    words = list(args[:args.index("--")] if "--" in args else args)
    position = 0
    while position < len(words) and words[position].startswith("-"):
        position += 2 if words[position] == "--config" else 1
    if any(word == "--config" or word.startswith("--config=") for word in words[position + 1:]):
        return words[position]
    return None


def misplaced_config_error(command: str) -> BadInput:
    return BadInput(f"--config goes before the command: gridshift --config FILE {command} ...")


def deadline_from(deadline: str | None, within: str | None, now: datetime) -> datetime:
    """``--deadline`` or ``--within`` (default 24h from now)."""
    if deadline and within:
        raise BadInput("give --deadline or --within, not both")
    if deadline:
        return parse_when(deadline, now)
    return now + parse_duration(within or "24h")


def required_duration(text: str) -> timedelta:
    if not text:
        raise BadInput("--duration is required, e.g. --duration 2h")
    return parse_duration(text)
