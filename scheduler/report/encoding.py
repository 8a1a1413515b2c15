"""A report's jobs as one JSON document or as CSV, encoded a column at a time."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii
from types import SimpleNamespace
from typing import IO, Any

import orjson

from scheduler import render
from scheduler.models import Job
from scheduler.report.building import (
    ASCII_KEYS,
    LIST_KEYS,
    Report,
    SignalTotals,
    gc_paused,
)
from scheduler.report.table import ITEMS_PER_CHUNK, chunks

# A report's JSON or CSV is a head, a body of one item per job, and a tail: so it can be
# built in two parts (``bulk``), whose bodies are joined by BODY_SEPARATOR.
BODY_SEPARATOR = {"json": ",", "csv": ""}


def write_json(report: Report, out: IO[str]) -> None:
    """One compact document: {"jobs": [...], "totals": {...}}."""
    out.write(json_head())
    write_body(report, "json", out)
    out.write(json_tail(report.totals))


def json_head() -> str:
    return '{"jobs":['


def json_tail(totals: Mapping[str, SignalTotals]) -> str:
    return ('],"totals":' + json.dumps({name: total.as_json() for name, total in totals.items()},
                                       separators=(",", ":")) + "}\n")


def write_csv(report: Report, out: IO[str]) -> None:
    """One row per job with the keys of the JSON job objects; lists as JSON text. Cells as
    the csv module writes them (minimal quoting)."""
    out.write(csv_head(report))
    write_body(report, "csv", out)


def csv_head(report: Report) -> str:
    columns = list(report.columns) if report.columns else _job_keys()
    return ",".join(map(_csv_text, columns)) + "\n"


@gc_paused
def write_body(report: Report, form: str, out: IO[str]) -> None:
    """The report's jobs as JSON objects joined by commas (``form`` "json") or CSV lines
    (``form`` "csv"), built a column at a time: json.dumps or csv.writer over 100,000 job
    rows costs seconds."""
    if not report.job_count:
        return
    if form == "csv":
        for chunk in chunks(map(",".join, zip(*map(_csv_cells, report.columns.values()),
                                               strict=True)), "\n"):
            out.write(chunk + "\n")
        return
    # orjson encodes a few thousand job dicts at a time; every text it gets is ASCII
    # (see _json_values), so the document is ASCII as json.dumps would write it.
    columns = {key: _json_values(key, values) for key, values in report.columns.items()}
    keys = list(columns)
    rows = zip(*columns.values(), strict=True)
    lead = b""
    while batch := list(itertools.islice(rows, ITEMS_PER_CHUNK)):
        encoded = orjson.dumps(list(map(dict, map(zip, itertools.repeat(keys), batch))))
        write_ascii(out, lead + encoded[1:-1])  # without the list's brackets
        lead = b","


def write_ascii(out: IO[str], data: bytes) -> None:
    """Write ASCII ``data`` to the text stream ``out``: to its byte buffer where it has
    one, else decoded."""
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write(data.decode("ascii"))
        return
    out.flush()
    buffer.write(data)


def _json_values(key: str, values: Sequence[Any]) -> Sequence[Any]:
    """One column's values as orjson should encode them: lists (stored as JSON text) and
    text that is not ASCII as ready JSON (json.dumps' ASCII escapes, which also carry the
    surrogates a non-UTF-8 command line leaves and orjson refuses), the rest as they are."""
    if key in LIST_KEYS:
        return [None if text is None else orjson.Fragment(text) for text in values]
    if key not in ASCII_KEYS and isinstance(_first_known(values), str) and not all(
            map(str.isascii, filter(None, values))):
        return [value if value is None or value.isascii() else
                orjson.Fragment(encode_basestring_ascii(value)) for value in values]
    return values


def _number_texts(values: Sequence[float | int | bool | None]) -> list[str]:
    """Numbers, booleans and nulls as JSON text: one orjson array split at its commas
    (json.dumps spends most of a report's encoding time on float repr). Floats come out
    as the shortest text that reads back to the same number, as repr's do."""
    return orjson.dumps(values).decode("ascii")[1:-1].split(",")


def _first_known(values: Sequence[Any]) -> Any:
    return next((value for value in values if value is not None), None)


def _csv_cells(values: Sequence[Any]) -> Sequence[str]:
    first = _first_known(values)
    if isinstance(first, str):
        known = values if None not in values else ["" if v is None else v for v in values]
        if _needs_quotes("".join(known)):  # then look at each
            return list(map(_csv_text, known))
        return known
    if isinstance(first, bool):  # as the csv module writes them
        return ["" if value is None else str(value) for value in values]
    # Numbers: JSON's text is a CSV cell too (floats as the shortest exact text).
    texts = _number_texts(values)
    return texts if None not in values else ["" if text == "null" else text for text in texts]


def _needs_quotes(text: str) -> bool:
    return '"' in text or "," in text or "\n" in text or "\r" in text


def _csv_text(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if _needs_quotes(text) else text


def _job_keys() -> list[str]:
    """The job object's keys, from a blank row (for the header of an empty CSV)."""
    blank: Any = SimpleNamespace(**{column.name: None for column in Job.__table__.columns})
    blank.argv, blank.regions, blank.power_watts, blank.duration_s = [], [], 0.0, 0
    return list(render.job_json(blank))
