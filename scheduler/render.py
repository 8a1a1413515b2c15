"""Turn gridshift's results into output: JSON documents, and plain text rendered from them.

Every command builds one JSON document (``job_json``, ``show_json``, ``Status.as_json``,
``RegionView.as_json``, plan's) and prints it with ``print_json``, or as text with the
``print_*`` function of that document; the text is never built from ORM objects, so the
daemon's answer over the local API and the in-process result print the same way.

Text is inert: every string that came from a user, a provider or the system passes
through ``inert`` (control characters escaped, no markup language at all), so names and
arguments such as ``x[/]`` or ``\\e]0;title\\a`` print as themselves and cannot colour,
move or retitle the terminal.

JSON times are ISO-8601 UTC and intensities gCO2eq/kWh; text shows local time with its
zone. Data goes to stdout, messages to stderr. Cheap to import: no SQLAlchemy, numpy,
pandas or rich (the submit client is timed).
"""

from __future__ import annotations

import functools
import json
import math
import re
import shlex
import sys
import unicodedata
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import IO, TYPE_CHECKING, Any

from scheduler import accounting
from scheduler.records import PlacementReason, plan_note
from scheduler.timespec import format_duration, format_local, format_local_iso, iso_utc
from scheduler.units import PERCENTILE

if TYPE_CHECKING:  # models imports SQLAlchemy, which the fast submit path never loads
    from scheduler.config import Config
    from scheduler.models import Job, JobEvent, JobRun
    from scheduler.records import ChunkPlan

# The plan reason of a job placed as asked (``plan_reason``'s text): `submit` prints the
# plan's note only for the others, and for plans that left regions out or used replayed
# data.
USUAL_PLAN_REASON = "covered_window"
STATE_ORDER = ("queued", "planned", "running", "paused", "succeeded", "failed", "cancelled",
               "lost")
# An array's id cell lists at most this many index ranges (Slurm style), then "...".
MAX_INDEX_RANGES = 6


# Inert text ---------------------------------------------------------------------------------

# C0 controls, DEL and C1 controls (ESC, BEL, CR, CSI, OSC...), the Unicode line and
# paragraph separators, and the bidirectional overrides and isolates, which reorder what
# a reader sees. Printable Unicode (and the surrogates of a non-UTF-8 argv) stays as is.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(text: object) -> str:
    """``text`` as a string safe to print on a terminal: every control character shown as
    an escape (ESC as ``\\x1b``, a newline as ``\\x0a``), so a cell stays one line and
    nothing in it acts on the terminal. No markup is ever interpreted anywhere."""
    value = text if isinstance(text, str) else str(text)
    if _CONTROL.search(value) is None:
        return value
    return _CONTROL.sub(_escape, value)


def shell_command(argv: Sequence[str]) -> str:
    """The command as one line a user can paste into a POSIX shell: each argument quoted
    with shlex, or ANSI-C quoted (``$'...'``, bash/zsh/ksh) where it holds control
    characters, so those travel as escapes and never reach the terminal raw."""
    return " ".join(_shell_word(word) for word in argv)


def _shell_word(word: str) -> str:
    if _CONTROL.search(word) is None:
        return shlex.quote(word)
    body = word.replace("\\", "\\\\").replace("'", "\\'")
    return "$'" + _CONTROL.sub(_escape, body) + "'"


# JSON documents -----------------------------------------------------------------------------


class Form(Enum):
    """How a job document's value is written, whatever the row it is read from."""

    VALUE = "value"  # as stored: numbers, text, null
    TIME = "time"  # ISO-8601 UTC text (iso_utc)
    LIST = "list"  # a JSON array
    FLAG = "flag"  # true or false
    MAYBE_FLAG = "maybe_flag"  # true, false or null (not yet known)


# A derived key's values, a column at a time, from the document's keys before it and the
# stored columns (and the config, which may be None).
Derive = Callable[[Mapping[str, Sequence[Any]], "Config | None"], list[Any]]


@dataclass(frozen=True)
class DocumentKey:
    """One key of the job document: read from a jobs column, or derived from the keys
    before it."""

    name: str
    column: str | None = None
    form: Form = Form.VALUE
    derive: Derive | None = None
    reads: tuple[str, ...] = ()  # the jobs columns a derived key reads besides the keys
    needs_config: bool = False  # derived from the config too: never stored (JobDocument)


def _stored(name: str, form: Form = Form.VALUE, column: str | None = None) -> DocumentKey:
    return DocumentKey(name, column or name, form)


def _planned_end(document: Mapping[str, Sequence[Any]], _: Config | None) -> list[Any]:
    # planned_start is iso_utc's text, so the sum keeps its UTC offset. An interruptible
    # job's planned start is that of its next chunk, which ends at chunk_end.
    parse = datetime.fromisoformat
    lengths = {seconds: timedelta(seconds=seconds) for seconds in set(document["duration_s"])}
    return [chunk_end if chunk_end is not None and start is not None else
            None if start is None else (parse(start) + lengths[seconds]).isoformat()
            for start, seconds, chunk_end in zip(document["planned_start"],
                                                 document["duration_s"],
                                                 document["chunk_end"], strict=True)]


def _plan_note(document: Mapping[str, Sequence[Any]], _: Config | None) -> list[Any]:
    return [_plan_words(reason, _text(left_out), replayed, chunks, words)
            for reason, left_out, replayed, chunks, words in zip(
                document["plan_reason"], document["plan_left_out"], document["plan_replayed"],
                document["plan_chunk_count"], document["plan_note"], strict=True)]


@functools.lru_cache(maxsize=1024)  # few distinct notes in a large queue
def _plan_words(reason: int | None, left_out: str | None, replayed: Any, chunks: int | None,
                stored_words: str | None) -> str | None:
    """A plan's note in words (records.plan_note) from its stored parts; for a job planned
    before they were stored (migration 0010), the words stored then."""
    if reason is None or stored_words is not None:
        return stored_words
    return plan_note(reason, json.loads(left_out) if left_out else (), bool(replayed), chunks)


def _text(value: Any) -> Any:
    """A stored list as its JSON text (an ORM row holds the list itself)."""
    return json.dumps(value) if isinstance(value, list) else value


def _plan_reason(document: Mapping[str, Sequence[Any]], _: Config | None) -> list[Any]:
    return [None if reason is None else _reason_names(reason)
            for reason in document["plan_reason"]]


@functools.lru_cache(maxsize=64)
def _reason_names(reason: int) -> str:
    """The reason flags' names, lower case, joined by "|": ``covered_window|moved_for_slot``."""
    return "|".join(str(flag.name).lower() for flag in PlacementReason(reason))


def _embodied(document: Mapping[str, Sequence[Any]], config: Config | None) -> list[Any]:
    if config is None:  # the region's hardware is unknown
        return [None] * len(document["run_region"])
    held = accounting.held_column(*(document[name] for name in accounting.HELD_READS))
    return accounting.embodied_column(config, document["run_region"], document["started_at"],
                                      document["ended_at"], held)


def _sci(document: Mapping[str, Sequence[Any]], _: Config | None) -> list[Any]:
    if list(document["embodied_g"]).count(None) == len(document["embodied_g"]):
        return [None] * len(document["embodied_g"])  # no embodied share: no SCI
    return [accounting.sci_from(actual, embodied) for actual, embodied in
            zip(document["actual_emissions_g"], document["embodied_g"], strict=True)]


# The job document of every output (show, list --json, report --json and --csv), keys in
# their order (fixed by the CLI contract: new keys go at the end). It never holds a value
# of the job's environment or --env (the owner's secrets). Emissions are the store's
# figures (models.review_figures, models.scheduled_grams); the embodied share of SCI needs
# the region's hardware from the config. Owner keys are null for jobs stored before owners
# were recorded.
JOB_DOCUMENT: tuple[DocumentKey, ...] = (
    _stored("id"), _stored("name"), _stored("state"), _stored("argv", Form.LIST),
    _stored("cwd"), _stored("duration_s"), _stored("not_before", Form.TIME),
    _stored("deadline", Form.TIME), _stored("regions", Form.LIST), _stored("power_watts"),
    _stored("signal"), _stored("planned_region"), _stored("planned_start", Form.TIME),
    _stored("planned_intensity"), _stored("planned_vintage", Form.TIME),
    DocumentKey("plan_note", derive=_plan_note,
                reads=("plan_reason", "plan_left_out", "plan_replayed", "plan_chunk_count",
                       "plan_note")),
    _stored("run_now_intensity"), _stored("submitted_at", Form.TIME), _stored("run_region"),
    _stored("started_at", Form.TIME), _stored("ended_at", Form.TIME), _stored("exit_code"),
    _stored("pid"), _stored("log_path"), _stored("deadline_missed", Form.FLAG),
    _stored("end_reason"),
    DocumentKey("planned_end", derive=_planned_end),
    # Emissions review: measured energy, backfilled intensity, and the figures from them.
    _stored("energy_kwh"), _stored("energy_method"), _stored("energy_note"),
    _stored("actual_intensity"), _stored("intensity_estimated", Form.MAYBE_FLAG),
    _stored("actuals_state"), _stored("scheduled_emissions_g"), _stored("actual_emissions_g"),
    _stored("run_now_emissions_g"), _stored("saved_g"),
    DocumentKey("embodied_g", derive=_embodied, needs_config=True,
                reads=("run_region", "started_at", "ended_at", *accounting.HELD_READS)),
    DocumentKey("sci_g", derive=_sci, needs_config=True, reads=("actual_emissions_g",)),
    _stored("user", column="owner_name"), _stored("uid", column="owner_uid"),
    _stored("array_id"), _stored("array_index"), _stored("slurm_job_id"),
    # Interruptible jobs (all null for a job run as one block): the settings, the progress
    # (seconds of work done by the runs that ended, runs started) and the end of the chunk
    # the job runs in or starts next.
    _stored("interruptible"), _stored("min_chunk_s"), _stored("max_pauses"),
    _stored("restart_overhead_s"), _stored("checkpoint_signal"),
    _stored("checkpoint_grace_s"), _stored("work_done_s"), _stored("run_count"),
    _stored("chunk_end", Form.TIME),
    # Why the job is placed where it is (the note puts it into words): records.
    # PlacementReason's names, null for a job planned before they were stored; the regions
    # left out of the comparison (null for none); whether the region's intensity was
    # replayed from bundled data (the demo).
    DocumentKey("plan_reason", derive=_plan_reason, reads=("plan_reason",)),
    _stored("plan_left_out", Form.LIST), _stored("plan_replayed", Form.MAYBE_FLAG),
)
# The jobs columns the document is read from, in its order, then those derived keys read.
DOCUMENT_COLUMNS = tuple(dict.fromkeys(
    [*(key.column for key in JOB_DOCUMENT if key.column is not None),
     *(name for key in JOB_DOCUMENT for name in key.reads)]))
# The keys derived from the config (next to each other), and those before and after them:
# a stored document (models.JobDocument) holds the others, as the config may change.
CONFIG_KEYS = tuple(key.name for key in JOB_DOCUMENT if key.needs_config)
_FIRST_CONFIG_KEY = next(i for i, key in enumerate(JOB_DOCUMENT) if key.needs_config)
HEAD_KEYS = tuple(key.name for key in JOB_DOCUMENT[:_FIRST_CONFIG_KEY])
_TAIL_DOCUMENT = JOB_DOCUMENT[_FIRST_CONFIG_KEY + len(CONFIG_KEYS):]
assert not any(key.needs_config for key in _TAIL_DOCUMENT), "config keys must be adjacent"
# The jobs columns the config's keys read.
CONFIG_READS = tuple(dict.fromkeys(name for key in JOB_DOCUMENT if key.needs_config
                                   for name in key.reads))
# What `show --json` and `report --json` (and --csv, as JSON text) add after the job
# document: an interruptible job's planned chunks (``chunk_json``) and its runs
# (``run_json``), in order; empty lists for any other job.
JOB_PARTS = ("chunks", "runs")
TAIL_KEYS = (*(key.name for key in _TAIL_DOCUMENT), *JOB_PARTS)


def config_columns(stored: Mapping[str, Sequence[Any]], config: Config | None
                   ) -> dict[str, Sequence[Any]]:
    """The keys derived from the config (``CONFIG_KEYS``) of many jobs, a column at a time,
    from their ``CONFIG_READS`` as ``document_columns`` takes them."""
    document: dict[str, Sequence[Any]] = {}
    readable = ChainMap(document, dict(stored))
    for key in JOB_DOCUMENT:
        if key.needs_config and key.derive is not None:
            document[key.name] = key.derive(readable, config)
    return document


def _typed(value: Any, form: Form) -> Any:
    """A value as an ORM row holds it (datetimes, lists, booleans) in document form."""
    if value is None:
        return None
    if form is Form.TIME:
        return iso_utc(value)
    if form is Form.LIST:
        return list(value)
    return bool(value) if form in (Form.FLAG, Form.MAYBE_FLAG) else value


def job_json(job: Job, config: Config | None = None) -> dict[str, Any]:
    """The job document (``JOB_DOCUMENT``) of an ORM Job."""
    values = {key.column: [_typed(getattr(job, key.column, None), key.form)]
              for key in JOB_DOCUMENT if key.column is not None}
    for name in DOCUMENT_COLUMNS:
        values.setdefault(name, [getattr(job, name, None)])
    return {name: column[0] for name, column in document_columns(values, config).items()}


def document_columns(stored: Mapping[str, Sequence[Any]], config: Config | None = None,
                     ) -> dict[str, Sequence[Any]]:
    """The job documents of many jobs a column at a time (key -> one value per job), from
    ``stored``: each of ``DOCUMENT_COLUMNS`` (jobs column -> one value per job) already in
    its document form, except that booleans may be 0/1 and lists JSON text (left so: the
    encoders embed it as it is)."""
    document: dict[str, Sequence[Any]] = {}
    # A derived key reads the keys before it, and stored columns (in document form) too.
    readable = ChainMap(document, dict(stored))
    for key in JOB_DOCUMENT:
        if key.derive is not None:
            document[key.name] = key.derive(readable, config)
            continue
        values = stored[key.column or key.name]
        if key.form is Form.FLAG:
            values = [bool(value) for value in values]
        elif key.form is Form.MAYBE_FLAG:
            values = [None if value is None else bool(value) for value in values]
        document[key.name] = values
    return document


def environment_names(job: Job) -> list[str]:
    """The sorted names (never the values) of what the job runs with: the captured
    environment and the --env variables."""
    captured = getattr(job, "environment", None) or {}
    return sorted({*captured, *(job.env or {})})


def event_json(event: JobEvent) -> dict[str, Any]:
    return {"at": iso_utc(event.at), "old_state": event.old_state,
            "new_state": event.new_state, "reason": event.reason}


def chunk_json(chunk: ChunkPlan) -> dict[str, Any]:
    """One planned chunk of an interruptible job (intensity: its mean forecast)."""
    return {"start": iso_utc(chunk.start), "end": iso_utc(chunk.end), "region": chunk.region,
            "intensity": chunk.intensity}


def run_json(run: JobRun) -> dict[str, Any]:
    """One run of an interruptible job: from its launch or resume to its pause or end
    (end null while it runs); work_s excludes the restart overhead."""
    return {"run": run.run, "start": iso_utc(run.started_at),
            "end": None if run.ended_at is None else iso_utc(run.ended_at),
            "region": run.region, "outcome": run.outcome, "work_s": run.work_s,
            "energy_kwh": run.energy_kwh, "actual_intensity": run.actual_intensity}


def parts_json(chunks: Iterable[ChunkPlan], runs: Iterable[JobRun]) -> dict[str, Any]:
    """The ``JOB_PARTS`` of one job."""
    return {"chunks": [chunk_json(chunk) for chunk in chunks],
            "runs": [run_json(run) for run in runs]}


def parts_columns(ids: Sequence[int], chunks: Mapping[int, Sequence[ChunkPlan]],
                  runs: Mapping[int, Sequence[JobRun]]) -> dict[str, list[str]]:
    """The ``JOB_PARTS`` of many jobs a column at a time, each value compact JSON text
    (as lists are in ``document_columns``): a report's page."""
    empty = "[]"
    columns: dict[str, list[str]] = {name: [] for name in JOB_PARTS}
    for job_id in ids:
        if job_id not in chunks and job_id not in runs:
            columns["chunks"].append(empty)
            columns["runs"].append(empty)
            continue
        for name, value in parts_json(chunks.get(job_id, ()), runs.get(job_id, ())).items():
            columns[name].append(json.dumps(_finite(value), separators=JSON_SEPARATORS,
                                            allow_nan=False))
    return columns


def show_json(job: Job, events: Iterable[JobEvent], config: Config | None = None,
              chunks: Iterable[ChunkPlan] = (), runs: Iterable[JobRun] = ()
              ) -> dict[str, Any]:
    """The document of `show`: the job document, its planned chunks and runs
    (``JOB_PARTS``), its history and its variable names."""
    document = job_json(job, config)
    document.update(parts_json(chunks, runs))
    document["events"] = [event_json(event) for event in events]
    document["environment_names"] = environment_names(job)
    return document


# The one JSON format of every --json output: one compact line, ASCII, as `report --json`
# writes its documents of 100,000 jobs (indenting those would cost more than encoding them).
JSON_SEPARATORS = (",", ":")


def print_json(document: Any) -> None:
    """One document in the one JSON format of every ``--json`` output."""
    try:
        text = json.dumps(document, separators=JSON_SEPARATORS, allow_nan=False)
    except ValueError:  # NaN or Infinity, which JSON has not: null (unknown) instead
        text = json.dumps(_finite(document), separators=JSON_SEPARATORS, allow_nan=False)
    sys.stdout.write(text + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


# Messages -----------------------------------------------------------------------------------


def error(message: str) -> None:
    sys.stderr.write(f"gridshift: {inert(message)}\n")


def message(text: str) -> None:
    """A human message on stderr (data goes to stdout)."""
    sys.stderr.write(inert(text) + "\n")


def intensity(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _grams(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} g"


def _local(text: str | None) -> str:
    """Local time of an ISO-8601 text from a document."""
    return "-" if text is None else format_local(datetime.fromisoformat(text))


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(timedelta(seconds=seconds))


# Plain tables -------------------------------------------------------------------------------


def _width(cell: str) -> int:
    """Terminal columns of a cell: wide (CJK) characters take two, combining marks none."""
    if cell.isascii():
        return len(cell)
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in cell)


def inert_column(cells: Sequence[str]) -> Sequence[str]:
    """``inert`` of each cell; one search over the whole column when none needs it."""
    if _CONTROL.search("".join(cells)) is None:
        return cells
    return [inert(cell) for cell in cells]


def _table_lines(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Iterator[str]:
    """A header, a rule, and one line per row, columns padded to their widest cell. The
    cells must already be inert."""
    cells: list[Sequence[str]] = ([list(column) for column in zip(*rows, strict=True)]
                                  if rows else [[] for _ in columns])
    return _column_table_lines(columns, cells)


def _column_table_lines(headers: Sequence[str], columns: Sequence[Sequence[str]]
                        ) -> Iterator[str]:
    """``_table_lines`` from the cells a column at a time: rows of ASCII text (the usual
    case) are padded by one %-format, the others cell by cell in terminal columns."""
    ascii_columns = ["".join(column).isascii() for column in columns]
    widths = [max(len(header), max(map(len if plain else _width, column), default=0))
              for header, column, plain in zip(headers, columns, ascii_columns, strict=True)]
    form = "  ".join([*(f"%-{width}s" for width in widths[:-1]), "%s"])
    last = len(widths) - 1

    def padded(cells: Sequence[str]) -> str:
        return "  ".join([*(cell + " " * (widths[i] - _width(cell))
                            for i, cell in enumerate(cells[:last])), cells[last]]).rstrip()

    yield (form % tuple(headers)).rstrip()
    yield (form % tuple("-" * width for width in widths)).rstrip()
    every_row_ascii = all(ascii_columns)
    for row in zip(*columns, strict=True):
        if every_row_ascii or "".join(row).isascii():
            yield (form % row).rstrip()
        else:
            yield padded(row)


def _write_lines(lines: Iterable[str], out: IO[str] | None = None) -> None:
    """Each line and a newline, written a few thousand lines at a time."""
    stream = out or sys.stdout
    batch: list[str] = []
    for text in lines:
        batch.append(text)
        if len(batch) == 2000:
            stream.write("\n".join(batch) + "\n")
            batch.clear()
    if batch:
        stream.write("\n".join(batch) + "\n")


# submit -------------------------------------------------------------------------------------


def print_submitted(document: Mapping[str, Any]) -> None:
    """What `submit` prints: for one job document, where and when it runs (stdout) and
    the plan's note when it is not the usual one (stderr); for an array document
    ``{"array_id": N, "jobs": [...]}`` (ids or job documents) one summary line."""
    if "jobs" in document:
        ids = [job if isinstance(job, int) else job["id"] for job in document["jobs"]]
        jobs = "1 job" if len(ids) == 1 else f"{len(ids)} jobs"
        sys.stdout.write(f"array {document['array_id']}: {jobs} queued "
                         f"(ids {index_ranges(ids, limit=None)})\n")
        return
    where = (f"{inert(document['planned_region'])} at {_local(document['planned_start'])}"
             if document.get("planned_start") else "not yet planned")
    if document.get("planned_start") and document.get("chunk_end"):
        where += f" (first chunk, until {_local(document['chunk_end'])})"
    sys.stdout.write(f"job {document['id']} queued: runs in {where}, "
                     f"{intensity(document.get('planned_intensity'))} g/kWh "
                     f"(run now: {intensity(document.get('run_now_intensity'))} g/kWh)\n")
    note = document.get("plan_note")
    if note and (document.get("plan_reason") != USUAL_PLAN_REASON
                 or document.get("plan_left_out") or document.get("plan_replayed")):
        message(f"note: {note}")


def index_ranges(indices: Iterable[int], limit: int | None = MAX_INDEX_RANGES) -> str:
    """Sorted whole numbers as Slurm writes an array's indices: ``0-99``, ``1,3,5-9``;
    after ``limit`` ranges, ``...``."""
    ranges: list[str] = []
    ordered = sorted(set(indices))
    start = 0
    for position in range(1, len(ordered) + 1):
        if position == len(ordered) or ordered[position] != ordered[position - 1] + 1:
            first, last = ordered[start], ordered[position - 1]
            ranges.append(str(first) if first == last else f"{first}-{last}")
            start = position
    if limit is not None and len(ranges) > limit:
        return ",".join(ranges[:limit]) + ",..."
    return ",".join(ranges)


# list ---------------------------------------------------------------------------------------

LIST_COLUMNS = ("id", "user", "name", "state", "region", "start", "duration", "g/kWh",
                "deadline")


def print_jobs(documents: Sequence[Mapping[str, Any]], expand: bool = False,
               out: IO[str] | None = None) -> None:
    """The `list` table from job documents, in their order.

    The tasks of an array share one row unless ``expand``: its id is written as Slurm
    does (``12_[0-99]``: array 12, indices 0 to 99), its state as a count per state
    (``planned 97, running 3``), its start and deadline the earliest of its tasks, its
    region, duration and g/kWh the range or set its tasks cover. Expanded, a task's id
    cell is its own job id followed by its place in the array: ``15 (12_3)``.
    """
    rows: list[list[Any]] = []
    arrays: dict[Any, list[Mapping[str, Any]]] = {}
    row_of_array: dict[Any, int] = {}
    for document in documents:
        array_id = None if expand else document.get("array_id")
        if array_id is None:
            rows.append(_job_cells(document, array_place=expand))
        elif array_id in arrays:
            arrays[array_id].append(document)
        else:
            arrays[array_id] = [document]
            row_of_array[array_id] = len(rows)
            rows.append([])  # the array's row, once all its tasks are seen
    for array_id, tasks in arrays.items():
        rows[row_of_array[array_id]] = _array_cells(tasks)
    columns: list[Sequence[str]] = ([list(column) for column in zip(*rows, strict=True)]
                                     if rows else [[] for _ in LIST_COLUMNS])
    columns[5], columns[8] = _local_column(columns[5]), _local_column(columns[8])
    for text_column in (1, 2, 3, 4):  # user, name, state, region
        columns[text_column] = inert_column(columns[text_column])
    _write_lines(_column_table_lines(LIST_COLUMNS, columns), out)


def _local_column(texts: Sequence[str | None]) -> list[str]:
    """``_local`` of each ISO-8601 text, converting each distinct time once (queued jobs
    share planned starts and deadlines)."""
    distinct = list(dict.fromkeys(texts))
    shown = dict(zip(distinct, format_local_iso(distinct), strict=True))
    return [shown[text] for text in texts]


@functools.lru_cache(maxsize=4096)
def _cached_duration(seconds: float | None) -> str:
    return _duration(seconds)


def _job_cells(document: Mapping[str, Any], array_place: bool = False) -> list[Any]:
    """One job's cells, not yet inert, the two times still ISO-8601 (print_jobs converts
    them a column at a time)."""
    identifier = str(document["id"])
    if array_place and document.get("array_id") is not None:
        identifier += f" ({document['array_id']}_{document.get('array_index')})"
    planned = document.get("planned_intensity")
    return [
        identifier,
        document.get("user") or "-",
        document["name"],
        document["state"],
        document.get("run_region") or document.get("planned_region") or "-",
        document.get("started_at") or document.get("planned_start"),
        (_cached_duration(document.get("duration_s")) if document.get("interruptible") is None
         else progress_text(document)),
        "-" if planned is None else f"{planned:.0f}",
        document.get("deadline"),
    ]


def progress_text(document: Mapping[str, Any]) -> str:
    """An interruptible job's progress: work done by the runs that ended over its
    duration, and the runs started: ``2h10m/6h, 3 runs``."""
    done = document.get("work_done_s") or 0
    runs = document.get("run_count") or 0
    return (f"{_duration(done)}/{_duration(document.get('duration_s'))}, "
            f"{runs} run{'' if runs == 1 else 's'}")


def _array_cells(tasks: Sequence[Mapping[str, Any]]) -> list[Any]:
    """One row for the tasks of one array (see print_jobs)."""
    first = min(tasks, key=lambda task: task.get("array_index") or 0)
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["state"]] = counts.get(task["state"], 0) + 1
    states = sorted(counts, key=lambda s: STATE_ORDER.index(s) if s in STATE_ORDER else 99)
    regions = dict.fromkeys(task.get("run_region") or task.get("planned_region") or "-"
                            for task in tasks)
    users = dict.fromkeys(task.get("user") or "-" for task in tasks)
    starts = [s for task in tasks if (s := task.get("started_at") or task.get("planned_start"))]
    deadlines = [task["deadline"] for task in tasks if task.get("deadline")]
    durations = [task["duration_s"] for task in tasks if task.get("duration_s") is not None]
    planned = [task["planned_intensity"] for task in tasks
               if task.get("planned_intensity") is not None]
    indices = [task["array_index"] for task in tasks if task.get("array_index") is not None]
    return [
        f"{first['array_id']}_[{index_ranges(indices)}]",
        ",".join(users),
        first["name"],
        ", ".join(f"{state} {counts[state]}" for state in states),
        ",".join(regions),
        min(starts, default=None),  # ISO-8601 UTC texts sort as their times do
        _span(durations, _cached_duration),
        _span(planned, intensity),
        min(deadlines, default=None),
    ]


def _span(values: Sequence[Any], show: Any) -> str:
    if not values:
        return "-"
    low, high = show(min(values)), show(max(values))
    return low if low == high else f"{low}-{high}"


# show ---------------------------------------------------------------------------------------


def print_job_detail(document: Mapping[str, Any]) -> None:
    """The `show` page from its document (``show_json``): one field a line, then the
    history. The environment shows variable names only, never values."""
    planned = document.get("planned_start")
    array_id = document.get("array_id")
    names = document.get("environment_names") or []
    fields: list[tuple[str, str]] = [
        ("id", str(document["id"])),
        ("name", inert(document["name"])),
        ("user", inert(_user(document))),
        ("array", "-" if array_id is None else f"{array_id}_{document.get('array_index')} "
                                               f"(array {array_id}, index "
                                               f"{document.get('array_index')})"),
        ("state", inert(document["state"])),
        ("command", inert(shell_command(document["argv"]))),
        ("cwd", inert(document["cwd"])),
        ("environment", inert(f"{len(names)} variables: {', '.join(names)}") if names
         else "-"),
        ("duration", _duration(document["duration_s"])),
        ("not before", _local(document.get("not_before"))),
        ("deadline", _local(document.get("deadline"))
         + (" (missed)" if document.get("deadline_missed") else "")),
        ("regions", inert(", ".join(document.get("regions") or [])) or "-"),
        ("power", f"{document['power_watts']:.0f} W"),
        ("planned", inert(f"{document['planned_region']} at {_local(planned)}, "
                          f"{intensity(document.get('planned_intensity'))} g/kWh "
                          f"({document.get('signal') or '-'} signal)") if planned else "-"),
        ("plan note", inert(document.get("plan_note") or "-")),
        ("run now", f"{intensity(document.get('run_now_intensity'))} g/kWh"),
        ("started", _local(document.get("started_at"))),
        ("ended", _local(document.get("ended_at"))),
        ("exit code", "-" if document.get("exit_code") is None else str(document["exit_code"])),
        ("end reason", inert(document.get("end_reason") or "-")),
        ("log", inert(document.get("log_path") or "-")),
        *([("interruptible", inert(interruptible_text(document))),
           ("progress", progress_text(document))]
          if document.get("interruptible") else []),
        *([("slurm job", inert(str(document["slurm_job_id"])))]
          if document.get("slurm_job_id") else []),
        ("energy", inert(energy_text(document))),
        ("emissions", emissions_text(document)),
    ]
    width = max(len(label) for label, _ in fields)
    lines = [f"{label:<{width}}  {value}" for label, value in fields]
    if document.get("interruptible"):
        lines.extend(_parts_lines(document))
    events = document.get("events") or []
    lines.extend(["", "history"])
    lines.extend(_table_lines(("time", "from", "to", "reason"), [
        [_local(event.get("at")), inert(event.get("old_state") or "-"),
         inert(event.get("new_state")), inert(event.get("reason") or "")]
        for event in events]))
    _write_lines(lines)


def interruptible_text(document: Mapping[str, Any]) -> str:
    """An interruptible job's mode and settings in one line."""
    pauses = document.get("max_pauses")
    parts = [f"chunks of at least {_duration(document.get('min_chunk_s'))}",
             "no limit on pauses" if pauses is None else
             f"at most {pauses} pause{'' if pauses == 1 else 's'}"]
    if document["interruptible"] == "checkpoint":
        parts.extend([f"restart overhead {_duration(document.get('restart_overhead_s') or 0)}",
                      f"signal {document.get('checkpoint_signal') or '-'}",
                      f"grace {_duration(document.get('checkpoint_grace_s'))}"])
    return f"{document['interruptible']}: {', '.join(parts)}"


def _parts_lines(document: Mapping[str, Any]) -> list[str]:
    """`show`'s tables of an interruptible job's planned chunks and of its runs."""
    lines = ["", "planned chunks"]
    lines.extend(_table_lines(("start", "end", "region", "g/kWh"), [
        [_local(chunk["start"]), _local(chunk["end"]), inert(chunk["region"]),
         intensity(chunk.get("intensity"))] for chunk in document.get("chunks") or []]))
    lines.extend(["", "runs"])
    lines.extend(_table_lines(("run", "start", "end", "region", "kWh", "g/kWh", "outcome"), [
        [str(run["run"]), _local(run["start"]), _local(run.get("end")), inert(run["region"]),
         "-" if run.get("energy_kwh") is None else f"{run['energy_kwh']:.4g}",
         intensity(run.get("actual_intensity")),
         inert(run.get("outcome") or ("running" if run.get("end") is None else "-"))]
        for run in document.get("runs") or []]))
    return lines


def _user(document: Mapping[str, Any]) -> str:
    user, uid = document.get("user"), document.get("uid")
    if user is None and uid is None:
        return "- (stored before owners were recorded: the daemon's user)"
    if user is None:
        return f"uid {uid}"
    return user if uid is None else f"{user} (uid {uid})"


def energy_text(document: Mapping[str, Any]) -> str:
    """Energy and how it was obtained, saying the method once: a note that already names
    it (``declared 300 W x 60 s wall time (...)``) is not prefixed with it again."""
    energy, method = document.get("energy_kwh"), document.get("energy_method")
    note = document.get("energy_note") or ""
    if energy is None and method is None:
        return "-"
    amount = "unknown" if energy is None else f"{energy:.4g} kWh"
    if not method:
        how = note
    elif not note:
        how = method
    elif note.startswith(method):
        how = note
    else:
        how = f"{method}: {note}"
    return f"{amount} ({how})" if how else amount


def emissions_text(document: Mapping[str, Any]) -> str:
    """Scheduled, actual, run-now and saved gCO2eq of a job that ran, in one line."""
    if document.get("started_at") is None:
        return "-"
    estimated = (" (actual intensity estimated from forecasts)"
                 if document.get("intensity_estimated") else "")
    waiting = (" (awaiting actuals)" if document.get("actuals_state") in accounting.AWAITING
               else "")
    return (f"scheduled {_grams(document.get('scheduled_emissions_g'))}, "
            f"actual {_grams(document.get('actual_emissions_g'))}, "
            f"run now {_grams(document.get('run_now_emissions_g'))}, "
            f"saved {_grams(document.get('saved_g'))}{estimated}{waiting}")


# status -------------------------------------------------------------------------------------


def print_status(document: Mapping[str, Any]) -> None:
    """`status` as text from ``Status.as_json``: the daemon line, the forecast refreshes,
    the queue by state and the next launches."""
    daemon = document["daemon"]
    if daemon.get("running"):
        age = _duration(daemon.get("heartbeat_age_s") or 0)
        line = (f"daemon: running, pid {daemon.get('pid')} on {daemon.get('hostname')} since "
                f"{_local(daemon.get('started_at'))}; last heartbeat {age} ago")
    else:
        line = "daemon: not running"
    if daemon.get("problem"):
        line += f" - {daemon['problem']}"
    lines = [inert(line)]
    refreshes = document.get("refreshes") or []
    if refreshes:
        lines.append("forecast refreshes")
        lines.extend(_table_lines(
            ("provider", "zone", "kind", "last try", "outcome", "last success", "horizon"),
            [[inert(r["provider"]), inert(r["zone"]), inert(r["kind"]), _local(r.get("at")),
              inert(("ok: " if r.get("ok") else "FAILING: ") + (r.get("message") or "")),
              _local(r.get("last_success_at")), _local(r.get("horizon_end"))]
             for r in refreshes]))
    else:
        lines.append("forecast refreshes: none yet")
    queue = document.get("queue") or {}
    lines.append(inert("queue: " + ", ".join(f"{state} {count}"
                                             for state, count in queue.items())))
    launches = document.get("next_launches") or []
    if launches:
        lines.append("next launches")
        lines.extend(_table_lines(("id", "name", "region", "start", "deadline"), [
            [str(j["id"]), inert(j["name"]), inert(j.get("region") or "-"),
             _local(j.get("planned_start")), _local(j.get("deadline"))] for j in launches]))
    _write_lines(lines)


# forecast -----------------------------------------------------------------------------------


def refresh_line(result: Mapping[str, Any]) -> str:
    """One fetch's outcome from its document (``RefreshResult.as_json``), as
    `forecast --refresh` and the daemon report it."""
    kind = result.get("kind") or "forecast"
    label = "" if kind == "forecast" else f" {kind}s"
    head = f"{result['provider']} zone {result['zone']}{label}"
    note = result.get("note") or ""
    if not result.get("ok"):
        # A provider's message may span lines: one line, whatever it holds.
        return inert(f"{head}: FAILED: {' '.join(str(result.get('error') or '').split())}")
    if not result.get("points"):
        return inert(f"{head}: {note or 'no new data'}")
    reach = "horizon to" if kind == "forecast" else "up to"
    text = (f"{head}: {result['points']} points ({result.get('stored', 0)} new), {reach} "
            f"{_local(result.get('horizon_end'))}, vintage {_local(result.get('vintage'))}")
    return inert(f"{text}; {note}" if note else text)


def _region_title(region: Mapping[str, Any]) -> str:
    points = region.get("points") or []
    basis = points[0].get("basis") if points else None
    units = ("percentile index, not emissions" if region.get("units") == PERCENTILE
             else "gCO2eq/kWh")
    return inert(f"{region['region']} ({region['provider']} zone {region['zone']}; "
                 f"{region.get('signal')} intensity{f' ({basis})' if basis else ''}, {units})")


def print_forecast(document: Mapping[str, Any], points: bool | None = None) -> None:
    """`forecast` as text from its document (``{"regions": [RegionView.as_json()...]}``,
    with ``"refresh": [RefreshResult.as_json()...]`` after ``--refresh``).

    The refresh outcomes go to stderr, one line per fetch. Each region then gets its
    table of stored points, or with ``points`` false one summary line (how many points,
    up to when, now and the lowest value). ``points`` defaults to false after a refresh
    (checking a config should not print hundreds of rows) and true otherwise.
    """
    refreshed = document.get("refresh")
    for result in refreshed or []:
        message(refresh_line(result))
    show_points = refreshed is None if points is None else points
    lines: list[str] = []
    for region in document.get("regions") or []:
        title = _region_title(region)
        stored = region.get("points") or []
        if not stored:
            message(f"{title}: no forecast stored from now on; "
                    f"try gridshift forecast --refresh")
            continue
        values = [p["intensity"] for p in stored]
        if not show_points:
            lowest = min(range(len(values)), key=values.__getitem__)
            lines.append(f"{title}: {len(stored)} points up to {_local(stored[-1]['end'])}; "
                         f"now {intensity(values[0])}, lowest {intensity(values[lowest])} "
                         f"at {_local(stored[lowest]['start'])}")
            continue
        top = max(values) or 1.0
        lines.append(title)
        lines.extend(_table_lines(("start", "end", "value", "", "vintage"), [
            [_local(p["start"]), _local(p["end"]), intensity(p["intensity"]),
             "#" * max(1, round(20 * p["intensity"] / top)), _local(p.get("vintage"))]
            for p in stored]))
    _write_lines(lines)


# plan ---------------------------------------------------------------------------------------


def print_plan(document: Mapping[str, Any]) -> None:
    """`plan` as text from its document: the cleanest window per region, the run-now
    figure with the best option's saving, and the regions left out of the ranking."""
    lines = [inert(f"cleanest window per region ({document.get('signal')} intensity, "
                   "gCO2eq/kWh)")]
    lines.extend(_table_lines(("region", "start", "end", "g/kWh", "basis", "forecast"), [
        [inert(o["region"]), _local(o.get("start")), _local(o.get("end")),
         intensity(o.get("intensity")), inert(o.get("basis") or "unknown"),
         "covered" if o.get("covered") else "missing"]
        for o in document.get("options") or []]))
    run_now = document.get("run_now") or {}
    saving = document.get("saving_pct")
    lines.append(inert(f"run now in {run_now.get('region')}: "
                       f"{intensity(run_now.get('intensity'))} g/kWh"
                       + (f"; best option saves {saving:.0f}%" if saving is not None else "")))
    left_out = document.get("left_out") or []
    if left_out:
        lines.append(inert(f"not ranked: {', '.join(left_out)} (a percentile index ranks "
                           "times within its own region only)"))
    _write_lines(lines)
