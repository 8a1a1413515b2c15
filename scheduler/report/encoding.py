"""A report's jobs as one JSON document or as CSV, a page of jobs at a time, from each
finished job's stored document (``models.JobDocument``, encoded by ``documents``).
The job objects are those of ``show --json`` (``render.JOB_DOCUMENT`` and
``render.JOB_PARTS``)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

from scheduler import documents
from scheduler.render import JOB_DOCUMENT, JOB_PARTS
from scheduler.report.building import Report, SignalTotals


def json_pieces(report: Report) -> Iterator[str]:
    """One compact document, {"jobs": [...], "totals": {...}} and a newline, ASCII as
    json.dumps would write it, in pieces: the first once the first page is read."""
    lead = '{"jobs":['
    for page in report.stored_pages("json"):
        yield lead + page
        lead = ","
    yield ('{"jobs":[' if lead != "," else "") + json_tail(report.totals())


def json_tail(totals: Mapping[str, SignalTotals]) -> str:
    return ('],"totals":' + json.dumps({name: total.as_json() for name, total in totals.items()},
                                       separators=(",", ":")) + "}\n")


def csv_pieces(report: Report) -> Iterator[str]:
    """One row per job with the keys of the JSON job objects, after a header row; lists
    (an interruptible job's chunks and runs too) as JSON text. Cells as the csv module
    writes them (minimal quoting). In pieces: the header with the first page."""
    header = ",".join(map(documents.csv_text, (*(key.name for key in JOB_DOCUMENT),
                                               *JOB_PARTS))) + "\n"
    for page in report.stored_pages("csv"):
        yield header + page
        header = ""
    if header:
        yield header
