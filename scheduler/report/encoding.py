"""A report's jobs as one JSON document or as CSV, a page of jobs at a time, from each
finished job's stored document (``models.JobDocument``, encoded by ``documents``).
The job objects are those of ``show --json`` (``render.JOB_DOCUMENT`` and
``render.JOB_PARTS``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO

from scheduler import documents
from scheduler.render import JOB_DOCUMENT, JOB_PARTS
from scheduler.report.building import Report, SignalTotals


def write_json(report: Report, out: IO[str]) -> None:
    """One compact document: {"jobs": [...], "totals": {...}}, ASCII as json.dumps would
    write it."""
    out.write('{"jobs":[')
    lead = ""
    for page in report.stored_pages("json"):
        out.write(lead + page)
        lead = ","
    out.write(json_tail(report.totals()))


def json_tail(totals: Mapping[str, SignalTotals]) -> str:
    return ('],"totals":' + json.dumps({name: total.as_json() for name, total in totals.items()},
                                       separators=(",", ":")) + "}\n")


def write_csv(report: Report, out: IO[str]) -> None:
    """One row per job with the keys of the JSON job objects; lists (an interruptible
    job's chunks and runs too) as JSON text. Cells as the csv module writes them (minimal
    quoting)."""
    names = [*(key.name for key in JOB_DOCUMENT), *JOB_PARTS]
    out.write(",".join(map(documents.csv_text, names)) + "\n")
    for page in report.stored_pages("csv"):  # one write a page
        out.write(page)
