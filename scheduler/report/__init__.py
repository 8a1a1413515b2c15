"""``gridshift report``: what the plan promised, what happened, and what running at once
would have cost, per job and in total, as a table, JSON, CSV, a PNG chart or an HTML page.

One module per seam: ``building`` (which jobs, their documents and the totals),
``table`` (the human text), ``encoding`` (JSON and CSV), ``charts`` and ``page`` (HTML).
"""

from __future__ import annotations

from scheduler.report.building import Report, SignalTotals, build
from scheduler.report.charts import FIGURE_WIDTH_PX, PANEL_HEIGHT_PX, plot_png
from scheduler.report.encoding import csv_pieces, json_pieces
from scheduler.report.page import html_report
from scheduler.report.table import write_text

__all__ = ["FIGURE_WIDTH_PX", "PANEL_HEIGHT_PX", "Report", "SignalTotals", "build",
           "csv_pieces", "html_report", "json_pieces", "plot_png", "write_text"]
