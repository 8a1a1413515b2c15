"""The ``gridshift`` command: parse, call, print. No business logic and no SQL here.

Exit codes: 0 ok, 1 failure, 2 bad input (which writes nothing).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from scheduler import render, submitcli
from scheduler.clicalls import (
    State,
    answered_error,
    call,
    current_config,
    deadline_from,
    misplaced_config,
    misplaced_config_error,
    open_store,
    report_failure,
    required_duration,
)
from scheduler.clihelp import Command, Group, ParsesOwnArguments
from scheduler.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, BadInput, GridshiftError
from scheduler.records import ApiRequest, ApiResponse
from scheduler.simulate.cli import simulate_app
from scheduler.timespec import check_fits, parse_job_id, parse_when, utc_now

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


def handle_errors(command: F) -> F:
    """Show a failure the user should see as one line on stderr and exit with its code
    (``clicalls.report_failure``); anything else is a bug and keeps its traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Exception as error:
            code = report_failure(error)
            if code is None:
                raise
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


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

@app.command(cls=ParsesOwnArguments, help=submitcli.SUMMARY, add_help_option=False)
def submit(context: typer.Context) -> None:
    """``python -m scheduler`` sends submit to submitcli before typer loads; this is the
    same command for whoever runs the typer app itself."""
    raise typer.Exit(submitcli.main(context.args, State.config_path))


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
    response = call(ApiRequest("GET", "/jobs", query), stream=json_output)
    if json_output:
        _write_streamed(response, b"]\n")
    else:
        render.print_jobs(response.document(), expand=expand)


def _write_streamed(response: ApiResponse, ending: bytes) -> None:
    """A body to stdout as it arrives (a list of 100,000 jobs is never held whole); one
    cut short (the daemon failed midway), which does not end with ``ending``, is a
    failure, not a silent truncation."""
    out = sys.stdout.buffer
    last = b""
    for chunk in response.chunks or iter((response.body,)):
        out.write(chunk)
        last = (last + chunk)[-len(ending):]
    out.flush()
    if last != ending:
        raise GridshiftError("the answer was cut short (see the daemon's log)")


@app.command(cls=Command)
@handle_errors
def show(job_id: JobIdArg, json_output: JsonOpt = False) -> None:
    """Show one job: its plan, its run and its history."""
    document = call(ApiRequest("GET", f"/jobs/{parse_job_id(job_id)}")).document()
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
        document = call(ApiRequest("POST", f"/arrays/{array_id}/cancel")).document()
        for outcome in document["cancelled"]:
            sys.stdout.write(f"{outcome['message']}\n")
        return
    document = call(ApiRequest("POST", f"/jobs/{parse_job_id(job_id or '')}/cancel")).document()
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
    length = required_duration(duration)
    earliest = parse_when(not_before, now) if not_before else now
    finish_by = deadline_from(deadline, within, now)
    check_fits(max(now, earliest), length, finish_by)
    body = {"duration_s": int(length.total_seconds()), "not_before": earliest.isoformat(),
            "deadline": finish_by.isoformat(),
            "regions": list(dict.fromkeys(region)) if region else None}
    document = call(ApiRequest("POST", "/plan", body=body)).document()
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
    response = call(request, check=False)
    document = response.document()
    refreshed = document.get("refresh") or []
    every_fetch_failed = bool(refreshed) and not any(r.get("ok") for r in refreshed)
    if response.status >= 400 and not every_fetch_failed:
        raise answered_error(response)
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
    from scheduler.executors.slurm import check_commands

    configure_logging()
    config = current_config()
    check_commands(config)  # before the database is created: a config error changes nothing
    store = open_store(config)
    raise typer.Exit(run_daemon(config, store, once=once))


@app.command(cls=Command)
@handle_errors
def status(json_output: JsonOpt = False) -> None:
    """Health check: daemon heartbeat, forecast refreshes, queue and next launches.

    Exit code 1 when no daemon is running or its heartbeat is stale.
    """
    document = call(ApiRequest("GET", "/status"), existing_database=True).document()
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

    current_config()  # refuse a broken config before writing a unit that points at it
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

    config = current_config()
    store = open_store(config)
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
        body = call(ApiRequest("GET", "/report", {**query, "format": [form]})).body
        _write_file(path, body)
    form = "json" if json_output else "csv" if csv_output else "text"
    response = call(ApiRequest("GET", "/report", {**query, "format": [form]}),
                    stream=form != "text")
    if form == "text":
        sys.stdout.buffer.write(response.body)
    else:
        _write_streamed(response, b"}\n" if form == "json" else b"\n")
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


def main() -> None:
    command = misplaced_config(sys.argv[1:])
    if command is not None:
        render.error(str(misplaced_config_error(command)))
        sys.exit(EXIT_BAD_INPUT)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


