"""The report as one self-contained HTML page: totals, the job table and the charts."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from scheduler.errors import GridshiftError
from scheduler.report.building import Report
from scheduler.report.charts import panel_pngs
from scheduler.report.table import TABLE_COLUMNS, Table, total_lines
from scheduler.timespec import format_local

# HTML ---------------------------------------------------------------------------------------

_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right}
th{background:#f0f0f0}td.text{text-align:left}img{max-width:100%;display:block}"""


def html_page(report: Report, images: Sequence[bytes], note: str = "") -> str:
    """A self-contained page: totals, the per-job table and the charts inlined as base64."""
    table = Table.of(report)
    period = (f"{format_local(report.since) if report.since else 'the start'} to "
              f"{format_local(report.until) if report.until else 'now'}")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>gridshift emissions report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>gridshift emissions report</h1>",
        f"<p>{len(table.cells[0])} finished job(s) started from {html.escape(period)}. "
        "Emissions in gCO2eq; an actual intensity marked * is estimated from forecasts.</p>",
    ]
    for signal, total in report.totals().items():
        parts.append(f"<h2>Totals: {html.escape(signal)} intensity signal "
                     f"({html.escape(total.basis)} basis)</h2>")
        parts.append(_html_table(("total", "value"), total_lines(total)))
    parts.append("<h2>Jobs</h2>")
    parts.append(_html_table(TABLE_COLUMNS, table.rows, text_columns={1, 2, 3, 4, 7}))
    parts.append("<h2>Charts</h2>")
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    for number, image in enumerate(images, start=1):
        encoded = base64.b64encode(image).decode("ascii")
        parts.append(f'<img alt="chart {number}" src="data:image/png;base64,{encoded}">')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[str]],
                text_columns: set[int] | None = None) -> str:
    text = text_columns if text_columns is not None else {0}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(
            f'<td class="text">{html.escape(cell)}</td>' if i in text
            else f"<td>{html.escape(cell)}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def html_report(report: Report) -> str:
    """The HTML page with charts, or with a note saying why there are none."""
    try:
        images = panel_pngs(report)
        note = ""
    except GridshiftError as error:
        images, note = [], f"No charts: {error}"
    return html_page(report, images, note)
