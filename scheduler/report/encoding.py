"""A report's jobs as one JSON document or as CSV, a page of jobs at a time, each page
encoded a column at a time (json.dumps or csv.writer over 100,000 job rows costs seconds).
The job objects are those of ``show --json`` (``render.JOB_DOCUMENT``)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import IO, Any

import orjson

from scheduler.render import JOB_DOCUMENT, Form
from scheduler.report.building import Report, SignalTotals
from scheduler.report.table import ITEMS_PER_CHUNK

LIST_KEYS = frozenset(key.name for key in JOB_DOCUMENT if key.form is Form.LIST)
# Text keys that are ASCII by construction: times (ISO-8601, written by SQLite) and
# gridshift's own words (states, signals, energy methods, review states).
ASCII_KEYS = frozenset((*(key.name for key in JOB_DOCUMENT if key.form is Form.TIME),
                        "planned_end", "state", "signal", "energy_method", "actuals_state"))


def write_json(report: Report, out: IO[str]) -> None:
    """One compact document: {"jobs": [...], "totals": {...}}, ASCII as json.dumps would
    write it."""
    out.write('{"jobs":[')
    lead = b""
    for page in report.document_pages():
        # orjson encodes a few thousand job dicts at a time; every text it gets is ASCII
        # (see _json_values).
        columns = {key: _json_values(key, values) for key, values in page.items()}
        keys = list(columns)
        rows = zip(*columns.values(), strict=True)
        while batch := list(itertools.islice(rows, ITEMS_PER_CHUNK)):
            encoded = orjson.dumps(list(map(dict, map(zip, itertools.repeat(keys), batch))))
            write_ascii(out, lead + encoded[1:-1])  # without the list's brackets
            lead = b","
    out.write(json_tail(report.totals()))


def json_tail(totals: Mapping[str, SignalTotals]) -> str:
    return ('],"totals":' + json.dumps({name: total.as_json() for name, total in totals.items()},
                                       separators=(",", ":")) + "}\n")


def write_csv(report: Report, out: IO[str]) -> None:
    """One row per job with the keys of the JSON job objects; lists as JSON text. Cells as
    the csv module writes them (minimal quoting)."""
    out.write(",".join(_csv_text(key.name) for key in JOB_DOCUMENT) + "\n")
    for page in report.document_pages():  # one write a page
        out.write("\n".join(map(",".join, zip(*map(_csv_cells, page.values()), strict=True)))
                  + "\n")


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
        if _needs_quotes("".join(known)):  # then look at each, without a call per cell
            return ['"' + text.replace('"', '""') + '"'
                    if '"' in text or "," in text or "\n" in text or "\r" in text else text
                    for text in known]
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
