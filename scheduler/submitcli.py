"""``gridshift submit``: its options, parsed by the standard library's argparse.

The command users run most, and the one a sweep runs a thousand times, so it loads only
what a submit needs: this typer version parses every other command's options through
pydantic, 0.2 s before anything else happens (benchmarks/RESULTS.md). This module is
submit's one definition: ``python -m scheduler`` and the ``gridshift`` script hand it
submit's arguments before typer loads, and the typer app in cli.py lists it and passes it
its arguments untouched. Parse, call, print, as cli.py.
"""

from __future__ import annotations

import argparse
import os
import pwd
from collections.abc import Mapping, Sequence
from typing import NoReturn

from scheduler import clicalls, render
from scheduler.errors import EXIT_OK, BadInput
from scheduler.records import ApiRequest, SubmitRequest
from scheduler.timespec import check_fits, parse_duration, parse_when, utc_now

SUMMARY = "Queue a job; it is planned at once and launched by the daemon in its window."
DESCRIPTION = (f"{SUMMARY}\n\nThe job runs as you, in this directory, with your environment as "
               "it is now\n(see --export) and your umask.")
USAGE = "gridshift submit --duration DUR [OPTIONS] -- COMMAND [ARG]..."

# What `--export NONE` keeps, as a login shell would set them.
LOGIN_VARIABLES = ("PATH", "HOME", "USER", "LANG")
LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin"


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are bad input: one line and exit 2, as every command's."""

    def error(self, message: str) -> NoReturn:
        raise BadInput(message)


def parser() -> argparse.ArgumentParser:
    """Submit's options; the job's command is what follows ``--`` (or the first word that
    is not an option)."""
    options = _Parser(prog="gridshift submit", usage=USAGE, description=DESCRIPTION,
                      allow_abbrev=False, add_help=False,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add = options.add_argument
    add("--help", action="help", help="Show this message and exit.")
    add("--duration", metavar="DUR", default="",
        help="Expected run time: 90s, 45m, 2h, 1h30m, 1d (required).")
    add("--deadline", metavar="WHEN",
        help="Finish by this time: ISO-8601 (naive = local) or +DUR.")
    add("--within", metavar="DUR", help="Finish within DUR from now (default 24h).")
    add("--not-before", metavar="WHEN", help="Do not start before this time.")
    add("--region", metavar="NAME", action="append",
        help="Allowed region (repeat; default: all configured).")
    add("--name", metavar="TEXT", help="A name to show.")
    add("--power", metavar="WATTS", help="Estimated power draw.")
    add("--env", metavar="KEY=VALUE", action="append",
        help="Set a variable for the job, on top of --export (repeat).")
    add("--export", metavar="ALL|NONE|NAME[,NAME...]", default="ALL",
        help="Which of your environment variables the job gets: ALL (default), NONE (PATH, "
             "HOME, USER, LANG only) or the names listed.")
    add("--array", metavar="INDICES",
        help="One job per index, e.g. 0-99 or 1,3,5-9 (or 0-99:2); each gets "
             "GRIDSHIFT_ARRAY_TASK_ID.")
    add("--interruptible", metavar="suspend|checkpoint",
        help="Run in chunks at the cleanest hours, pausing between them: suspend stops and "
             "continues the job's processes; checkpoint signals it to save its state and "
             "exit 75, then relaunches it.")
    add("--min-chunk", metavar="DUR",
        help="Shortest chunk of an interruptible job (default 30m).")
    add("--max-pauses", metavar="N",
        help="At most N pauses of an interruptible job (default: no limit).")
    add("--restart-overhead", metavar="DUR",
        help="Checkpoint mode: time a relaunch takes to reload its state (default 0).")
    add("--checkpoint-signal", metavar="SIG",
        help="Checkpoint mode: the signal that asks the job to save its state "
             "(default SIGTERM).")
    add("--checkpoint-grace", metavar="DUR",
        help="Checkpoint mode: how long the job may take to save and exit 75 before it is "
             "killed and failed (default 2m).")
    add("--json", dest="json_output", action="store_true", help="Print one JSON document.")
    add("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG]...",
        help="After --: the job's command and its arguments, as you would run it.")
    return options


def main(arguments: Sequence[str], config_path: str | None) -> int:
    """Run ``gridshift [--config FILE] submit ARGUMENTS``; return the exit code."""
    clicalls.State.config_path = config_path
    try:
        submit(list(arguments))
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        code = clicalls.report_failure(error)
        if code is None:
            raise
        return code
    return EXIT_OK


def submit(arguments: list[str]) -> None:
    if clicalls.misplaced_config(["submit", *arguments]) is not None:
        raise clicalls.misplaced_config_error("submit")
    head, separator, tail = _split_at_separator(arguments)
    given = parser().parse_args(head)
    # Everything from the first word that is not an option is the command, a later -- too.
    argv = [*given.command, *(["--"] if separator and given.command else []), *tail]
    now = utc_now()
    length = clicalls.required_duration(given.duration)
    if not argv or not argv[0]:
        raise BadInput("no command given: gridshift submit --duration 1h -- COMMAND [ARG]...")
    earliest = parse_when(given.not_before, now) if given.not_before else now
    finish_by = clicalls.deadline_from(given.deadline, given.within, now)
    check_fits(max(now, earliest), length, finish_by)
    request = SubmitRequest(
        argv=argv,
        duration_s=int(length.total_seconds()),
        not_before=earliest,
        deadline=finish_by,
        cwd=os.getcwd(),
        umask=_current_umask(),
        environment=_exported_environment(os.environ, given.export),
        env=_parse_env(given.env or []),
        regions=list(dict.fromkeys(given.region)) if given.region else None,
        name=given.name,
        power_watts=_power(given.power),
        array=_parse_array(given.array) if given.array is not None else None,
        interruptible=given.interruptible,
        min_chunk_s=_seconds(given.min_chunk),
        max_pauses=_whole_number(given.max_pauses, "--max-pauses"),
        restart_overhead_s=_seconds(given.restart_overhead, zero_allowed=True),
        checkpoint_signal=given.checkpoint_signal,
        checkpoint_grace_s=_seconds(given.checkpoint_grace),
    )
    document = clicalls.call(ApiRequest("POST", "/jobs", body=request.as_json())).document()
    if given.json_output:
        render.print_json(document)
    else:
        render.print_submitted(document)


def _split_at_separator(arguments: list[str]) -> tuple[list[str], bool, list[str]]:
    """(before the first ``--``, whether there is one, after it)."""
    if "--" not in arguments:
        return arguments, False, []
    at = arguments.index("--")
    return arguments[:at], True, arguments[at + 1:]


def _power(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        watts = float(text)
    except ValueError:
        watts = float("nan")
    if not 0 < watts < float("inf"):
        raise BadInput("--power must be a number of watts above zero")
    return watts


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


def _parse_array(text: str) -> list[int]:
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
