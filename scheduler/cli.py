"""The ``gridshift`` command: parse, call, print. No business logic and no SQL here.

Exit codes: 0 ok, 1 failure, 2 bad input (which writes nothing).
"""

from __future__ import annotations

import logging
import os
import pwd
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from scheduler import render
from scheduler.clihelp import Command, CommandAfterSeparator, Group
from scheduler.config import Config, find_config_path, load_config
from scheduler.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, BadInput, GridshiftError
from scheduler.records import ApiRequest, ApiResponse, SubmitRequest
from scheduler.simulate.cli import simulate_app
from scheduler.timespec import (
    check_fits,
    parse_duration,
    parse_job_id,
    parse_when,
    utc_now,
)

if TYPE_CHECKING:  # the commands that talk to a daemon never import SQLAlchemy
    from scheduler.store import Store

app = typer.Typer(
    name="gridshift",
    help="Run flexible compute jobs in the cleanest feasible window across regions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True, cls=Group)
app.add_typer(db_app, name="db")
app.add_typer(simulate_app, name="simulate")
service_app = typer.Typer(help="Run the daemon as a systemd service.", no_args_is_help=True,
                          cls=Group)
app.add_typer(service_app, name="service")

F = TypeVar("F", bound=Callable[..., Any])


class State:
    config_path: str | None = None


def handle_errors(command: F) -> F:
    """Show a GridshiftError as one line on stderr and exit with its code; a database or
    file system failure (unwritable database path, disk full) as one line with exit 1."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except GridshiftError as error:
            render.error(str(error))
            raise typer.Exit(error.exit_code) from None
        except BrokenPipeError:
            # The reader left (`report --json | head`): nothing to say. Point stdout at
            # /dev/null so the interpreter's last flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_FAILURE) from None
        except OSError as error:
            render.error(str(error))
            raise typer.Exit(EXIT_FAILURE) from None
        except Exception as error:
            cause = _database_error(error)
            if cause is None:
                raise
            render.error(f"database error: {cause}")
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper  # type: ignore[return-value]


def _database_error(error: Exception) -> object | None:
    """The driver's error behind a database failure, else None. SQLAlchemy's wrapper is
    looked for only where SQLAlchemy is loaded: the fast submit path never imports it."""
    sqlite3 = sys.modules.get("sqlite3")  # loaded only where a database was opened
    if sqlite3 is not None and isinstance(error, sqlite3.Error):
        driver_error: object = error
        return driver_error
    exc = sys.modules.get("sqlalchemy.exc")
    if exc is not None and isinstance(error, exc.DBAPIError):
        return error.orig  # type: ignore[no-any-return]
    return None


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        sys.stdout.write(f"gridshift {version('gridshift')}\n")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main_options(
    config: Annotated[str | None, typer.Option("--config", help="Config file (TOML).",
                                               metavar="FILE")] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.",
                                          is_eager=True, callback=_print_version)] = False,
) -> None:
    State.config_path = config


def _config() -> Config:
    return load_config(State.config_path)


def _config_if_readable() -> Config | None:
    path = find_config_path(State.config_path, os.environ)
    if path is not None and path.exists() and not os.access(path, os.R_OK):
        return None
    return _config()


def _store(config: Config) -> Store:
    from scheduler.store import Store

    return Store.open(config.database_url)


def _call(request: ApiRequest, existing_database: bool = False, check: bool = True,
          stream: bool = False) -> ApiResponse:
    """Ask the daemon over its socket; with no daemon listening, run the same request
    in-process on the database (only if it exists, with ``existing_database``). With
    ``check``, an error answer becomes a GridshiftError with its code; with ``stream``, a
    body the daemon streams comes as ``chunks``."""
    from scheduler import client

    # A config this user may read is checked first: a broken one is bad input here, not a
    # request sent to whichever daemon a default socket leads to. One they may not read
    # (a system config at 0600) is the daemon's business: only its socket is looked up.
    config = _config_if_readable()
    response = client.send_first(client.candidate_sockets(State.config_path), request,
                                 stream=stream)
    if response is None:
        from scheduler import api
        from scheduler.store import is_sqlite, sqlite_path

        config = config or _config()
        database = sqlite_path(config.database_url)
        # A PostgreSQL database exists before gridshift does: only a file can be missing.
        if existing_database and is_sqlite(config.database_url) and not database.exists():
            raise GridshiftError(f"no database at {database}: no daemon has run with this "
                                 f"config")
        # What the use cases log reaches the daemon's log when a daemon runs them; here,
        # the answer says it, and Python's last-resort handler would repeat it on stderr.
        logging.getLogger("gridshift").addHandler(logging.NullHandler())
        response = api.handle_local(config, request, utc_now())
    if check and response.status >= 400:
        raise _answered_error(response)
    return response


def _answered_error(response: ApiResponse) -> GridshiftError:
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


def _deadline(deadline: str | None, within: str | None, now: datetime) -> datetime:
    if deadline and within:
        raise BadInput("give --deadline or --within, not both")
    if deadline:
        return parse_when(deadline, now)
    return now + parse_duration(within or "24h")


def _duration(text: str) -> timedelta:
    if not text:
        raise BadInput("--duration is required, e.g. --duration 2h")
    return parse_duration(text)


DurationOpt = Annotated[str, typer.Option("--duration", help="Expected run time: 90s, 45m, 2h, "
                                          "1h30m, 1d (required).", metavar="DUR",
                                          show_default=False)]
DeadlineOpt = Annotated[str | None, typer.Option("--deadline", metavar="WHEN",
                        help="Finish by this time: ISO-8601 (naive = local) or +DUR.")]
WithinOpt = Annotated[str | None, typer.Option("--within", metavar="DUR",
                      help="Finish within DUR from now (default 24h).")]
NotBeforeOpt = Annotated[str | None, typer.Option("--not-before", metavar="WHEN",
                         help="Do not start before this time.")]
RegionOpt = Annotated[list[str] | None, typer.Option("--region", metavar="NAME",
                      help="Allowed region (repeat; default: all configured).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
JobIdArg = Annotated[str, typer.Argument(metavar="JOB_ID", show_default=False,
                                         help="A job id, as submit printed it.")]

# What `--export NONE` keeps, as a login shell would set them.
LOGIN_VARIABLES = ("PATH", "HOME", "USER", "LANG")
LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin"


@app.command(cls=CommandAfterSeparator, context_settings={"allow_interspersed_args": False})
@handle_errors
def submit(
    command: Annotated[list[str] | None, typer.Argument(
        metavar="COMMAND [ARG]...", show_default=False,
        help="After --: the job's command and its arguments, as you would run it.")] = None,
    duration: DurationOpt = "",
    deadline: DeadlineOpt = None,
    within: WithinOpt = None,
    not_before: NotBeforeOpt = None,
    region: RegionOpt = None,
    name: Annotated[str | None, typer.Option("--name", metavar="TEXT",
                                             help="A name to show.")] = None,
    power: Annotated[float | None, typer.Option("--power", metavar="WATTS",
                                                help="Estimated power draw.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", metavar="KEY=VALUE",
                   help="Set a variable for the job, on top of --export (repeat).")] = None,
    export: Annotated[str, typer.Option("--export", metavar="ALL|NONE|NAME[,NAME...]",
                      help="Which of your environment variables the job gets: ALL (default), "
                           "NONE (PATH, HOME, USER, LANG only) or the names listed.")] = "ALL",
    array: Annotated[str | None, typer.Option("--array", metavar="INDICES",
                     help="One job per index, e.g. 0-99 or 1,3,5-9 (or 0-99:2); each gets "
                          "GRIDSHIFT_ARRAY_TASK_ID.")] = None,
    interruptible: Annotated[str | None, typer.Option(
        "--interruptible", metavar="suspend|checkpoint",
        help="Run in chunks at the cleanest hours, pausing between them: suspend stops and "
             "continues the job's processes; checkpoint signals it to save its state and "
             "exit 75, then relaunches it.")] = None,
    min_chunk: Annotated[str | None, typer.Option(
        "--min-chunk", metavar="DUR",
        help="Shortest chunk of an interruptible job (default 30m).")] = None,
    max_pauses: Annotated[str | None, typer.Option(
        "--max-pauses", metavar="N",
        help="At most N pauses of an interruptible job (default: no limit).")] = None,
    restart_overhead: Annotated[str | None, typer.Option(
        "--restart-overhead", metavar="DUR",
        help="Checkpoint mode: time a relaunch takes to reload its state (default 0).")
    ] = None,
    checkpoint_signal: Annotated[str | None, typer.Option(
        "--checkpoint-signal", metavar="SIG",
        help="Checkpoint mode: the signal that asks the job to save its state "
             "(default SIGTERM).")] = None,
    checkpoint_grace: Annotated[str | None, typer.Option(
        "--checkpoint-grace", metavar="DUR",
        help="Checkpoint mode: how long the job may take to save and exit 75 before it is "
             "killed and failed (default 2m).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Queue a job; it is planned at once and launched by the daemon in its window.

    The job runs as you, in this directory, with your environment as it is now
    (see --export) and your umask.
    """
    now = utc_now()
    length = _duration(duration)
    argv = list(command or [])
    if not argv or not argv[0]:
        raise BadInput("no command given: gridshift submit --duration 1h -- COMMAND [ARG]...")
    earliest = parse_when(not_before, now) if not_before else now
    finish_by = _deadline(deadline, within, now)
    check_fits(max(now, earliest), length, finish_by)
    if power is not None and not 0 < power < float("inf"):
        raise BadInput("--power must be a number of watts above zero")
    request = SubmitRequest(
        argv=argv,
        duration_s=int(length.total_seconds()),
        not_before=earliest,
        deadline=finish_by,
        cwd=os.getcwd(),
        umask=_current_umask(),
        environment=_exported_environment(os.environ, export),
        env=_parse_env(env or []),
        regions=list(dict.fromkeys(region)) if region else None,
        name=name,
        power_watts=power,
        array=parse_array(array) if array is not None else None,
        interruptible=interruptible,
        min_chunk_s=_seconds(min_chunk),
        max_pauses=_whole_number(max_pauses, "--max-pauses"),
        restart_overhead_s=_seconds(restart_overhead, zero_allowed=True),
        checkpoint_signal=checkpoint_signal,
        checkpoint_grace_s=_seconds(checkpoint_grace),
    )
    document = _call(ApiRequest("POST", "/jobs", body=request.as_json())).document()
    if json_output:
        render.print_json(document)
    else:
        render.print_submitted(document)


def _seconds(text: str | None, zero_allowed: bool = False) -> int | None:
    """A duration option in whole seconds (None where not given); ``0`` where allowed."""
    if text is None:
        return None
    if zero_allowed and text.strip() in ("0", "0s"):
        return 0
    return int(parse_duration(text).total_seconds())


def _whole_number(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    cleaned = text.strip()
    digits = cleaned.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise BadInput(f"bad {option} {text!r}: must be a whole number")
    return int(cleaned)


def _current_umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _exported_environment(environ: Mapping[str, str], export: str) -> dict[str, str]:
    """The caller's variables the job gets, by --export (as sbatch --export and at do)."""
    if export == "ALL":
        return dict(environ)
    if export == "NONE":
        account = pwd.getpwuid(os.getuid())
        login = {"PATH": LOGIN_PATH, "HOME": account.pw_dir, "USER": account.pw_name}
        if "LANG" in environ:
            login["LANG"] = environ["LANG"]
        return login
    names = [n for n in export.split(",") if n]
    if not names or any(not n.replace("_", "").isalnum() or n[0].isdigit() for n in names):
        raise BadInput(f"bad --export {export!r}: use ALL, NONE or NAME[,NAME...]")
    return {n: environ[n] for n in names if n in environ}


def parse_array(text: str) -> list[int]:
    """Array indices as Slurm writes them: ``0-99``, ``1,3,5-9``, ``0-99:2``."""
    indices: list[int] = []
    for part in text.split(","):
        span, _, step_text = part.partition(":")
        low_text, dash, high_text = span.partition("-")
        numbers = [low_text, high_text if dash else low_text, step_text or "1"]
        if not all(n.isascii() and n.isdigit() and len(n) <= 6 for n in numbers):
            raise BadInput(f"bad --array {text!r}: use e.g. 0-99, 1,3,5-9 or 0-99:2")
        low, high, step = (int(n) for n in numbers)
        if high < low or step < 1:
            raise BadInput(f"bad --array {text!r}: a range must go up, with a step from 1")
        indices.extend(range(low, high + 1, step))
    if len(set(indices)) != len(indices):
        raise BadInput(f"bad --array {text!r}: an index is given twice")
    return indices


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"bad --env {pair!r}: use KEY=VALUE")
        parsed[key] = value
    return parsed


@app.command("list", cls=Command)
@handle_errors
def list_jobs(
    state: Annotated[list[str] | None, typer.Option("--state", metavar="STATE",
                     help="Only jobs in this state (repeat).")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Finished jobs too.")] = False,
    user: Annotated[str | None, typer.Option("--user", metavar="NAME",
                    help="Only this user's jobs.")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only your jobs.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", metavar="N", min=1,
                     help="At most N jobs (the newest).")] = None,
    expand: Annotated[bool, typer.Option("--expand", help="One row per array task.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """List unfinished jobs, newest first (--all for every job)."""
    if user is not None and mine:
        raise BadInput("give --user or --mine, not both")
    query: dict[str, list[str]] = {}
    if state:
        query["state"] = list(state)
    if all_jobs:
        query["all"] = ["1"]
    if user is not None:
        query["user"] = [user]
    if mine:
        query["mine"] = ["1"]
    if limit is not None:
        query["limit"] = [str(limit)]
    response = _call(ApiRequest("GET", "/jobs", query), stream=json_output)
    if json_output:
        _write_streamed(response)
    else:
        render.print_jobs(response.document(), expand=expand)


def _write_streamed(response: ApiResponse) -> None:
    """A JSON body to stdout as it arrives (a list of 100,000 jobs is never held whole);
    one cut short (the daemon failed midway) is a failure, not a silent truncation."""
    out = sys.stdout.buffer
    last = b""
    for chunk in response.chunks or iter((response.body,)):
        out.write(chunk)
        last = (last + chunk)[-2:]
    out.flush()
    if last != b"]\n":
        raise GridshiftError("the answer was cut short (see the daemon's log)")


@app.command(cls=Command)
@handle_errors
def show(job_id: JobIdArg, json_output: JsonOpt = False) -> None:
    """Show one job: its plan, its run and its history."""
    document = _call(ApiRequest("GET", f"/jobs/{parse_job_id(job_id)}")).document()
    if json_output:
        render.print_json(document)
    else:
        render.print_job_detail(document)


@app.command(cls=Command)
@handle_errors
def cancel(
    job_id: Annotated[str | None, typer.Argument(metavar="JOB_ID", show_default=False,
                                                 help="A job id, as submit printed it.")
                      ] = None,
    array: Annotated[str | None, typer.Option("--array", metavar="ARRAY_ID",
                     help="Cancel every unfinished task of this array.")] = None,
) -> None:
    """Cancel a job: unstarted jobs never start; a running job gets SIGTERM, then SIGKILL."""
    if (job_id is None) == (array is None):
        raise BadInput("give a JOB_ID or --array ARRAY_ID")
    if array is not None:
        array_id = parse_job_id(array)
        document = _call(ApiRequest("POST", f"/arrays/{array_id}/cancel")).document()
        for outcome in document["cancelled"]:
            sys.stdout.write(f"{outcome['message']}\n")
        return
    document = _call(ApiRequest("POST", f"/jobs/{parse_job_id(job_id or '')}/cancel")).document()
    sys.stdout.write(f"{document['message']}\n")


@app.command(cls=Command)
@handle_errors
def plan(
    duration: DurationOpt = "",
    deadline: DeadlineOpt = None,
    within: WithinOpt = None,
    not_before: NotBeforeOpt = None,
    region: RegionOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Dry run: where and when a job would run, from the stored forecasts. Stores nothing."""
    now = utc_now()
    length = _duration(duration)
    earliest = parse_when(not_before, now) if not_before else now
    finish_by = _deadline(deadline, within, now)
    check_fits(max(now, earliest), length, finish_by)
    body = {"duration_s": int(length.total_seconds()), "not_before": earliest.isoformat(),
            "deadline": finish_by.isoformat(),
            "regions": list(dict.fromkeys(region)) if region else None}
    document = _call(ApiRequest("POST", "/plan", body=body)).document()
    if json_output:
        render.print_json(document)
    else:
        render.print_plan(document)


@app.command(cls=Command)
@handle_errors
def forecast(
    region: Annotated[list[str] | None, typer.Option("--region", metavar="NAME",
                      help="Show this region (repeat; default: all configured).")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Fetch from every provider now "
                                          "and store the result.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Show the newest stored forecast per region from now on."""
    regions = list(dict.fromkeys(region or []))
    if refresh:
        request = ApiRequest("POST", "/forecast/refresh", body={"regions": regions or None})
    else:
        request = ApiRequest("GET", "/forecast", {"region": regions} if regions else {})
    response = _call(request, check=False)
    document = response.document()
    refreshed = document.get("refresh") or []
    every_fetch_failed = bool(refreshed) and not any(r.get("ok") for r in refreshed)
    if response.status >= 400 and not every_fetch_failed:
        raise _answered_error(response)
    if every_fetch_failed:
        # Say how each fetch went, then the error.
        for result in refreshed:
            render.message(render.refresh_line(result))
        raise GridshiftError("every provider failed; stored forecasts are unchanged")
    if json_output:
        render.print_json(document)
    else:
        render.print_forecast(document)


@app.command(cls=Command)
@handle_errors
def daemon(
    once: Annotated[bool, typer.Option(
        "--once", help="One iteration (reap, refresh what is due, re-plan, launch what is "
        "due), then exit: for cron or a systemd timer instead of a long-running daemon.",
    )] = False,
) -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C (or once, --once)."""
    from scheduler import stopflag

    stopflag.install()  # before the slow imports: an early SIGTERM is a clean stop
    from scheduler.daemon import configure_logging, run_daemon
    from scheduler.slurm import check_commands

    configure_logging()
    config = _config()
    check_commands(config)  # before the database is created: a config error changes nothing
    store = _store(config)
    raise typer.Exit(run_daemon(config, store, once=once))


@app.command(cls=Command)
@handle_errors
def status(json_output: JsonOpt = False) -> None:
    """Health check: daemon heartbeat, forecast refreshes, queue and next launches.

    Exit code 1 when no daemon is running or its heartbeat is stale.
    """
    document = _call(ApiRequest("GET", "/status"), existing_database=True).document()
    if json_output:
        render.print_json(document)
    else:
        render.print_status(document)
    if not document.get("healthy"):
        raise typer.Exit(EXIT_FAILURE)


@service_app.command("install", cls=Command)
@handle_errors
def service_install(
    user: Annotated[bool, typer.Option("--user", help="A user unit (systemctl --user) "
                                       "instead of a system unit.")] = False,
    print_only: Annotated[bool, typer.Option("--print", help="Print the unit; write "
                                             "nothing.")] = False,
    service_user: Annotated[str, typer.Option("--service-user", metavar="NAME",
                            help="Account a system unit runs as (root: each job runs as its "
                                 "submitter; another account runs every job as itself).")
                            ] = "root",
) -> None:
    """Write the systemd unit for this installation and say which commands come next."""
    from scheduler import service
    from scheduler.config import find_config_path

    _config()  # refuse a broken config before writing a unit that points at it
    config_path = find_config_path(State.config_path, os.environ)
    paths = service.this_installation(str(config_path) if config_path else None, user,
                                      service_user)
    unit = service.render_unit(paths)
    if print_only:
        sys.stdout.write(unit)
        return
    installed = service.install(unit, user)
    sys.stdout.write(f"wrote {installed.path}\nnext:\n")
    for step in installed.next_steps:
        sys.stdout.write(f"  {step}\n")


@db_app.command("upgrade", cls=Command)
@handle_errors
def db_upgrade() -> None:
    """Apply pending database migrations."""
    from scheduler.migrate import HEAD_REVISION, current_revision
    from scheduler.store import shown_url

    config = _config()
    store = _store(config)
    sys.stdout.write(f"database {shown_url(config.database_url)} at revision "
                     f"{current_revision(store.engine) or HEAD_REVISION}\n")


@app.command(cls=Command)
@handle_errors
def report(
    since: Annotated[str | None, typer.Option("--since", metavar="WHEN",
                     help="Only jobs that started at or after this time.")] = None,
    until: Annotated[str | None, typer.Option("--until", metavar="WHEN",
                     help="Only jobs that started before this time.")] = None,
    region: Annotated[list[str] | None, typer.Option("--region", metavar="NAME",
                      help="Only jobs that ran in this region (repeat).")] = None,
    json_output: JsonOpt = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="Print one CSV row per job.")] = False,
    plot: Annotated[str | None, typer.Option("--plot", metavar="FILE.png",
                    help="Write charts per region and per job (needs matplotlib).")] = None,
    html_file: Annotated[str | None, typer.Option("--html", metavar="FILE.html",
                         help="Write one self-contained HTML page with totals, table "
                              "and charts.")] = None,
) -> None:
    """Scheduled versus actual versus run-now emissions of finished jobs, with totals."""
    now = utc_now()
    if json_output and csv_output:
        raise BadInput("give --json or --csv, not both")
    start = parse_when(since, now) if since else None
    end = parse_when(until, now) if until else None
    if start is not None and end is not None and start >= end:
        raise BadInput("--since must be before --until")
    files = [(Path(p), form) for p, form in ((plot, "png"), (html_file, "html")) if p]
    for path, _ in files:
        if not path.parent.is_dir():
            raise BadInput(f"cannot write {path}: no such directory {path.parent}")
    query: dict[str, list[str]] = {"region": list(dict.fromkeys(region or []))}
    if start is not None:
        query["since"] = [start.isoformat()]
    if end is not None:
        query["until"] = [end.isoformat()]
    # Files are written here, by the caller: a daemon never writes files for a user.
    for path, form in files:
        body = _call(ApiRequest("GET", "/report", {**query, "format": [form]})).body
        _write_file(path, body)
    form = "json" if json_output else "csv" if csv_output else "text"
    response = _call(ApiRequest("GET", "/report", {**query, "format": [form]}))
    sys.stdout.buffer.write(response.body)
    for path, _ in files:
        render.message(f"wrote {path}")
    _exit_at_once()


def _write_file(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _exit_at_once() -> NoReturn:
    """End the process with status 0 once stdout is flushed, skipping the interpreter's
    teardown (which frees every module and object one by one: a tenth of a large
    report's time). Only for commands that have nothing left to close or write."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


def _misplaced_config(args: Sequence[str]) -> str | None:
    """The command a ``--config`` was given after (``gridshift list --config FILE``), where
    typer would only say it knows no such option; None when every --config is in place."""
    words = list(args[:args.index("--")] if "--" in args else args)
    position = 0
    while position < len(words) and words[position].startswith("-"):
        position += 2 if words[position] == "--config" else 1
    if any(word == "--config" or word.startswith("--config=") for word in words[position + 1:]):
        return words[position]
    return None


def main() -> None:
    command = _misplaced_config(sys.argv[1:])
    if command is not None:
        render.error(f"--config goes before the command: gridshift --config FILE {command} ...")
        sys.exit(EXIT_BAD_INPUT)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


