"""A report's jobs as one JSON document or as CSV, a page of jobs at a time, each page
encoded a column at a time (json.dumps or csv.writer over 100,000 job rows costs seconds).
The job objects are those of ``show --json`` (``render.JOB_DOCUMENT`` and
``render.JOB_PARTS``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import IO, Any

import orjson

from scheduler import documents
from scheduler.render import JOB_DOCUMENT, JOB_PARTS
from scheduler.report.building import Report, SignalTotals


def write_json(report: Report, out: IO[str]) -> None:
    """One compact document: {"jobs": [...], "totals": {...}}, ASCII as json.dumps would
    write it."""
    out.write('{"jobs":[')
    lead = b""
    for page in report.document_pages():
        for piece in documents.encoded_jobs(page):
            write_ascii(out, lead + piece)
            lead = b","
    out.write(json_tail(report.totals()))


def json_tail(totals: Mapping[str, SignalTotals]) -> str:
    return ('],"totals":' + json.dumps({name: total.as_json() for name, total in totals.items()},
                                       separators=(",", ":")) + "}\n")


def write_csv(report: Report, out: IO[str]) -> None:
    """One row per job with the keys of the JSON job objects; lists (an interruptible
    job's chunks and runs too) as JSON text. Cells as the csv module writes them (minimal
    quoting)."""
    names = [*(key.name for key in JOB_DOCUMENT), *JOB_PARTS]
    out.write(",".join(map(_csv_text, names)) + "\n")
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


def _number_texts(values: Sequence[float | int | bool | None]) -> list[str]:
    """Numbers, booleans and nulls as JSON text: one orjson array split at its commas
    (json.dumps spends most of a report's encoding time on float repr). Floats come out
    as the shortest text that reads back to the same number, as repr's do."""
    return orjson.dumps(values).decode("ascii")[1:-1].split(",")


def _csv_cells(values: Sequence[Any]) -> Sequence[str]:
    first = documents.first_known(values)
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
